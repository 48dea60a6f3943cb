//! The Client against small in-test servers built with tokio and the
//! frame codec: pipelining, id checks, errors, and connections that die.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kv_client::kv_proto::{
    CheckpointResponse, DeleteResponse, ErrorCode, GetResponse, KeysResponse, PutResponse, Request,
    Response, ServerCodec, request, response,
};
use kv_client::{Client, ClientError, ClientOptions, KeysPage};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// Every test finishes well within this, or it has hung.
const DEADLINE: Duration = Duration::from_secs(20);

type Conn = Framed<TcpStream, ServerCodec>;

/// Starts a server that hands each accepted connection to `serve`; returns
/// its address and the number of connections accepted so far.
async fn fake_server<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(Framed::new(socket, ServerCodec::default())));
        }
    });
    (addr, accepted)
}

/// A correct little store: puts get seq = request id; get answers the key
/// reversed as the value, so each answer is tied to its request.
fn answer(request: &Request) -> Response {
    let result = match request.command.as_ref() {
        Some(request::Command::Put(_)) => response::Result::Put(PutResponse { seq: request.id }),
        Some(request::Command::Get(get)) if get.key.starts_with(b"missing") => {
            response::Result::Get(GetResponse {
                found: false,
                value: Bytes::new(),
                ..GetResponse::default()
            })
        }
        Some(request::Command::Get(get)) => {
            let mut value = get.key.to_vec();
            value.reverse();
            response::Result::Get(GetResponse {
                found: true,
                value: value.into(),
                ..GetResponse::default()
            })
        }
        Some(request::Command::Delete(delete)) => {
            let existed = !delete.key.starts_with(b"missing");
            response::Result::Delete(DeleteResponse {
                existed,
                seq: if existed { request.id } else { 0 },
            })
        }
        Some(request::Command::Keys(keys)) => response::Result::Keys(KeysResponse {
            keys: vec![
                keys.prefix.clone(),
                Bytes::from(vec![b'x'; keys.limit as usize]),
            ],
            truncated: keys.limit > 0,
        }),
        Some(request::Command::Checkpoint(_)) => {
            response::Result::Checkpoint(CheckpointResponse { seq: 99 })
        }
        // As a server without a token: any token is accepted.
        Some(request::Command::Auth(_)) => response::Result::Auth(Default::default()),
        Some(
            request::Command::ClusterStatus(_)
            | request::Command::ClusterAdd(_)
            | request::Command::ClusterRemove(_)
            | request::Command::Backup(_)
            | request::Command::Batch(_)
            | request::Command::Incr(_)
            | request::Command::Expire(_)
            | request::Command::Ttl(_)
            | request::Command::Scan(_)
            | request::Command::Mget(_)
            | request::Command::Stats(_),
        ) => {
            return Response::error(request.id, ErrorCode::InvalidRequest, "a single node");
        }
        None => {
            return Response::error(request.id, ErrorCode::InvalidRequest, "no command");
        }
    };
    Response::new(request.id, result)
}

/// Answers every request in order, as the real server does.
async fn serve_correctly(mut conn: Conn) {
    while let Some(Ok(Ok(request))) = conn.next().await {
        if conn.send(answer(&request)).await.is_err() {
            return;
        }
    }
}

/// Starts `n` concurrent puts of keys `k0`, `k1`, … on `client`.
fn spawn_puts(client: &Client, n: usize) -> Vec<tokio::task::JoinHandle<Result<u64, ClientError>>> {
    (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.put(format!("k{i}"), "v").await })
        })
        .collect()
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("the test hung")
}

#[tokio::test]
async fn typed_calls_map_each_result() {
    let (addr, _) = fake_server(serve_correctly).await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    within(async {
        assert_eq!(client.put("k", "v").await.unwrap(), 1);
        assert_eq!(
            client.get("abc").await.unwrap(),
            Some(Bytes::from_static(b"cba"))
        );
        assert_eq!(client.get("missing-1").await.unwrap(), None);
        assert_eq!(client.delete("k").await.unwrap(), Some(4));
        assert_eq!(client.delete("missing-2").await.unwrap(), None);
        assert_eq!(
            client.keys("p", 2).await.unwrap(),
            KeysPage {
                keys: vec![Bytes::from_static(b"p"), Bytes::from_static(b"xx")],
                truncated: true
            }
        );
        assert_eq!(client.checkpoint().await.unwrap(), 99);
    })
    .await;
}

/// Many tasks on one client: all requests go over one connection, and the
/// server only answers once it holds a whole batch of them, which it can
/// only do if the client writes requests without waiting for answers.
#[tokio::test]
async fn concurrent_calls_pipeline_on_one_connection() {
    const TASKS: usize = 50;
    const CALLS: usize = 40;
    const BATCH: usize = 25;
    let (addr, accepted) = fake_server(|mut conn: Conn| async move {
        let mut batch = Vec::new();
        let mut last_id = 0;
        while let Some(Ok(Ok(request))) = conn.next().await {
            // Ids increase in wire order.
            assert!(request.id > last_id, "id {} after {last_id}", request.id);
            last_id = request.id;
            batch.push(request);
            if batch.len() == BATCH {
                for request in batch.drain(..) {
                    conn.feed(answer(&request)).await.unwrap();
                }
                SinkExt::<Response>::flush(&mut conn).await.unwrap();
            }
        }
    })
    .await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    within(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let client = client.clone();
                tokio::spawn(async move {
                    for c in 0..CALLS {
                        let key = format!("task{t:03}-call{c:03}");
                        let value = client.get(key.clone()).await.unwrap().unwrap();
                        let expected: Vec<u8> = key.bytes().rev().collect();
                        assert_eq!(&value[..], &expected[..], "answer for {key}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropped_connection_fails_every_call_in_flight_and_later() {
    const CALLS: usize = 30;
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        // Read every request, answer none, then hang up.
        for _ in 0..CALLS {
            if !matches!(conn.next().await, Some(Ok(Ok(_)))) {
                return;
            }
        }
        drop(conn);
    })
    .await;
    let options = ClientOptions {
        request_timeout: None,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(addr.as_str(), options).await.unwrap();
    within(async {
        let calls = spawn_puts(&client, CALLS);
        for call in calls {
            let err = call.await.unwrap().unwrap_err();
            assert!(err.is_connection_lost(), "unexpected {err:?}");
        }
        assert!(client.is_closed());
        let err = client.get("after").await.unwrap_err();
        assert!(err.is_connection_lost(), "unexpected {err:?}");
    })
    .await;
}

#[tokio::test]
async fn mismatched_id_is_a_protocol_error_that_closes() {
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        while let Some(Ok(Ok(request))) = conn.next().await {
            let mut response = answer(&request);
            response.id += 1000;
            let _ = conn.send(response).await;
        }
    })
    .await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    let err = within(client.put("k", "v")).await.unwrap_err();
    match err {
        ClientError::Protocol(message) => assert!(message.contains("1001"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(client.is_closed());
}

#[tokio::test]
async fn wrong_result_kind_is_a_protocol_error_for_that_call_only() {
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        while let Some(Ok(Ok(request))) = conn.next().await {
            let response = match request.command {
                Some(request::Command::Get(_)) => Response::new(
                    request.id,
                    response::Result::Checkpoint(CheckpointResponse { seq: 1 }),
                ),
                _ => answer(&request),
            };
            let _ = conn.send(response).await;
        }
    })
    .await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    within(async {
        assert!(matches!(
            client.get("k").await,
            Err(ClientError::Protocol(_))
        ));
        assert_eq!(client.put("k", "v").await.unwrap(), 2);
    })
    .await;
}

#[tokio::test]
async fn server_error_reaches_the_caller_and_the_connection_goes_on() {
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        while let Some(Ok(Ok(request))) = conn.next().await {
            let response = match &request.command {
                Some(request::Command::Put(put)) if put.value.len() > 3 => {
                    Response::error(request.id, ErrorCode::TooLarge, "value too large")
                }
                _ => answer(&request),
            };
            let _ = conn.send(response).await;
        }
    })
    .await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    within(async {
        match client.put("k", "long value").await {
            Err(ClientError::Server {
                code,
                message,
                leader_addr: None,
            }) => {
                assert_eq!(code, ErrorCode::TooLarge);
                assert_eq!(message, "value too large");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(client.put("k", "v").await.unwrap(), 2);
        // The raw call hands back the result as it came.
        assert!(matches!(
            client
                .call(request::Command::Checkpoint(Default::default()))
                .await,
            Ok(response::Result::Checkpoint(_))
        ));
    })
    .await;
}

/// A frame-level refusal (id 0, as the server sends for an oversized or
/// undecodable frame) fails the calls in flight with the server's error.
#[tokio::test]
async fn connection_level_server_error_fails_calls_with_its_message() {
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        if let Some(Ok(Ok(_))) = conn.next().await {
            let _ = conn
                .send(Response::error(0, ErrorCode::TooLarge, "frame too large"))
                .await;
        }
    })
    .await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    match within(client.put("k", "v")).await {
        Err(ClientError::Server {
            code,
            message,
            leader_addr: None,
        }) => {
            assert_eq!(code, ErrorCode::TooLarge);
            assert_eq!(message, "frame too large");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(client.is_closed());
}

#[tokio::test]
async fn request_over_the_max_frame_is_refused_locally() {
    let (addr, _) = fake_server(serve_correctly).await;
    let options = ClientOptions {
        max_frame_size: 64,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(addr.as_str(), options).await.unwrap();
    within(async {
        match client.put("k", vec![0u8; 100]).await {
            Err(ClientError::RequestTooLarge { len, max: 64 }) => assert!(len > 100),
            other => panic!("unexpected {other:?}"),
        }
        // Nothing was sent, so the next request is id 1.
        assert_eq!(client.put("k", "v").await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn silent_server_times_out() {
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        // Read and never answer, keeping the connection open.
        while conn.next().await.is_some() {}
    })
    .await;
    let limit = Duration::from_millis(200);
    let options = ClientOptions {
        request_timeout: Some(limit),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(addr.as_str(), options).await.unwrap();
    assert!(matches!(
        within(client.get("k")).await,
        Err(ClientError::Timeout(d)) if d == limit
    ));
}

/// With room for 4 requests in flight, the server sees exactly 4 until it
/// answers; then the rest follow.
#[tokio::test]
async fn in_flight_requests_are_bounded() {
    const LIMIT: usize = 4;
    const CALLS: usize = 12;
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        let mut held = Vec::new();
        while held.len() < LIMIT {
            match conn.next().await {
                Some(Ok(Ok(request))) => held.push(request),
                _ => return,
            }
        }
        // Nothing more may arrive while these are unanswered. (A bounded
        // wait is the only way to observe that something does not happen.)
        let more = tokio::time::timeout(Duration::from_millis(300), conn.next()).await;
        assert!(more.is_err(), "a request beyond the limit arrived");
        for request in held.drain(..) {
            conn.send(answer(&request)).await.unwrap();
        }
        serve_correctly(conn).await;
    })
    .await;
    let options = ClientOptions {
        max_in_flight: LIMIT,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(addr.as_str(), options).await.unwrap();
    within(async {
        let calls = spawn_puts(&client, CALLS);
        for call in calls {
            call.await.unwrap().unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    // A port that was just free: bind, note it, release it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    match within(Client::connect(addr)).await {
        Err(ClientError::Connect {
            addr: Some(tried),
            source,
        }) => {
            assert_eq!(tried, addr);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn server_closing_between_calls_is_reported_as_closed() {
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        if let Some(Ok(Ok(request))) = conn.next().await {
            let _ = conn.send(answer(&request)).await;
        }
        // Then hang up.
    })
    .await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    within(async {
        assert_eq!(client.put("k", "v").await.unwrap(), 1);
        // Poll for the close to be noticed rather than sleeping a guess.
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(client.get("k").await, Err(ClientError::Closed)));
    })
    .await;
}

/// A follower's NOT_LEADER carries the leader's address, which the caller
/// gets as `leader_addr`; an empty one (leader unknown) is `None`.
#[tokio::test]
async fn not_leader_carries_the_leaders_address() {
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        while let Some(Ok(Ok(request))) = conn.next().await {
            let mut response = Response::error(request.id, ErrorCode::NotLeader, "not the leader");
            if let (Some(request::Command::Put(_)), Some(response::Result::Error(error))) =
                (&request.command, response.result.as_mut())
            {
                error.leader_addr = "10.0.0.1:7001".into();
            }
            let _ = conn.send(response).await;
        }
    })
    .await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    within(async {
        match client.put("k", "v").await {
            Err(ClientError::Server {
                code: ErrorCode::NotLeader,
                leader_addr,
                ..
            }) => assert_eq!(leader_addr.as_deref(), Some("10.0.0.1:7001")),
            other => panic!("unexpected {other:?}"),
        }
        match client.get("k").await {
            Err(ClientError::Server {
                code: ErrorCode::NotLeader,
                leader_addr,
                ..
            }) => assert_eq!(leader_addr, None),
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
}

/// Serves a backup in pieces of 1000 bytes: the snapshot of seq 7 (3000
/// bytes of `a`) until its second piece has been sent, then, as if a
/// checkpoint replaced it, the snapshot of seq 9 (2500 bytes of `b`).
async fn serve_backup(mut conn: Conn) {
    let mut pieces = 0;
    while let Some(Ok(Ok(request))) = conn.next().await {
        let Some(request::Command::Backup(b)) = request.command else {
            return;
        };
        let (seq, file) = if pieces < 2 {
            (7, vec![b'a'; 3000])
        } else {
            (9, vec![b'b'; 2500])
        };
        pieces += 1;
        let offset = if b.start || b.seq != seq { 0 } else { b.offset };
        let end = (offset as usize + 1000).min(file.len());
        let piece = kv_client::kv_proto::BackupResponse {
            seq,
            offset,
            total_size: file.len() as u64,
            data: Bytes::copy_from_slice(&file[offset as usize..end]),
        };
        let reply = Response::new(request.id, response::Result::Backup(piece));
        if conn.send(reply).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_backup_starts_over_when_the_snapshot_is_replaced_and_ends_whole() {
    let (addr, _) = fake_server(serve_backup).await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.snap");
    let info = client.backup(&path).await.unwrap();
    assert_eq!(
        info,
        kv_client::BackupInfo {
            seq: 9,
            bytes: 2500,
            restarts: 1
        }
    );
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'b'; 2500]);
    assert!(!dir.path().join("b.snap.partial").exists());
}

#[tokio::test]
async fn a_backup_answer_at_the_wrong_offset_fails_and_leaves_no_file() {
    let (addr, _) = fake_server(|mut conn: Conn| async move {
        while let Some(Ok(Ok(request))) = conn.next().await {
            let piece = kv_client::kv_proto::BackupResponse {
                seq: 1,
                offset: 500,
                total_size: 1000,
                data: Bytes::from_static(b"x"),
            };
            let reply = Response::new(request.id, response::Result::Backup(piece));
            if conn.send(reply).await.is_err() {
                return;
            }
        }
    })
    .await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.snap");
    let err = client.backup(&path).await.unwrap_err();
    assert!(err.to_string().contains("offset 500"), "{err}");
    assert!(!path.exists());
    assert!(
        !dir.path().join("b.snap.partial").exists(),
        "the partial copy is left behind"
    );
}

/// Answers the store-feature requests with fixed results that depend on
/// the request, so that each typed call's mapping shows.
async fn serve_features(mut conn: Conn) {
    use kv_client::kv_proto::{
        BatchResponse, ExpireResponse, IncrResponse, MgetResponse, ScanItem, ScanResponse,
        StatsResponse, TtlResponse,
    };
    while let Some(Ok(Ok(request))) = conn.next().await {
        let result = match request.command.clone() {
            Some(request::Command::Put(put)) if put.condition.is_some() => {
                response::Result::Error(kv_client::kv_proto::Error {
                    code: ErrorCode::ConditionFailed as i32,
                    message: "condition failed".into(),
                    key: put.key,
                    current_seq: put.ttl_ms,
                    current_exists: put.ttl_ms != 0,
                    ..Default::default()
                })
            }
            Some(request::Command::Get(_)) => response::Result::Get(GetResponse {
                found: true,
                value: Bytes::from_static(b"v"),
                seq: 7,
                expires_at_ms: 99,
            }),
            Some(request::Command::Batch(batch)) => response::Result::Batch(BatchResponse {
                seq: (batch.writes.len() * 10 + batch.conditions.len()) as u64,
            }),
            Some(request::Command::Incr(incr)) => response::Result::Incr(IncrResponse {
                value: incr.delta * 2,
                seq: 3,
            }),
            Some(request::Command::Expire(expire)) => response::Result::Expire(ExpireResponse {
                found: !expire.key.starts_with(b"missing"),
                changed: !expire.persist,
                seq: 5,
            }),
            Some(request::Command::Ttl(_)) => response::Result::Ttl(TtlResponse {
                found: true,
                has_deadline: true,
                remaining_ms: 1500,
                expires_at_ms: 2000,
            }),
            // Pages of one key each: "a", "b", "c".
            Some(request::Command::Scan(scan)) => {
                let next = match &scan.after[..] {
                    b"" => b'a',
                    [last] => last + 1,
                    _ => b'z',
                };
                response::Result::Scan(ScanResponse {
                    items: vec![ScanItem {
                        key: Bytes::from(vec![next]),
                        value: Bytes::from_static(b"val"),
                        seq: u64::from(next),
                    }],
                    more: next < b'c',
                    resume_after: if next < b'c' {
                        Bytes::from(vec![next])
                    } else {
                        Bytes::new()
                    },
                })
            }
            // One value fewer than asked for when asked for three.
            Some(request::Command::Mget(mget)) => response::Result::Mget(MgetResponse {
                values: mget
                    .keys
                    .iter()
                    .take(if mget.keys.len() == 3 { 2 } else { usize::MAX })
                    .map(|key| GetResponse {
                        found: key.as_ref() != b"missing",
                        value: key.clone(),
                        seq: 1,
                        expires_at_ms: 0,
                    })
                    .collect(),
            }),
            Some(request::Command::Stats(_)) => response::Result::Stats(StatsResponse {
                keys: 4,
                uptime_ms: 2500,
                ..Default::default()
            }),
            _ => {
                let response = Response::error(request.id, ErrorCode::InvalidRequest, "no");
                if conn.send(response).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if conn.send(Response::new(request.id, result)).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn feature_calls_map_each_result() {
    use kv_client::{
        Condition, Counter, DeadlineChange, KeyCondition, PutOptions, ScanOptions, Stats, Ttl,
        Versioned, Write,
    };
    let (addr, _) = fake_server(serve_features).await;
    let client = Client::connect(addr.as_str()).await.unwrap();
    within(async {
        assert_eq!(
            client.get_versioned("k").await.unwrap(),
            Some(Versioned {
                value: Bytes::from_static(b"v"),
                seq: 7,
                expires_at_ms: Some(99)
            })
        );
        // The fake reports ttl_ms as the current version: 0 = missing.
        let refused = |ttl_ms: u64| PutOptions {
            condition: Some(Condition::Absent),
            ttl: Some(Duration::from_millis(ttl_ms)),
            ..PutOptions::default()
        };
        match client.put_with("k", "v", refused(12)).await {
            Err(ClientError::ConditionFailed { key, current, .. }) => {
                assert_eq!((&key[..], current), (&b"k"[..], Some(12)));
            }
            other => panic!("unexpected {other:?}"),
        }
        match client.put_with("k", "v", refused(0)).await {
            Err(ClientError::ConditionFailed { current: None, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let seq = client
            .batch(
                [
                    Write::put("a", "1"),
                    Write::delete("b"),
                    Write::incr("c", 1),
                ],
                [KeyCondition::new("a", Condition::SeqEquals(1))],
            )
            .await
            .unwrap();
        assert_eq!(seq, 31);
        assert_eq!(
            client.incr("n", -4).await.unwrap(),
            Counter { value: -8, seq: 3 }
        );
        assert_eq!(
            client.expire("k", Duration::from_secs(1)).await.unwrap(),
            Some(DeadlineChange { seq: Some(5) })
        );
        assert_eq!(client.expire_at("missing", 10).await.unwrap(), None);
        assert_eq!(
            client.persist("k").await.unwrap(),
            Some(DeadlineChange { seq: None })
        );
        assert_eq!(
            client.ttl("k").await.unwrap(),
            Some(Ttl::Expires {
                remaining: Duration::from_millis(1500),
                expires_at_ms: 2000
            })
        );
        // One page, then all of them.
        let page = client.scan(&ScanOptions::default()).await.unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].value, None, "values were not asked for");
        assert!(page.more);
        assert_eq!(page.resume_after.as_deref(), Some(&b"a"[..]));
        let all = client
            .scan_all(ScanOptions {
                values: true,
                ..ScanOptions::prefix("")
            })
            .await
            .unwrap();
        let keys: Vec<&[u8]> = all.iter().map(|item| &item.key[..]).collect();
        assert_eq!(keys, [b"a", b"b", b"c"]);
        assert_eq!(all[2].value.as_deref(), Some(&b"val"[..]));
        let got = client.mget(["x", "missing"]).await.unwrap();
        assert_eq!(got[0].as_ref().map(|v| &v.value[..]), Some(&b"x"[..]));
        assert_eq!(got[1], None);
        // An answer that does not match the question is a protocol error.
        match client.mget(["a", "b", "c"]).await {
            Err(ClientError::Protocol(message)) => assert!(message.contains("3 keys")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            client.stats().await.unwrap(),
            Stats {
                keys: 4,
                uptime: Duration::from_millis(2500),
                ..Stats::default()
            }
        );
    })
    .await;
}
