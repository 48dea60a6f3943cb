//! The `kv-client` command line against a real server: the round trip of
//! every command, binary values through stdin and stdout, and the exit
//! codes (0 done, 1 missing key, 2 any other failure) with one clear line
//! on stderr and never a panic.

use std::process::Output;

use e2e::{ServerProcess, cli};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit code 0, and stdout as text.
fn ok(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// The given failure code, one line on stderr, no panic.
fn fails(output: Output, code: i32) -> String {
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
    err
}

#[test]
fn put_get_delete_keys_checkpoint_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr();

    assert_eq!(
        ok(cli(addr, &["put", "greeting", "hello"], b"")).trim(),
        "OK"
    );
    assert_eq!(ok(cli(addr, &["get", "greeting"], b"")).trim_end(), "hello");
    for key in ["user:1", "user:2", "user:3", "order:1"] {
        ok(cli(addr, &["put", key, "x"], b""));
    }
    let users = ok(cli(addr, &["keys", "--prefix", "user:"], b""));
    assert_eq!(
        users.lines().collect::<Vec<_>>(),
        ["user:1", "user:2", "user:3"]
    );
    let limited = ok(cli(
        addr,
        &["keys", "--prefix", "user:", "--limit", "2"],
        b"",
    ));
    assert_eq!(
        limited.lines().take(2).collect::<Vec<_>>(),
        ["user:1", "user:2"]
    );
    assert!(!limited.contains("user:3"));

    ok(cli(addr, &["delete", "greeting"], b""));
    fails(cli(addr, &["get", "greeting"], b""), 1);
    fails(cli(addr, &["delete", "greeting"], b""), 1);

    ok(cli(addr, &["checkpoint"], b""));
    assert_eq!(ok(cli(addr, &["get", "user:2"], b"")).trim_end(), "x");
}

#[test]
fn binary_value_from_stdin_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr();
    // Every byte value, NULs and newlines and invalid UTF-8 included.
    let value: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    assert_eq!(ok(cli(addr, &["put", "blob", "-"], &value)).trim(), "OK");
    let got = cli(addr, &["get", "blob"], b"");
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    // stdout is a pipe, not a terminal: raw bytes, nothing added.
    assert_eq!(got.stdout, value);

    // An empty value is a value.
    ok(cli(addr, &["put", "empty", "-"], b""));
    assert_eq!(cli(addr, &["get", "empty"], b"").stdout, b"");
    assert_eq!(cli(addr, &["get", "empty"], b"").status.code(), Some(0));
}

#[test]
fn failures_exit_two_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--max-value-size", "16"]);
    let addr = server.addr();

    // Refused by the server: too large.
    let err = fails(cli(addr, &["put", "k", &"v".repeat(17)], b""), 2);
    assert!(err.to_lowercase().contains("too"), "{err}");

    // Bad usage: unknown command, missing argument.
    let usage = cli(addr, &["frobnicate"], b"");
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    assert!(!stderr(&usage).contains("panicked"));
    let missing = cli(addr, &["put", "only-key"], b"");
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));

    // No server there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = free.local_addr().unwrap();
    drop(free);
    let err = fails(cli(down, &["get", "k"], b""), 2);
    assert!(
        err.contains(&down.to_string()) || err.to_lowercase().contains("connect"),
        "{err}"
    );
}
