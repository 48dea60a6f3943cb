//! Restarts: after SIGTERM (exit 0) and after kill -9 every acknowledged
//! write is there; a second server on the same data directory, a taken
//! port and bad flags fail with one clear line.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use e2e::{EXIT_DEADLINE, RawConnection, ServerProcess, command, run_to_exit};
use kv_proto::{PutRequest, Request, request::Command, response};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_requests_already_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    const N: u64 = 2000;
    let requests: Vec<Request> = (0..N)
        .map(|i| {
            Request::new(
                i,
                Command::Put(PutRequest {
                    key: Bytes::from(format!("inflight-{i}")),
                    value: Bytes::from_static(b"v"),
                }),
            )
        })
        .collect();
    let mut conn = RawConnection::connect(server.addr()).await.unwrap();
    conn.send_raw(&RawConnection::encode(&requests))
        .await
        .unwrap();
    // Shut down while those writes are in flight.
    let first = conn
        .recv(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("first answer");
    server.sigterm();

    // Every answer that comes is a successful put, in order; then the
    // server closes the connection. Requests it never read get no answer.
    let mut acked = vec![first];
    while let Some(response) = conn.recv(Duration::from_secs(20)).await.unwrap_or(None) {
        acked.push(response);
    }
    for (i, response) in acked.iter().enumerate() {
        assert_eq!(response.id, i as u64);
        assert!(
            matches!(response.result, Some(response::Result::Put(_))),
            "request {i} got {response:?}"
        );
    }
    assert_eq!(server.wait_exit(EXIT_DEADLINE).code(), Some(0));
    println!(
        "{} of {N} pipelined puts answered before shutdown",
        acked.len()
    );

    let server = server.restart();
    let client = kv_client::Client::connect(server.addr()).await.unwrap();
    for response in &acked {
        let key = format!("inflight-{}", response.id);
        assert!(
            client.get(key.clone()).await.unwrap().is_some(),
            "{key} lost"
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
