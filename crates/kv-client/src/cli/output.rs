//! What the command line prints: values, keys, and one-line errors.

use std::io::{self, Write};
use std::process::ExitCode;

use kv_client::ClientError;
use kv_client::kv_proto::ErrorCode;

/// How results are printed: `-o text` (the default) or `-o json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// As people read it: values as they are, keys one a line.
    #[default]
    Text,
    /// One JSON object a line per result (scan and mget: per key), for
    /// scripts.
    Json,
}

/// Why a command did not succeed, and so which exit code it gets.
#[derive(Debug)]
pub enum Failure {
    /// The key does not exist (get, delete, ttl, expire, persist): exit 1.
    NotFound(String),
    /// A conditional write's condition did not hold (the line says the
    /// key's current version): exit 1, as a missing key, since both are
    /// answers about the data rather than failures to get one.
    ConditionFailed(String),
    /// A write whose outcome is unknown (the server answered
    /// OUTCOME_UNKNOWN: it may or may not have taken effect): exit 3.
    OutcomeUnknown(String),
    /// Anything else: exit 2.
    Error(String),
}

/// Exit status of a write whose outcome is unknown.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;

impl Failure {
    /// Prints the one line on stderr and returns the exit code.
    pub fn report(&self) -> ExitCode {
        match self {
            Failure::NotFound(message) | Failure::ConditionFailed(message) => {
                eprintln!("kv-client: {message}");
                ExitCode::from(1)
            }
            Failure::OutcomeUnknown(message) => {
                eprintln!("kv-client: {message}");
                ExitCode::from(EXIT_OUTCOME_UNKNOWN)
            }
            Failure::Error(message) => {
                eprintln!("kv-client: {message}");
                ExitCode::from(2)
            }
        }
    }
}

/// The failure for a key that does not exist.
pub fn not_found(key: &[u8]) -> Failure {
    Failure::NotFound(format!("key not found: {}", quote(key)))
}

/// The failure for a client error talking to `addr` (as the user gave it:
/// one address or several).
pub fn client_failure(addr: &str, err: &ClientError) -> Failure {
    if let ClientError::ConditionFailed { .. } = err {
        Failure::ConditionFailed(err.to_string())
    } else if err.is_outcome_unknown() {
        Failure::OutcomeUnknown(describe(addr, err))
    } else {
        Failure::Error(describe(addr, err))
    }
}

/// One line saying what went wrong, in the user's terms: the address as
/// they gave it, OS errors without their "(os error N)" suffix.
pub fn describe(addr: &str, err: &ClientError) -> String {
    match err {
        ClientError::Connect { source, .. } => {
            format!("cannot connect to {addr}: {}", io_message(source))
        }
        ClientError::Tls { source, .. } => format!(
            "TLS handshake with {addr} failed: {} (is the server's certificate signed by the \
             CA you trust (--tls-ca), for the name you connect to, and does it serve TLS?)",
            io_message(source)
        ),
        ClientError::Io(source) => {
            format!("connection to {addr} failed: {}", io_message(source))
        }
        ClientError::Timeout(limit) => {
            format!("no answer from {addr} within {limit:?}")
        }
        ClientError::Closed => format!("the server at {addr} closed the connection"),
        ClientError::Server {
            code: ErrorCode::OutcomeUnknown,
            message,
            ..
        } => format!(
            "the write may or may not have taken effect (OUTCOME_UNKNOWN): {message}; read the \
             key back once the server has recovered"
        ),
        // Named by the server it was sent to, not by the whole list.
        ClientError::OutcomeUnknown { addr, source } => format!(
            "the write may or may not have taken effect: {} after it was sent; read the key \
             back to learn whether it did",
            describe(addr, source)
        ),
        ClientError::NoLeader { waited, last } => format!(
            "no member of {addr} took the request within {:.1}s (no leader?); last error: {}",
            waited.as_secs_f64(),
            describe(addr, last)
        ),
        other => other.to_string(),
    }
}

/// An I/O error as a short lower-case phrase: "connection refused" rather
/// than "Connection refused (os error 111)".
pub fn io_message(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

/// Prints `text` and a newline on stdout.
pub fn line(text: &str) -> Result<(), Failure> {
    write_stdout(|out| writeln!(out, "{text}"))
}

/// Prints a value: on a terminal as (lossy) UTF-8 with a newline, else the
/// raw bytes alone, so `get k > file` reproduces the value exactly.
pub fn value(value: &[u8], terminal: bool) -> Result<(), Failure> {
    write_stdout(|out| {
        if terminal {
            writeln!(out, "{}", String::from_utf8_lossy(value))
        } else {
            out.write_all(value)
        }
    })
}

/// Prints keys one a line: raw bytes, or lossy UTF-8 on a terminal.
pub fn keys(keys: &[bytes::Bytes], terminal: bool) -> Result<(), Failure> {
    write_stdout(|out| {
        for key in keys {
            if terminal {
                writeln!(out, "{}", String::from_utf8_lossy(key))?;
            } else {
                out.write_all(key)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    })
}

/// Prints each of `lines` and a newline, as raw bytes (or lossy UTF-8 on
/// a terminal); `lines` are made of byte pieces joined without separators.
pub fn byte_lines(lines: &[Vec<&[u8]>], terminal: bool) -> Result<(), Failure> {
    write_stdout(|out| {
        for pieces in lines {
            for piece in pieces {
                if terminal {
                    write!(out, "{}", String::from_utf8_lossy(piece))?;
                } else {
                    out.write_all(piece)?;
                }
            }
            out.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// One JSON object of `-o json` output, built field by field.
#[derive(Debug, Default)]
pub struct Json(serde_json::Map<String, serde_json::Value>);

impl Json {
    /// An empty object.
    pub fn new() -> Json {
        Json::default()
    }

    /// Adds bytes (a key, a value) as the string field `name` when they are
    /// valid UTF-8, else as `{name}_base64` (standard alphabet, padded).
    pub fn bytes(mut self, name: &str, bytes: &[u8]) -> Json {
        use base64::Engine;
        match std::str::from_utf8(bytes) {
            Ok(text) => self.0.insert(name.to_string(), text.into()),
            Err(_) => self.0.insert(
                format!("{name}_base64"),
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into(),
            ),
        };
        self
    }

    /// Adds any JSON value (numbers, booleans, strings, `null` for `None`).
    pub fn field(mut self, name: &str, value: impl Into<serde_json::Value>) -> Json {
        self.0.insert(name.to_string(), value.into());
        self
    }

    /// The object as one line of text.
    pub fn to_line(&self) -> String {
        serde_json::Value::Object(self.0.clone()).to_string()
    }
}

/// Prints `objects`, one a line.
pub fn json_lines(objects: &[Json]) -> Result<(), Failure> {
    write_stdout(|out| {
        for object in objects {
            writeln!(out, "{}", object.to_line())?;
        }
        Ok(())
    })
}

fn write_stdout(
    write: impl FnOnce(&mut io::StdoutLock<'_>) -> io::Result<()>,
) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Error(format!("cannot write to stdout: {}", io_message(&e))))
}

/// `bytes` as a double-quoted string that the prompt's parser reads back
/// as the same bytes: std's `escape_ascii` (printable ASCII as is, `\n`,
/// `\t`, `\"`, `\'`, `\\` and `\xHH` for the rest), which is exactly
/// what the parser's double quotes take.
pub fn quote(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn os_errors_read_as_short_phrases() {
        let err = io::Error::from_raw_os_error(111);
        // Linux's ECONNREFUSED; the text is the platform's.
        if cfg!(target_os = "linux") {
            assert_eq!(io_message(&err), "connection refused");
        }
        assert_eq!(io_message(&io::Error::other("Boom")), "boom");
    }

    #[test]
    fn connect_failure_names_the_address_as_given() {
        let err = ClientError::Connect {
            addr: None,
            source: Arc::new(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "Connection refused",
            )),
        };
        assert_eq!(
            describe("127.0.0.1:7878", &err),
            "cannot connect to 127.0.0.1:7878: connection refused"
        );
    }

    #[test]
    fn a_write_lost_after_sending_is_outcome_unknown_naming_its_server() {
        let err = ClientError::OutcomeUnknown {
            addr: "127.0.0.1:7002".into(),
            source: Box::new(ClientError::Closed),
        };
        let failure = client_failure("127.0.0.1:7001,127.0.0.1:7002", &err);
        match failure {
            Failure::OutcomeUnknown(message) => assert_eq!(
                message,
                "the write may or may not have taken effect: the server at 127.0.0.1:7002 \
                 closed the connection after it was sent; read the key back to learn whether \
                 it did"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn no_leader_says_how_long_and_the_last_error() {
        let err = ClientError::NoLeader {
            waited: std::time::Duration::from_millis(2040),
            last: Box::new(ClientError::Server {
                code: ErrorCode::NotLeader,
                message: "not the leader".into(),
                leader_addr: None,
            }),
        };
        match client_failure("a:1,b:2", &err) {
            Failure::Error(message) => assert_eq!(
                message,
                "no member of a:1,b:2 took the request within 2.0s (no leader?); last error: \
                 server error NOT_LEADER: not the leader"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn json_bytes_are_strings_when_utf8_else_base64() {
        let line = Json::new()
            .bytes("key", "héllo".as_bytes())
            .bytes("value", b"\xff\x00")
            .field("seq", 7u64)
            .field("expires_at_ms", None::<u64>)
            .to_line();
        assert_eq!(
            line,
            r#"{"expires_at_ms":null,"key":"héllo","seq":7,"value_base64":"/wA="}"#
        );
    }

    #[test]
    fn a_failed_condition_is_one_line_naming_the_current_version() {
        let err = ClientError::ConditionFailed {
            key: bytes::Bytes::from_static(b"k"),
            current: Some(12),
            message: "condition failed".into(),
        };
        match client_failure("a:1", &err) {
            Failure::ConditionFailed(message) => {
                assert_eq!(message, "condition failed on \"k\": current version 12")
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = ClientError::ConditionFailed {
            key: bytes::Bytes::from_static(b"k\n"),
            current: None,
            message: String::new(),
        };
        assert_eq!(
            err.to_string(),
            "condition failed on \"k\\n\": the key does not exist"
        );
    }

    #[test]
    fn quote_escapes_what_is_not_printable() {
        assert_eq!(quote(b"plain"), "\"plain\"");
        assert_eq!(quote(b"a\"b\\c\n\x00\xff"), "\"a\\\"b\\\\c\\n\\x00\\xff\"");
        // Every byte survives a trip through the prompt's parser.
        let all: Vec<u8> = (0..=255).collect();
        let line = format!("get {}", quote(&all));
        assert_eq!(
            crate::cli::repl::parse_line(line.as_bytes()),
            Ok(crate::cli::repl::Line::Get(bytes::Bytes::from(all)))
        );
    }
}
