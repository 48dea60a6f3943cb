//! Bad input gets a clear answer and costs nothing else: garbage, empty
//! commands, oversized lengths, slow and half-open connections and clients
//! that vanish mid-request. Other clients keep being served throughout.

use std::time::Duration;

use bytes::Bytes;
use e2e::{RawConnection, ServerProcess};
use kv_proto::{ErrorCode, GetRequest, PutRequest, Request, Response, request::Command, response};

const DEADLINE: Duration = Duration::from_secs(20);

fn put(id: u64, key: &str, value: &str) -> Request {
    Request::new(
        id,
        Command::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        }),
    )
}

fn get(id: u64, key: &str) -> Request {
    Request::new(
        id,
        Command::Get(GetRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
        }),
    )
}

fn error_code(response: &Response) -> ErrorCode {
    match &response.result {
        Some(response::Result::Error(err)) => {
            ErrorCode::try_from(err.code).expect("a known error code")
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A put and a get on a fresh connection succeed: the server is healthy.
async fn assert_serves(server: &ServerProcess, tag: &str) {
    let mut conn = RawConnection::connect(server.addr()).await.unwrap();
    conn.send(&put(1, tag, "ok")).await.unwrap();
    conn.send(&get(2, tag)).await.unwrap();
    let put_reply = conn.recv(DEADLINE).await.unwrap().expect("put answered");
    assert!(matches!(put_reply.result, Some(response::Result::Put(_))));
    let get_reply = conn.recv(DEADLINE).await.unwrap().expect("get answered");
    match get_reply.result {
        Some(response::Result::Get(found)) => assert_eq!(found.value, Bytes::from_static(b"ok")),
        other => panic!("get: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_message_gets_invalid_request_and_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let mut conn = RawConnection::connect(server.addr()).await.unwrap();

    // A well-framed body that is not protobuf (0xFF.. is an invalid tag).
    let garbage = [0xFFu8; 10];
    let mut frame = (garbage.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&garbage);
    conn.send_raw(&frame).await.unwrap();
    let reply = conn.recv(DEADLINE).await.unwrap().expect("an answer");
    assert_eq!(reply.id, 0, "an undecodable request has no id to echo");
    assert_eq!(error_code(&reply), ErrorCode::InvalidRequest);

    // The same connection goes on.
    conn.send(&put(7, "after-garbage", "v")).await.unwrap();
    let reply = conn.recv(DEADLINE).await.unwrap().expect("an answer");
    assert_eq!(reply.id, 7);
    assert!(matches!(reply.result, Some(response::Result::Put(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_command_gets_invalid_request_with_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let mut conn = RawConnection::connect(server.addr()).await.unwrap();
    conn.send(&Request {
        id: 42,
        command: None,
    })
    .await
    .unwrap();
    // An empty message is a zero-length frame: also a request with no
    // command, id 0.
    conn.send_raw(&[0, 0, 0, 0]).await.unwrap();
    conn.send(&get(43, "missing")).await.unwrap();

    let first = conn.recv(DEADLINE).await.unwrap().expect("an answer");
    assert_eq!(first.id, 42);
    assert_eq!(error_code(&first), ErrorCode::InvalidRequest);
    let second = conn.recv(DEADLINE).await.unwrap().expect("an answer");
    assert_eq!(second.id, 0);
    assert_eq!(error_code(&second), ErrorCode::InvalidRequest);
    let third = conn.recv(DEADLINE).await.unwrap().expect("an answer");
    assert_eq!(third.id, 43);
    assert!(matches!(third.result, Some(response::Result::Get(ref g)) if !g.found));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &["--max-key-size", "16", "--max-value-size", "64"],
    );
    let mut conn = RawConnection::connect(server.addr()).await.unwrap();
    conn.send(&put(1, "", "empty key")).await.unwrap();
    conn.send(&put(2, &"k".repeat(17), "v")).await.unwrap();
    conn.send(&put(3, "k", &"v".repeat(65))).await.unwrap();
    conn.send(&put(4, &"k".repeat(16), &"v".repeat(64)))
        .await
        .unwrap();

    let empty = conn.recv(DEADLINE).await.unwrap().unwrap();
    assert_eq!(
        (empty.id, error_code(&empty)),
        (1, ErrorCode::InvalidRequest)
    );
    let long_key = conn.recv(DEADLINE).await.unwrap().unwrap();
    assert_eq!(
        (long_key.id, error_code(&long_key)),
        (2, ErrorCode::TooLarge)
    );
    let long_value = conn.recv(DEADLINE).await.unwrap().unwrap();
    assert_eq!(
        (long_value.id, error_code(&long_value)),
        (3, ErrorCode::TooLarge)
    );
    let at_limits = conn.recv(DEADLINE).await.unwrap().unwrap();
    assert_eq!(at_limits.id, 4);
    assert!(matches!(at_limits.result, Some(response::Result::Put(_))));
    // A get's key is size-checked like a put's.
    conn.send(&get(5, &"k".repeat(17))).await.unwrap();
    let long_get = conn.recv(DEADLINE).await.unwrap().unwrap();
    assert_eq!(
        (long_get.id, error_code(&long_get)),
        (5, ErrorCode::TooLarge)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_gets_too_large_then_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--max-frame", "1KiB"]);
    let mut conn = RawConnection::connect(server.addr()).await.unwrap();

    // Earlier requests on the connection are still answered, in order.
    conn.send(&put(1, "before", "v")).await.unwrap();
    // Claims 2 GiB; sends a few bytes of "body" that must never be needed.
    let mut frame = (2u32 << 30).to_be_bytes().to_vec();
    frame.extend_from_slice(b"not read");
    conn.send_raw(&frame).await.unwrap();

    let before = conn
        .recv(DEADLINE)
        .await
        .unwrap()
        .expect("earlier put answered");
    assert_eq!(before.id, 1);
    assert!(matches!(before.result, Some(response::Result::Put(_))));
    let refusal = conn
        .recv(DEADLINE)
        .await
        .unwrap()
        .expect("a TOO_LARGE answer");
    assert_eq!(refusal.id, 0);
    assert_eq!(error_code(&refusal), ErrorCode::TooLarge);
    conn.wait_closed(DEADLINE).await;

    // A frame just at the limit is fine on a new connection.
    assert_serves(&server, "after-oversized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_by_the_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &["--idle-timeout", "1s", "--frame-timeout", "300ms"],
    );

    let start = tokio::time::Instant::now();
    // Silent after connecting: closed by the idle timeout.
    let mut silent = RawConnection::connect(server.addr()).await.unwrap();
    // Half a header: a started frame, closed by the frame timeout.
    let mut partial_header = RawConnection::connect(server.addr()).await.unwrap();
    partial_header.send_raw(&[0, 0]).await.unwrap();
    // A header and part of the body, then nothing.
    let mut partial_body = RawConnection::connect(server.addr()).await.unwrap();
    let mut frame = 100u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x08; 10]);
    partial_body.send_raw(&frame).await.unwrap();

    // Meanwhile another client is served.
    assert_serves(&server, "during-half-open").await;

    let slow_header = partial_header.wait_closed(DEADLINE).await - start;
    let slow_body = partial_body.wait_closed(DEADLINE).await - start;
    let idle = silent.wait_closed(DEADLINE).await - start;
    // Each went by its own timeout: a started frame's is the shorter.
    assert!(slow_header >= Duration::from_millis(250), "{slow_header:?}");
    assert!(slow_body >= Duration::from_millis(250), "{slow_body:?}");
    assert!(idle >= Duration::from_millis(900), "{idle:?}");
    assert!(
        slow_header < idle && slow_body < idle,
        "{slow_header:?} {slow_body:?} {idle:?}"
    );

    assert_serves(&server, "after-half-open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_request_harm_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    for round in 0..20u64 {
        // Half a frame, then gone.
        let mut conn = RawConnection::connect(server.addr()).await.unwrap();
        let whole = RawConnection::encode(&[put(round, "vanish", "value")]);
        conn.send_raw(&whole[..whole.len() / 2]).await.unwrap();
        drop(conn);
        // Many pipelined writes, then gone without reading an answer.
        let mut conn = RawConnection::connect(server.addr()).await.unwrap();
        let burst: Vec<Request> = (0..200)
            .map(|i| put(i, &format!("burst-{round}-{i}"), "v"))
            .collect();
        conn.send_raw(&RawConnection::encode(&burst)).await.unwrap();
        drop(conn);
    }
    assert_serves(&server, "after-vanishing").await;
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "server panicked:\n{stderr}");
}

/// A client over `--max-connections` is told so at once (UNAVAILABLE on
/// id 0, the id of an error about the connection) and closed, instead of
/// hanging in the accept queue; once a slot frees, new clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_unavailable_and_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--max-connections", "2"]);
    let mut first = RawConnection::connect(server.addr()).await.unwrap();
    let mut second = RawConnection::connect(server.addr()).await.unwrap();
    for conn in [&mut first, &mut second] {
        conn.send(&get(1, "k")).await.unwrap();
        conn.recv(DEADLINE).await.unwrap().expect("served");
    }

    let mut third = RawConnection::connect(server.addr()).await.unwrap();
    third.send(&get(3, "k")).await.unwrap();
    let refusal = third.recv(DEADLINE).await.unwrap().expect("a refusal");
    assert_eq!(refusal.id, 0);
    assert_eq!(error_code(&refusal), ErrorCode::Unavailable);
    match &refusal.result {
        Some(response::Result::Error(err)) => {
            assert!(
                err.message.contains("max number of clients reached"),
                "{err:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    third.wait_closed(DEADLINE).await;

    // The kv-client CLI shows it as one clear line.
    let output = e2e::cli(server.addr(), &["get", "k"], b"");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max number of clients reached"), "{stderr}");

    // The served connections were not disturbed.
    first.send(&get(2, "k")).await.unwrap();
    assert_eq!(first.recv(DEADLINE).await.unwrap().expect("served").id, 2);

    // Once one closes, a new client is served (the server notices the close
    // a moment later: until then it may still refuse).
    drop(first);
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut next = RawConnection::connect(server.addr()).await.unwrap();
        next.send(&get(4, "k")).await.unwrap();
        let reply = next.recv(DEADLINE).await.unwrap().expect("an answer");
        if reply.id == 4 {
            break;
        }
        assert_eq!(error_code(&reply), ErrorCode::Unavailable);
        assert!(tokio::time::Instant::now() < until, "no slot freed");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_not_reading_its_answers_is_dropped_and_cannot_stall_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--frame-timeout", "500ms"]);
    let mut conn = RawConnection::connect(server.addr()).await.unwrap();
    let big = "x".repeat(1 << 20);
    conn.send(&put(1, "big", &big)).await.unwrap();
    conn.recv(DEADLINE).await.unwrap().expect("put answered");
    // 200 MiB of answers that are never read: the server's writes block.
    let gets: Vec<Request> = (0..200).map(|i| get(i, "big")).collect();
    conn.send_raw(&RawConnection::encode(&gets)).await.unwrap();

    assert_serves(&server, "while-one-client-stalls").await;

    // The stalled connection is dropped by the write timeout, so a graceful
    // shutdown finishes long before its 30 s grace period would run out.
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
    drop(conn);
}
