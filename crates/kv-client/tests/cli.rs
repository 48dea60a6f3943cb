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
    self, BatchResponse, CheckpointResponse, Condition, ConditionKind, DeleteResponse, ErrorCode,
    ExpireResponse, GetResponse, IncrResponse, KeysResponse, MgetResponse, MutationKind,
    PutResponse, Response, ScanItem, ScanRequest, ScanResponse, ServerCodec, StatsResponse,
    TtlResponse, request, response,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_util::codec::Framed;

/// One key of the in-test store.
#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    /// The seq of the write that set it.
    seq: u64,
    /// Its deadline, ms since the Unix epoch; 0: none. Kept and reported,
    /// never enforced: the tests do not wait for time to pass.
    expires_at_ms: u64,
}

/// The in-test store: keys with versions, and the last seq.
#[derive(Debug, Default)]
struct Model {
    map: BTreeMap<Bytes, Entry>,
    seq: u64,
}

type Shared = Arc<Mutex<Model>>;

/// Most keys one scan page holds, whatever the request's limit: small, so
/// that a scan of a few keys takes several pages.
const SCAN_PAGE: usize = 3;

/// How long one run of the binary may take before it is killed and the test
/// fails.
const CLI_DEADLINE: Duration = Duration::from_secs(30);

/// Serves a [`Model`] on 127.0.0.1; returns the address.
async fn map_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let model: Shared = Arc::default();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let model = model.clone();
            tokio::spawn(async move {
                let mut conn = Framed::new(socket, ServerCodec::default());
                while let Some(Ok(Ok(req))) = conn.next().await {
                    let result = {
                        let mut model = model.lock().unwrap();
                        req.command.map(|command| model.apply(command))
                    };
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

fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(now.unwrap().as_millis()).unwrap()
}

fn invalid(message: &str) -> response::Result {
    response::Result::Error(kv_proto::Error {
        code: ErrorCode::InvalidRequest as i32,
        message: message.into(),
        ..Default::default()
    })
}

fn get_response(entry: Option<&Entry>) -> GetResponse {
    match entry {
        Some(entry) => GetResponse {
            found: true,
            value: entry.value.clone(),
            seq: entry.seq,
            expires_at_ms: entry.expires_at_ms,
        },
        None => GetResponse::default(),
    }
}

impl Model {
    /// `Err`: CONDITION_FAILED, as the server answers it.
    fn check(&self, key: &Bytes, condition: &Condition) -> Result<(), response::Result> {
        let entry = self.map.get(key);
        let holds = match condition.kind() {
            ConditionKind::ConditionNone => true,
            ConditionKind::Absent => entry.is_none(),
            ConditionKind::Present => entry.is_some(),
            ConditionKind::SeqEquals => entry.is_some_and(|e| e.seq == condition.seq),
            ConditionKind::ValueEquals => entry.is_some_and(|e| e.value == condition.value),
        };
        if holds {
            return Ok(());
        }
        Err(response::Result::Error(kv_proto::Error {
            code: ErrorCode::ConditionFailed as i32,
            message: "condition failed".into(),
            key: key.clone(),
            current_seq: entry.map_or(0, |e| e.seq),
            current_exists: entry.is_some(),
            ..Default::default()
        }))
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn apply(&mut self, command: request::Command) -> response::Result {
        match self.try_apply(command) {
            Ok(result) | Err(result) => result,
        }
    }

    fn try_apply(
        &mut self,
        command: request::Command,
    ) -> Result<response::Result, response::Result> {
        Ok(match command {
            request::Command::Put(put) => {
                if let Some(condition) = &put.condition {
                    self.check(&put.key, condition)?;
                }
                let expires_at_ms = match (put.ttl_ms, put.expires_at_ms) {
                    (0, at) => at,
                    (ttl, _) => now_ms() + ttl,
                };
                let seq = self.next_seq();
                self.map.insert(
                    put.key,
                    Entry {
                        value: put.value,
                        seq,
                        expires_at_ms,
                    },
                );
                response::Result::Put(PutResponse { seq })
            }
            request::Command::Get(get) => {
                response::Result::Get(get_response(self.map.get(&get.key)))
            }
            request::Command::Delete(delete) => {
                if let Some(condition) = &delete.condition {
                    self.check(&delete.key, condition)?;
                }
                let existed = self.map.remove(&delete.key).is_some();
                response::Result::Delete(DeleteResponse {
                    existed,
                    seq: if existed { self.next_seq() } else { 0 },
                })
            }
            request::Command::Keys(keys) => {
                let matching: Vec<Bytes> = self
                    .map
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
            request::Command::Checkpoint(_) => {
                response::Result::Checkpoint(CheckpointResponse { seq: self.seq })
            }
            request::Command::Batch(batch) => {
                if batch.writes.is_empty() {
                    return Err(invalid("a batch needs at least one write"));
                }
                for condition in &batch.conditions {
                    self.check(&condition.key, condition)?;
                }
                let seq = self.seq + 1;
                for write in batch.writes {
                    match write.kind() {
                        MutationKind::MutationPut => {
                            self.map.insert(
                                write.key,
                                Entry {
                                    value: write.value,
                                    seq,
                                    expires_at_ms: 0,
                                },
                            );
                        }
                        MutationKind::MutationDelete => {
                            self.map.remove(&write.key);
                        }
                        _ => return Err(invalid("not faked")),
                    }
                }
                self.seq = seq;
                response::Result::Batch(BatchResponse { seq })
            }
            request::Command::Incr(incr) => {
                let entry = self.map.get(&incr.key);
                let current = match entry {
                    None => 0,
                    Some(e) => std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| invalid("value is not an integer"))?,
                };
                let value = current
                    .checked_add(incr.delta)
                    .ok_or_else(|| invalid("increment would overflow"))?;
                let expires_at_ms = entry.map_or(0, |e| e.expires_at_ms);
                let seq = self.next_seq();
                self.map.insert(
                    incr.key,
                    Entry {
                        value: value.to_string().into(),
                        seq,
                        expires_at_ms,
                    },
                );
                response::Result::Incr(IncrResponse { value, seq })
            }
            request::Command::Expire(expire) => {
                let deadline = match (expire.ttl_ms, expire.expires_at_ms, expire.persist) {
                    (0, 0, true) => 0,
                    (ttl, 0, false) if ttl > 0 => now_ms() + ttl,
                    (0, at, false) if at > 0 => at,
                    _ => {
                        return Err(invalid(
                            "give exactly one of ttl_ms, expires_at_ms, persist",
                        ));
                    }
                };
                let Some(current) = self.map.get(&expire.key).map(|e| e.expires_at_ms) else {
                    return Ok(response::Result::Expire(ExpireResponse::default()));
                };
                if current == deadline {
                    return Ok(response::Result::Expire(ExpireResponse {
                        found: true,
                        ..ExpireResponse::default()
                    }));
                }
                let seq = self.next_seq();
                let entry = self.map.get_mut(&expire.key).unwrap();
                entry.expires_at_ms = deadline;
                entry.seq = seq;
                response::Result::Expire(ExpireResponse {
                    found: true,
                    changed: true,
                    seq,
                })
            }
            request::Command::Ttl(ttl) => match self.map.get(&ttl.key) {
                None => response::Result::Ttl(TtlResponse::default()),
                Some(e) if e.expires_at_ms == 0 => response::Result::Ttl(TtlResponse {
                    found: true,
                    ..TtlResponse::default()
                }),
                Some(e) => response::Result::Ttl(TtlResponse {
                    found: true,
                    has_deadline: true,
                    remaining_ms: e.expires_at_ms.saturating_sub(now_ms()),
                    expires_at_ms: e.expires_at_ms,
                }),
            },
            request::Command::Scan(scan) => self.scan(scan)?,
            request::Command::Mget(mget) => response::Result::Mget(MgetResponse {
                values: mget
                    .keys
                    .iter()
                    .map(|key| get_response(self.map.get(key)))
                    .collect(),
            }),
            request::Command::Stats(_) => response::Result::Stats(StatsResponse {
                keys: self.map.len() as u64,
                bytes: self
                    .map
                    .iter()
                    .map(|(k, e)| (k.len() + e.value.len()) as u64)
                    .sum(),
                last_seq: self.seq,
                durable_seq: self.seq,
                expiring_keys: self.map.values().filter(|e| e.expires_at_ms != 0).count() as u64,
                uptime_ms: 1234,
                ..StatsResponse::default()
            }),
            // As a server without a token: any token is accepted.
            request::Command::Auth(_) => response::Result::Auth(Default::default()),
            // The fake is a single node.
            request::Command::ClusterStatus(_)
            | request::Command::ClusterAdd(_)
            | request::Command::ClusterRemove(_)
            | request::Command::Backup(_) => return Err(invalid("a single node")),
        })
    }

    /// One page of at most [`SCAN_PAGE`] keys (fewer if the request's
    /// limit says so), as the server pages.
    fn scan(&self, scan: ScanRequest) -> Result<response::Result, response::Result> {
        let range_given = !scan.start.is_empty() || !scan.end.is_empty();
        if !scan.prefix.is_empty() && range_given {
            return Err(invalid("a prefix or a range, not both"));
        }
        let in_range = |key: &Bytes| {
            key.starts_with(&scan.prefix)
                && key >= &scan.start
                && (scan.end.is_empty() || key < &scan.end)
        };
        let past_after = |key: &Bytes| {
            scan.after.is_empty()
                || if scan.reverse {
                    key < &scan.after
                } else {
                    key > &scan.after
                }
        };
        let mut keys: Vec<(&Bytes, &Entry)> = self
            .map
            .iter()
            .filter(|(k, _)| in_range(k) && past_after(k))
            .collect();
        if scan.reverse {
            keys.reverse();
        }
        let page = match scan.limit {
            0 => SCAN_PAGE,
            limit => SCAN_PAGE.min(limit as usize),
        };
        let more = keys.len() > page;
        keys.truncate(page);
        let resume_after = if more {
            keys.last().map(|(k, _)| (*k).clone()).unwrap_or_default()
        } else {
            Bytes::new()
        };
        Ok(response::Result::Scan(ScanResponse {
            items: keys
                .into_iter()
                .map(|(key, entry)| ScanItem {
                    key: key.clone(),
                    value: if scan.values {
                        entry.value.clone()
                    } else {
                        Bytes::new()
                    },
                    seq: entry.seq,
                })
                .collect(),
            more,
            resume_after,
        }))
    }
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

/// stdout as text.
fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `args` and checks the exit code, showing stderr if it differs.
async fn expect(addr: &str, args: &[&str], code: i32) -> Output {
    let output = kv(addr, args, b"").await;
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: stdout {:?}, stderr {:?}",
        stdout(&output),
        stderr(&output)
    );
    output
}

/// Each line of stdout, parsed as JSON.
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_conditional_writes() {
    let addr = map_server().await;
    // A create-only put, then the version it made.
    assert_eq!(
        expect(&addr, &["put", "k", "v1", "--if-absent"], 0)
            .await
            .stdout,
        b"OK\n"
    );
    let get = expect(&addr, &["get", "k", "--seq"], 0).await;
    assert_eq!(get.stdout, b"1\nv1");

    // A second create fails: exit 1, the current version on stderr.
    let refused = expect(&addr, &["put", "k", "v2", "--if-absent"], 1).await;
    assert!(refused.stdout.is_empty());
    assert_one_error_line(&refused);
    assert_eq!(
        stderr(&refused).trim_end(),
        "kv-client: condition failed on \"k\": current version 1"
    );
    let stale = expect(&addr, &["put", "k", "v2", "--if-seq", "7"], 1).await;
    assert_eq!(
        stderr(&stale).trim_end(),
        "kv-client: condition failed on \"k\": current version 1"
    );
    expect(&addr, &["put", "k", "v2", "--if-seq", "1"], 0).await;
    expect(&addr, &["put", "k", "v3", "--if-value", "v1"], 1).await;
    expect(&addr, &["put", "k", "v3", "--if-value", "v2"], 0).await;
    expect(&addr, &["put", "k", "v4", "--if-present"], 0).await;
    let missing = expect(&addr, &["put", "nope", "v", "--if-present"], 1).await;
    assert_eq!(
        stderr(&missing).trim_end(),
        "kv-client: condition failed on \"nope\": the key does not exist"
    );
    assert_eq!(expect(&addr, &["get", "k"], 0).await.stdout, b"v4");

    // Conditional delete: a stale version leaves the key.
    let seq = String::from_utf8(expect(&addr, &["get", "k", "--seq"], 0).await.stdout).unwrap();
    let seq = seq.lines().next().unwrap().to_string();
    assert_eq!(seq, "4");
    let refused = expect(&addr, &["delete", "k", "--if-seq", "1"], 1).await;
    assert_one_error_line(&refused);
    assert!(
        stderr(&refused).contains("current version 4"),
        "{}",
        stderr(&refused)
    );
    expect(&addr, &["get", "k"], 0).await;
    assert_eq!(
        expect(&addr, &["delete", "k", "--if-seq", &seq], 0)
            .await
            .stdout,
        b"OK\n"
    );
    expect(&addr, &["get", "k"], 1).await;
    // Conditions are mutually exclusive.
    let both = expect(&addr, &["put", "k", "v", "--if-absent", "--if-seq", "1"], 2).await;
    assert!(
        stderr(&both).contains("cannot be used with"),
        "{}",
        stderr(&both)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_multi_get_and_counters() {
    let addr = map_server().await;
    assert_eq!(
        expect(&addr, &["mput", "a", "1", "b", "2", "c", "3"], 0)
            .await
            .stdout,
        b"OK\n"
    );
    // One batch, one version for every key.
    let json = json_lines(&expect(&addr, &["-o", "json", "mget", "a", "b", "zz", "c"], 0).await);
    assert_eq!(
        json,
        [
            serde_json::json!({"key": "a", "found": true, "value": "1", "seq": 1, "expires_at_ms": null}),
            serde_json::json!({"key": "b", "found": true, "value": "2", "seq": 1, "expires_at_ms": null}),
            serde_json::json!({"key": "zz", "found": false}),
            serde_json::json!({"key": "c", "found": true, "value": "3", "seq": 1, "expires_at_ms": null}),
        ]
    );
    let text = expect(&addr, &["mget", "a", "zz", "c"], 0).await;
    assert_eq!(text.stdout, b"1\n(nil)\n3\n");

    assert_eq!(
        expect(&addr, &["mdelete", "a", "b"], 0).await.stdout,
        b"OK\n"
    );
    assert_eq!(
        expect(&addr, &["mget", "a", "b", "c"], 0).await.stdout,
        b"(nil)\n(nil)\n3\n"
    );
    let json = json_lines(&expect(&addr, &["-o", "json", "mdelete", "c"], 0).await);
    assert_eq!(json, [serde_json::json!({"seq": 3})]);

    // Counters: default delta 1, negative deltas, a value that is no number.
    assert_eq!(expect(&addr, &["incr", "n"], 0).await.stdout, b"1\n");
    assert_eq!(expect(&addr, &["incr", "n", "10"], 0).await.stdout, b"11\n");
    assert_eq!(
        expect(&addr, &["incr", "n", "-13"], 0).await.stdout,
        b"-2\n"
    );
    let json = json_lines(&expect(&addr, &["-o", "json", "incr", "n", "-1"], 0).await);
    assert_eq!(
        json,
        [serde_json::json!({"key": "n", "value": -3, "seq": 7})]
    );
    expect(&addr, &["put", "s", "abc"], 0).await;
    let bad = expect(&addr, &["incr", "s"], 2).await;
    assert_one_error_line(&bad);
    assert!(stderr(&bad).contains("not an integer"), "{}", stderr(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_ttl_and_persist() {
    let addr = map_server().await;
    expect(&addr, &["put", "session", "data", "--ttl", "1h"], 0).await;
    let ttl = stdout(&expect(&addr, &["ttl", "session"], 0).await);
    let ms: u64 = ttl
        .trim_end()
        .strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ttl printed {ttl:?}"));
    assert!(ms > 3_500_000 && ms <= 3_600_000, "{ms}");
    let json = json_lines(&expect(&addr, &["-o", "json", "ttl", "session"], 0).await);
    let deadline = json[0]["expires_at_ms"].as_u64().expect("a deadline");
    assert!(
        json[0]["remaining_ms"]
            .as_u64()
            .is_some_and(|r| r <= 3_600_000)
    );
    let get = json_lines(&expect(&addr, &["-o", "json", "get", "session"], 0).await);
    assert_eq!(get[0]["expires_at_ms"].as_u64(), Some(deadline));

    assert_eq!(
        expect(&addr, &["persist", "session"], 0).await.stdout,
        b"OK\n"
    );
    assert_eq!(
        expect(&addr, &["ttl", "session"], 0).await.stdout,
        b"no expiry\n"
    );
    // Persist again: the key exists, nothing changes.
    let json = json_lines(&expect(&addr, &["-o", "json", "persist", "session"], 0).await);
    assert_eq!(
        json,
        [serde_json::json!({"key": "session", "changed": false, "seq": null})]
    );
    assert_eq!(
        expect(&addr, &["expire", "session", "90s"], 0).await.stdout,
        b"OK\n"
    );
    let ttl = json_lines(&expect(&addr, &["-o", "json", "ttl", "session"], 0).await);
    assert!(
        ttl[0]["remaining_ms"]
            .as_u64()
            .is_some_and(|r| r > 80_000 && r <= 90_000)
    );

    // A missing key: exit 1 for each.
    for args in [
        &["ttl", "gone"][..],
        &["expire", "gone", "10s"],
        &["persist", "gone"],
    ] {
        let missing = expect(&addr, args, 1).await;
        assert_one_error_line(&missing);
        assert!(
            stderr(&missing).contains("not found"),
            "{}",
            stderr(&missing)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_pages_through_every_key() {
    let addr = map_server().await;
    // Ten keys: four pages of the fake's three.
    let keys: Vec<String> = (0..10).map(|i| format!("user:{i:02}")).collect();
    for key in &keys {
        expect(&addr, &["put", key, &format!("v{key}")], 0).await;
    }
    expect(&addr, &["put", "other", "x"], 0).await;
    let all = expect(&addr, &["scan", "--prefix", "user:"], 0).await;
    assert_eq!(
        stdout(&all),
        keys.iter().map(|k| format!("{k}\n")).collect::<String>()
    );

    let reversed = expect(&addr, &["scan", "--prefix", "user:", "--reverse"], 0).await;
    let expected: String = keys.iter().rev().map(|k| format!("{k}\n")).collect();
    assert_eq!(stdout(&reversed), expected);

    // --limit counts keys printed, across pages.
    let limited = expect(
        &addr,
        &["scan", "-p", "user:", "--limit", "5", "--values"],
        0,
    )
    .await;
    let expected: String = keys[..5].iter().map(|k| format!("{k}\tv{k}\n")).collect();
    assert_eq!(stdout(&limited), expected);

    // A range, end exclusive, in JSON.
    let range = expect(
        &addr,
        &[
            "-o", "json", "scan", "--start", "user:03", "--end", "user:08", "--values",
        ],
        0,
    )
    .await;
    let json = json_lines(&range);
    let got: Vec<&str> = json.iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert_eq!(got, ["user:03", "user:04", "user:05", "user:06", "user:07"]);
    assert_eq!(json[0]["value"], "vuser:03");
    assert_eq!(json[0]["seq"], 4);
    // A limit on a range without a prefix: the first key is "other".
    let first = expect(&addr, &["scan", "--limit", "1"], 0).await;
    assert_eq!(first.stdout, b"other\n");
    // Everything, 11 keys, the prefix-less scan included.
    assert_eq!(
        stdout(&expect(&addr, &["scan"], 0).await).lines().count(),
        11
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_uses_base64_for_bytes_that_are_not_utf8() {
    let addr = map_server().await;
    let put = kv(&addr, &["-o", "json", "put", "bin", "-"], b"\xff\x00\x01").await;
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    assert_eq!(
        json_lines(&put),
        [serde_json::json!({"key": "bin", "seq": 1})]
    );
    let get = json_lines(&expect(&addr, &["--output", "json", "get", "bin"], 0).await);
    assert_eq!(
        get,
        [
            serde_json::json!({"key": "bin", "value_base64": "/wAB", "seq": 1, "expires_at_ms": null})
        ]
    );
    // Existing commands too.
    let keys = json_lines(&expect(&addr, &["-o", "json", "keys"], 0).await);
    assert_eq!(keys, [serde_json::json!({"key": "bin"})]);
    let delete = json_lines(&expect(&addr, &["-o", "json", "delete", "bin"], 0).await);
    assert_eq!(delete, [serde_json::json!({"key": "bin", "seq": 2})]);
    let checkpoint = json_lines(&expect(&addr, &["-o", "json", "checkpoint"], 0).await);
    assert_eq!(checkpoint, [serde_json::json!({"seq": 2})]);
    // Errors in JSON mode: one line on stderr, nothing on stdout, same code.
    let missing = expect(&addr, &["-o", "json", "get", "bin"], 1).await;
    assert!(missing.stdout.is_empty());
    assert_one_error_line(&missing);
    expect(&addr, &["put", "k", "v"], 0).await;
    let refused = expect(&addr, &["-o", "json", "put", "k", "w", "--if-absent"], 1).await;
    assert!(refused.stdout.is_empty());
    assert_eq!(
        stderr(&refused).trim_end(),
        "kv-client: condition failed on \"k\": current version 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_in_text_and_json() {
    let addr = map_server().await;
    expect(&addr, &["mput", "a", "1", "bb", "22"], 0).await;
    expect(&addr, &["put", "t", "v", "--ttl", "10s"], 0).await;
    let text = stdout(&expect(&addr, &["stats"], 0).await);
    assert_eq!(
        text,
        "keys 3\nbytes 8\nlast_seq 2\ndurable_seq 2\nwal_bytes 0\nwal_segments 0\n\
         snapshots 0\nexpiring_keys 1\nexpired_keys 0\nuptime_ms 1234\n"
    );
    let json = json_lines(&expect(&addr, &["-o", "json", "stats"], 0).await);
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["keys"], 3);
    assert_eq!(json[0]["expiring_keys"], 1);
    assert_eq!(json[0]["uptime_ms"], 1234);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_of_the_new_commands_exit_2_before_connecting() {
    // Nothing listens on port 1: a usage error must be found before.
    for (args, says) in [
        (&["mput", "a", "1", "b"][..], "odd number"),
        (&["expire", "k", "0"], "zero"),
        (&["expire", "k", "soon"], "not a duration"),
        (&["put", "k", "v", "--ttl", "10y"], "not a duration"),
        (&["incr", "n", "lots"], "invalid value"),
        (
            &["scan", "--prefix", "a", "--end", "b"],
            "cannot be used with",
        ),
        (&["-o", "xml", "stats"], "invalid value"),
    ] {
        let output = kv("127.0.0.1:1", args, b"").await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains("cannot connect"), "{args:?}");
    }
}

/// The new reads are resent to the next member after a lost connection;
/// the new writes are not (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_writes_are_never_resent_and_reads_are() {
    let broken = hang_up_server().await;
    let other = map_server().await;
    let addrs = format!("{broken},{other}");
    for args in [
        &["mput", "k", "v"][..],
        &["incr", "n"],
        &["expire", "k", "10s"],
        &["put", "k", "v", "--if-absent"],
    ] {
        let output = expect(&addrs, args, 3).await;
        assert_one_error_line(&output);
    }
    assert_eq!(expect(&other, &["scan"], 0).await.stdout, b"");
    for args in [&["mget", "k"][..], &["scan"], &["stats"]] {
        expect(&addrs, args, 0).await;
    }
    expect(&addrs, &["ttl", "k"], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_takes_the_new_commands() {
    let addr = map_server().await;
    let script = b"put a 1\n\
        put b 2\n\
        put c x\n\
        put d 4\n\
        mget a zz b\n\
        incr n\n\
        incr n -5\n\
        expire a 10s\n\
        persist a\n\
        ttl a\n\
        ttl zz\n\
        scan\n\
        scan \"\" 2\n\
        expire a never\n";
    let output = kv(&addr, &[], script).await;
    assert_eq!(
        stdout(&output),
        "OK\nOK\nOK\nOK\n1\n(nil)\n2\n1\n-4\nOK\nOK\nno expiry\n(not found)\n\
         a\nb\nc\nd\nn\na\nb\n"
    );
    let errors = stderr(&output);
    assert_eq!(errors.lines().count(), 1, "{errors}");
    assert!(errors.contains("not a duration"), "{errors}");
}
