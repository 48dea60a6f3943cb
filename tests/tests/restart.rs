//! Restarts: after SIGTERM (exit 0) and after kill -9 every acknowledged
//! write is there; a second server on the same data directory, a taken
//! port and bad flags fail with one clear line.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use e2e::{
    EXIT_DEADLINE, RawConnection, ServerProcess, cli, command, read_responses, run_to_exit,
    wait_until_server_read_all,
};
use kv_proto::{PutRequest, Request, request::Command, response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes 300 keys (and deletes every tenth), returning what each key must
/// hold.
async fn write_some(server: &ServerProcess) -> HashMap<String, Option<Bytes>> {
    let client = kv_client::Client::connect(server.addr()).await.unwrap();
    let puts = (0..300).map(|i| {
        let client = client.clone();
        async move {
            let key = format!("key-{i}");
            let value = Bytes::from(format!("value-{i}"));
            client.put(key.clone(), value.clone()).await.expect("put");
            (key, Some(value))
        }
    });
    let mut expect: HashMap<_, _> = futures::future::join_all(puts).await.into_iter().collect();
    for i in (0..300).step_by(10) {
        let key = format!("key-{i}");
        assert!(client.delete(key.clone()).await.unwrap().is_some());
        expect.insert(key, None);
    }
    expect
}

async fn assert_holds(server: &ServerProcess, expect: &HashMap<String, Option<Bytes>>) {
    let client = kv_client::Client::connect(server.addr()).await.unwrap();
    for (key, value) in expect {
        assert_eq!(&client.get(key.clone()).await.unwrap(), value, "key {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_restart_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let expect = write_some(&server).await;
    server.sigterm();
    let status = server.wait_exit(EXIT_DEADLINE);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
    assert!(
        server.stderr().contains("shut down cleanly"),
        "{}",
        server.stderr()
    );

    let server = server.restart();
    assert_holds(&server, &expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_shuts_down_gracefully_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--sync-policy", "never"]);
    let expect = write_some(&server).await;
    server.sigint();
    assert_eq!(server.wait_exit(EXIT_DEADLINE).code(), Some(0));
    // Under `never`, only the shutdown's sync made these durable.
    let server = server.restart();
    assert_holds(&server, &expect).await;
}

/// Pipelined puts still waiting for their sync when SIGTERM comes are
/// answered, every one, and are there after a restart.
///
/// The server holds each group commit for two seconds (`group`, a long
/// delay), so none of the puts can be answered before the signal; and it may
/// have them all in flight at once (`--max-in-flight` above their number),
/// so it reads them all. The signal goes once the kernel says the server has
/// read every byte sent: a server that dropped requests in flight at
/// shutdown would leave some of them unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_request_already_read() {
    const N: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        dir.path(),
        &[
            "--sync-policy",
            "group",
            "--group-commit-delay-us",
            "2000000",
            "--max-in-flight",
            "4096",
        ],
    );
    let requests: Vec<Request> = (0..N)
        .map(|i| {
            Request::new(
                i,
                Command::Put(PutRequest {
                    key: Bytes::from(format!("inflight-{i}")),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                }),
            )
        })
        .collect();
    let stream = RawConnection::connect(server.addr())
        .await
        .unwrap()
        .into_inner();
    let client_addr = stream.local_addr().unwrap();
    let (read_half, mut write_half) = stream.into_split();
    write_half
        .write_all(&RawConnection::encode(&requests))
        .await
        .unwrap();
    wait_until_server_read_all(client_addr, server.addr(), Duration::from_secs(30)).await;
    // Nothing may have been answered yet, or the test would not show that
    // in-flight requests survive the signal.
    let mut probe = [0u8; 1];
    assert!(
        matches!(read_half.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "answers came before SIGTERM: the group-commit delay no longer keeps the puts in flight"
    );
    server.sigterm();

    // Every request the server read gets its answer, in order, then the
    // server closes the connection.
    let mut read_half = read_half;
    let responses = read_responses(&mut read_half, N as usize, Duration::from_secs(60)).await;
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response.id, i as u64, "answer {i} out of order");
        assert!(
            matches!(response.result, Some(response::Result::Put(_))),
            "request {i} got {response:?}"
        );
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), read_half.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection after the last answer");
    assert!(
        closed.is_ok() && rest.is_empty(),
        "after the answers: {closed:?}, {rest:?}"
    );
    assert_eq!(
        server.wait_exit(EXIT_DEADLINE).code(),
        Some(0),
        "stderr:\n{}",
        server.stderr()
    );

    let server = server.restart();
    let client = kv_client::Client::connect(server.addr()).await.unwrap();
    for i in 0..N {
        let key = format!("inflight-{i}");
        assert_eq!(
            client.get(key.clone()).await.unwrap().as_deref(),
            Some(&b"v"[..]),
            "{key} acknowledged, then lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_restart_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let expect = write_some(&server).await;
    server.kill9();
    let server = server.restart();
    assert_holds(&server, &expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_server_on_the_same_data_dir_exits_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let expect = write_some(&server).await;

    let mut second = command("kv-server");
    second
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path());
    let output = run_to_exit(second, b"", EXIT_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("locked"), "unclear message: {last}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The first server is unharmed.
    assert_holds(&server, &expect).await;
}

#[test]
fn port_in_use_and_bad_flags_fail_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut busy = command("kv-server");
    busy.arg("--addr")
        .arg(taken.local_addr().unwrap().to_string())
        .arg("--data-dir")
        .arg(dir.path());
    let output = run_to_exit(busy, b"", EXIT_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");

    let mut bad = command("kv-server");
    bad.args(["--sync-policy", "sometimes"]);
    let output = run_to_exit(bad, b"", EXIT_DEADLINE);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("sometimes"));
}

#[test]
fn addr_takes_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_on("localhost:0", dir.path(), &[]);
    assert!(server.addr().ip().is_loopback(), "{}", server.addr());
    let put = cli(server.addr(), &["put", "named", "yes"], b"");
    assert_eq!(put.status.code(), Some(0), "{put:?}");
    let get = cli(server.addr(), &["get", "named"], b"");
    assert_eq!(get.stdout, b"yes");
}

#[test]
fn addr_that_does_not_resolve_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = command("kv-server");
    server
        .args(["--addr", "no-such-host.invalid:7878", "--data-dir"])
        .arg(dir.path());
    let output = run_to_exit(server, b"", EXIT_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert!(
        stderr.contains("cannot resolve --addr no-such-host.invalid:7878"),
        "{stderr}"
    );

    // Not HOST:PORT at all is a usage error.
    let mut bad = command("kv-server");
    bad.args(["--addr", "localhost"]);
    let output = run_to_exit(bad, b"", EXIT_DEADLINE);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("HOST:PORT"));
}

#[test]
fn out_of_range_durations_and_workers_are_usage_errors() {
    for (flag, value, says) in [
        ("--idle-timeout", "18446744073709551615", "at most one day"),
        ("--frame-timeout", "2000m", "at most one day"),
        ("--shutdown-grace", "86401s", "at most one day"),
        ("--idle-timeout", "0", "more than 0"),
        ("--frame-timeout", "0ms", "more than 0"),
        ("--worker-threads", "0", "0"),
    ] {
        let mut bad = command("kv-server");
        bad.args([flag, value]);
        let output = run_to_exit(bad, b"", EXIT_DEADLINE);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flag} {value}: {stderr}");
    }
}
