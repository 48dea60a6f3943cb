//! `kv_server::run` in-process on 127.0.0.1:0: the request/response mapping,
//! graceful shutdown, and fail-stop when the log's sync fails (on wal-core's
//! simulated file system, which can make fdatasync fail on demand).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kv_proto::{
    BatchRequest, CheckpointRequest, ClientCodec, Condition, ConditionKind, DeleteRequest,
    ErrorCode, ExpireRequest, GetRequest, IncrRequest, KeysRequest, MgetRequest, Mutation,
    MutationKind, PutRequest, Request, Response, ScanRequest, StatsRequest, TtlRequest,
    request::Command, response,
};
use kv_server::{ServerConfig, run};
use kv_store::{KeyValueStore, StoreOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use wal_core::sim::{Op, SimFs};

const DEADLINE: Duration = Duration::from_secs(20);

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), kv_server::Error>>,
}

async fn serve(store: KeyValueStore) -> Running {
    serve_with(store, ServerConfig::default()).await
}

async fn serve_with(store: KeyValueStore, config: ServerConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(listener, store, config, shutdown.clone()));
    Running {
        addr,
        shutdown,
        task,
    }
}

type Conn = Framed<TcpStream, ClientCodec>;

async fn connect(addr: SocketAddr) -> Conn {
    Framed::new(
        TcpStream::connect(addr).await.unwrap(),
        ClientCodec::default(),
    )
}

async fn call(conn: &mut Conn, id: u64, command: Command) -> response::Result {
    conn.send(Request::new(id, command)).await.unwrap();
    let response: Response = tokio::time::timeout(DEADLINE, conn.next())
        .await
        .expect("an answer in time")
        .expect("connection open")
        .unwrap()
        .unwrap();
    assert_eq!(response.id, id);
    response.result.expect("a result")
}

fn put(key: &'static str, value: &'static str) -> Command {
    Command::Put(PutRequest {
        key: Bytes::from_static(key.as_bytes()),
        value: Bytes::from_static(value.as_bytes()),
        ..Default::default()
    })
}

fn get(key: &'static str) -> Command {
    Command::Get(GetRequest {
        key: Bytes::from_static(key.as_bytes()),
    })
}

fn error_code(result: &response::Result) -> ErrorCode {
    match result {
        response::Result::Error(err) => ErrorCode::try_from(err.code).unwrap(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_maps_to_its_response() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
    let server = serve(store).await;
    let mut conn = connect(server.addr).await;

    let response::Result::Put(first) = call(&mut conn, 1, put("a", "1")).await else {
        panic!("put")
    };
    let response::Result::Put(second) = call(&mut conn, 2, put("ab", "2")).await else {
        panic!("put")
    };
    assert!(second.seq > first.seq);
    assert_eq!(
        call(&mut conn, 3, get("a")).await,
        response::Result::Get(kv_proto::GetResponse {
            found: true,
            value: Bytes::from_static(b"1"),
            seq: first.seq,
            expires_at_ms: 0,
        })
    );
    let keys = call(
        &mut conn,
        4,
        Command::Keys(KeysRequest {
            prefix: Bytes::from_static(b"a"),
            limit: 1,
        }),
    )
    .await;
    assert_eq!(
        keys,
        response::Result::Keys(kv_proto::KeysResponse {
            keys: vec![Bytes::from_static(b"a")],
            truncated: true
        })
    );
    let delete = |key: &'static str| {
        Command::Delete(DeleteRequest {
            key: Bytes::from_static(key.as_bytes()),
            ..Default::default()
        })
    };
    let response::Result::Delete(deleted) = call(&mut conn, 5, delete("a")).await else {
        panic!("delete")
    };
    assert!(deleted.existed && deleted.seq > second.seq);
    let response::Result::Delete(missing) = call(&mut conn, 6, delete("a")).await else {
        panic!("delete")
    };
    assert!(!missing.existed);
    assert_eq!(missing.seq, 0, "deleting a missing key writes nothing");
    let response::Result::Checkpoint(checkpoint) =
        call(&mut conn, 7, Command::Checkpoint(CheckpointRequest {})).await
    else {
        panic!("checkpoint")
    };
    assert_eq!(checkpoint.seq, deleted.seq);
    assert_eq!(
        error_code(&call(&mut conn, 8, put("", "empty key")).await),
        ErrorCode::InvalidRequest
    );

    server.shutdown.cancel();
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn condition(kind: ConditionKind, seq: u64, value: &str) -> Option<Condition> {
    Some(Condition {
        kind: kind as i32,
        seq,
        value: b(value),
        key: Bytes::new(),
    })
}

fn mutation(kind: MutationKind, key: &str, value: &str) -> Mutation {
    Mutation {
        kind: kind as i32,
        key: b(key),
        value: b(value),
        ..Default::default()
    }
}

/// The store features through the wire: conditional puts and deletes
/// (CONDITION_FAILED with the current version), batches with conditions,
/// counters, expiry, scans, multi-get and stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_features_map_to_their_responses() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
    let server = serve(store).await;
    let mut conn = connect(server.addr).await;
    let mut id = 0;
    let mut ask = async |command: Command| {
        id += 1;
        call(&mut conn, id, command).await
    };

    // Conditional puts.
    let put_if = |key: &str, value: &str, c: Option<Condition>| {
        Command::Put(PutRequest {
            key: b(key),
            value: b(value),
            condition: c,
            ..Default::default()
        })
    };
    let response::Result::Put(created) =
        ask(put_if("k", "v1", condition(ConditionKind::Absent, 0, ""))).await
    else {
        panic!("put if absent")
    };
    let refused = ask(put_if("k", "v2", condition(ConditionKind::Absent, 0, ""))).await;
    let response::Result::Error(err) = &refused else {
        panic!("expected CONDITION_FAILED, got {refused:?}")
    };
    assert_eq!(err.code, ErrorCode::ConditionFailed as i32);
    assert_eq!(
        (&err.key[..], err.current_seq, err.current_exists),
        (&b"k"[..], created.seq, true)
    );
    let stale = ask(put_if(
        "k",
        "v2",
        condition(ConditionKind::SeqEquals, created.seq + 100, ""),
    ))
    .await;
    assert_eq!(error_code(&stale), ErrorCode::ConditionFailed);
    let response::Result::Put(swapped) = ask(put_if(
        "k",
        "v2",
        condition(ConditionKind::ValueEquals, 0, "v1"),
    ))
    .await
    else {
        panic!("compare-and-swap")
    };
    assert!(swapped.seq > created.seq);
    // A conditional delete that fails leaves the key.
    let del = ask(Command::Delete(DeleteRequest {
        key: b("k"),
        condition: condition(ConditionKind::SeqEquals, created.seq, ""),
    }))
    .await;
    assert_eq!(error_code(&del), ErrorCode::ConditionFailed);

    // A batch: all or none, at one seq.
    let batch = |conditions: Vec<Condition>| {
        Command::Batch(BatchRequest {
            writes: vec![
                mutation(MutationKind::MutationPut, "x", "1"),
                mutation(MutationKind::MutationPut, "y", "2"),
                mutation(MutationKind::MutationDelete, "k", ""),
            ],
            conditions,
        })
    };
    let failed = ask(batch(vec![Condition {
        key: b("k"),
        ..condition(ConditionKind::Absent, 0, "").unwrap()
    }]))
    .await;
    assert_eq!(error_code(&failed), ErrorCode::ConditionFailed);
    let response::Result::Mget(before) = ask(Command::Mget(MgetRequest {
        keys: vec![b("x"), b("y"), b("k")],
    }))
    .await
    else {
        panic!("mget")
    };
    let found: Vec<bool> = before.values.iter().map(|v| v.found).collect();
    assert_eq!(found, [false, false, true], "a failed batch writes nothing");
    let response::Result::Batch(applied) = ask(batch(vec![Condition {
        key: b("k"),
        ..condition(ConditionKind::SeqEquals, swapped.seq, "").unwrap()
    }]))
    .await
    else {
        panic!("batch")
    };
    let response::Result::Mget(after) = ask(Command::Mget(MgetRequest {
        keys: vec![b("x"), b("y"), b("k")],
    }))
    .await
    else {
        panic!("mget")
    };
    let got: Vec<(bool, &[u8], u64)> = after
        .values
        .iter()
        .map(|v| (v.found, &v.value[..], v.seq))
        .collect();
    assert_eq!(
        got,
        [
            (true, &b"1"[..], applied.seq),
            (true, &b"2"[..], applied.seq),
            (false, &b""[..], 0)
        ]
    );
    let empty = ask(Command::Batch(BatchRequest::default())).await;
    assert_eq!(error_code(&empty), ErrorCode::InvalidRequest);

    // Counters.
    let incr = |key: &str, delta: i64| Command::Incr(IncrRequest { key: b(key), delta });
    let response::Result::Incr(one) = ask(incr("n", 5)).await else {
        panic!("incr")
    };
    let response::Result::Incr(two) = ask(incr("n", -7)).await else {
        panic!("incr")
    };
    assert_eq!((one.value, two.value), (5, -2));
    assert!(two.seq > one.seq);
    // "x" holds 1: adding i64::MAX overflows.
    assert_eq!(
        error_code(&ask(incr("x", i64::MAX)).await),
        ErrorCode::InvalidRequest
    );
    ask(put("s", "abc")).await;
    assert_eq!(
        error_code(&ask(incr("s", 1)).await),
        ErrorCode::InvalidRequest
    );

    // Expiry: a put with a time to live, its remaining time, persist.
    let response::Result::Put(_) = ask(Command::Put(PutRequest {
        key: b("t"),
        value: b("v"),
        ttl_ms: 60_000,
        ..Default::default()
    }))
    .await
    else {
        panic!("put with ttl")
    };
    let response::Result::Ttl(ttl) = ask(Command::Ttl(TtlRequest { key: b("t") })).await else {
        panic!("ttl")
    };
    assert!(ttl.found && ttl.has_deadline);
    assert!(
        ttl.remaining_ms > 0 && ttl.remaining_ms <= 60_000,
        "{ttl:?}"
    );
    let expire = |key: &str, ttl_ms: u64, expires_at_ms: u64, persist: bool| {
        Command::Expire(ExpireRequest {
            key: b(key),
            ttl_ms,
            expires_at_ms,
            persist,
        })
    };
    let response::Result::Expire(persisted) = ask(expire("t", 0, 0, true)).await else {
        panic!("persist")
    };
    assert!(persisted.found && persisted.changed);
    let response::Result::Ttl(ttl) = ask(Command::Ttl(TtlRequest { key: b("t") })).await else {
        panic!("ttl")
    };
    assert!(ttl.found && !ttl.has_deadline);
    let response::Result::Expire(missing) = ask(expire("nope", 1_000, 0, false)).await else {
        panic!("expire")
    };
    assert!(!missing.found && !missing.changed);
    // Zero, and past the year 9999, are refused as Redis refuses them.
    let zero = ask(expire("t", 0, 0, false)).await;
    assert_eq!(error_code(&zero), ErrorCode::InvalidRequest);
    let far = ask(expire("t", 0, kv_store::MAX_DEADLINE_MS + 1, false)).await;
    assert_eq!(error_code(&far), ErrorCode::InvalidRequest);
    // A deadline already past: the key is gone at once.
    let response::Result::Expire(gone) = ask(expire("t", 0, 1, false)).await else {
        panic!("expire in the past")
    };
    assert!(gone.found && gone.changed);
    let response::Result::Get(t) = ask(get("t")).await else {
        panic!("get")
    };
    assert!(!t.found);

    // Scans: a prefix, pages of one, both directions.
    for key in ["p1", "p2", "p3"] {
        ask(put(key, "pv")).await;
    }
    for reverse in [false, true] {
        let mut seen = Vec::new();
        let mut after = Bytes::new();
        loop {
            let response::Result::Scan(page) = ask(Command::Scan(ScanRequest {
                prefix: b("p"),
                limit: 1,
                values: true,
                reverse,
                after: after.clone(),
                ..Default::default()
            }))
            .await
            else {
                panic!("scan")
            };
            assert!(page.items.len() <= 1);
            seen.extend(page.items.iter().map(|i| (i.key.clone(), i.value.clone())));
            if !page.more {
                break;
            }
            after = page.resume_after;
        }
        let mut want: Vec<(Bytes, Bytes)> =
            ["p1", "p2", "p3"].iter().map(|k| (b(k), b("pv"))).collect();
        if reverse {
            want.reverse();
        }
        assert_eq!(seen, want);
    }
    let both = ask(Command::Scan(ScanRequest {
        prefix: b("p"),
        start: b("a"),
        ..Default::default()
    }))
    .await;
    assert_eq!(error_code(&both), ErrorCode::InvalidRequest);

    let response::Result::Stats(stats) = ask(Command::Stats(StatsRequest {})).await else {
        panic!("stats")
    };
    // k deleted, t expired: x y n s p1 p2 p3.
    assert_eq!(stats.keys, 7);
    assert!(stats.last_seq >= applied.seq && stats.durable_seq == stats.last_seq);
    assert!(stats.wal_bytes > 0 && stats.wal_segments >= 1);

    server.shutdown.cancel();
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_and_closes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
    let server = serve(store.clone()).await;
    let mut idle = connect(server.addr).await;
    call(&mut idle, 1, put("k", "v")).await;

    server.shutdown.cancel();
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("run returns despite an idle client")
        .unwrap()
        .unwrap();
    // The idle connection was closed, not left hanging.
    let end = tokio::time::timeout(DEADLINE, idle.next()).await.unwrap();
    assert!(end.is_none() || end.is_some_and(|r| r.is_err()));
    // The store was closed: it takes no more writes.
    assert!(store.put(b"late", b"v").is_err());
    drop(store);

    // And what was acknowledged is there on reopen.
    let reopened = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(reopened.get(b"k"), Some(b"v".to_vec()));
}

fn error_message(result: &response::Result) -> &str {
    match result {
        response::Result::Error(err) => &err.message,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A failed fdatasync: the write that needed it gets OUTCOME_UNKNOWN (it
/// may be on disk or not), later writes UNAVAILABLE, reads go on; and the
/// shutdown that follows is not reported as clean (the binary exits 1 on
/// this error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sync_gets_outcome_unknown_then_unavailable_and_an_unclean_shutdown() {
    let fs = SimFs::new();
    let store =
        KeyValueStore::open_with_vfs("/sim/data", StoreOptions::default(), fs.shared()).unwrap();
    let server = serve(store).await;
    let mut conn = connect(server.addr).await;
    call(&mut conn, 1, put("before", "ok")).await;

    fs.fail_nth(Op::SyncData, 0, ErrorKind::Other);
    let failed = call(&mut conn, 2, put("doomed", "x")).await;
    assert_eq!(error_code(&failed), ErrorCode::OutcomeUnknown, "{failed:?}");
    // Later writes are refused outright, even though syncs would work now.
    fs.clear_faults();
    assert_eq!(
        error_code(&call(&mut conn, 3, put("after", "x")).await),
        ErrorCode::Unavailable
    );
    // Reads still answer, with only what was acknowledged.
    assert!(matches!(
        call(&mut conn, 4, get("before")).await,
        response::Result::Get(ref g) if g.found
    ));
    assert!(matches!(
        call(&mut conn, 5, get("doomed")).await,
        response::Result::Get(ref g) if !g.found
    ));
    // A new connection is served the same way.
    let mut other = connect(server.addr).await;
    assert_eq!(
        error_code(&call(&mut other, 1, put("other", "x")).await),
        ErrorCode::Unavailable
    );

    server.shutdown.cancel();
    let ended = tokio::time::timeout(DEADLINE, server.task)
        .await
        .unwrap()
        .unwrap();
    match ended {
        Err(err @ kv_server::Error::LogFailed(_)) => {
            let line = err.to_string();
            assert!(line.contains("page cache"), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
        other => panic!("a shutdown after a failed log must not be clean: {other:?}"),
    }
}

/// A full disk fails the writes that hit it with UNAVAILABLE saying so,
/// without stopping anything: once space is freed the same server takes
/// writes again and shuts down cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_gets_unavailable_and_writes_resume_once_space_is_freed() {
    let fs = SimFs::new();
    let mut options = StoreOptions::default();
    options.wal.segment_size = 4096;
    let store = KeyValueStore::open_with_vfs("/sim/data", options, fs.shared()).unwrap();
    let server = serve(store).await;
    let mut conn = connect(server.addr).await;

    // The active segment is reserved; the next one cannot be.
    fs.set_space_budget(Some(0));
    let value = Bytes::from(vec![b'v'; 1000]);
    let mut id = 0;
    let refused = loop {
        id += 1;
        assert!(id < 100, "the disk never filled");
        let command = Command::Put(PutRequest {
            key: Bytes::from(format!("k{id}")),
            value: value.clone(),
            ..Default::default()
        });
        match call(&mut conn, id, command).await {
            response::Result::Put(_) => {}
            other => break other,
        }
    };
    assert_eq!(error_code(&refused), ErrorCode::Unavailable, "{refused:?}");
    assert!(
        error_message(&refused).contains("disk is full"),
        "{refused:?}"
    );
    // Reads go on while the disk is full.
    assert!(matches!(
        call(&mut conn, 1000, Command::Get(GetRequest { key: Bytes::from("k1") })).await,
        response::Result::Get(ref g) if g.found
    ));

    fs.set_space_budget(None);
    assert!(matches!(
        call(&mut conn, 1001, put("after", "space")).await,
        response::Result::Put(_)
    ));
    server.shutdown.cancel();
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .unwrap()
        .unwrap()
        .expect("a clean shutdown: a full disk is not a failure of the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_listing_larger_than_a_frame_is_cut_short_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
    let keys: Vec<Vec<u8>> = (0..500)
        .map(|i| format!("user:{i:015}").into_bytes())
        .collect();
    let loading = store.clone();
    let to_load = keys.clone();
    tokio::task::spawn_blocking(move || {
        for key in to_load.iter().map(Vec::as_slice).chain([&b"other"[..]]) {
            loading.put(key, b"v").unwrap();
        }
    })
    .await
    .unwrap();
    let max_frame = 2048;
    let server = serve_with(
        store,
        ServerConfig {
            max_frame,
            ..ServerConfig::default()
        },
    )
    .await;
    let mut conn = connect(server.addr).await;
    let list = |prefix: &'static str, limit: u32| {
        Command::Keys(KeysRequest {
            prefix: Bytes::from_static(prefix.as_bytes()),
            limit,
        })
    };
    let mut id = 0;
    let mut call_keys = async |prefix, limit| {
        id += 1;
        match call(&mut conn, id, list(prefix, limit)).await {
            response::Result::Keys(page) => page,
            other => panic!("keys {prefix:?} {limit}: {other:?}"),
        }
    };
    // 500 keys of 20 bytes do not fit in 2 KiB: as many as fit, in order,
    // and `truncated`, instead of TOO_LARGE.
    let page = call_keys("user:", 0).await;
    assert!(page.truncated);
    assert!(
        page.keys.len() > 10 && page.keys.len() < 100,
        "{}",
        page.keys.len()
    );
    let listed: u64 = page.keys.iter().map(|k| k.len() as u64 + 8).sum();
    assert!(listed <= max_frame as u64);
    for (got, want) in page.keys.iter().zip(&keys) {
        assert_eq!(&got[..], &want[..]);
    }
    // A limit below what fits is the limit; a listing that fits is whole.
    let page = call_keys("user:", 7).await;
    assert_eq!((page.keys.len(), page.truncated), (7, true));
    let page = call_keys("user:00000000000004", 0).await;
    assert_eq!((page.keys.len(), page.truncated), (10, false));
    assert!(
        page.keys
            .iter()
            .zip(&keys[40..50])
            .all(|(a, b)| a[..] == b[..])
    );
    let page = call_keys("user:0000000000004", 0).await;
    assert!(page.truncated, "100 keys of 20 bytes do not fit either");
    assert!(
        page.keys
            .iter()
            .zip(&keys[400..])
            .all(|(a, b)| a[..] == b[..])
    );
    let page = call_keys("other", 0).await;
    assert_eq!(
        (page.keys, page.truncated),
        (vec![Bytes::from_static(b"other")], false)
    );
    server.shutdown.cancel();
    server.task.await.unwrap().unwrap();
}

/// While the store opens (recovers), the bound listener answers every
/// client UNAVAILABLE and closes, instead of leaving it in the accept queue;
/// once it is open, the same listener serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_unavailable_until_the_store_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (open, opened) = tokio::sync::oneshot::channel::<KeyValueStore>();
    let (ready, is_ready) = tokio::sync::oneshot::channel();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        // Stands in for a long recovery: done when the test says so.
        let store = kv_server::refuse_until_ready(&listener, None, opened)
            .await
            .unwrap();
        let _ = ready.send(());
        run(listener, store, ServerConfig::default(), token).await
    });

    for id in 1..=2 {
        let mut conn = connect(addr).await;
        conn.send(Request::new(id, get("k"))).await.unwrap();
        let refusal: Response = tokio::time::timeout(DEADLINE, conn.next())
            .await
            .expect("an answer in time, not a hang")
            .expect("a refusal before the close")
            .unwrap()
            .unwrap();
        assert_eq!(refusal.id, 0);
        let result = refusal.result.expect("a result");
        assert_eq!(error_code(&result), ErrorCode::Unavailable);
        assert!(error_message(&result).contains("starting"), "{result:?}");
        let end = tokio::time::timeout(DEADLINE, conn.next()).await.unwrap();
        assert!(end.is_none() || end.is_some_and(|r| r.is_err()), "closed");
    }

    let store = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
    open.send(store).unwrap();
    is_ready.await.unwrap();
    let mut conn = connect(addr).await;
    assert!(matches!(
        call(&mut conn, 1, put("k", "v")).await,
        response::Result::Put(_)
    ));
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
