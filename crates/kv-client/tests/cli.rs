//! The `kv-client` binary against an in-test server that keeps a map in
//! memory: output, exit codes, stdin values, and the line-by-line prompt.
//! (The end-to-end tests against the real server are in the workspace's
//! tests/ directory.)

use std::collections::BTreeMap;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kv_client::kv_proto::{
    CheckpointResponse, DeleteResponse, ErrorCode, GetResponse, KeysResponse, PutResponse,
    Response, ServerCodec, request, response,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_util::codec::Framed;

type Map = Arc<Mutex<BTreeMap<Bytes, Bytes>>>;

/// How long one run of the binary may take before it is killed and the test
/// fails.
const CLI_DEADLINE: Duration = Duration::from_secs(30);

/// Serves a map on 127.0.0.1; returns the address.
async fn map_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let map: Map = Arc::default();
    let seq = Arc::new(Mutex::new(0u64));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (map, seq) = (map.clone(), seq.clone());
            tokio::spawn(async move {
                let mut conn = Framed::new(socket, ServerCodec::default());
                while let Some(Ok(Ok(req))) = conn.next().await {
                    let result = apply(&map, &seq, req.command);
                    let response = match result {
                        Some(result) => Response::new(req.id, result),
                        None => Response::error(req.id, ErrorCode::InvalidRequest, "no command"),
                    };
                    if conn.send(response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn apply(
    map: &Map,
    seq: &Mutex<u64>,
    command: Option<request::Command>,
) -> Option<response::Result> {
    let mut map = map.lock().unwrap();
    let next_seq = || {
        let mut seq = seq.lock().unwrap();
        *seq += 1;
        *seq
    };
    Some(match command? {
        request::Command::Put(put) => {
            map.insert(put.key, put.value);
            response::Result::Put(PutResponse { seq: next_seq() })
        }
        request::Command::Get(get) => {
            let value = map.get(&get.key).cloned();
            response::Result::Get(GetResponse {
                found: value.is_some(),
                value: value.unwrap_or_default(),
                ..GetResponse::default()
            })
        }
        request::Command::Delete(delete) => {
            let existed = map.remove(&delete.key).is_some();
            response::Result::Delete(DeleteResponse {
                existed,
                seq: if existed { next_seq() } else { 0 },
            })
        }
        request::Command::Keys(keys) => {
            let matching: Vec<Bytes> = map
                .keys()
                .filter(|k| k.starts_with(&keys.prefix))
                .cloned()
                .collect();
            let limit = if keys.limit == 0 {
                usize::MAX
            } else {
                keys.limit as usize
            };
            response::Result::Keys(KeysResponse {
                truncated: matching.len() > limit,
                keys: matching.into_iter().take(limit).collect(),
            })
        }
        request::Command::Checkpoint(_) => response::Result::Checkpoint(CheckpointResponse {
            seq: *seq.lock().unwrap(),
        }),
        // As a server without a token: any token is accepted.
        request::Command::Auth(_) => response::Result::Auth(Default::default()),
        // The fake is a single node.
        request::Command::ClusterStatus(_)
        | request::Command::ClusterAdd(_)
        | request::Command::ClusterRemove(_)
        | request::Command::Backup(_) => return None,
        // Not faked (yet): the CLI tests for these run against the real
        // server.
        request::Command::Batch(_)
        | request::Command::Incr(_)
        | request::Command::Expire(_)
        | request::Command::Ttl(_)
        | request::Command::Scan(_)
        | request::Command::Mget(_)
        | request::Command::Stats(_) => return None,
    })
}

/// Runs the binary with `args` against `addr`, feeding `stdin`, with no
/// `KV_*` variable but `KV_ADDR` from the environment.
///
/// # Panics
/// If it does not finish within [`CLI_DEADLINE`] (it is killed first).
async fn kv(addr: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kv-client"));
    for (name, _) in std::env::vars_os() {
        if name.as_encoded_bytes().starts_with(b"KV_") {
            command.env_remove(name);
        }
    }
    command
        .env("KV_ADDR", addr)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A run that misses its deadline is dropped, and so killed.
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn kv-client");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let run = async move {
        // Fed while the output is read, so that neither side can fill a
        // pipe and wait on the other. The program may exit without reading
        // its input (a usage error); that is its call.
        let feed = async move {
            let _ = input.write_all(&stdin).await;
            drop(input);
        };
        let ((), output) = tokio::join!(feed, child.wait_with_output());
        output.expect("wait for kv-client")
    };
    match tokio::time::timeout(CLI_DEADLINE, run).await {
        Ok(output) => output,
        Err(_) => panic!("kv-client {args:?} did not finish within {CLI_DEADLINE:?}; killed it"),
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// One line on stderr, no panic or backtrace.
fn assert_one_error_line(output: &Output) {
    let text = stderr(output);
    assert_eq!(text.lines().count(), 1, "stderr: {text:?}");
    assert!(text.starts_with("kv-client: "), "stderr: {text:?}");
    assert!(!text.contains("panicked"), "stderr: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_round_trip_with_exit_codes() {
    let addr = map_server().await;

    let put = kv(&addr, &["put", "greeting", "hello"], b"").await;
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    assert_eq!(put.stdout, b"OK\n");

    // stdout is a pipe here, so the value comes out raw: no newline.
    let get = kv(&addr, &["get", "greeting"], b"").await;
    assert_eq!(get.status.code(), Some(0));
    assert_eq!(get.stdout, b"hello");

    let delete = kv(&addr, &["delete", "greeting"], b"").await;
    assert_eq!(delete.status.code(), Some(0));
    assert_eq!(delete.stdout, b"OK\n");

    let missing = kv(&addr, &["get", "greeting"], b"").await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    assert_one_error_line(&missing);
    assert!(stderr(&missing).contains("not found"));

    let missing = kv(&addr, &["delete", "greeting"], b"").await;
    assert_eq!(missing.status.code(), Some(1));
    assert_one_error_line(&missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_from_stdin_is_binary_safe() {
    let addr = map_server().await;
    let value: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let put = kv(&addr, &["put", "blob", "-"], &value).await;
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    let get = kv(&addr, &["get", "blob"], b"").await;
    assert_eq!(get.status.code(), Some(0));
    assert!(get.stdout == value, "value changed on the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_checkpoint() {
    let addr = map_server().await;
    for key in ["user:2", "user:1", "order:1", "user:3"] {
        let put = kv(&addr, &["put", key, "v"], b"").await;
        assert_eq!(put.status.code(), Some(0));
    }
    let all = kv(&addr, &["keys"], b"").await;
    assert_eq!(all.stdout, b"order:1\nuser:1\nuser:2\nuser:3\n");
    assert!(all.stderr.is_empty());

    let page = kv(&addr, &["keys", "--prefix", "user:", "--limit", "2"], b"").await;
    assert_eq!(page.status.code(), Some(0));
    assert_eq!(page.stdout, b"user:1\nuser:2\n");
    assert!(stderr(&page).contains("more keys match"));

    let checkpoint = kv(&addr, &["checkpoint"], b"").await;
    assert_eq!(checkpoint.status.code(), Some(0));
    assert_eq!(checkpoint.stdout, b"4\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_one_clear_line_and_exit_2() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let output = kv(&addr, &["get", "k"], b"").await;
    assert_eq!(output.status.code(), Some(2));
    assert_one_error_line(&output);
    assert_eq!(
        stderr(&output).trim_end(),
        format!("kv-client: cannot connect to {addr}: connection refused")
    );
}

/// A server that answers every request with the error `code`.
async fn failing_server(code: ErrorCode) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut conn = Framed::new(socket, ServerCodec::default());
                while let Some(Ok(Ok(req))) = conn.next().await {
                    let response = Response::error(req.id, code, "sync segment failed: EIO");
                    if conn.send(response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// DESIGN's exit codes: 3 for a write whose outcome is unknown, so that a
/// script can tell "may have happened" from "failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_unknown_exits_3_and_other_server_errors_exit_2() {
    let addr = failing_server(ErrorCode::OutcomeUnknown).await;
    for args in [&["put", "k", "v"][..], &["delete", "k"]] {
        let output = kv(&addr, args, b"").await;
        assert_eq!(
            output.status.code(),
            Some(3),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_one_error_line(&output);
        assert!(
            stderr(&output).contains("may or may not"),
            "{}",
            stderr(&output)
        );
    }
    let addr = failing_server(ErrorCode::Unavailable).await;
    let output = kv(&addr, &["put", "k", "v"], b"").await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_one_error_line(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let output = kv("127.0.0.1:1", &["put", "only-a-key"], b"").await;
    assert_eq!(output.status.code(), Some(2));
    assert!(!stderr(&output).contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_reads_commands_line_by_line_from_a_pipe() {
    let addr = map_server().await;
    let script = b"put a 1\n\
        put \"b c\" 'two words'\n\
        get a\n\
        GET \"b c\"\n\
        get zz\n\
        bogus\n\
        keys\n\
        delete a\n\
        delete a\n\
        checkpoint\n\
        quit\n\
        get a\n";
    let output = kv(&addr, &[], script).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "OK\nOK\n1\ntwo words\n(nil)\na\nb c\nOK\n(not found)\n3\n"
    );
    let errors = stderr(&output);
    assert_eq!(errors.lines().count(), 1, "{errors}");
    assert!(
        errors.contains("(error) unknown command `bogus`"),
        "{errors}"
    );
    // A failed command makes a scripted session exit non-zero.
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_survives_a_missing_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let output = kv(&addr, &[], b"get a\nhelp\nget b\n").await;
    let errors = stderr(&output);
    assert_eq!(errors.matches("cannot connect").count(), 2, "{errors}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("checkpoint"));
    assert_eq!(output.status.code(), Some(2));
}

/// A follower: answers every request NOT_LEADER, naming `leader`.
async fn follower_of(leader: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let leader = leader.to_owned();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let leader = leader.clone();
            tokio::spawn(async move {
                let mut conn = Framed::new(socket, ServerCodec::default());
                while let Some(Ok(Ok(req))) = conn.next().await {
                    let mut response = Response::error(req.id, ErrorCode::NotLeader, "not leader");
                    if let Some(response::Result::Error(error)) = response.result.as_mut() {
                        error.leader_addr = leader.clone();
                    }
                    if conn.send(response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `--addr` with several members: a dead one is skipped, a follower's
/// NOT_LEADER is followed to the leader it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_addresses_find_the_leader() {
    let leader = map_server().await;
    let follower = follower_of(&leader).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    let addrs = format!("{dead},{follower}");

    let put = kv(&addrs, &["put", "greeting", "hello"], b"").await;
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    assert_eq!(put.stdout, b"OK\n");
    let get = kv(&addrs, &["get", "greeting"], b"").await;
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    assert_eq!(get.stdout, b"hello");
    // It was the leader that took the write.
    let get = kv(&leader, &["get", "greeting"], b"").await;
    assert_eq!(get.stdout, b"hello");
}

/// A server that reads each request and hangs up without answering.
async fn hang_up_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut conn = Framed::new(socket, ServerCodec::default());
                let _ = conn.next().await;
            });
        }
    });
    addr
}

/// A write whose connection dies after it was sent may have happened:
/// exit 3, and it is not sent to the next address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_lost_after_it_was_sent_exits_3() {
    let broken = hang_up_server().await;
    let other = map_server().await;
    let addrs = format!("{broken},{other}");
    for args in [&["put", "k", "v"][..], &["delete", "k"]] {
        let output = kv(&addrs, args, b"").await;
        assert_eq!(
            output.status.code(),
            Some(3),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_one_error_line(&output);
        assert_eq!(
            stderr(&output).trim_end(),
            format!(
                "kv-client: the write may or may not have taken effect: the server at {broken} \
                 closed the connection after it was sent; read the key back to learn whether it \
                 did"
            )
        );
    }
    // The put went nowhere else.
    let get = kv(&other, &["get", "k"], b"").await;
    assert_eq!(get.status.code(), Some(1), "{}", stderr(&get));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_refuses_several_addresses() {
    let output = kv("127.0.0.1:1,127.0.0.1:2", &["bench"], b"").await;
    assert_eq!(output.status.code(), Some(2));
    assert_one_error_line(&output);
    assert!(stderr(&output).contains("bench drives one server"));
}
