//! The Redis listener (`run_with_redis`) in-process on 127.0.0.1:0: every
//! command through the `redis` client crate, RESP2 and RESP3, pipelining,
//! binary safety, and with raw TCP the exact error texts and the protocol
//! edge cases (inline commands, garbage, a bulk over the limit, a half-sent
//! command).

use std::net::SocketAddr;
use std::time::Duration;

use kv_server::{AuthToken, ServerConfig, run_with_redis};
use kv_store::{KeyValueStore, StoreOptions};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

struct Running {
    redis: SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve_with(config: ServerConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
    let native = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redis = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = redis.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(run_with_redis(
        native,
        Some(redis),
        store,
        config,
        shutdown.clone(),
    ));
    Running {
        redis: addr,
        shutdown,
        _dir: dir,
    }
}

async fn serve() -> Running {
    serve_with(ServerConfig::default()).await
}

async fn client(addr: SocketAddr, resp3: bool) -> MultiplexedConnection {
    let url = if resp3 {
        format!("redis://{addr}/?protocol=resp3")
    } else {
        format!("redis://{addr}/")
    };
    let client = redis::Client::open(url).unwrap();
    let mut con = tokio::time::timeout(DEADLINE, client.get_multiplexed_async_connection())
        .await
        .unwrap()
        .unwrap();
    // redis-rs gives up on an answer after 500 ms by default: a long
    // pipeline on a busy machine takes longer. The tests' own deadline
    // decides instead.
    con.set_response_timeout(DEADLINE);
    con
}

async fn q(con: &mut MultiplexedConnection, args: &[&[u8]]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    tokio::time::timeout(DEADLINE, cmd.query_async(con))
        .await
        .unwrap()
}

async fn ok(con: &mut MultiplexedConnection, args: &[&[u8]]) -> Value {
    q(con, args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn bulk(b: &[u8]) -> Value {
    Value::BulkString(b.to_vec())
}

/// Sends `bytes` on a raw connection and reads until `expected` came
/// (failing on anything else).
async fn expect(sock: &mut TcpStream, bytes: &[u8], expected: &[u8]) {
    sock.write_all(bytes).await.unwrap();
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(DEADLINE, sock.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "after sending {:?}",
        String::from_utf8_lossy(bytes)
    );
}

/// Reads until the server closes; returns what came before.
async fn read_to_close(sock: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, sock.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    rest
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[tokio::test]
async fn strings_and_counters() {
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    assert_eq!(
        ok(&mut c, &[b"PING"]).await,
        Value::SimpleString("PONG".into())
    );
    assert_eq!(ok(&mut c, &[b"PING", b"hi"]).await, bulk(b"hi"));
    assert_eq!(ok(&mut c, &[b"ECHO", b"x y"]).await, bulk(b"x y"));
    assert_eq!(ok(&mut c, &[b"GET", b"k"]).await, Value::Nil);
    assert_eq!(ok(&mut c, &[b"SET", b"k", b"v"]).await, Value::Okay);
    assert_eq!(ok(&mut c, &[b"GET", b"k"]).await, bulk(b"v"));
    assert_eq!(ok(&mut c, &[b"SET", b"k", b"w", b"NX"]).await, Value::Nil);
    assert_eq!(ok(&mut c, &[b"SET", b"n", b"w", b"XX"]).await, Value::Nil);
    assert_eq!(ok(&mut c, &[b"SET", b"k", b"w", b"XX"]).await, Value::Okay);
    assert_eq!(ok(&mut c, &[b"SET", b"k", b"x", b"GET"]).await, bulk(b"w"));
    assert_eq!(
        ok(&mut c, &[b"SET", b"new", b"1", b"GET"]).await,
        Value::Nil
    );
    assert_eq!(
        ok(&mut c, &[b"SET", b"new", b"2", b"NX", b"GET"]).await,
        bulk(b"1")
    );
    assert_eq!(ok(&mut c, &[b"GET", b"new"]).await, bulk(b"1"));
    assert_eq!(ok(&mut c, &[b"SETNX", b"k", b"y"]).await, Value::Int(0));
    assert_eq!(ok(&mut c, &[b"SETNX", b"s", b"y"]).await, Value::Int(1));
    assert_eq!(ok(&mut c, &[b"GETSET", b"s", b"z"]).await, bulk(b"y"));
    assert_eq!(ok(&mut c, &[b"GETDEL", b"s"]).await, bulk(b"z"));
    assert_eq!(ok(&mut c, &[b"GETDEL", b"s"]).await, Value::Nil);
    assert_eq!(ok(&mut c, &[b"STRLEN", b"k"]).await, Value::Int(1));
    assert_eq!(ok(&mut c, &[b"STRLEN", b"none"]).await, Value::Int(0));
    assert_eq!(
        ok(&mut c, &[b"TYPE", b"k"]).await,
        Value::SimpleString("string".into())
    );
    assert_eq!(
        ok(&mut c, &[b"TYPE", b"none"]).await,
        Value::SimpleString("none".into())
    );
    assert_eq!(
        ok(&mut c, &[b"MSET", b"a", b"1", b"b", b"2"]).await,
        Value::Okay
    );
    assert_eq!(
        ok(&mut c, &[b"MGET", b"a", b"zz", b"b"]).await,
        Value::Array(vec![bulk(b"1"), Value::Nil, bulk(b"2")])
    );
    assert_eq!(
        ok(&mut c, &[b"MSETNX", b"c", b"3", b"a", b"9"]).await,
        Value::Int(0)
    );
    assert_eq!(ok(&mut c, &[b"EXISTS", b"c"]).await, Value::Int(0));
    assert_eq!(
        ok(&mut c, &[b"MSETNX", b"c", b"3", b"d", b"4"]).await,
        Value::Int(1)
    );
    assert_eq!(
        ok(&mut c, &[b"EXISTS", b"a", b"a", b"c", b"zz"]).await,
        Value::Int(3)
    );
    assert_eq!(
        ok(&mut c, &[b"DEL", b"a", b"a", b"zz", b"b"]).await,
        Value::Int(2)
    );
    assert_eq!(ok(&mut c, &[b"UNLINK", b"c", b"d"]).await, Value::Int(2));
    assert_eq!(ok(&mut c, &[b"INCR", b"n1"]).await, Value::Int(1));
    assert_eq!(ok(&mut c, &[b"INCRBY", b"n1", b"41"]).await, Value::Int(42));
    assert_eq!(ok(&mut c, &[b"DECR", b"n1"]).await, Value::Int(41));
    assert_eq!(ok(&mut c, &[b"DECRBY", b"n1", b"-9"]).await, Value::Int(50));
    assert_eq!(ok(&mut c, &[b"GET", b"n1"]).await, bulk(b"50"));
    assert_eq!(ok(&mut c, &[b"SELECT", b"0"]).await, Value::Okay);
    assert_eq!(ok(&mut c, &[b"DBSIZE"]).await, Value::Int(3));
    let Value::Array(time) = ok(&mut c, &[b"TIME"]).await else {
        panic!("TIME is an array")
    };
    assert_eq!(time.len(), 2);
}

#[tokio::test]
async fn expiry() {
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    ok(&mut c, &[b"SET", b"k", b"v", b"EX", b"100"]).await;
    let Value::Int(ttl) = ok(&mut c, &[b"TTL", b"k"]).await else {
        panic!()
    };
    assert!((99..=100).contains(&ttl), "{ttl}");
    let Value::Int(pttl) = ok(&mut c, &[b"PTTL", b"k"]).await else {
        panic!()
    };
    assert!((98_000..=100_000).contains(&pttl), "{pttl}");
    // KEEPTTL keeps it; a plain SET clears it.
    ok(&mut c, &[b"SET", b"k", b"w", b"KEEPTTL"]).await;
    assert!(matches!(
        ok(&mut c, &[b"TTL", b"k"]).await,
        Value::Int(99..=100)
    ));
    ok(&mut c, &[b"SET", b"k", b"w"]).await;
    assert_eq!(ok(&mut c, &[b"TTL", b"k"]).await, Value::Int(-1));
    assert_eq!(ok(&mut c, &[b"TTL", b"gone"]).await, Value::Int(-2));
    assert_eq!(ok(&mut c, &[b"PTTL", b"gone"]).await, Value::Int(-2));
    ok(&mut c, &[b"SET", b"p", b"v", b"PX", b"100000"]).await;
    assert!(matches!(
        ok(&mut c, &[b"TTL", b"p"]).await,
        Value::Int(99..=100)
    ));
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1000)
        .to_string();
    ok(&mut c, &[b"SET", b"at", b"v", b"EXAT", later.as_bytes()]).await;
    assert!(matches!(
        ok(&mut c, &[b"TTL", b"at"]).await,
        Value::Int(998..=1000)
    ));
    let later_ms = format!("{}000", later);
    ok(
        &mut c,
        &[b"SET", b"pat", b"v", b"PXAT", later_ms.as_bytes()],
    )
    .await;
    assert!(matches!(
        ok(&mut c, &[b"TTL", b"pat"]).await,
        Value::Int(998..=1000)
    ));
    ok(&mut c, &[b"SETEX", b"se", b"50", b"v"]).await;
    assert!(matches!(
        ok(&mut c, &[b"TTL", b"se"]).await,
        Value::Int(49..=50)
    ));
    ok(&mut c, &[b"PSETEX", b"pse", b"50000", b"v"]).await;
    assert!(matches!(
        ok(&mut c, &[b"TTL", b"pse"]).await,
        Value::Int(49..=50)
    ));
    assert_eq!(ok(&mut c, &[b"EXPIRE", b"k", b"30"]).await, Value::Int(1));
    assert!(matches!(
        ok(&mut c, &[b"TTL", b"k"]).await,
        Value::Int(29..=30)
    ));
    assert_eq!(
        ok(&mut c, &[b"EXPIRE", b"gone", b"30"]).await,
        Value::Int(0)
    );
    assert_eq!(
        ok(&mut c, &[b"PEXPIRE", b"k", b"60000"]).await,
        Value::Int(1)
    );
    assert!(matches!(
        ok(&mut c, &[b"TTL", b"k"]).await,
        Value::Int(59..=60)
    ));
    assert_eq!(
        ok(&mut c, &[b"EXPIREAT", b"k", later.as_bytes()]).await,
        Value::Int(1)
    );
    assert!(matches!(
        ok(&mut c, &[b"TTL", b"k"]).await,
        Value::Int(998..=1000)
    ));
    assert_eq!(
        ok(&mut c, &[b"PEXPIREAT", b"k", later_ms.as_bytes()]).await,
        Value::Int(1)
    );
    assert_eq!(ok(&mut c, &[b"PERSIST", b"k"]).await, Value::Int(1));
    assert_eq!(ok(&mut c, &[b"PERSIST", b"k"]).await, Value::Int(0));
    assert_eq!(ok(&mut c, &[b"TTL", b"k"]).await, Value::Int(-1));
    // A time already past removes the key, as in Redis.
    assert_eq!(ok(&mut c, &[b"EXPIRE", b"k", b"-1"]).await, Value::Int(1));
    assert_eq!(ok(&mut c, &[b"EXISTS", b"k"]).await, Value::Int(0));
}

#[tokio::test]
async fn keys_scan_and_admin() {
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    for i in 0..25 {
        ok(&mut c, &[b"SET", format!("user:{i:02}").as_bytes(), b"v"]).await;
    }
    ok(&mut c, &[b"SET", b"other", b"v"]).await;
    let Value::Array(keys) = ok(&mut c, &[b"KEYS", b"user:1?"]).await else {
        panic!()
    };
    assert_eq!(keys.len(), 10);
    let Value::Array(all) = ok(&mut c, &[b"KEYS", b"*"]).await else {
        panic!()
    };
    assert_eq!(all.len(), 26);
    // SCAN pages through every matching key once.
    let mut cursor = b"0".to_vec();
    let mut seen = Vec::new();
    loop {
        let Value::Array(reply) = ok(
            &mut c,
            &[b"SCAN", &cursor, b"MATCH", b"user:*", b"COUNT", b"7"],
        )
        .await
        else {
            panic!()
        };
        let [Value::BulkString(next), Value::Array(page)] = &reply[..] else {
            panic!("{reply:?}")
        };
        seen.extend(page.iter().cloned());
        cursor = next.clone();
        if cursor == b"0" {
            break;
        }
    }
    assert_eq!(seen.len(), 25);
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), 25);
    assert!(q(&mut c, &[b"SCAN", b"12345"]).await.is_err());
    assert_eq!(ok(&mut c, &[b"SAVE"]).await, Value::Okay);
    assert!(matches!(ok(&mut c, &[b"LASTSAVE"]).await, Value::Int(n) if n > 0));
    assert_eq!(
        ok(&mut c, &[b"BGSAVE"]).await,
        Value::SimpleString("Background saving started".into())
    );
    let Value::BulkString(info) = ok(&mut c, &[b"INFO"]).await else {
        panic!()
    };
    let info = String::from_utf8(info).unwrap();
    for field in [
        "# Server",
        "redis_version:",
        "# Keyspace",
        "db0:keys=26,",
        "# Persistence",
        "# Stats",
        "total_commands_processed:",
    ] {
        assert!(info.contains(field), "{field} in {info}");
    }
    let Value::BulkString(info) = ok(&mut c, &[b"INFO", b"keyspace"]).await else {
        panic!()
    };
    assert!(!String::from_utf8(info).unwrap().contains("# Server"));
    assert_eq!(
        ok(&mut c, &[b"CONFIG", b"GET", b"save"]).await,
        Value::Array(vec![bulk(b"save"), bulk(b"")])
    );
    assert_eq!(
        ok(&mut c, &[b"CONFIG", b"GET", b"appendonly"]).await,
        Value::Array(vec![bulk(b"appendonly"), bulk(b"yes")])
    );
    assert_eq!(
        ok(&mut c, &[b"CONFIG", b"GET", b"databases"]).await,
        Value::Array(vec![bulk(b"databases"), bulk(b"1")])
    );
    assert!(matches!(ok(&mut c, &[b"COMMAND", b"COUNT"]).await, Value::Int(n) if n > 40));
    let Value::Array(info) = ok(&mut c, &[b"COMMAND", b"INFO", b"get", b"nope"]).await else {
        panic!()
    };
    assert_eq!(info[1], Value::Nil);
    assert!(matches!(&info[0], Value::Array(a) if a[0] == bulk(b"get") && a[1] == Value::Int(2)));
    assert!(matches!(ok(&mut c, &[b"COMMAND", b"DOCS"]).await, Value::Array(a) if a.is_empty()));
    assert!(matches!(ok(&mut c, &[b"COMMAND"]).await, Value::Array(a) if a.len() > 40));
    assert_eq!(
        ok(&mut c, &[b"CLIENT", b"SETNAME", b"me"]).await,
        Value::Okay
    );
    assert_eq!(ok(&mut c, &[b"CLIENT", b"GETNAME"]).await, bulk(b"me"));
    assert!(matches!(ok(&mut c, &[b"CLIENT", b"ID"]).await, Value::Int(n) if n > 0));
    assert_eq!(
        ok(&mut c, &[b"CLIENT", b"SETINFO", b"lib-name", b"x"]).await,
        Value::Okay
    );
}

#[tokio::test]
async fn resp3_after_hello_3() {
    let server = serve().await;
    let mut c = client(server.redis, true).await;
    assert_eq!(ok(&mut c, &[b"GET", b"missing"]).await, Value::Nil);
    ok(&mut c, &[b"SET", b"k", b"v"]).await;
    let Value::Map(pairs) = ok(&mut c, &[b"CONFIG", b"GET", b"save"]).await else {
        panic!("CONFIG GET is a map in RESP3")
    };
    assert_eq!(pairs, vec![(bulk(b"save"), bulk(b""))]);
    let Value::Map(hello) = ok(&mut c, &[b"HELLO", b"3"]).await else {
        panic!()
    };
    assert!(hello.contains(&(bulk(b"proto"), Value::Int(3))));
    // Raw: the encodings themselves.
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    expect(&mut sock, &resp(&[b"GET", b"missing"]), b"$-1\r\n").await;
    sock.write_all(&resp(&[b"HELLO", b"3"])).await.unwrap();
    let mut head = [0u8; 3];
    sock.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"%7\r");
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    expect(&mut sock, b"HELLO 3\r\n", b"%7\r\n").await;
    // Skip the rest of the map by sending a marker after it.
    expect(&mut sock, b"HELLO 4\r\n", b"").await;
    let mut rest = Vec::new();
    while !rest.ends_with(b"-NOPROTO unsupported protocol version\r\n") {
        let mut byte = [0u8; 1];
        sock.read_exact(&mut byte).await.unwrap();
        rest.push(byte[0]);
    }
    expect(&mut sock, b"GET missing\r\n", b"_\r\n").await;
    expect(&mut sock, b"HELLO 2\r\n", b"*14\r\n").await;
}

#[tokio::test]
async fn pipeline_of_thousands_in_order() {
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.cmd("SET").arg(format!("k{i}")).arg(i);
        pipe.cmd("INCR").arg("counter");
        pipe.cmd("GET").arg(format!("k{i}"));
    }
    let replies: Vec<Value> = tokio::time::timeout(DEADLINE, pipe.query_async(&mut c))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replies.len(), 15_000);
    for i in 0..5000 {
        assert_eq!(replies[3 * i], Value::Okay);
        assert_eq!(replies[3 * i + 1], Value::Int(i as i64 + 1));
        assert_eq!(replies[3 * i + 2], bulk(i.to_string().as_bytes()));
    }
    // Raw pipelining of mixed inline and multibulk, GETSET included (a
    // read-then-write that later writes must not overtake).
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(b"SET g 1\r\n");
    out.extend_from_slice(&resp(&[b"GETSET", b"g", b"2"]));
    out.extend_from_slice(b"SET g 3\r\nGET g\r\n");
    expect(&mut sock, &out, b"+OK\r\n$1\r\n1\r\n+OK\r\n$1\r\n3\r\n").await;
}

/// Writes read from one socket are held and sent to the store together;
/// with a reply queue of 4 and an in-flight budget of a few commands, the
/// reader must hand them over before it waits for room, or the pipeline
/// would stall on its own unanswered writes.
#[tokio::test]
async fn a_pipeline_larger_than_every_bound_is_answered() {
    let server = serve_with(ServerConfig {
        max_in_flight: 4,
        max_in_flight_bytes: 256,
        max_total_in_flight_bytes: 512,
        ..ServerConfig::default()
    })
    .await;
    let mut c = client(server.redis, false).await;
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("k{i}")).arg(i);
        pipe.cmd("INCR").arg("counter");
    }
    pipe.cmd("GET").arg("k1999");
    let replies: Vec<Value> = tokio::time::timeout(DEADLINE, pipe.query_async(&mut c))
        .await
        .expect("the pipeline stalled")
        .unwrap();
    assert_eq!(replies.len(), 4001);
    for i in 0..2000 {
        assert_eq!(replies[2 * i], Value::Okay);
        assert_eq!(replies[2 * i + 1], Value::Int(i as i64 + 1));
    }
    assert_eq!(replies[4000], bulk(b"1999"));
}

#[tokio::test]
async fn binary_safe_keys_and_values() {
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    let key: Vec<u8> = (0..=255u8).collect();
    let value: Vec<u8> = b"\r\n\0$-1\r\n*3\r\n"
        .iter()
        .copied()
        .cycle()
        .take(100_000)
        .collect();
    ok(&mut c, &[b"SET", &key, &value]).await;
    assert_eq!(ok(&mut c, &[b"GET", &key]).await, bulk(&value));
    assert_eq!(
        ok(&mut c, &[b"KEYS", b"\x00*"]).await,
        Value::Array(vec![bulk(&key)])
    );
}

#[tokio::test]
async fn error_texts() {
    let server = serve().await;
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    let cases: &[(&[&[u8]], &[u8])] = &[
        (&[b"GET"], b"-ERR wrong number of arguments for 'get' command\r\n"),
        (&[b"SET", b"k"], b"-ERR wrong number of arguments for 'set' command\r\n"),
        (&[b"MSET", b"a", b"1", b"b"], b"-ERR wrong number of arguments for 'mset' command\r\n"),
        (&[b"SET", b"k", b"v", b"EX", b"x"], b"-ERR value is not an integer or out of range\r\n"),
        (&[b"SET", b"k", b"v", b"EX", b"0"], b"-ERR invalid expire time in 'set' command\r\n"),
        (&[b"SET", b"k", b"v", b"EX", b"9223372036854775807"], b"-ERR invalid expire time in 'set' command\r\n"),
        (&[b"SET", b"k", b"v", b"NX", b"XX"], b"-ERR syntax error\r\n"),
        (&[b"SET", b"k", b"v", b"EX", b"1", b"PX", b"1"], b"-ERR syntax error\r\n"),
        (&[b"SET", b"k", b"v", b"BOGUS"], b"-ERR syntax error\r\n"),
        (&[b"SETEX", b"k", b"0", b"v"], b"-ERR invalid expire time in 'setex' command\r\n"),
        (&[b"EXPIRE", b"k", b"9223372036854775807"], b"-ERR invalid expire time in 'expire' command\r\n"),
        (&[b"INCRBY", b"k", b"1.5"], b"-ERR value is not an integer or out of range\r\n"),
        (&[b"SET", b"s", b"abc"], b"+OK\r\n"),
        (&[b"INCR", b"s"], b"-ERR value is not an integer or out of range\r\n"),
        (&[b"SET", b"big", b"9223372036854775807"], b"+OK\r\n"),
        (&[b"INCR", b"big"], b"-ERR increment or decrement would overflow\r\n"),
        (&[b"DECRBY", b"big", b"-9223372036854775808"], b"-ERR decrement would overflow\r\n"),
        (&[b"SELECT", b"1"], b"-ERR DB index is out of range\r\n"),
        (&[b"SELECT", b"x"], b"-ERR value is not an integer or out of range\r\n"),
        (&[b"FOO", b"a", b"b"], b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"),
        (&[b"HSET", b"h", b"f"], b"-ERR unknown command 'HSET', with args beginning with: 'h' 'f' \r\n"),
        (&[b"APPEND", b"k"], b"-ERR wrong number of arguments for 'append' command\r\n"),
        (&[b"GETEX", b"k", b"EX", b"0"], b"-ERR invalid expire time in 'getex' command\r\n"),
        (&[b"GETEX", b"k", b"PXAT", b"-5"], b"-ERR invalid expire time in 'getex' command\r\n"),
        (&[b"GETEX", b"k", b"EX", b"x"], b"-ERR value is not an integer or out of range\r\n"),
        (&[b"GETEX", b"k", b"EX", b"1", b"PERSIST"], b"-ERR syntax error\r\n"),
        (&[b"GETEX", b"k", b"EX"], b"-ERR syntax error\r\n"),
        (&[b"GETEX", b"k", b"KEEPTTL"], b"-ERR syntax error\r\n"),
        (&[b"FLUSHDB", b"LAZY"], b"-ERR syntax error\r\n"),
        (&[b"FLUSHALL", b"SYNC", b"ASYNC"], b"-ERR syntax error\r\n"),
        (&[b"CLIENT", b"KILL"], b"-ERR unknown subcommand 'KILL'. Try CLIENT HELP.\r\n"),
        (&[b"CLIENT", b"SETNAME", b"a b"], b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"),
        (&[b"SCAN", b"x"], b"-ERR invalid cursor\r\n"),
        (&[b"HELLO", b"4"], b"-NOPROTO unsupported protocol version\r\n"),
        (&[b"AUTH", b"x"], b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n"),
        (&[b"PING", b"a", b"b"], b"-ERR wrong number of arguments for 'ping' command\r\n"),
    ];
    for (args, reply) in cases {
        expect(&mut sock, &resp(args), reply).await;
    }
}

#[tokio::test]
async fn raw_protocol_edges() {
    let server = serve_with(ServerConfig {
        max_frame: 1024,
        frame_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    // Inline commands, quoted arguments and empty lines.
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    expect(&mut sock, b"PING\r\n", b"+PONG\r\n").await;
    expect(
        &mut sock,
        b"\r\nSET \"a b\" 'c d'\nGET \"a b\"\r\n",
        b"+OK\r\n$3\r\nc d\r\n",
    )
    .await;
    // Garbage: an error, then the close.
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    expect(
        &mut sock,
        b"*x\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
    )
    .await;
    assert!(read_to_close(&mut sock).await.is_empty());
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    expect(
        &mut sock,
        b"*1\r\n+PING\r\n",
        b"-ERR Protocol error: expected '$', got '+'\r\n",
    )
    .await;
    assert!(read_to_close(&mut sock).await.is_empty());
    // A bulk over --max-frame: refused at its header, then closed; what was
    // answered before it still arrives first.
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    expect(
        &mut sock,
        b"PING\r\n*2\r\n$3\r\nGET\r\n$1025\r\n",
        b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n",
    )
    .await;
    assert!(read_to_close(&mut sock).await.is_empty());
    // An inline line over the limit.
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    expect(
        &mut sock,
        &[b'A'; 1100],
        b"-ERR Protocol error: too big inline request\r\n",
    )
    .await;
    assert!(read_to_close(&mut sock).await.is_empty());
    // A half-sent command: not answered; the frame timeout closes it.
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    sock.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\n").await.unwrap();
    assert!(read_to_close(&mut sock).await.is_empty());
    // Completed in pieces, it is answered.
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    sock.write_all(b"*2\r\n$4\r\nEC").await.unwrap();
    expect(&mut sock, b"HO\r\n$2\r\nhi\r\n", b"$2\r\nhi\r\n").await;
    // QUIT answers, then closes.
    expect(&mut sock, b"QUIT\r\n", b"+OK\r\n").await;
    assert!(read_to_close(&mut sock).await.is_empty());
}

#[tokio::test]
async fn auth_token() {
    let server = serve_with(ServerConfig {
        auth_token: Some(AuthToken::new(b"sesame", "test").unwrap()),
        ..ServerConfig::default()
    })
    .await;
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    expect(
        &mut sock,
        b"GET k\r\n",
        b"-NOAUTH Authentication required.\r\n",
    )
    .await;
    expect(
        &mut sock,
        b"SET k v\r\n",
        b"-NOAUTH Authentication required.\r\n",
    )
    .await;
    expect(
        &mut sock,
        b"HELLO 3\r\n",
        b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n",
    )
    .await;
    expect(
        &mut sock,
        b"AUTH wrong\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    )
    .await;
    expect(
        &mut sock,
        b"AUTH other sesame\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    )
    .await;
    expect(&mut sock, b"AUTH sesame\r\nGET k\r\n", b"+OK\r\n$-1\r\n").await;
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    expect(&mut sock, b"HELLO 3 AUTH default sesame\r\n", b"%7\r\n").await;
    // The redis crate with the password in its URL.
    let url = format!("redis://:sesame@{}/", server.redis);
    let mut c = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(ok(&mut c, &[b"SET", b"k", b"v"]).await, Value::Okay);
    assert_eq!(ok(&mut c, &[b"GET", b"k"]).await, bulk(b"v"));
}

#[tokio::test]
async fn writes_are_shared_with_a_restart() {
    // Acknowledged writes are durable: after a clean shutdown and reopening
    // the store, they are there.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
        let native = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redis = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = redis.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_with_redis(
            native,
            Some(redis),
            store,
            ServerConfig::default(),
            shutdown.clone(),
        ));
        let mut c = client(addr, false).await;
        ok(&mut c, &[b"SET", b"durable", b"yes"]).await;
        ok(&mut c, &[b"INCRBY", b"n", b"7"]).await;
        drop(c);
        shutdown.cancel();
        tokio::time::timeout(DEADLINE, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let store = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.get(b"durable"), Some(b"yes".to_vec()));
    assert_eq!(store.get(b"n"), Some(b"7".to_vec()));
}

#[tokio::test]
async fn connection_limit_and_idle_timeout() {
    let server = serve_with(ServerConfig {
        max_connections: 1,
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut first = TcpStream::connect(server.redis).await.unwrap();
    expect(&mut first, b"PING\r\n", b"+PONG\r\n").await;
    let mut second = TcpStream::connect(server.redis).await.unwrap();
    assert_eq!(
        read_to_close(&mut second).await,
        b"-ERR max number of clients reached\r\n"
    );
    // Silent past the idle timeout: closed, and its place is free again.
    assert!(read_to_close(&mut first).await.is_empty());
    let mut third = TcpStream::connect(server.redis).await.unwrap();
    expect(&mut third, b"PING\r\n", b"+PONG\r\n").await;
}

#[tokio::test]
async fn concurrent_getsets_hand_each_value_over_once() {
    // GETSET reads, then writes on condition that the key is unchanged:
    // under contention every value written is returned as the old value
    // exactly once (none lost, none seen twice).
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    ok(&mut c, &[b"SET", b"baton", b"start"]).await;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let addr = server.redis;
        tasks.push(tokio::spawn(async move {
            let mut c = client(addr, false).await;
            let mut olds = Vec::new();
            for i in 0..50 {
                let value = format!("{t}-{i}");
                let Value::BulkString(old) =
                    ok(&mut c, &[b"GETSET", b"baton", value.as_bytes()]).await
                else {
                    panic!("GETSET of an existing key returns its value")
                };
                olds.push(String::from_utf8(old).unwrap());
            }
            olds
        }));
    }
    let mut olds = Vec::new();
    for task in tasks {
        olds.extend(task.await.unwrap());
    }
    let Value::BulkString(last) = ok(&mut c, &[b"GET", b"baton"]).await else {
        panic!()
    };
    olds.push(String::from_utf8(last).unwrap());
    let mut expected: Vec<String> = (0..4)
        .flat_map(|t| (0..50).map(move |i| format!("{t}-{i}")))
        .collect();
    expected.push("start".into());
    olds.sort();
    expected.sort();
    assert_eq!(olds, expected);
}

#[tokio::test]
async fn an_expiry_time_already_past() {
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    assert_eq!(
        ok(&mut c, &[b"SET", b"k", b"v", b"EXAT", b"1"]).await,
        Value::Okay
    );
    assert_eq!(ok(&mut c, &[b"GET", b"k"]).await, Value::Nil);
    ok(&mut c, &[b"SET", b"k", b"v"]).await;
    assert_eq!(ok(&mut c, &[b"PEXPIREAT", b"k", b"1"]).await, Value::Int(1));
    assert_eq!(ok(&mut c, &[b"TTL", b"k"]).await, Value::Int(-2));
}

fn ttl_of(v: Value) -> i64 {
    match v {
        Value::Int(n) => n,
        other => panic!("TTL is an integer, got {other:?}"),
    }
}

#[tokio::test]
async fn append_and_getex() {
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    assert_eq!(ok(&mut c, &[b"APPEND", b"a", b"ab"]).await, Value::Int(2));
    assert_eq!(ok(&mut c, &[b"APPEND", b"a", b"cd"]).await, Value::Int(4));
    assert_eq!(ok(&mut c, &[b"GET", b"a"]).await, bulk(b"abcd"));
    // APPEND keeps the key's deadline.
    ok(&mut c, &[b"SET", b"t", b"v", b"EX", b"100"]).await;
    assert_eq!(ok(&mut c, &[b"APPEND", b"t", b"x"]).await, Value::Int(2));
    assert!((99..=100).contains(&ttl_of(ok(&mut c, &[b"TTL", b"t"]).await)));
    assert_eq!(ok(&mut c, &[b"GET", b"t"]).await, bulk(b"vx"));

    assert_eq!(ok(&mut c, &[b"GETEX", b"t"]).await, bulk(b"vx"));
    assert!((99..=100).contains(&ttl_of(ok(&mut c, &[b"TTL", b"t"]).await)));
    assert_eq!(ok(&mut c, &[b"GETEX", b"t", b"persist"]).await, bulk(b"vx"));
    assert_eq!(ok(&mut c, &[b"TTL", b"t"]).await, Value::Int(-1));
    assert_eq!(
        ok(&mut c, &[b"GETEX", b"t", b"EX", b"50"]).await,
        bulk(b"vx")
    );
    assert!((49..=50).contains(&ttl_of(ok(&mut c, &[b"TTL", b"t"]).await)));
    ok(&mut c, &[b"GETEX", b"t", b"PX", b"30000"]).await;
    assert!((29..=30).contains(&ttl_of(ok(&mut c, &[b"TTL", b"t"]).await)));
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1000)
        .to_string();
    ok(&mut c, &[b"GETEX", b"t", b"EXAT", later.as_bytes()]).await;
    assert!((998..=1000).contains(&ttl_of(ok(&mut c, &[b"TTL", b"t"]).await)));
    let later_ms = format!("{later}000");
    ok(&mut c, &[b"GETEX", b"t", b"PXAT", later_ms.as_bytes()]).await;
    assert!((998..=1000).contains(&ttl_of(ok(&mut c, &[b"TTL", b"t"]).await)));
    // A time already past: the value is returned and the key removed.
    assert_eq!(
        ok(&mut c, &[b"GETEX", b"t", b"PXAT", b"1"]).await,
        bulk(b"vx")
    );
    assert_eq!(ok(&mut c, &[b"EXISTS", b"t"]).await, Value::Int(0));
    assert_eq!(
        ok(&mut c, &[b"GETEX", b"none", b"EX", b"5"]).await,
        Value::Nil
    );
    assert_eq!(ok(&mut c, &[b"EXISTS", b"none"]).await, Value::Int(0));
}

#[tokio::test]
async fn concurrent_appends_lose_nothing() {
    // APPEND reads, then writes on condition that the key is unchanged:
    // under contention every append lands exactly once.
    let server = serve().await;
    let mut tasks = Vec::new();
    for t in 0..4u8 {
        let addr = server.redis;
        tasks.push(tokio::spawn(async move {
            let mut c = client(addr, false).await;
            for _ in 0..50 {
                ok(&mut c, &[b"APPEND", b"log", &[b'a' + t]]).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut c = client(server.redis, false).await;
    let Value::BulkString(log) = ok(&mut c, &[b"GET", b"log"]).await else {
        panic!("the log exists")
    };
    assert_eq!(log.len(), 200);
    for t in 0..4u8 {
        assert_eq!(log.iter().filter(|&&b| b == b'a' + t).count(), 50);
    }
}

#[tokio::test]
async fn flushdb_and_flushall_delete_every_key() {
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    // More keys than one delete transaction takes.
    for chunk in 0..5 {
        let mut cmd = redis::cmd("MSET");
        for i in 0..1000 {
            cmd.arg(format!("k{chunk}-{i}")).arg("v");
        }
        let _: () = tokio::time::timeout(DEADLINE, cmd.query_async(&mut c))
            .await
            .unwrap()
            .unwrap();
    }
    ok(&mut c, &[b"SET", b"t", b"v", b"EX", b"100"]).await;
    assert_eq!(ok(&mut c, &[b"DBSIZE"]).await, Value::Int(5001));
    assert_eq!(ok(&mut c, &[b"FLUSHDB"]).await, Value::Okay);
    assert_eq!(ok(&mut c, &[b"DBSIZE"]).await, Value::Int(0));
    assert_eq!(ok(&mut c, &[b"GET", b"t"]).await, Value::Nil);
    // A write pipelined after FLUSHALL on the same connection survives it;
    // one before it does not.
    let (before, flushed, after, got): (String, String, String, Option<String>) =
        tokio::time::timeout(
            DEADLINE,
            redis::pipe()
                .cmd("SET")
                .arg("before")
                .arg("1")
                .cmd("FLUSHALL")
                .arg("ASYNC")
                .cmd("SET")
                .arg("after")
                .arg("2")
                .cmd("GET")
                .arg("after")
                .query_async(&mut c),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&*before, &*flushed, &*after), ("OK", "OK", "OK"));
    assert_eq!(got.as_deref(), Some("2"));
    assert_eq!(ok(&mut c, &[b"EXISTS", b"before"]).await, Value::Int(0));
    assert_eq!(ok(&mut c, &[b"FLUSHALL", b"sync"]).await, Value::Okay);
    assert_eq!(ok(&mut c, &[b"DBSIZE"]).await, Value::Int(0));
}

#[tokio::test]
async fn multi_exec_applies_queued_writes() {
    let server = serve().await;
    let mut c = client(server.redis, false).await;
    ok(&mut c, &[b"SET", b"gone", b"x"]).await;
    let replies: Vec<Value> = tokio::time::timeout(
        DEADLINE,
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("a")
            .arg("1")
            .cmd("SET")
            .arg("t")
            .arg("v")
            .arg("EX")
            .arg(100)
            .cmd("MSET")
            .arg("b")
            .arg("2")
            .arg("c")
            .arg("3")
            .cmd("DEL")
            .arg("c")
            .arg("zz")
            .arg("gone")
            .cmd("EXPIRE")
            .arg("b")
            .arg(100)
            .cmd("PERSIST")
            .arg("b")
            .cmd("PERSIST")
            .arg("b")
            .cmd("SETEX")
            .arg("s")
            .arg(50)
            .arg("v")
            .cmd("UNLINK")
            .arg("s")
            .cmd("EXPIRE")
            .arg("nothing")
            .arg(5)
            .query_async(&mut c),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        replies,
        vec![
            Value::Okay,
            Value::Okay,
            Value::Okay,
            Value::Int(2),
            Value::Int(1),
            Value::Int(1),
            Value::Int(0),
            Value::Okay,
            Value::Int(1),
            Value::Int(0),
        ]
    );
    assert_eq!(
        ok(&mut c, &[b"MGET", b"a", b"b", b"c", b"s", b"gone"]).await,
        Value::Array(vec![
            bulk(b"1"),
            bulk(b"2"),
            Value::Nil,
            Value::Nil,
            Value::Nil
        ])
    );
    assert!((99..=100).contains(&ttl_of(ok(&mut c, &[b"TTL", b"t"]).await)));
    assert_eq!(ok(&mut c, &[b"TTL", b"b"]).await, Value::Int(-1));
}

#[tokio::test]
async fn watch_conflict_makes_exec_nil() {
    for resp3 in [false, true] {
        let server = serve().await;
        let mut a = client(server.redis, resp3).await;
        let mut b = client(server.redis, resp3).await;
        let queued = Value::SimpleString("QUEUED".into());
        // Another connection writes a watched key: EXEC applies nothing.
        ok(&mut a, &[b"SET", b"k", b"start"]).await;
        assert_eq!(ok(&mut a, &[b"WATCH", b"k", b"other"]).await, Value::Okay);
        ok(&mut b, &[b"SET", b"k", b"from-b"]).await;
        assert_eq!(ok(&mut a, &[b"MULTI"]).await, Value::Okay);
        assert_eq!(ok(&mut a, &[b"SET", b"k", b"from-a"]).await, queued);
        assert_eq!(ok(&mut a, &[b"SET", b"other", b"x"]).await, queued);
        assert_eq!(ok(&mut a, &[b"EXEC"]).await, Value::Nil);
        assert_eq!(ok(&mut a, &[b"GET", b"k"]).await, bulk(b"from-b"));
        assert_eq!(ok(&mut a, &[b"EXISTS", b"other"]).await, Value::Int(0));
        // EXEC forgot the watches: the same transaction now applies.
        ok(&mut a, &[b"MULTI"]).await;
        ok(&mut a, &[b"SET", b"k", b"from-a"]).await;
        assert_eq!(
            ok(&mut a, &[b"EXEC"]).await,
            Value::Array(vec![Value::Okay])
        );
        assert_eq!(ok(&mut a, &[b"GET", b"k"]).await, bulk(b"from-a"));
        // A watched key that was missing and is created.
        ok(&mut a, &[b"WATCH", b"new"]).await;
        ok(&mut b, &[b"SET", b"new", b"from-b"]).await;
        ok(&mut a, &[b"MULTI"]).await;
        ok(&mut a, &[b"SET", b"new", b"from-a"]).await;
        assert_eq!(ok(&mut a, &[b"EXEC"]).await, Value::Nil);
        assert_eq!(ok(&mut a, &[b"GET", b"new"]).await, bulk(b"from-b"));
        // An empty transaction fails too when a watched key changed.
        ok(&mut a, &[b"WATCH", b"new"]).await;
        ok(&mut b, &[b"DEL", b"new"]).await;
        ok(&mut a, &[b"MULTI"]).await;
        assert_eq!(ok(&mut a, &[b"EXEC"]).await, Value::Nil);
        // UNWATCH and DISCARD forget the watches.
        ok(&mut a, &[b"WATCH", b"k"]).await;
        ok(&mut b, &[b"SET", b"k", b"again"]).await;
        assert_eq!(ok(&mut a, &[b"UNWATCH"]).await, Value::Okay);
        ok(&mut a, &[b"MULTI"]).await;
        ok(&mut a, &[b"SET", b"k", b"after-unwatch"]).await;
        assert_eq!(
            ok(&mut a, &[b"EXEC"]).await,
            Value::Array(vec![Value::Okay])
        );
        ok(&mut a, &[b"WATCH", b"k"]).await;
        ok(&mut b, &[b"SET", b"k", b"again"]).await;
        ok(&mut a, &[b"MULTI"]).await;
        assert_eq!(ok(&mut a, &[b"DISCARD"]).await, Value::Okay);
        ok(&mut a, &[b"MULTI"]).await;
        ok(&mut a, &[b"SET", b"k", b"after-discard"]).await;
        assert_eq!(
            ok(&mut a, &[b"EXEC"]).await,
            Value::Array(vec![Value::Okay])
        );
        // The connection's own write after WATCH changes the key too, as
        // in Redis.
        ok(&mut a, &[b"WATCH", b"k"]).await;
        ok(&mut a, &[b"SET", b"k", b"own"]).await;
        ok(&mut a, &[b"MULTI"]).await;
        ok(&mut a, &[b"SET", b"k", b"lost"]).await;
        assert_eq!(ok(&mut a, &[b"EXEC"]).await, Value::Nil);
        assert_eq!(ok(&mut a, &[b"GET", b"k"]).await, bulk(b"own"));
    }
}

#[tokio::test]
async fn exec_is_all_or_nothing_to_readers() {
    // Each transaction sets both keys to the same value: a reader never
    // sees them differ.
    let server = serve().await;
    let addr = server.redis;
    let writer = tokio::spawn(async move {
        let mut c = client(addr, false).await;
        for i in 0..200 {
            let v = i.to_string();
            let _: () = tokio::time::timeout(
                DEADLINE,
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg("x")
                    .arg(&v)
                    .ignore()
                    .cmd("MSET")
                    .arg("y")
                    .arg(&v)
                    .arg("unrelated")
                    .arg(&v)
                    .ignore()
                    .query_async(&mut c),
            )
            .await
            .unwrap()
            .unwrap();
        }
    });
    let mut c = client(addr, false).await;
    let mut reads = 0;
    while !writer.is_finished() {
        let Value::Array(both) = ok(&mut c, &[b"MGET", b"x", b"y"]).await else {
            panic!("MGET answers an array")
        };
        assert_eq!(both[0], both[1], "a transaction seen half applied");
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
    assert_eq!(
        ok(&mut c, &[b"MGET", b"x", b"y"]).await,
        Value::Array(vec![bulk(b"199"), bulk(b"199")])
    );
}

#[tokio::test]
async fn multi_error_texts() {
    let server = serve().await;
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    let cases: &[(&[&[u8]], &[u8])] = &[
        (&[b"EXEC"], b"-ERR EXEC without MULTI\r\n"),
        (&[b"DISCARD"], b"-ERR DISCARD without MULTI\r\n"),
        (&[b"MULTI", b"x"], b"-ERR wrong number of arguments for 'multi' command\r\n"),
        (&[b"WATCH"], b"-ERR wrong number of arguments for 'watch' command\r\n"),
        // Refused while queuing: EXEC aborts, nothing is applied.
        (&[b"MULTI"], b"+OK\r\n"),
        (&[b"MULTI"], b"-ERR MULTI calls can not be nested\r\n"),
        (&[b"WATCH", b"k"], b"-ERR WATCH inside MULTI is not allowed\r\n"),
        (&[b"SET", b"a", b"1"], b"+QUEUED\r\n"),
        (&[b"GET", b"a"], b"-ERR 'GET' inside MULTI is not supported by this server\r\n"),
        (&[b"EXEC"], b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
        (&[b"GET", b"a"], b"$-1\r\n"),
        (&[b"MULTI"], b"+OK\r\n"),
        (&[b"SET", b"a", b"1"], b"+QUEUED\r\n"),
        (&[b"SET", b"a"], b"-ERR wrong number of arguments for 'set' command\r\n"),
        (&[b"EXEC"], b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
        (&[b"MULTI"], b"+OK\r\n"),
        (&[b"FOO"], b"-ERR unknown command 'FOO', with args beginning with: \r\n"),
        (&[b"EXEC"], b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
        (&[b"EXISTS", b"a"], b":0\r\n"),
        // Commands one store transaction cannot carry with Redis's meaning.
        (&[b"MULTI"], b"+OK\r\n"),
        (&[b"SETNX", b"a", b"1"], b"-ERR 'SETNX' inside MULTI is not supported by this server\r\n"),
        (&[b"MSETNX", b"a", b"1"], b"-ERR 'MSETNX' inside MULTI is not supported by this server\r\n"),
        (&[b"INCR", b"a"], b"-ERR 'INCR' inside MULTI is not supported by this server\r\n"),
        (&[b"DECRBY", b"a", b"2"], b"-ERR 'DECRBY' inside MULTI is not supported by this server\r\n"),
        (&[b"SET", b"a", b"1", b"NX"], b"-ERR SET with NX, XX or GET inside MULTI is not supported by this server\r\n"),
        (&[b"SET", b"a", b"1", b"GET"], b"-ERR SET with NX, XX or GET inside MULTI is not supported by this server\r\n"),
        (&[b"EXPIRE", b"a", b"1", b"NX"], b"-ERR EXPIRE options (NX XX GT LT) are not supported by this server\r\n"),
        (&[b"DISCARD"], b"+OK\r\n"),
        (&[b"DISCARD"], b"-ERR DISCARD without MULTI\r\n"),
        // Errors Redis finds at EXEC: that command fails, the others run.
        (&[b"MULTI"], b"+OK\r\n"),
        (&[b"SET", b"x", b"1"], b"+QUEUED\r\n"),
        (&[b"SET", b"y", b"2", b"BOGUS"], b"+QUEUED\r\n"),
        (&[b"EXPIRE", b"x", b"abc"], b"+QUEUED\r\n"),
        (&[b"SETEX", b"y", b"0", b"v"], b"+QUEUED\r\n"),
        (&[b"MSET", b"y", b"2", b"z"], b"+QUEUED\r\n"),
        (&[b"SET", b"", b"v"], b"+QUEUED\r\n"),
        (&[b"SET", b"z", b"3"], b"+QUEUED\r\n"),
        (&[b"EXEC"], b"*7\r\n+OK\r\n-ERR syntax error\r\n-ERR value is not an integer or out of range\r\n-ERR invalid expire time in 'setex' command\r\n-ERR wrong number of arguments for 'mset' command\r\n-ERR key must not be empty\r\n+OK\r\n"),
        (&[b"MGET", b"x", b"y", b"z"], b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n3\r\n"),
        (&[b"MULTI"], b"+OK\r\n"),
        (&[b"EXEC"], b"*0\r\n"),
        (&[b"UNWATCH"], b"+OK\r\n"),
    ];
    for (args, reply) in cases {
        expect(&mut sock, &resp(args), reply).await;
    }
    // A conflict's nil array, as RESP2 writes it.
    let mut other = TcpStream::connect(server.redis).await.unwrap();
    expect(&mut sock, &resp(&[b"WATCH", b"x"]), b"+OK\r\n").await;
    expect(&mut other, &resp(&[b"SET", b"x", b"2"]), b"+OK\r\n").await;
    expect(&mut sock, &resp(&[b"MULTI"]), b"+OK\r\n").await;
    expect(&mut sock, &resp(&[b"DEL", b"x"]), b"+QUEUED\r\n").await;
    expect(&mut sock, &resp(&[b"EXEC"]), b"*-1\r\n").await;
    expect(&mut sock, &resp(&[b"GET", b"x"]), b"$1\r\n2\r\n").await;
}

#[tokio::test]
async fn multi_queue_is_bounded_by_max_frame() {
    let server = serve_with(ServerConfig {
        max_frame: 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut sock = TcpStream::connect(server.redis).await.unwrap();
    let value = [b'v'; 400];
    expect(&mut sock, &resp(&[b"MULTI"]), b"+OK\r\n").await;
    expect(&mut sock, &resp(&[b"SET", b"a", &value]), b"+QUEUED\r\n").await;
    expect(&mut sock, &resp(&[b"SET", b"b", &value]), b"+QUEUED\r\n").await;
    expect(
        &mut sock,
        &resp(&[b"SET", b"c", &value]),
        b"-ERR a transaction may queue at most 1024 bytes of commands\r\n",
    )
    .await;
    expect(
        &mut sock,
        &resp(&[b"EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await;
    expect(&mut sock, &resp(&[b"EXISTS", b"a", b"b"]), b":0\r\n").await;
}
