//! RESP on the wire: a checked, incremental parser of client commands
//! (multibulk arrays of bulk strings, and inline commands) and the encoder
//! of replies in RESP2 and RESP3.
//!
//! Why not the `redis-protocol` crate (6.0.0, checked for this listener):
//! it decodes RESP frames but not inline commands (`PING\r\n`, which
//! redis-cli and telnet users send), and it has no limits: a `$999999999`
//! header makes its codec wait for and buffer the whole bulk, where Redis
//! (and this server) refuse a bulk over the limit at its header, answer an
//! error and close. A server only has to parse one shape (an array of bulk
//! strings) and encode a few, so this small parser, checked by the tests
//! below and by `tests/redis.rs`, is less than adapting the crate.

use bytes::{Buf, Bytes, BytesMut};

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest bulk string (Redis's proto-max-bulk-len), and longest whole
    /// command (all its bulks together): `--max-frame`.
    pub(crate) max_bulk: usize,
    /// Longest inline command line, and longest header line.
    pub(crate) max_inline: usize,
}

/// A protocol violation: answered with `-ERR Protocol error: ...`, then the
/// connection is closed, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

impl ProtocolError {
    fn new(what: impl Into<String>) -> ProtocolError {
        ProtocolError(what.into())
    }
}

/// Most elements preallocated for a multibulk, whatever its header claims.
const PREALLOC_ARGS: usize = 1024;

/// Takes the next whole command off the front of `buf`: `Ok(None)` when
/// more bytes are needed (nothing is consumed then). An empty inline line
/// is skipped (it yields no command).
pub(crate) fn parse_command(
    buf: &mut BytesMut,
    limits: Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        if buf[0] == b'*' {
            return parse_multibulk(buf, limits);
        }
        let Some(end) = find_line(buf) else {
            if buf.len() > limits.max_inline {
                return Err(ProtocolError::new("too big inline request"));
            }
            return Ok(None);
        };
        if end > limits.max_inline {
            return Err(ProtocolError::new("too big inline request"));
        }
        let line = buf.split_to(end + 1);
        let line = trim_line(&line);
        let args = split_inline(line)?;
        if !args.is_empty() {
            return Ok(Some(args));
        }
    }
}

/// Where the `\n` of the first line is.
fn find_line(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// A line without its `\r\n` (or bare `\n`).
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads a header line `<prefix><integer>\r\n` at `at`: the integer and
/// where the line ends; `None` if the line is not complete yet.
fn header(
    buf: &[u8],
    at: usize,
    limits: Limits,
    invalid: &str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = &buf[at..];
    let Some(end) = find_line(rest) else {
        if rest.len() > limits.max_inline {
            return Err(ProtocolError::new(invalid));
        }
        return Ok(None);
    };
    let line = trim_line(&rest[..=end]);
    let n = std::str::from_utf8(&line[1..])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError::new(invalid))?;
    Ok(Some((n, at + end + 1)))
}

fn parse_multibulk(
    buf: &mut BytesMut,
    limits: Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some((count, mut at)) = header(buf, 0, limits, "invalid multibulk length")? else {
        return Ok(None);
    };
    if count > i64::from(i32::MAX) {
        return Err(ProtocolError::new("invalid multibulk length"));
    }
    if count <= 0 {
        // Redis ignores an empty (or negative) multibulk.
        buf.advance(at);
        return Ok(Some(Vec::new()));
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    // Where each bulk's body is; the bytes are sliced once all arrived.
    let mut bodies = Vec::with_capacity(count.min(PREALLOC_ARGS));
    let mut total = 0usize;
    for _ in 0..count {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                char::from(buf[at])
            )));
        }
        let Some((len, body)) = header(buf, at, limits, "invalid bulk length")? else {
            return Ok(None);
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= limits.max_bulk)
            .ok_or_else(|| ProtocolError::new("invalid bulk length"))?;
        total = total.saturating_add(len);
        if total > limits.max_bulk {
            return Err(ProtocolError(format!(
                "command larger than the maximum of {} bytes",
                limits.max_bulk
            )));
        }
        let end = body + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::new("bulk string not followed by CRLF"));
        }
        bodies.push((body, len));
        at = end + 2;
    }
    let frame = buf.split_to(at).freeze();
    Ok(Some(
        bodies
            .into_iter()
            .map(|(start, len)| frame.slice(start..start + len))
            .collect(),
    ))
}

/// Splits an inline command as Redis's `sdssplitargs` does: on spaces,
/// with "double quotes" (escapes `\n \r \t \b \a \\ \" \xHH`) and 'single
/// quotes' (escape `\'`) grouping an argument.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let unbalanced = || ProtocolError::new("unbalanced quotes in request");
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(unbalanced());
                    };
                    match c {
                        b'\\'
                            if line.get(i + 1) == Some(&b'x')
                                && line.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                                && line.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                        {
                            let hex = std::str::from_utf8(&line[i + 2..i + 4]).unwrap_or("0");
                            arg.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                            i += 4;
                        }
                        b'\\' if i + 1 < line.len() => {
                            arg.push(match line[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                other => other,
                            });
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            // The closing quote must end the argument.
                            if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                                return Err(unbalanced());
                            }
                            break;
                        }
                        other => {
                            arg.push(other);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(unbalanced());
                    };
                    match c {
                        b'\\' if line.get(i + 1) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 2;
                        }
                        b'\'' => {
                            i += 1;
                            if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                                return Err(unbalanced());
                            }
                            break;
                        }
                        other => {
                            arg.push(other);
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

/// One reply, encoded for the connection's protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`: the text includes its code (`ERR`, `NOAUTH`, ...).
    Error(String),
    /// `:1`.
    Integer(i64),
    /// `$3\r\nfoo`.
    Bulk(Bytes),
    /// RESP2 `$-1`, RESP3 `_`.
    Null,
    /// RESP2 `*-1` (a nil array: EXEC of a transaction whose watched keys
    /// changed), RESP3 `_`.
    NullArray,
    /// `*n`.
    Array(Vec<Frame>),
    /// RESP3 `%n`; in RESP2 a flat array of keys and values.
    Map(Vec<(Frame, Frame)>),
}

impl Frame {
    /// `+OK`.
    pub(crate) fn ok() -> Frame {
        Frame::Simple("OK".into())
    }

    /// An error reply; `text` starts with its code.
    pub(crate) fn error(text: impl Into<String>) -> Frame {
        Frame::Error(text.into())
    }

    /// A bulk string.
    pub(crate) fn bulk(bytes: impl Into<Bytes>) -> Frame {
        Frame::Bulk(bytes.into())
    }

    /// Appends the encoding of `self` in RESP `version` (2 or 3).
    pub(crate) fn encode(&self, version: u8, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => line(out, b'+', s.as_bytes()),
            Frame::Error(s) => {
                // A line break would end the error early: Redis replaces them.
                let clean: Vec<u8> = s
                    .bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                    .collect();
                line(out, b'-', &clean);
            }
            Frame::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Frame::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null if version >= 3 => out.extend_from_slice(b"_\r\n"),
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::NullArray if version >= 3 => out.extend_from_slice(b"_\r\n"),
            Frame::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Frame::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(version, out);
                }
            }
            Frame::Map(pairs) => {
                if version >= 3 {
                    line(out, b'%', pairs.len().to_string().as_bytes());
                } else {
                    line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
                }
                for (k, v) in pairs {
                    k.encode(version, out);
                    v.encode(version, out);
                }
            }
        }
    }
}

fn line(out: &mut BytesMut, prefix: u8, body: &[u8]) {
    out.extend_from_slice(&[prefix]);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk: 64,
        max_inline: 32,
    };

    fn parse(bytes: &[u8]) -> (Result<Option<Vec<Bytes>>, ProtocolError>, usize) {
        let mut buf = BytesMut::from(bytes);
        let result = parse_command(&mut buf, LIMITS);
        (result, buf.len())
    }

    fn args(items: &[&[u8]]) -> Vec<Bytes> {
        items.iter().map(|a| Bytes::copy_from_slice(a)).collect()
    }

    #[test]
    fn multibulk_whole_and_in_every_prefix() {
        let cmd = b"*2\r\n$3\r\nGET\r\n$3\r\na\r\n\r\n";
        assert_eq!(parse(cmd), (Ok(Some(args(&[b"GET", b"a\r\n"]))), 0));
        for cut in 0..cmd.len() {
            assert_eq!(parse(&cmd[..cut]), (Ok(None), cut), "cut at {cut}");
        }
    }

    #[test]
    fn two_pipelined_commands_come_one_at_a_time() {
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\nPING x\r\n"[..]);
        assert_eq!(parse_command(&mut buf, LIMITS), Ok(Some(args(&[b"PING"]))));
        assert_eq!(
            parse_command(&mut buf, LIMITS),
            Ok(Some(args(&[b"PING", b"x"])))
        );
        assert_eq!(parse_command(&mut buf, LIMITS), Ok(None));
    }

    #[test]
    fn inline_quotes_and_empty_lines() {
        assert_eq!(
            parse(b"\r\n\nSET \"a b\\x41\\n\" 'c\\'d'\r\n").0,
            Ok(Some(args(&[b"SET", b"a bA\n", b"c'd"])))
        );
        assert_eq!(parse(b"\r\n").0, Ok(None));
        assert_eq!(
            parse(b"SET \"ab\r\n").0,
            Err(ProtocolError::new("unbalanced quotes in request"))
        );
        assert_eq!(
            parse(b"SET \"a\"b\r\n").0,
            Err(ProtocolError::new("unbalanced quotes in request"))
        );
    }

    #[test]
    fn limits_and_garbage_are_protocol_errors() {
        assert_eq!(
            parse(b"*1\r\n$65\r\n").0,
            Err(ProtocolError::new("invalid bulk length"))
        );
        assert_eq!(
            parse(b"*1\r\n$-1\r\n").0,
            Err(ProtocolError::new("invalid bulk length"))
        );
        assert_eq!(
            parse(b"*x\r\n").0,
            Err(ProtocolError::new("invalid multibulk length"))
        );
        assert_eq!(
            parse(b"*1\r\n:1\r\n").0,
            Err(ProtocolError::new("expected '$', got ':'"))
        );
        assert_eq!(
            parse(b"*1\r\n$1\r\nab\r\n").0,
            Err(ProtocolError::new("bulk string not followed by CRLF"))
        );
        assert_eq!(
            parse(&[b'A'; 40]).0,
            Err(ProtocolError::new("too big inline request"))
        );
        assert!(parse(b"*3\r\n$40\r\n").0.is_ok());
        let mut big = b"*2\r\n$40\r\n".to_vec();
        big.extend_from_slice(&[b'a'; 40]);
        big.extend_from_slice(b"\r\n$40\r\n");
        assert!(parse(&big).0.is_err(), "the command's total is limited too");
    }

    #[test]
    fn frames_in_both_versions() {
        let frame = Frame::Array(vec![
            Frame::Null,
            Frame::Map(vec![(Frame::bulk("k"), Frame::Integer(-1))]),
            Frame::error("ERR a\r\nb"),
            Frame::NullArray,
        ]);
        let mut two = BytesMut::new();
        frame.encode(2, &mut two);
        assert_eq!(
            &two[..],
            b"*4\r\n$-1\r\n*2\r\n$1\r\nk\r\n:-1\r\n-ERR a  b\r\n*-1\r\n"
        );
        let mut three = BytesMut::new();
        frame.encode(3, &mut three);
        assert_eq!(
            &three[..],
            b"*4\r\n_\r\n%1\r\n$1\r\nk\r\n:-1\r\n-ERR a  b\r\n_\r\n"
        );
    }
}
