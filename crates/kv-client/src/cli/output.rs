//! What the command line prints: values, keys, and one-line errors.

use std::io::{self, Write};
use std::process::ExitCode;

use kv_client::ClientError;
use kv_client::kv_proto::ErrorCode;

/// Why a command did not succeed, and so which exit code it gets.
#[derive(Debug)]
pub enum Failure {
    /// The key does not exist (get, delete): exit 1.
    NotFound(String),
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
            Failure::NotFound(message) => {
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
    if err.is_outcome_unknown() {
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
