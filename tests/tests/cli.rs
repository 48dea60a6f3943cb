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

/// The store features through the command line on a real server, as the
/// README shows them: versions, conditions (exit 1, the current version on
/// stderr), atomic mput/mdelete, mget, counters, expiry, a scan that pages
/// by itself past the server's page, stats, and `-o json`.
#[test]
fn store_features_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr();
    let run = |args: &[&str]| cli(addr, args, b"");

    ok(run(&["put", "config", "v1"]));
    let versioned = ok(run(&["get", "config", "--seq"]));
    let lines: Vec<&str> = versioned.lines().collect();
    assert_eq!(lines.len(), 2, "{versioned}");
    let seq: u64 = lines[0].parse().expect("the version first");
    assert_eq!(lines[1], "v1");

    // Conditions.
    let err = fails(run(&["put", "config", "v2", "--if-absent"]), 1);
    assert!(
        err.contains(&format!("current version {seq}")),
        "the current version on stderr: {err}"
    );
    let stale = (seq + 1000).to_string();
    fails(run(&["put", "config", "v2", "--if-seq", &stale]), 1);
    ok(run(&["put", "config", "v2", "--if-seq", &seq.to_string()]));
    ok(run(&["put", "config", "v3", "--if-value", "v2"]));
    let err = fails(run(&["put", "ghost", "x", "--if-present"]), 1);
    assert!(err.contains("does not exist"), "{err}");
    fails(run(&["delete", "config", "--if-seq", &seq.to_string()]), 1);
    assert_eq!(ok(run(&["get", "config"])).trim_end(), "v3");
    // Usage errors are clap's, several lines with the usage: exit 2.
    let usage = |output: Output| assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    usage(run(&["put", "a", "b", "--if-absent", "--if-present"]));

    // Atomic batches and multi-get.
    ok(run(&["mput", "user:1", "alice", "user:2", "bob"]));
    usage(run(&["mput", "odd"]));
    let got = ok(run(&["mget", "user:1", "user:9", "user:2"]));
    assert_eq!(got.lines().collect::<Vec<_>>(), ["alice", "(nil)", "bob"]);
    ok(run(&["mdelete", "user:1", "user:2"]));
    assert_eq!(
        ok(run(&["mget", "user:1", "user:2"]))
            .lines()
            .collect::<Vec<_>>(),
        ["(nil)", "(nil)"]
    );

    // Counters.
    assert_eq!(ok(run(&["incr", "visits"])).trim(), "1");
    assert_eq!(ok(run(&["incr", "visits", "-3"])).trim(), "-2");
    fails(run(&["incr", "config"]), 2);

    // Expiry.
    ok(run(&["put", "session", "s", "--ttl", "10m"]));
    let ttl = ok(run(&["ttl", "session"]));
    let ms: u64 = ttl.trim().trim_end_matches("ms").parse().expect("NNNms");
    assert!(ms > 0 && ms <= 600_000, "{ttl}");
    ok(run(&["persist", "session"]));
    assert_eq!(ok(run(&["ttl", "session"])).trim(), "no expiry");
    ok(run(&["expire", "session", "1h"]));
    fails(run(&["ttl", "ghost"]), 1);
    fails(run(&["expire", "ghost", "10s"]), 1);
    usage(run(&["expire", "session", "0s"]));

    // A scan over more keys than a page of the server holds: 2,000 keys
    // with 1 KiB values through a 256 KiB frame take several pages.
    let many = tempfile::tempdir().unwrap();
    let small = ServerProcess::start(many.path(), &["--max-frame", "256KiB"]);
    let value = "v".repeat(1024);
    for chunk in 0..20 {
        let batch: Vec<String> = std::iter::once("mput".to_string())
            .chain((0..100).flat_map(|i| [format!("k{:04}", chunk * 100 + i), value.clone()]))
            .collect();
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        ok(cli(small.addr(), &refs, b""));
    }
    let all = ok(cli(
        small.addr(),
        &["scan", "--prefix", "k", "--values"],
        b"",
    ));
    assert_eq!(all.lines().count(), 2000);
    assert!(all.lines().all(|l| l.ends_with(&value)));
    let reversed = ok(cli(
        small.addr(),
        &[
            "scan",
            "--start",
            "k0100",
            "--end",
            "k0200",
            "--reverse",
            "--limit",
            "3",
        ],
        b"",
    ));
    assert_eq!(
        reversed.lines().collect::<Vec<_>>(),
        ["k0199", "k0198", "k0197"]
    );

    // Stats and JSON.
    let stats = ok(run(&["stats"]));
    assert!(stats.lines().any(|l| l == "expiring_keys 1"), "{stats}");
    let json = ok(run(&["-o", "json", "get", "config"]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(v["key"], "config");
    assert_eq!(v["value"], "v3");
    assert!(v["seq"].as_u64().unwrap() > seq);
    let json = ok(cli(addr, &["-o", "json", "put", "bin", "-"], &[0xff, 0, 1]));
    assert!(serde_json::from_str::<serde_json::Value>(json.trim()).is_ok());
    let json = ok(run(&["-o", "json", "scan", "--prefix", "bin", "--values"]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["value_base64"], "/wAB");
    let json = ok(run(&["-o", "json", "stats"]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(v["keys"].as_u64().unwrap() >= 4);
}
