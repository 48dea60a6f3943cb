//! The Redis listener of the real binary: kill -9 while 8 clients SET
//! distinct keys through RESP, then every acknowledged SET is readable
//! after a restart; kill -9 while clients run MULTI/EXEC transactions, then
//! none is half applied; `redis-cli` against it when it is installed; and
//! a three-member cluster serving Redis on its leader, whose followers
//! name it and whose acknowledged SETs survive its kill -9.
//!
//! The e2e crate has no Redis client library, so the clients speak RESP
//! over a raw socket (the few replies they need: `+`, `-`, `:`, `$`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::{ServerProcess, free_addrs, run_to_exit, wait_until};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CLIENTS: u32 = 8;
/// How long the load runs before the kill.
const LOAD: Duration = Duration::from_secs(3);
/// Most SETs one client sends (a bound if the server is very fast).
const MAX_SETS_PER_CLIENT: u32 = 200_000;
const DEADLINE: Duration = Duration::from_secs(30);
/// GETs pipelined per batch when verifying.
const VERIFY_BATCH: usize = 1000;

/// A RESP reply, as far as these tests need.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
}

/// A command as a RESP array of bulk strings.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// Reads one reply; an error when the connection ends first.
async fn read_reply(reader: &mut BufReader<TcpStream>) -> std::io::Result<Reply> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    if !line.ends_with(b"\r\n") {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    match line[0] {
        b'+' => Ok(Reply::Simple(text)),
        b'-' => Ok(Reply::Error(text)),
        b':' => text
            .parse()
            .map(Reply::Integer)
            .map_err(|_| invalid(format!("bad integer reply {text:?}"))),
        b'$' => {
            let len: i64 = text
                .parse()
                .map_err(|_| invalid(format!("bad bulk length {text:?}")))?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Reply::Bulk(None));
            };
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).await?;
            body.truncate(len);
            Ok(Reply::Bulk(Some(body)))
        }
        other => Err(invalid(format!(
            "unexpected reply type {:?}",
            other as char
        ))),
    }
}

/// Connects, retrying until the listener accepts (it may still be
/// starting) or `DEADLINE` passes.
async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let until = Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => return BufReader::new(stream),
            Err(e) => {
                assert!(
                    Instant::now() < until,
                    "the Redis listener on {addr} did not accept within {DEADLINE:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Sends one command and reads its reply, within `DEADLINE`.
async fn call(conn: &mut BufReader<TcpStream>, args: &[&[u8]]) -> std::io::Result<Reply> {
    let request = command(args);
    tokio::time::timeout(DEADLINE, async {
        conn.get_mut().write_all(&request).await?;
        read_reply(conn).await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// One client's SETs until the server is gone (or `stop`): the key and
/// value of each one acknowledged with `+OK`.
async fn set_until_killed(
    addr: SocketAddr,
    client: u32,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) -> Vec<(String, String)> {
    let mut conn = connect(addr).await;
    let mut acked = Vec::new();
    for i in 0..MAX_SETS_PER_CLIENT {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("c{client}-k{i}");
        let value = format!("value of {key} {}", "x".repeat((i % 64) as usize));
        match call(&mut conn, &[b"SET", key.as_bytes(), value.as_bytes()]).await {
            Ok(Reply::Simple(ok)) if ok == "OK" => {
                acked.push((key, value));
                acks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => panic!("SET {key}: unexpected reply {other:?}"),
            // The server was killed: this SET may or may not have landed.
            Err(_) => break,
        }
    }
    acked
}

/// The SETs the clients saw acknowledged (at least 100 of them).
fn acknowledged(per_client: Vec<Vec<(String, String)>>) -> Vec<(String, String)> {
    let acked: Vec<_> = per_client.into_iter().flatten().collect();
    assert!(acked.len() >= 100, "only {} SETs acknowledged", acked.len());
    acked
}

/// Reads every acknowledged key back from `addr`, pipelined; `lost` says
/// what a missing one means.
async fn assert_all_readable(
    addr: SocketAddr,
    acked: &[(String, String)],
    lost: impl Fn() -> String,
) {
    let mut conn = connect(addr).await;
    for batch in acked.chunks(VERIFY_BATCH) {
        let mut requests = Vec::new();
        for (key, _) in batch {
            requests.extend(command(&[b"GET", key.as_bytes()]));
        }
        conn.get_mut().write_all(&requests).await.unwrap();
        for (key, value) in batch {
            let reply = tokio::time::timeout(DEADLINE, read_reply(&mut conn))
                .await
                .expect("GET answered in time")
                .expect("GET answered");
            assert_eq!(
                reply,
                Reply::Bulk(Some(value.clone().into_bytes())),
                "acknowledged SET {key} {}",
                lost()
            );
        }
    }
}

/// Runs `CLIENTS` copies of `client` against the Redis listener at `addr`
/// until `what` has been acknowledged 100 times and then for `load` more,
/// calls `kill` (a `kill -9`) while they still write, and returns each
/// client's result, in client order.
async fn load_then_kill<T, Fut>(
    addr: SocketAddr,
    what: &str,
    load: Duration,
    client: impl Fn(SocketAddr, u32, Arc<AtomicBool>, Arc<AtomicU64>) -> Fut,
    kill: impl FnOnce(),
) -> Vec<T>
where
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(addr, c, Arc::clone(&stop), Arc::clone(&acks))))
        .collect();
    wait_until(&format!("the first acknowledged {what}"), DEADLINE, || {
        acks.load(Ordering::Relaxed) >= 100
    })
    .await;
    // The load's duration, then the crash, with the clients still writing.
    tokio::time::sleep(load).await;
    kill();
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("client task"));
    }
    results
}

/// A server with a Redis listener in `dir`, and that listener's address.
fn start_with_redis(dir: &Path) -> (ServerProcess, SocketAddr) {
    let redis_addr = free_addrs(1).remove(0);
    let server = ServerProcess::start(dir, &["--redis-addr", &redis_addr]);
    (server, redis_addr.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_acknowledged_redis_set() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_with_redis(dir.path());
    let sets = load_then_kill(addr, "SETs", LOAD, set_until_killed, || server.kill9()).await;
    let acked = acknowledged(sets);
    let server = server.restart();
    assert_all_readable(addr, &acked, || {
        format!("lost by kill -9; stderr:\n{}", server.stderr())
    })
    .await;
    println!(
        "redis_crash: {} acknowledged SETs from {CLIENTS} clients all readable after kill -9",
        acked.len()
    );
}

/// One client's transactions `MULTI; SET a<c> i; SET b<c> i; EXEC` until
/// the server is gone (or `stop`): the last `i` acknowledged.
async fn transact_until_killed(
    addr: SocketAddr,
    client: u32,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) -> Option<u64> {
    let mut conn = connect(addr).await;
    let (a, b) = (format!("a{client}"), format!("b{client}"));
    let mut last = None;
    for i in 0..u64::from(MAX_SETS_PER_CLIENT) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let v = i.to_string();
        let mut request = command(&[b"MULTI"]);
        request.extend(command(&[b"SET", a.as_bytes(), v.as_bytes()]));
        request.extend(command(&[b"SET", b.as_bytes(), v.as_bytes()]));
        request.extend(command(&[b"EXEC"]));
        let answered = tokio::time::timeout(DEADLINE, async {
            conn.get_mut().write_all(&request).await?;
            let mut replies = Vec::new();
            for _ in 0..3 {
                replies.push(read_reply(&mut conn).await?);
            }
            // EXEC's array header, then its two elements.
            let mut header = Vec::new();
            conn.read_until(b'\n', &mut header).await?;
            if !header.ends_with(b"\r\n") {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if header != b"*2\r\n" {
                return Err(invalid(format!(
                    "EXEC answered {:?}",
                    String::from_utf8_lossy(&header)
                )));
            }
            for _ in 0..2 {
                replies.push(read_reply(&mut conn).await?);
            }
            Ok::<_, std::io::Error>(replies)
        })
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        match answered {
            Ok(replies) => {
                let ok = Reply::Simple("OK".into());
                let queued = Reply::Simple("QUEUED".into());
                assert_eq!(
                    replies,
                    [ok.clone(), queued.clone(), queued, ok.clone(), ok]
                );
                last = Some(i);
                acks.fetch_add(1, Ordering::Relaxed);
            }
            // The server was killed: this transaction may or may not have
            // landed, but as a whole.
            Err(e) if e.kind() != std::io::ErrorKind::InvalidData => break,
            Err(e) => panic!("client {client}: {e}"),
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_never_half_applies_a_redis_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_with_redis(dir.path());
    let lasts = load_then_kill(addr, "transactions", LOAD, transact_until_killed, || {
        server.kill9()
    })
    .await;
    let server = server.restart();
    let mut conn = connect(addr).await;
    for (client, last) in lasts.iter().enumerate() {
        let a = call(&mut conn, &[b"GET", format!("a{client}").as_bytes()])
            .await
            .unwrap();
        let b = call(&mut conn, &[b"GET", format!("b{client}").as_bytes()])
            .await
            .unwrap();
        assert_eq!(
            a,
            b,
            "client {client}: a transaction half applied after kill -9; stderr:\n{}",
            server.stderr()
        );
        if let Some(last) = last {
            let Reply::Bulk(Some(found)) = a else {
                panic!("client {client}: acknowledged transaction {last} lost")
            };
            let found: u64 = String::from_utf8(found).unwrap().parse().unwrap();
            assert!(
                found >= *last,
                "client {client}: found {found}, but {last} was acknowledged"
            );
        }
    }
    println!(
        "redis_crash: {} transactions acknowledged; none half applied after kill -9",
        // Each client's transactions are numbered from 0.
        lasts.iter().flatten().map(|last| last + 1).sum::<u64>()
    );
}

/// `redis-cli` on PATH, if there is one.
fn find_redis_cli() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-cli"))
        .find(|candidate| candidate.is_file())
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...`: its stdout, asserting
/// that it succeeded.
fn redis_cli(cli: &Path, addr: SocketAddr, args: &[&str]) -> String {
    let mut command = std::process::Command::new(cli);
    command
        .arg("-h")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(args);
    let output = run_to_exit(command, b"", DEADLINE);
    assert!(
        output.status.success(),
        "redis-cli {args:?}: {:?}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_works_against_the_server() {
    let Some(cli) = find_redis_cli() else {
        println!("skipped: redis-cli is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let redis_addr = free_addrs(1).remove(0);
    let _server = ServerProcess::start(dir.path(), &["--redis-addr", &redis_addr]);
    let addr: SocketAddr = redis_addr.parse().unwrap();
    // The listener is up once a PING is answered.
    let mut conn = connect(addr).await;
    assert_eq!(
        call(&mut conn, &[b"PING"]).await.unwrap(),
        Reply::Simple("PONG".into())
    );

    // Not on a terminal, redis-cli prints raw replies.
    assert_eq!(redis_cli(&cli, addr, &["SET", "greeting", "hello"]), "OK\n");
    assert_eq!(redis_cli(&cli, addr, &["GET", "greeting"]), "hello\n");
    assert_eq!(redis_cli(&cli, addr, &["INCR", "counter"]), "1\n");
    assert_eq!(redis_cli(&cli, addr, &["INCR", "counter"]), "2\n");
    // --no-raw: the formatted replies a terminal shows.
    assert_eq!(
        redis_cli(&cli, addr, &["--no-raw", "GET", "greeting"]),
        "\"hello\"\n"
    );
    assert_eq!(
        redis_cli(&cli, addr, &["--no-raw", "INCR", "counter"]),
        "(integer) 3\n"
    );
    assert_eq!(
        redis_cli(&cli, addr, &["--no-raw", "SET", "other", "x"]),
        "OK\n"
    );
    assert_eq!(
        redis_cli(
            &cli,
            addr,
            &["--no-raw", "DEL", "greeting", "counter", "missing"]
        ),
        "(integer) 2\n"
    );
    assert_eq!(
        redis_cli(&cli, addr, &["--no-raw", "GET", "greeting"]),
        "(nil)\n"
    );
    assert_eq!(
        redis_cli(&cli, addr, &["--no-raw", "MGET", "other", "missing"]),
        "1) \"x\"\n2) (nil)\n"
    );
    assert_eq!(redis_cli(&cli, addr, &["DBSIZE"]), "1\n");
}

/// `VmRSS` of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Inline PINGs the flood sends.
const FLOOD: usize = 1_000_000;

/// Growth of the server's resident memory allowed during the flood. Held
/// unread, a million parsed commands with their pending replies would take
/// well over this; the server reads a connection only while its bounded
/// reply queue (`--max-in-flight`) has room.
const FLOOD_RSS_GROWTH: u64 = 64 << 20;

/// One connection writes a million tiny inline commands and reads no reply
/// at first: the server's memory stays bounded, another client is served
/// meanwhile, and then every reply arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tiny_commands_is_held_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let redis_addr = free_addrs(1).remove(0);
    let server = ServerProcess::start(dir.path(), &["--redis-addr", &redis_addr]);
    let addr: SocketAddr = redis_addr.parse().unwrap();
    let mut probe = connect(addr).await;
    assert_eq!(
        call(&mut probe, &[b"PING"]).await.unwrap(),
        Reply::Simple("PONG".into())
    );
    let base = rss(server.pid());

    let (mut replies, mut requests) = TcpStream::connect(addr).await.unwrap().into_split();
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let written = Arc::clone(&written);
        tokio::spawn(async move {
            let chunk = b"PING\r\n".repeat(10_000);
            for _ in 0..FLOOD / 10_000 {
                requests.write_all(&chunk).await.unwrap();
                written.fetch_add(10_000, Ordering::Relaxed);
            }
            requests
        })
    };

    // Nothing read from the flood yet: another client is served, and the
    // server's memory stays within the bound, until the flood is all
    // written or 3 s have passed.
    let mut peak = base;
    let until = Instant::now() + Duration::from_secs(3);
    let mut i = 0u64;
    while Instant::now() < until && written.load(Ordering::Relaxed) < FLOOD as u64 {
        let key = format!("probe-{i}");
        assert_eq!(
            call(&mut probe, &[b"SET", key.as_bytes(), b"v"])
                .await
                .unwrap(),
            Reply::Simple("OK".into())
        );
        assert_eq!(
            call(&mut probe, &[b"GET", key.as_bytes()]).await.unwrap(),
            Reply::Bulk(Some(b"v".to_vec()))
        );
        peak = peak.max(rss(server.pid()));
        i += 1;
    }
    assert!(i > 0, "the other client was never served during the flood");

    // Now every reply, in order, while the writer finishes.
    let mut reader = BufReader::with_capacity(1 << 16, &mut replies);
    let mut line = Vec::with_capacity(16);
    for n in 0..FLOOD {
        line.clear();
        tokio::time::timeout(DEADLINE, reader.read_until(b'\n', &mut line))
            .await
            .unwrap_or_else(|_| panic!("reply {n} of the flood not within {DEADLINE:?}"))
            .unwrap();
        assert_eq!(line, b"+PONG\r\n", "reply {n} of the flood");
        if n % 100_000 == 0 {
            peak = peak.max(rss(server.pid()));
        }
    }
    writer.await.unwrap();
    println!(
        "redis_crash: {FLOOD} inline PINGs from one connection; the other client was served {i} \
         SET+GET pairs meanwhile; server VmRSS {} MiB before, peak {} MiB",
        base >> 20,
        peak >> 20
    );
    assert!(
        peak - base < FLOOD_RSS_GROWTH,
        "the server grew by {} MiB during the flood (bound {} MiB)",
        (peak - base) >> 20,
        FLOOD_RSS_GROWTH >> 20
    );
}

/// Where a cluster member's Redis listener is, and its process.
struct RedisMember {
    redis: SocketAddr,
    _dir: tempfile::TempDir,
    process: Option<ServerProcess>,
}

/// The member whose Redis SET succeeds, trying the live ones until
/// `DEADLINE`.
async fn redis_leader(members: &[RedisMember]) -> usize {
    let until = Instant::now() + DEADLINE;
    loop {
        for (i, m) in members.iter().enumerate() {
            if m.process.is_none() {
                continue;
            }
            let Ok(stream) = TcpStream::connect(m.redis).await else {
                continue;
            };
            let mut conn = BufReader::new(stream);
            if let Ok(Reply::Simple(ok)) = call(&mut conn, &[b"SET", b"leader-probe", b"x"]).await
                && ok == "OK"
            {
                return i;
            }
        }
        assert!(
            Instant::now() < until,
            "no Redis leader within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A three-member cluster, each member with a Redis listener: the leader
/// takes SETs; a follower refuses writes with `-READONLY` and reads with
/// `-NOTLEADER`, both naming the leader's Redis address, and INFO
/// replication tells each member's role; SETs acknowledged by the leader
/// under load from 8 clients are all readable through the new leader's
/// Redis listener after the old one is killed with SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_redis_on_its_leader_and_its_followers_name_it() {
    let addrs = free_addrs(9);
    let spec = (0..3)
        .map(|i| format!("{}={}/{}", i + 1, addrs[3 * i], addrs[3 * i + 1]))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<RedisMember> = (0..3)
        .map(|i| {
            let dir = tempfile::tempdir().unwrap();
            let node = (i + 1).to_string();
            let process = ServerProcess::start_on(
                &addrs[3 * i],
                dir.path(),
                &[
                    "--node-id",
                    &node,
                    "--peer-addr",
                    &addrs[3 * i + 1],
                    "--initial-cluster",
                    &spec,
                    "--redis-addr",
                    &addrs[3 * i + 2],
                ],
            );
            RedisMember {
                redis: addrs[3 * i + 2].parse().unwrap(),
                _dir: dir,
                process: Some(process),
            }
        })
        .collect();
    let leader = redis_leader(&members).await;
    let leader_addr = members[leader].redis.to_string();

    for (i, m) in members.iter().enumerate() {
        if i == leader {
            continue;
        }
        let mut conn = connect(m.redis).await;
        // A follower learns the leader's Redis address from its next
        // message, which a heartbeat brings within a moment.
        let until = Instant::now() + DEADLINE;
        let refusal = loop {
            match call(&mut conn, &[b"SET", b"k", b"v"]).await.unwrap() {
                Reply::Error(e) if e.contains(&leader_addr) => break e,
                Reply::Error(e) if e.starts_with("CLUSTERDOWN") && Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("follower {} answered SET with {other:?}", i + 1),
            }
        };
        assert!(refusal.starts_with("READONLY "), "{refusal}");
        match call(&mut conn, &[b"GET", b"leader-probe"]).await.unwrap() {
            Reply::Error(e) => {
                assert!(
                    e.starts_with("NOTLEADER ") && e.contains(&leader_addr),
                    "{e}"
                )
            }
            other => panic!("follower {} answered GET with {other:?}", i + 1),
        }
        match call(&mut conn, &[b"INFO", b"replication"]).await.unwrap() {
            Reply::Bulk(Some(text)) => {
                let text = String::from_utf8(text).unwrap();
                let port = format!("master_port:{}\r\n", members[leader].redis.port());
                assert!(
                    text.contains("role:slave\r\n") && text.contains(&port),
                    "{text}"
                );
            }
            other => panic!("INFO replication: {other:?}"),
        }
    }
    let mut conn = connect(members[leader].redis).await;
    match call(&mut conn, &[b"INFO", b"replication"]).await.unwrap() {
        Reply::Bulk(Some(text)) => {
            let text = String::from_utf8(text).unwrap();
            assert!(
                text.contains("role:master\r\n") && text.contains("connected_slaves:2\r\n"),
                "{text}"
            );
        }
        other => panic!("INFO replication: {other:?}"),
    }
    // A counter and a transaction go through Raft too.
    assert_eq!(
        call(&mut conn, &[b"INCRBY", b"counter", b"5"])
            .await
            .unwrap(),
        Reply::Integer(5)
    );
    assert_eq!(
        call(&mut conn, &[b"GET", b"counter"]).await.unwrap(),
        Reply::Bulk(Some(b"5".to_vec()))
    );
    drop(conn);

    let sets = load_then_kill(
        members[leader].redis,
        "SETs",
        Duration::from_secs(2),
        set_until_killed,
        || members[leader].process.take().unwrap().kill9(),
    )
    .await;
    let acked = acknowledged(sets);

    let new_leader = redis_leader(&members).await;
    assert_ne!(new_leader, leader);
    assert_all_readable(members[new_leader].redis, &acked, || {
        "lost with the leader".to_string()
    })
    .await;
    println!(
        "redis cluster: {} SETs acknowledged by leader {} all readable on new leader {}",
        acked.len(),
        leader + 1,
        new_leader + 1
    );
}
