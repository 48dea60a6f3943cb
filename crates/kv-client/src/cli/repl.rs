//! The interactive prompt, like redis-cli's: `put k v`, `get k`, ...
//!
//! On a terminal it uses a line editor with history (kept in
//! `~/.kv_client_history` when that file can be written). Otherwise it reads
//! commands line by line from stdin, so scripts and tests can drive it; it
//! then exits 2 if any command failed. Errors print and the prompt goes on.
//! A lost connection is re-established by the next command, and with
//! several addresses commands follow the leader (`ClusterClient`).

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use kv_client::{ClientError, ClusterClient};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::output::{describe, io_message, quote};
use crate::ConnectionArgs;

const HELP: &str = "\
Commands (arguments may be quoted: \"a b\", 'a b'; in double quotes \\n, \\t, \\\", \\\\, \\xHH):
  put KEY VALUE          set KEY to VALUE, durably
  get KEY                print the value of KEY, or (nil)
  delete KEY             remove KEY (alias: del)
  keys [PREFIX] [LIMIT]  list keys starting with PREFIX, at most LIMIT (0: all)
  mget KEY...            print the values of several keys, (nil) for missing ones
  incr KEY [DELTA]       add DELTA (default 1, may be negative); prints the new value
  expire KEY DURATION    expire KEY after DURATION (500ms, 10s, 5m, 1h, 2d, or seconds)
  persist KEY            clear KEY's deadline
  ttl KEY                print KEY's remaining time to live (1500ms), or no expiry
  scan [PREFIX] [LIMIT]  list keys starting with PREFIX, every page, at most LIMIT (0: all)
  stats                  print the store's counters and sizes
  checkpoint             write a snapshot; prints the sequence number it covers
  help                   this text
  quit                   leave (also: exit, Ctrl-D)";

/// One line of input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Nothing to do (blank line).
    Empty,
    /// `put KEY VALUE`.
    Put(Bytes, Bytes),
    /// `get KEY`.
    Get(Bytes),
    /// `delete KEY`.
    Delete(Bytes),
    /// `keys [PREFIX] [LIMIT]`.
    Keys(Bytes, u32),
    /// `mget KEY...`.
    Mget(Vec<Bytes>),
    /// `incr KEY [DELTA]`.
    Incr(Bytes, i64),
    /// `expire KEY DURATION`.
    Expire(Bytes, std::time::Duration),
    /// `persist KEY`.
    Persist(Bytes),
    /// `ttl KEY`.
    Ttl(Bytes),
    /// `scan [PREFIX] [LIMIT]`.
    Scan(Bytes, u64),
    /// `stats`.
    Stats,
    /// `checkpoint`.
    Checkpoint,
    /// `help`.
    Help,
    /// `quit` or `exit`.
    Quit,
}

/// Parses one line. Verbs are case-insensitive.
pub fn parse_line(line: &[u8]) -> Result<Line, String> {
    let words = split_words(line)?;
    let Some((verb, args)) = words.split_first() else {
        return Ok(Line::Empty);
    };
    let verb = String::from_utf8_lossy(verb).to_ascii_lowercase();
    let arity = |n: usize, usage: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("wrong number of arguments; usage: {usage}"))
        }
    };
    let arg = |i: usize| Bytes::copy_from_slice(&args[i]);
    match verb.as_str() {
        "put" | "set" => arity(2, "put KEY VALUE").map(|()| Line::Put(arg(0), arg(1))),
        "get" => arity(1, "get KEY").map(|()| Line::Get(arg(0))),
        "delete" | "del" => arity(1, "delete KEY").map(|()| Line::Delete(arg(0))),
        "keys" => {
            if args.len() > 2 {
                return Err("wrong number of arguments; usage: keys [PREFIX] [LIMIT]".into());
            }
            let prefix = if args.is_empty() {
                Bytes::new()
            } else {
                arg(0)
            };
            let limit = match args.get(1) {
                None => 0,
                Some(limit) => std::str::from_utf8(limit)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or_else(|| format!("LIMIT must be a number, not {}", quote(limit)))?,
            };
            Ok(Line::Keys(prefix, limit))
        }
        "mget" if args.is_empty() => Err("wrong number of arguments; usage: mget KEY...".into()),
        "mget" => Ok(Line::Mget((0..args.len()).map(arg).collect())),
        "incr" => {
            if !(1..=2).contains(&args.len()) {
                return Err("wrong number of arguments; usage: incr KEY [DELTA]".into());
            }
            let delta = match args.get(1) {
                None => 1,
                Some(delta) => number(delta, "DELTA")?,
            };
            Ok(Line::Incr(arg(0), delta))
        }
        "expire" => {
            arity(2, "expire KEY DURATION")?;
            let text = String::from_utf8_lossy(&args[1]);
            Ok(Line::Expire(arg(0), crate::parse_duration(&text)?))
        }
        "persist" => arity(1, "persist KEY").map(|()| Line::Persist(arg(0))),
        "ttl" => arity(1, "ttl KEY").map(|()| Line::Ttl(arg(0))),
        "scan" => {
            if args.len() > 2 {
                return Err("wrong number of arguments; usage: scan [PREFIX] [LIMIT]".into());
            }
            let prefix = if args.is_empty() {
                Bytes::new()
            } else {
                arg(0)
            };
            let limit = match args.get(1) {
                None => 0,
                Some(limit) => number(limit, "LIMIT")?,
            };
            Ok(Line::Scan(prefix, limit))
        }
        "stats" => arity(0, "stats").map(|()| Line::Stats),
        "checkpoint" => arity(0, "checkpoint").map(|()| Line::Checkpoint),
        "help" | "?" => Ok(Line::Help),
        "quit" | "exit" => Ok(Line::Quit),
        other => Err(format!("unknown command `{other}`; type `help`")),
    }
}

/// A numeric argument, or why not.
fn number<T: std::str::FromStr>(word: &[u8], name: &str) -> Result<T, String> {
    std::str::from_utf8(word)
        .ok()
        .and_then(|s| s.parse::<T>().ok())
        .ok_or_else(|| format!("{name} must be a number, not {}", quote(word)))
}

/// Splits a line into words: whitespace separates them; `"..."` groups
/// with escapes (`\n \r \t \" \\ \xHH`), `'...'` groups literally (only
/// `\'` is an escape). A closing quote must end the word.
fn split_words(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err("unbalanced quotes".into()),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let escaped = line.get(i + 1).ok_or("unbalanced quotes")?;
                            i += 1;
                            match escaped {
                                b'n' => word.push(b'\n'),
                                b'r' => word.push(b'\r'),
                                b't' => word.push(b'\t'),
                                b'x' => {
                                    let hex = line
                                        .get(i + 1..i + 3)
                                        .and_then(|h| std::str::from_utf8(h).ok())
                                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                                        .ok_or("\\x must be followed by two hex digits")?;
                                    word.push(hex);
                                    i += 2;
                                }
                                other => word.push(*other),
                            }
                        }
                        Some(&b) => word.push(b),
                    }
                    i += 1;
                }
                i += 1;
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err("a closing quote must be followed by a space".into());
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err("unbalanced quotes".into()),
                        Some(b'\'') => break,
                        Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                            word.push(b'\'');
                            i += 1;
                        }
                        Some(&b) => word.push(b),
                    }
                    i += 1;
                }
                i += 1;
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err("a closing quote must be followed by a space".into());
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
    Ok(words)
}

/// Runs the prompt until `quit` or the end of input.
pub fn run(connection: &ConnectionArgs) -> ExitCode {
    // A worker thread of its own lets the connection's tasks notice a
    // closed connection while the prompt waits for the user.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kv-client: cannot start the runtime: {}", io_message(&e));
            return ExitCode::from(2);
        }
    };
    let client = match connection.client() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("kv-client: {}", describe(&connection.addr, &e));
            return ExitCode::from(2);
        }
    };
    let session = Session {
        connection: connection.clone(),
        runtime,
        client,
        terminal_out: io::stdout().is_terminal(),
        failures: 0,
    };
    if io::stdin().is_terminal() {
        match DefaultEditor::new() {
            Ok(editor) => return session.interactive(editor),
            Err(e) => eprintln!("kv-client: no line editor ({e}); reading lines plainly"),
        }
    }
    session.lines()
}

struct Session {
    connection: ConnectionArgs,
    runtime: tokio::runtime::Runtime,
    /// Connects on the first command, and again after a lost connection.
    client: ClusterClient,
    /// Whether stdout is a terminal: values are then shown quoted, so
    /// that binary values stay readable and unambiguous.
    terminal_out: bool,
    /// Commands that failed (not counting missing keys).
    failures: u64,
}

enum Flow {
    Continue,
    Quit,
}

impl Session {
    fn interactive(mut self, mut editor: DefaultEditor) -> ExitCode {
        let history = history_path();
        if let Some(path) = &history {
            // A missing or unreadable file just means an empty history.
            let _ = editor.load_history(path);
        }
        let prompt = format!("{}> ", self.connection.addr);
        loop {
            match editor.readline(&prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if let Flow::Quit = self.handle(line.as_bytes()) {
                        break;
                    }
                }
                // Ctrl-C abandons the line, as in a shell.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => {
                    eprintln!("kv-client: cannot read input: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        if let Some(path) = &history {
            // Not writable: the history stays in memory, which is fine.
            let _ = editor.save_history(path);
        }
        ExitCode::SUCCESS
    }

    fn lines(mut self) -> ExitCode {
        let stdin = io::stdin();
        for line in stdin.lock().split(b'\n') {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    eprintln!("kv-client: cannot read stdin: {}", io_message(&e));
                    return ExitCode::from(2);
                }
            };
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if let Flow::Quit = self.handle(line) {
                break;
            }
        }
        if self.failures > 0 {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    }

    fn handle(&mut self, line: &[u8]) -> Flow {
        let command = match parse_line(line) {
            Ok(Line::Empty) => return Flow::Continue,
            Ok(Line::Quit) => return Flow::Quit,
            Ok(Line::Help) => {
                println!("{HELP}");
                return Flow::Continue;
            }
            Ok(command) => command,
            Err(message) => {
                self.fail(&message);
                return Flow::Continue;
            }
        };
        let result = self
            .runtime
            .block_on(execute(&self.client, command, self.terminal_out));
        if let Err(err) = result {
            let message = describe(&self.connection.addr, &err);
            self.fail(&message);
        }
        Flow::Continue
    }

    fn fail(&mut self, message: &str) {
        self.failures += 1;
        eprintln!("(error) {message}");
    }
}

/// Runs one command (the client connects first if it has no live
/// connection) and prints its result.
async fn execute(
    client: &ClusterClient,
    command: Line,
    terminal_out: bool,
) -> Result<(), ClientError> {
    let show = |bytes: &[u8]| -> Vec<u8> {
        if terminal_out {
            quote(bytes).into_bytes()
        } else {
            bytes.to_vec()
        }
    };
    let mut out: Vec<u8> = Vec::new();
    match command {
        Line::Put(key, value) => {
            client.put(key, value).await?;
            out.extend_from_slice(b"OK\n");
        }
        Line::Get(key) => match client.get(key).await? {
            Some(value) => {
                out.extend(show(&value));
                out.push(b'\n');
            }
            None => out.extend_from_slice(b"(nil)\n"),
        },
        Line::Delete(key) => match client.delete(key).await? {
            Some(_) => out.extend_from_slice(b"OK\n"),
            None => out.extend_from_slice(b"(not found)\n"),
        },
        Line::Keys(prefix, limit) => {
            let page = client.keys(prefix, limit).await?;
            if page.keys.is_empty() && terminal_out {
                out.extend_from_slice(b"(empty)\n");
            }
            for key in &page.keys {
                out.extend(show(key));
                out.push(b'\n');
            }
            if page.truncated {
                out.extend_from_slice(b"(more keys match; raise the limit)\n");
            }
        }
        Line::Mget(keys) => {
            for value in client.mget(keys).await? {
                match value {
                    Some(v) => {
                        out.extend(show(&v.value));
                        out.push(b'\n');
                    }
                    None => out.extend_from_slice(b"(nil)\n"),
                }
            }
        }
        Line::Incr(key, delta) => {
            let counter = client.incr(key, delta).await?;
            out.extend_from_slice(format!("{}\n", counter.value).as_bytes());
        }
        Line::Expire(key, ttl) => match client.expire(key, ttl).await? {
            Some(_) => out.extend_from_slice(b"OK\n"),
            None => out.extend_from_slice(b"(not found)\n"),
        },
        Line::Persist(key) => match client.persist(key).await? {
            Some(_) => out.extend_from_slice(b"OK\n"),
            None => out.extend_from_slice(b"(not found)\n"),
        },
        Line::Ttl(key) => match client.ttl(key).await? {
            Some(kv_client::Ttl::Expires { remaining, .. }) => {
                out.extend_from_slice(format!("{}ms\n", remaining.as_millis()).as_bytes());
            }
            Some(kv_client::Ttl::Persistent) => out.extend_from_slice(b"no expiry\n"),
            None => out.extend_from_slice(b"(not found)\n"),
        },
        Line::Scan(prefix, limit) => {
            let mut options = kv_client::ScanOptions::prefix(prefix);
            let mut left = if limit == 0 { u64::MAX } else { limit };
            while left > 0 {
                options.limit = u32::try_from(left).unwrap_or(0);
                let mut page = client.scan(&options).await?;
                page.items
                    .truncate(usize::try_from(left).unwrap_or(usize::MAX));
                left -= page.items.len() as u64;
                for item in &page.items {
                    out.extend(show(&item.key));
                    out.push(b'\n');
                }
                match page.resume_after {
                    Some(after) if after != options.after => options.after = after,
                    _ => break,
                }
            }
        }
        Line::Stats => {
            let stats = client.stats().await?;
            out.extend_from_slice(
                format!(
                    "keys {}\nbytes {}\nlast_seq {}\ndurable_seq {}\nexpiring_keys {}\n",
                    stats.keys, stats.bytes, stats.last_seq, stats.durable_seq, stats.expiring_keys
                )
                .as_bytes(),
            );
        }
        Line::Checkpoint => {
            let seq = client.checkpoint().await?;
            out.extend_from_slice(format!("{seq}\n").as_bytes());
        }
        Line::Empty | Line::Help | Line::Quit => {}
    }
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| ClientError::Io(std::sync::Arc::new(e)))
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kv_client_history"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn verbs_and_arguments() {
        assert_eq!(parse_line(b"put k v"), Ok(Line::Put(b("k"), b("v"))));
        assert_eq!(parse_line(b"  GET   k  "), Ok(Line::Get(b("k"))));
        assert_eq!(parse_line(b"del k"), Ok(Line::Delete(b("k"))));
        assert_eq!(parse_line(b"delete k"), Ok(Line::Delete(b("k"))));
        assert_eq!(parse_line(b"keys"), Ok(Line::Keys(Bytes::new(), 0)));
        assert_eq!(parse_line(b"keys user:"), Ok(Line::Keys(b("user:"), 0)));
        assert_eq!(parse_line(b"keys user: 10"), Ok(Line::Keys(b("user:"), 10)));
        assert_eq!(parse_line(b"keys \"\" 3"), Ok(Line::Keys(Bytes::new(), 3)));
        assert_eq!(parse_line(b"checkpoint"), Ok(Line::Checkpoint));
        assert_eq!(
            parse_line(b"mget a b"),
            Ok(Line::Mget(vec![b("a"), b("b")]))
        );
        assert_eq!(parse_line(b"incr n"), Ok(Line::Incr(b("n"), 1)));
        assert_eq!(parse_line(b"incr n -3"), Ok(Line::Incr(b("n"), -3)));
        assert_eq!(
            parse_line(b"expire k 5m"),
            Ok(Line::Expire(b("k"), std::time::Duration::from_secs(300)))
        );
        assert!(parse_line(b"expire k 0").is_err());
        assert!(parse_line(b"incr n x").is_err());
        assert!(parse_line(b"mget").is_err());
        assert_eq!(parse_line(b"persist k"), Ok(Line::Persist(b("k"))));
        assert_eq!(parse_line(b"ttl k"), Ok(Line::Ttl(b("k"))));
        assert_eq!(parse_line(b"scan"), Ok(Line::Scan(Bytes::new(), 0)));
        assert_eq!(parse_line(b"scan u: 4"), Ok(Line::Scan(b("u:"), 4)));
        assert_eq!(parse_line(b"stats"), Ok(Line::Stats));
        assert_eq!(parse_line(b"help"), Ok(Line::Help));
        assert_eq!(parse_line(b"exit"), Ok(Line::Quit));
        assert_eq!(parse_line(b"quit"), Ok(Line::Quit));
        assert_eq!(parse_line(b""), Ok(Line::Empty));
        assert_eq!(parse_line(b"   \t "), Ok(Line::Empty));
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(
            parse_line(b"put k")
                .unwrap_err()
                .contains("usage: put KEY VALUE")
        );
        assert!(parse_line(b"get").unwrap_err().contains("usage: get KEY"));
        assert!(parse_line(b"checkpoint now").is_err());
        assert!(parse_line(b"keys a b c").is_err());
        assert!(parse_line(b"keys a lots").unwrap_err().contains("LIMIT"));
        assert!(parse_line(b"frob").unwrap_err().contains("unknown command"));
        assert_eq!(parse_line(b"put \"k v"), Err("unbalanced quotes".into()));
        assert_eq!(parse_line(b"put 'k v"), Err("unbalanced quotes".into()));
        assert!(parse_line(b"put \"k\"x v").is_err());
        assert!(parse_line(b"put \"\\x4\" v").is_err());
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            parse_line(b"put \"a key\" 'a value'"),
            Ok(Line::Put(b("a key"), b("a value")))
        );
        assert_eq!(
            parse_line(br#"put "tab\there" "nl\n\"q\"\\\x00\xff""#),
            Ok(Line::Put(
                b("tab\there"),
                Bytes::from_static(b"nl\n\"q\"\\\x00\xff")
            ))
        );
        assert_eq!(parse_line(br"get 'it\'s'"), Ok(Line::Get(b("it's"))));
        // Single quotes keep backslashes literally.
        assert_eq!(parse_line(br"get 'a\nb'"), Ok(Line::Get(b("a\\nb"))));
        // Non-UTF-8 bytes outside quotes are kept as they are.
        assert_eq!(
            parse_line(b"get \xff\xfe"),
            Ok(Line::Get(Bytes::from_static(b"\xff\xfe")))
        );
    }

    #[test]
    fn quoted_output_parses_back_to_the_same_bytes() {
        let every_byte: Vec<u8> = (0..=255u8).collect();
        let line = format!("get {}", quote(&every_byte));
        assert_eq!(
            parse_line(line.as_bytes()),
            Ok(Line::Get(Bytes::from(every_byte)))
        );
    }
}
