//! The ClusterClient against small in-test servers that play leader,
//! follower, dead member or broken connection: it follows NOT_LEADER, moves
//! on from addresses that refuse, waits out an election, and never sends a
//! write twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kv_client::kv_proto::{
    DeleteResponse, ErrorCode, GetResponse, PutResponse, Request, Response, ServerCodec, request,
    response,
};
use kv_client::{ClientError, ClientOptions, ClusterClient, ClusterOptions};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// Every test finishes well within this, or it has hung.
const DEADLINE: Duration = Duration::from_secs(20);

/// What a fake member does with one request.
enum Reply {
    Answer(Response),
    /// Close the connection without answering.
    HangUp,
    /// Keep the connection open and never answer.
    Silent,
}

/// A fake member: its address, and what reached it.
struct Member {
    addr: String,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Member {
    /// Requests it has read, in order.
    fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Starts a member that records each request it reads, then does what
/// `behave` says.
async fn member(behave: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Member {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let behave = Arc::new(behave);
    let (count, log) = (accepted.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (behave, log) = (behave.clone(), log.clone());
            tokio::spawn(async move {
                let mut conn = Framed::new(socket, ServerCodec::default());
                while let Some(Ok(Ok(request))) = conn.next().await {
                    log.lock().unwrap().push(request.clone());
                    match behave(&request) {
                        Reply::Answer(response) => {
                            if conn.send(response).await.is_err() {
                                return;
                            }
                        }
                        Reply::HangUp => return,
                        Reply::Silent => {}
                    }
                }
            });
        }
    });
    Member {
        addr,
        accepted,
        seen,
    }
}

/// A leader: a map, with puts and deletes numbered by a counter.
async fn leader() -> Member {
    let map: Mutex<BTreeMap<Bytes, Bytes>> = Mutex::default();
    let seq = AtomicUsize::new(0);
    member(move |request| Reply::Answer(apply(&map, &seq, request))).await
}

fn apply(map: &Mutex<BTreeMap<Bytes, Bytes>>, seq: &AtomicUsize, request: &Request) -> Response {
    let mut map = map.lock().unwrap();
    let next = || seq.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    let result = match &request.command {
        Some(request::Command::Put(put)) => {
            map.insert(put.key.clone(), put.value.clone());
            response::Result::Put(PutResponse { seq: next() })
        }
        Some(request::Command::Get(get)) => {
            let value = map.get(&get.key).cloned();
            response::Result::Get(GetResponse {
                found: value.is_some(),
                value: value.unwrap_or_default(),
                ..GetResponse::default()
            })
        }
        Some(request::Command::Delete(delete)) => {
            let existed = map.remove(&delete.key).is_some();
            response::Result::Delete(DeleteResponse {
                existed,
                seq: if existed { next() } else { 0 },
            })
        }
        _ => return Response::error(request.id, ErrorCode::InvalidRequest, "not in this fake"),
    };
    Response::new(request.id, result)
}

/// A follower's answer to `request`, naming `leader` if it knows it.
fn not_leader(request: &Request, leader: Option<&str>) -> Response {
    let mut response = Response::error(request.id, ErrorCode::NotLeader, "not the leader");
    if let (Some(leader), Some(response::Result::Error(error))) = (leader, response.result.as_mut())
    {
        error.leader_addr = leader.to_owned();
        error.message = format!("not the leader; the leader is {leader}");
    }
    response
}

/// A follower that answers every request NOT_LEADER, naming `leader`.
async fn follower(leader: Option<String>) -> Member {
    member(move |request| Reply::Answer(not_leader(request, leader.as_deref()))).await
}

/// An address nothing listens on (bound a moment ago, then released).
async fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

fn client(addrs: &[&str]) -> ClusterClient {
    ClusterClient::new(addrs.iter().copied(), ClusterOptions::default()).unwrap()
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("the test hung")
}

fn is_put(request: &Request) -> bool {
    matches!(request.command, Some(request::Command::Put(_)))
}

#[tokio::test]
async fn not_leader_with_leader_addr_goes_to_the_leader() {
    let leader = leader().await;
    let follower = follower(Some(leader.addr.clone())).await;
    // Only the follower is listed: the leader is found through its answer.
    let client = client(&[&follower.addr]);
    within(async {
        assert_eq!(client.put("k", "v").await.unwrap(), 1);
        assert_eq!(
            client.get("k").await.unwrap(),
            Some(Bytes::from_static(b"v"))
        );
    })
    .await;
    assert_eq!(client.connected_to().await, Some(leader.addr.clone()));
    // The get went straight to the leader over the connection kept.
    let at_follower = follower.seen();
    assert_eq!(at_follower.len(), 1, "{at_follower:?}");
    assert!(is_put(&at_follower[0]));
    assert_eq!(leader.seen().len(), 2);
}

#[tokio::test]
async fn not_leader_without_leader_addr_goes_to_the_next_address() {
    let follower = follower(None).await;
    let leader = leader().await;
    let client = client(&[&follower.addr, &leader.addr]);
    within(async {
        client.put("k", "v").await.unwrap();
        assert_eq!(
            client.get("k").await.unwrap(),
            Some(Bytes::from_static(b"v"))
        );
    })
    .await;
    assert_eq!(follower.seen().len(), 1);
    assert_eq!(leader.seen().len(), 2);
}

#[tokio::test]
async fn refused_connection_goes_to_the_next_address() {
    let dead = dead_addr().await;
    let leader = leader().await;
    let client = client(&[&dead, &leader.addr]);
    within(async {
        assert_eq!(client.put("k", "v").await.unwrap(), 1);
    })
    .await;
    assert_eq!(client.connected_to().await, Some(leader.addr.clone()));
}

/// When no address accepts a connection there is no election to wait
/// for: the call fails with the connect error without using its budget
/// (a minute here, so waiting it out would miss the test's deadline).
#[tokio::test]
async fn every_address_refused_fails_at_once_with_the_connect_error() {
    let (a, b) = (dead_addr().await, dead_addr().await);
    let options = ClusterOptions {
        retry_for: Duration::from_secs(60),
        ..ClusterOptions::default()
    };
    let client = ClusterClient::new([a, b.clone()], options).unwrap();
    match within(client.put("k", "v")).await {
        Err(ClientError::Connect {
            addr: Some(tried),
            source,
        }) => {
            assert_eq!(tried.to_string(), b);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The member reads the put and hangs up: it may have applied it. The
/// write is not sent anywhere else, and the caller is told its outcome is
/// unknown.
#[tokio::test]
async fn write_lost_after_it_was_sent_is_outcome_unknown_and_not_sent_again() {
    let broken = member(|_| Reply::HangUp).await;
    let leader = leader().await;
    for write in ["put", "delete"] {
        // A fresh client each time: after the failure, this one has moved
        // on to the next address.
        let client = client(&[&broken.addr, &leader.addr]);
        let result = within(async {
            match write {
                "put" => client.put("k", "v").await.map(drop),
                _ => client.delete("k").await.map(drop),
            }
        })
        .await;
        match result {
            Err(err @ ClientError::OutcomeUnknown { .. }) => {
                assert!(err.is_outcome_unknown());
                let ClientError::OutcomeUnknown { addr, source } = err else {
                    unreachable!()
                };
                assert_eq!(addr, broken.addr);
                assert!(source.is_connection_lost(), "{source:?}");
            }
            other => panic!("{write}: unexpected {other:?}"),
        }
    }
    // Each write reached the broken member once, and nothing else.
    assert_eq!(broken.seen().len(), 2);
    assert_eq!(leader.accepted(), 0);
    assert!(leader.seen().is_empty());
}

#[tokio::test]
async fn write_without_an_answer_in_time_is_outcome_unknown_and_not_sent_again() {
    let silent = member(|_| Reply::Silent).await;
    let leader = leader().await;
    let options = ClusterOptions {
        client: ClientOptions {
            request_timeout: Some(Duration::from_millis(200)),
            ..ClientOptions::default()
        },
        ..ClusterOptions::default()
    };
    let client = ClusterClient::new([&silent.addr, &leader.addr], options).unwrap();
    match within(client.put("k", "v")).await {
        Err(ClientError::OutcomeUnknown { addr, source }) => {
            assert_eq!(addr, silent.addr);
            assert!(matches!(*source, ClientError::Timeout(_)), "{source:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(silent.seen().len(), 1);
    assert_eq!(leader.accepted(), 0);
}

/// A read changes nothing, so after a lost connection it is sent again,
/// to the next member.
#[tokio::test]
async fn read_lost_after_it_was_sent_is_sent_again() {
    let broken = member(|_| Reply::HangUp).await;
    let leader = leader().await;
    let client = client(&[&broken.addr, &leader.addr]);
    within(async {
        assert_eq!(client.get("k").await.unwrap(), None);
    })
    .await;
    assert_eq!(broken.seen().len(), 1);
    assert_eq!(leader.seen().len(), 1);
}

/// Two members that know no leader yet, one of which becomes leader after
/// answering NOT_LEADER three times: the call pauses between rounds and
/// succeeds once there is a leader.
#[tokio::test]
async fn an_election_is_waited_out() {
    let a = follower(None).await;
    let map: Mutex<BTreeMap<Bytes, Bytes>> = Mutex::default();
    let seq = AtomicUsize::new(0);
    let asked = AtomicUsize::new(0);
    let b = member(move |request| {
        if asked.fetch_add(1, Ordering::SeqCst) < 3 {
            Reply::Answer(not_leader(request, None))
        } else {
            Reply::Answer(apply(&map, &seq, request))
        }
    })
    .await;
    let client = client(&[&a.addr, &b.addr]);
    assert_eq!(within(client.put("k", "v")).await.unwrap(), 1);
    assert_eq!(b.seen().len(), 4);
    // One try of `a` per round: three rounds without a leader, then `b`.
    assert_eq!(a.seen().len(), 4);
}

#[tokio::test]
async fn no_leader_within_the_budget_is_no_leader() {
    let (a, b) = (follower(None).await, follower(None).await);
    let options = ClusterOptions {
        retry_for: Duration::from_millis(300),
        ..ClusterOptions::default()
    };
    let client = ClusterClient::new([&a.addr, &b.addr], options).unwrap();
    match within(client.put("k", "v")).await {
        Err(ClientError::NoLeader { waited, last }) => {
            assert!(waited <= Duration::from_secs(5), "{waited:?}");
            assert!(
                matches!(
                    *last,
                    ClientError::Server {
                        code: ErrorCode::NotLeader,
                        ..
                    }
                ),
                "{last:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // It tried more than one round.
    assert!(a.seen().len() >= 2, "{}", a.seen().len());
}

/// Two followers naming each other (stale hints): the client does not
/// bounce between them but goes on down the list.
#[tokio::test]
async fn followers_naming_each_other_do_not_trap_the_client() {
    let b_addr: Arc<OnceLock<String>> = Arc::default();
    let hint = b_addr.clone();
    let a =
        member(move |request| Reply::Answer(not_leader(request, hint.get().map(String::as_str))))
            .await;
    let b = follower(Some(a.addr.clone())).await;
    b_addr.set(b.addr.clone()).unwrap();
    let leader = leader().await;
    let client = client(&[&a.addr, &b.addr, &leader.addr]);
    assert_eq!(within(client.put("k", "v")).await.unwrap(), 1);
    assert_eq!(leader.seen().len(), 1);
}

/// Errors other than NOT_LEADER are the server's answer: final, not tried
/// elsewhere. OUTCOME_UNKNOWN above all must not be.
#[tokio::test]
async fn other_server_errors_are_final() {
    for code in [ErrorCode::OutcomeUnknown, ErrorCode::Unavailable] {
        let failing = member(move |request| {
            Reply::Answer(Response::error(request.id, code, "the log failed"))
        })
        .await;
        let leader = leader().await;
        let client = client(&[&failing.addr, &leader.addr]);
        match within(client.put("k", "v")).await {
            Err(err @ ClientError::Server { .. }) => {
                assert_eq!(err.is_outcome_unknown(), code == ErrorCode::OutcomeUnknown);
                let ClientError::Server { code: got, .. } = err else {
                    unreachable!()
                };
                assert_eq!(got, code);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(failing.seen().len(), 1);
        assert_eq!(leader.accepted(), 0);
    }
}

#[test]
fn no_address_is_refused() {
    assert!(matches!(
        ClusterClient::new(Vec::<String>::new(), ClusterOptions::default()),
        Err(ClientError::NoAddress)
    ));
}

/// The new writes (batch, incr, expire, persist, a conditional put or
/// delete) are never sent again after a lost connection; the new reads
/// (versioned get, ttl, scan, mget, stats) are, to the next member.
#[tokio::test]
async fn new_writes_are_not_resent_and_new_reads_are() {
    use kv_client::{Condition, PutOptions, ScanOptions, Write};
    let broken = member(|_| Reply::HangUp).await;
    // Answers every read with an empty result of its kind.
    let reader = member(|request| {
        let result = match &request.command {
            Some(request::Command::Get(_)) => response::Result::Get(GetResponse::default()),
            Some(request::Command::Ttl(_)) => response::Result::Ttl(Default::default()),
            Some(request::Command::Scan(_)) => response::Result::Scan(Default::default()),
            Some(request::Command::Mget(m)) => {
                response::Result::Mget(kv_client::kv_proto::MgetResponse {
                    values: vec![GetResponse::default(); m.keys.len()],
                })
            }
            Some(request::Command::Stats(_)) => response::Result::Stats(Default::default()),
            _ => return Reply::Answer(Response::error(request.id, ErrorCode::Internal, "no")),
        };
        Reply::Answer(Response::new(request.id, result))
    })
    .await;
    for write in 0..6 {
        let client = client(&[&broken.addr, &reader.addr]);
        let result = within(async {
            match write {
                0 => client.batch([Write::put("k", "v")], []).await.map(drop),
                1 => client.incr("n", 1).await.map(drop),
                2 => client.expire("k", Duration::from_secs(1)).await.map(drop),
                3 => client.persist("k").await.map(drop),
                4 => {
                    let options = PutOptions {
                        condition: Some(Condition::Absent),
                        ..PutOptions::default()
                    };
                    client.put_with("k", "v", options).await.map(drop)
                }
                _ => client.delete_if("k", Condition::Present).await.map(drop),
            }
        })
        .await;
        assert!(
            matches!(result, Err(ClientError::OutcomeUnknown { .. })),
            "write {write}: {result:?}"
        );
    }
    assert_eq!(broken.seen().len(), 6);
    assert!(reader.seen().is_empty(), "a write was sent again");

    for read in 0..5 {
        let client = client(&[&broken.addr, &reader.addr]);
        within(async {
            match read {
                0 => assert_eq!(client.get_versioned("k").await.unwrap(), None),
                1 => assert_eq!(client.ttl("k").await.unwrap(), None),
                2 => assert!(
                    client
                        .scan_all(ScanOptions::default())
                        .await
                        .unwrap()
                        .is_empty()
                ),
                3 => assert_eq!(client.mget(["a", "b"]).await.unwrap(), [None, None]),
                _ => assert_eq!(client.stats().await.unwrap().keys, 0),
            }
        })
        .await;
    }
    assert_eq!(broken.seen().len(), 11);
    assert_eq!(reader.seen().len(), 5);
}

/// CONDITION_FAILED is an answer, not a reason to try another member.
#[tokio::test]
async fn a_failed_condition_is_final() {
    use kv_client::{Condition, PutOptions};
    let refusing = member(|request| {
        Reply::Answer(Response::new(
            request.id,
            response::Result::Error(kv_client::kv_proto::Error {
                code: ErrorCode::ConditionFailed as i32,
                message: "condition failed".into(),
                key: Bytes::from_static(b"k"),
                current_seq: 9,
                current_exists: true,
                ..Default::default()
            }),
        ))
    })
    .await;
    let leader = leader().await;
    let client = client(&[&refusing.addr, &leader.addr]);
    let options = PutOptions {
        condition: Some(Condition::SeqEquals(3)),
        ..PutOptions::default()
    };
    match within(client.put_with("k", "v", options)).await {
        Err(ClientError::ConditionFailed { key, current, .. }) => {
            assert_eq!((&key[..], current), (&b"k"[..], Some(9)));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(refusing.seen().len(), 1);
    assert_eq!(leader.accepted(), 0);
}
