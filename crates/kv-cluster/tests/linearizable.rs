//! Linearizability: the checker of `common::linearizability` on histories
//! whose verdict is known, cross-checked against an exhaustive search on
//! small random ones; then a history recorded from concurrent clients on
//! three proxied members while the leader is isolated, stopped and cut
//! one way and a follower restarted, checked with it.
//!
//! `KV_SOAK=1` runs the cluster history for 120 s instead of 9
//! (`KV_SOAK_SECS` sets another length).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::Cluster;
use common::linearizability::{CheckError, Input, Operation, Options, Output, check, check_with};
use kv_cluster::{ClusterNode, NodeId, RequestError};
use kv_store::replica::encode_put;

/// splitmix64: reproducible pseudo-random numbers from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

mod checker {
    use super::*;

    const K: &[u8] = b"k";

    fn put(invoke: u64, complete: u64, v: &str) -> Operation {
        Operation::put(0, K, v.as_bytes(), invoke, Some(complete))
    }

    fn put_unknown(invoke: u64, v: &str) -> Operation {
        Operation::put(0, K, v.as_bytes(), invoke, None)
    }

    fn get(invoke: u64, complete: u64, v: Option<&str>) -> Operation {
        Operation::get(1, K, v.map(str::as_bytes), invoke, complete)
    }

    fn delete(invoke: u64, complete: u64) -> Operation {
        Operation::delete(0, K, invoke, Some(complete))
    }

    /// Checks `history` with and without the unknown-outcome rewrites,
    /// asserting both give the same verdict: whether it is linearizable.
    fn linearizable(history: &[Operation]) -> bool {
        let search_only = Options {
            rewrite_unknown: false,
            ..Options::default()
        };
        let verdict = |r: Result<_, CheckError>| match r {
            Ok(_) => true,
            Err(CheckError::Violation(_)) => false,
            Err(e) => panic!("{e}"),
        };
        let rewritten = verdict(check(history));
        let plain = verdict(check_with(history, search_only));
        assert_eq!(rewritten, plain, "the rewrites change the verdict");
        rewritten
    }

    #[test]
    fn sequential_and_overlapping_histories_pass() {
        assert!(linearizable(&[]));
        assert!(linearizable(&[get(0, 1, None)]));
        assert!(linearizable(&[
            get(0, 1, None),
            put(2, 3, "a"),
            get(4, 5, Some("a")),
            put(6, 7, "b"),
            get(8, 9, Some("b")),
            delete(10, 11),
            get(12, 13, None),
        ]));
        // A get overlapping a put may see either value.
        assert!(linearizable(&[
            put(0, 1, "a"),
            put(2, 10, "b"),
            get(3, 4, Some("b")),
            get(5, 6, Some("b")),
        ]));
        assert!(linearizable(&[
            put(0, 1, "a"),
            put(2, 10, "b"),
            get(3, 4, Some("a")),
            get(5, 6, Some("b")),
        ]));
        // Two concurrent puts, taking effect in the order the gets show.
        assert!(linearizable(&[
            put(0, 10, "a"),
            put(0, 10, "b"),
            get(11, 12, Some("a")),
        ]));
        assert!(linearizable(&[
            put(0, 10, "a"),
            put(0, 10, "b"),
            get(11, 12, Some("b")),
        ]));
        // Operations that touch in time count as overlapping.
        assert!(linearizable(&[put(0, 5, "a"), get(5, 6, None)]));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_fails() {
        assert!(!linearizable(&[
            put(0, 1, "a"),
            put(2, 3, "b"),
            get(4, 5, Some("a")),
        ]));
        assert!(!linearizable(&[put(0, 1, "a"), get(2, 3, None)]));
        assert!(!linearizable(&[
            put(0, 1, "a"),
            delete(2, 3),
            get(4, 5, Some("a")),
        ]));
    }

    #[test]
    fn two_reads_seeing_values_in_an_impossible_order_fail() {
        // The puts overlap, so either order is possible, but not both.
        assert!(!linearizable(&[
            put(0, 10, "a"),
            put(0, 10, "b"),
            get(11, 12, Some("b")),
            get(13, 14, Some("a")),
        ]));
        // While a put is in flight a read may see the new value, but then
        // no later read may see the old one.
        assert!(!linearizable(&[
            put(0, 1, "a"),
            put(2, 20, "b"),
            get(3, 4, Some("b")),
            get(5, 6, Some("a")),
        ]));
    }

    #[test]
    fn a_read_of_a_value_never_written_fails() {
        assert!(!linearizable(&[get(0, 1, Some("x"))]));
        assert!(!linearizable(&[put(0, 1, "a"), get(2, 3, Some("x"))]));
        // Nor one written only later.
        assert!(!linearizable(&[get(0, 1, Some("a")), put(2, 3, "a")]));
        // Nor one written to another key.
        let elsewhere = Operation::put(0, b"other", b"a", 0, Some(1));
        assert!(!linearizable(&[elsewhere, get(2, 3, Some("a"))]));
    }

    #[test]
    fn an_unknown_write_that_is_later_observed_passes() {
        assert!(linearizable(&[
            put(0, 1, "a"),
            put_unknown(2, "b"),
            get(10, 11, Some("b")),
            get(12, 13, Some("b")),
        ]));
        // It may take effect long after every other operation ended.
        assert!(linearizable(&[
            put_unknown(0, "b"),
            put(1, 2, "a"),
            get(3, 4, Some("a")),
            get(100, 101, Some("b")),
        ]));
    }

    #[test]
    fn an_unknown_write_that_is_never_observed_passes() {
        assert!(linearizable(&[
            put(0, 1, "a"),
            put_unknown(2, "b"),
            get(10, 11, Some("a")),
            get(12, 13, Some("a")),
        ]));
        assert!(linearizable(&[put_unknown(0, "b"), get(10, 11, None)]));
    }

    #[test]
    fn an_unknown_write_is_still_bound_by_time_and_order() {
        // Not seen before it was invoked.
        assert!(!linearizable(&[get(0, 1, Some("b")), put_unknown(2, "b")]));
        // Once seen, it has taken effect: no read after that sees the
        // value it replaced.
        assert!(!linearizable(&[
            put(0, 1, "a"),
            put_unknown(2, "b"),
            get(3, 4, Some("b")),
            get(5, 6, Some("a")),
        ]));
        // Seen, then overwritten by a put that completed: not seen again.
        assert!(!linearizable(&[
            put_unknown(0, "b"),
            get(1, 2, Some("b")),
            put(3, 4, "c"),
            get(5, 6, Some("b")),
        ]));
    }

    #[test]
    fn keys_are_separate_registers() {
        let h = [
            Operation::put(0, b"x", b"1", 0, Some(1)),
            Operation::put(0, b"y", b"2", 2, Some(3)),
            Operation::get(1, b"x", Some(b"1"), 4, 5),
            Operation::get(1, b"y", Some(b"2"), 4, 5),
        ];
        let report = check(&h).expect("linearizable");
        assert_eq!(report.keys, 2);
        let mut bad = h.to_vec();
        bad.push(Operation::get(1, b"y", None, 6, 7));
        match check(&bad) {
            Err(CheckError::Violation(v)) => assert_eq!(v.key, b"y"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_violation_is_minimised_to_the_operations_that_conflict() {
        let mut h = Vec::new();
        for i in 0..40u64 {
            let v = format!("v{i}");
            h.push(put(i * 10, i * 10 + 3, &v));
            h.push(get(i * 10 + 4, i * 10 + 6, Some(&v)));
        }
        // A stale read in the middle.
        h.push(get(205, 206, Some("v3")));
        let Err(CheckError::Violation(v)) = check(&h) else {
            panic!("the stale read is not found");
        };
        let small = v.minimise(Duration::from_secs(10));
        assert!(
            matches!(check(&small), Err(CheckError::Violation(_))),
            "the minimised history passes"
        );
        assert!(small.len() <= 3, "minimised to {small:#?}");
        assert!(small.contains(&get(205, 206, Some("v3"))), "{small:#?}");
    }

    /// Whether some order of `ops` respects real time and the register:
    /// every permutation is tried; an operation of unknown outcome may be
    /// left out.
    fn exhaustive(ops: &[Operation]) -> bool {
        fn go(ops: &[Operation], placed: &mut [bool], state: Option<Vec<u8>>) -> bool {
            if (0..ops.len()).all(|i| placed[i] || ops[i].complete.is_none()) {
                return true;
            }
            for i in 0..ops.len() {
                if placed[i] {
                    continue;
                }
                let blocked = (0..ops.len())
                    .any(|j| !placed[j] && ops[j].complete.is_some_and(|c| c < ops[i].invoke));
                if blocked {
                    continue;
                }
                let next = match &ops[i].input {
                    Input::Put(v) => Some(v.clone()),
                    Input::Delete => None,
                    Input::Get => {
                        if ops[i].output != Output::Read(state.clone()) {
                            continue;
                        }
                        state.clone()
                    }
                };
                placed[i] = true;
                if go(ops, placed, next) {
                    return true;
                }
                placed[i] = false;
            }
            false
        }
        go(ops, &mut vec![false; ops.len()], None)
    }

    /// A random history on one key: up to 7 operations, values from a
    /// small set (so some repeat), some outcomes unknown.
    fn random_history(rng: &mut Rng) -> Vec<Operation> {
        let n = 1 + rng.below(7);
        let values = ["a", "b", "c"];
        (0..n)
            .map(|_| {
                let invoke = rng.below(40);
                let complete = invoke + rng.below(15);
                let known = rng.below(5) != 0;
                match rng.below(7) {
                    0..=2 => {
                        let v = values[rng.below(3) as usize];
                        Operation::put(0, K, v.as_bytes(), invoke, known.then_some(complete))
                    }
                    3 => Operation::delete(0, K, invoke, known.then_some(complete)),
                    _ => {
                        let v = match rng.below(4) {
                            3 => None,
                            i => Some(values[i as usize].as_bytes()),
                        };
                        Operation::get(1, K, v, invoke, complete)
                    }
                }
            })
            .collect()
    }

    #[test]
    fn agrees_with_an_exhaustive_search_on_small_random_histories() {
        let mut rng = Rng(7);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..5_000 {
            let h = random_history(&mut rng);
            let expected = exhaustive(&h);
            assert_eq!(linearizable(&h), expected, "history: {h:#?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        println!("{yes} linearizable, {no} not");
        assert!(yes > 500 && no > 500, "{yes} linearizable, {no} not");
    }

    /// A long history of `clients` concurrent clients on one register,
    /// made linearizable by construction: each operation takes effect at
    /// a random point of its interval, and gets return what the puts
    /// before that point left. Some puts are of unknown outcome: taking
    /// effect at a random point, or never.
    fn linearizable_history(rng: &mut Rng, clients: u64, per_client: u64) -> Vec<Operation> {
        // (effect time, client, index in its sequence, invoke, complete, is put, known)
        let mut planned = Vec::new();
        for c in 0..clients {
            let mut t = rng.below(10);
            for i in 0..per_client {
                let invoke = t;
                let complete = invoke + 1 + rng.below(30);
                let effect = invoke + rng.below(complete - invoke + 1);
                let is_put = rng.below(2) == 0;
                let known = !is_put || rng.below(10) != 0;
                let effect = if known {
                    effect
                } else {
                    // Unknown: anywhere later, or never.
                    match rng.below(3) {
                        0 => u64::MAX,
                        _ => effect + rng.below(200),
                    }
                };
                planned.push((effect, c, i, invoke, complete, is_put, known));
                t = complete + rng.below(5);
            }
        }
        planned.sort();
        let mut value: Option<Vec<u8>> = None;
        planned
            .into_iter()
            .map(|(effect, c, i, invoke, complete, is_put, known)| {
                if is_put {
                    let v = format!("{c}-{i}").into_bytes();
                    if effect != u64::MAX {
                        value = Some(v.clone());
                    }
                    Operation::put(c, K, &v, invoke, known.then_some(complete))
                } else {
                    Operation::get(c, K, value.as_deref(), invoke, complete)
                }
            })
            .collect()
    }

    #[test]
    fn long_concurrent_histories_check_quickly() {
        let mut rng = Rng(11);
        for round in 0..3 {
            let h = linearizable_history(&mut rng, 6, 2_000);
            let started = Instant::now();
            let report = check(&h).unwrap_or_else(|e| panic!("round {round}: {e}"));
            let took = started.elapsed();
            println!(
                "{} operations, {} unknown ({} dropped, {} bounded): {} steps in {took:?}",
                report.operations,
                report.unknown,
                report.unknown_dropped,
                report.unknown_bounded,
                report.steps
            );
            assert!(report.unknown > 100);
            assert!(took < Duration::from_secs(5), "checking took {took:?}");
        }
    }

    #[test]
    fn a_stale_read_in_a_long_history_is_found() {
        let mut rng = Rng(13);
        let mut h = linearizable_history(&mut rng, 6, 1_000);
        // The last get, made to return the first completed put's value
        // after a later put has completed.
        let first = h
            .iter()
            .filter(|o| o.complete.is_some())
            .find(|o| matches!(o.input, Input::Put(_)))
            .cloned()
            .unwrap();
        let Input::Put(old) = &first.input else {
            unreachable!()
        };
        let end = h.iter().filter_map(|o| o.complete).max().unwrap();
        h.push(Operation::put(9, K, b"last", end + 1, Some(end + 2)));
        h.push(Operation::get(9, K, Some(old), end + 3, end + 4));
        match check(&h) {
            Err(CheckError::Violation(v)) => {
                let small = v.minimise(Duration::from_secs(10));
                println!("minimised to {} operations:", small.len());
                for op in &small {
                    println!("  {op}");
                }
                assert!(small.len() <= 4, "{small:#?}");
            }
            other => panic!("{other:?}"),
        }
    }
}

// --- The cluster --------------------------------------------------------

const KEYS: [&[u8]; 3] = [b"x", b"y", b"z"];
const CLIENTS: u64 = 5;
/// How long a write's answer is awaited before its outcome is unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a read's answer is awaited before it is given up.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running members, shared by the clients and the fault task: a
/// member is taken out (and the clients see it gone) before it is
/// stopped.
struct Members {
    nodes: Mutex<BTreeMap<NodeId, Arc<ClusterNode>>>,
    ids: Vec<NodeId>,
    epoch: Instant,
}

impl Members {
    fn get(&self, id: NodeId) -> Option<Arc<ClusterNode>> {
        lock(&self.nodes).get(&id).cloned()
    }

    /// Time since the test began, in microseconds.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn after(&self, id: NodeId) -> NodeId {
        let i = self.ids.iter().position(|x| *x == id).unwrap();
        self.ids[(i + 1) % self.ids.len()]
    }

    /// The leader that every running member of `among` names, that says
    /// it leads, in a term above `after`; with its term.
    fn leader_of(&self, among: &[NodeId], after: u64) -> Option<(NodeId, u64)> {
        let nodes = lock(&self.nodes);
        let mut named = None;
        for id in among {
            let s = nodes.get(id)?.status();
            match (named, s.leader) {
                (_, None) => return None,
                (None, Some(l)) => named = Some(l),
                (Some(a), Some(b)) if a != b => return None,
                _ => {}
            }
        }
        let s = nodes.get(&named?)?.status();
        (among.contains(&s.node_id) && s.role == "leader" && s.term > after)
            .then_some((s.node_id, s.term))
    }

    fn describe(&self) -> String {
        lock(&self.nodes)
            .values()
            .map(|n| {
                let s = n.status();
                format!(
                    "[{}: {} term {} leader {:?}]",
                    s.node_id, s.role, s.term, s.leader
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Waits for [`Members::leader_of`].
    async fn wait_for_leader(&self, among: &[NodeId], after: u64) -> (NodeId, u64) {
        let timeout = Duration::from_secs(10);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader_of(among, after) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader of {among:?} in a term above {after} within {timeout:?}: {}",
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Takes member `id` out and stops it, once the operations that hold
    /// it (reads, bounded by their timeout) are done; then closes the
    /// connections through its proxy, as the death of its process would.
    /// (Without that, the peers keep talking to the stopped member's
    /// connection tasks, which outlive it, and never reach it again once
    /// it is restarted.)
    async fn stop(&self, cluster: &Cluster, id: NodeId) {
        let mut node = lock(&self.nodes).remove(&id).expect("running");
        let deadline = Instant::now() + READ_TIMEOUT * 5;
        let node = loop {
            match Arc::try_unwrap(node) {
                Ok(n) => break n,
                Err(shared) => {
                    assert!(Instant::now() < deadline, "member {id} still in use");
                    node = shared;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        node.shutdown().await;
        cluster.proxies[&id].reset();
    }

    /// Restarts member `id` with `cluster` and puts it back.
    async fn restart(&self, cluster: &mut Cluster, id: NodeId) {
        cluster.restart(id).await;
        let node = cluster.nodes.remove(&id).expect("restarted");
        lock(&self.nodes).insert(id, Arc::new(node));
    }
}

/// What a client did, besides the operations it recorded.
#[derive(Debug, Default)]
struct ClientStats {
    writes_ok: u64,
    writes_unknown: u64,
    writes_refused: u64,
    reads_ok: u64,
    reads_failed: u64,
    redirects: u64,
}

/// The member named by a NotLeader's client address (`client-of-<id>`).
fn leader_id(addr: &str) -> Option<NodeId> {
    addr.strip_prefix("client-of-")?.parse().ok()
}

/// One client until `until`: puts of values unique to it and gets on
/// [`KEYS`], each on the member it believes leads. Records every
/// operation whose outcome is known or may have been a write; keeps the
/// puts refused with NotLeader apart (they never happened).
async fn client(
    id: u64,
    members: Arc<Members>,
    until: Instant,
) -> (Vec<Operation>, Vec<Operation>, ClientStats) {
    let mut rng = Rng(id * 1_000 + 1);
    let mut history = Vec::new();
    let mut refused = Vec::new();
    let mut stats = ClientStats::default();
    let mut target = members.ids[0];
    let mut seq = 0u64;
    while Instant::now() < until {
        // Now and then a client goes to some member it picks, as one whose
        // idea of the leader is stale would: a member that believes it
        // still leads while the others have moved on must not answer it
        // from its own state.
        if rng.below(5) == 0 {
            target = members.ids[rng.below(members.ids.len() as u64) as usize];
        }
        let Some(node) = members.get(target) else {
            target = members.after(target);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let redirect = if rng.below(2) == 0 {
            seq += 1;
            let value = format!("c{id}-{seq}");
            let invoke = members.now();
            let pending = node.submit(encode_put(key, value.as_bytes()));
            drop(node);
            let answer = tokio::time::timeout(WRITE_TIMEOUT, pending.wait()).await;
            let complete = members.now();
            match answer {
                Ok(Ok(r)) => {
                    assert!(r.error.is_none(), "put {value}: {r:?}");
                    stats.writes_ok += 1;
                    let op = Operation::put(id, key, value.as_bytes(), invoke, Some(complete));
                    history.push(op);
                    None
                }
                Ok(Err(RequestError::NotLeader { leader })) => {
                    stats.writes_refused += 1;
                    let op = Operation::put(id, key, value.as_bytes(), invoke, Some(complete));
                    refused.push(op);
                    Some(leader)
                }
                Ok(Err(RequestError::Unavailable(_) | RequestError::OutcomeUnknown(_)))
                | Err(_) => {
                    stats.writes_unknown += 1;
                    history.push(Operation::put(id, key, value.as_bytes(), invoke, None));
                    Some(None)
                }
            }
        } else {
            let invoke = members.now();
            let answer =
                tokio::time::timeout(READ_TIMEOUT, node.read(|replica| replica.get(key))).await;
            let complete = members.now();
            drop(node);
            match answer {
                Ok(Ok(value)) => {
                    stats.reads_ok += 1;
                    history.push(Operation::get(id, key, value.as_deref(), invoke, complete));
                    None
                }
                Ok(Err(RequestError::NotLeader { leader })) => {
                    stats.reads_failed += 1;
                    Some(leader)
                }
                Ok(Err(RequestError::Unavailable(_) | RequestError::OutcomeUnknown(_)))
                | Err(_) => {
                    stats.reads_failed += 1;
                    Some(None)
                }
            }
        };
        if let Some(leader) = redirect {
            stats.redirects += 1;
            target = match leader.as_deref().and_then(leader_id) {
                Some(l) if l != target => l,
                _ => {
                    // No leader known yet, or this one: another member,
                    // after a pause.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    members.after(target)
                }
            };
        }
    }
    (history, refused, stats)
}

#[derive(Debug, Default)]
struct FaultLog {
    isolated: u64,
    cut_one_way: u64,
    stopped_leader: u64,
    stopped_follower: u64,
    /// Every (leader, term) seen, in order.
    leaders: Vec<(NodeId, u64)>,
    /// What was done when (ms since the test began).
    timeline: Vec<String>,
}

impl FaultLog {
    fn note(&mut self, members: &Members, what: String) {
        self.timeline
            .push(format!("{:>6} ms  {what}", members.now() / 1_000));
    }
}

/// Until `until`, in turn: isolates the leader, stops the leader, cuts
/// what the leader sends, stops a follower. A fault on the leader lasts
/// until the others have elected a new one (and a little more), then it
/// is healed (or the member restarted) and the test waits for a leader
/// all three members agree on.
async fn inject_faults(cluster: &mut Cluster, members: &Members, until: Instant) -> FaultLog {
    let mut log = FaultLog::default();
    let all = members.ids.clone();
    let mut current = members.wait_for_leader(&all, 0).await;
    log.leaders.push(current);
    let mut round = 0u64;
    while Instant::now() < until {
        let (leader, term) = current;
        let others: Vec<NodeId> = all.iter().copied().filter(|o| *o != leader).collect();
        // How long a fault on the leader lasts after the others elected a
        // new one: long enough for writes to complete on the new leader
        // while the old one may still believe it leads.
        let hold = Duration::from_millis(800);
        match round % 4 {
            0 => {
                log.note(members, format!("isolate leader {leader} (term {term})"));
                cluster.isolate(leader);
                log.isolated += 1;
                let new = members.wait_for_leader(&others, term).await;
                log.note(members, format!("{} elected in term {}", new.0, new.1));
                tokio::time::sleep(hold).await;
                cluster.heal();
            }
            1 => {
                log.note(members, format!("stop leader {leader} (term {term})"));
                members.stop(cluster, leader).await;
                log.stopped_leader += 1;
                let new = members.wait_for_leader(&others, term).await;
                log.note(members, format!("{} elected in term {}", new.0, new.1));
                tokio::time::sleep(hold).await;
                members.restart(cluster, leader).await;
            }
            2 => {
                log.note(
                    members,
                    format!("cut what leader {leader} sends (term {term})"),
                );
                for o in &others {
                    cluster.block(leader, *o);
                }
                log.cut_one_way += 1;
                let new = members.wait_for_leader(&others, term).await;
                log.note(members, format!("{} elected in term {}", new.0, new.1));
                tokio::time::sleep(hold).await;
                cluster.heal();
            }
            _ => {
                let follower = others[(round / 4 % 2) as usize];
                log.note(members, format!("stop follower {follower}"));
                members.stop(cluster, follower).await;
                log.stopped_follower += 1;
                tokio::time::sleep(Duration::from_millis(700)).await;
                members.restart(cluster, follower).await;
            }
        }
        let (_, term) = current;
        current = members.wait_for_leader(&all, term - 1).await;
        if log.leaders.last() != Some(&current) {
            log.leaders.push(current);
        }
        log.note(
            members,
            format!("all follow {} in term {}", current.0, current.1),
        );
        // Some calm between faults.
        tokio::time::sleep(Duration::from_millis(300)).await;
        round += 1;
    }
    log
}

fn run_length() -> Duration {
    let soak = std::env::var("KV_SOAK").is_ok_and(|v| v == "1");
    let secs = std::env::var("KV_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if soak { 120 } else { 9 });
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_under_partitions_and_restarts_is_linearizable() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, true, |_| {}).await;
    cluster.leader(Duration::from_secs(10)).await;
    let members = Arc::new(Members {
        ids: cluster.members.keys().copied().collect(),
        nodes: Mutex::new(
            std::mem::take(&mut cluster.nodes)
                .into_iter()
                .map(|(id, n)| (id, Arc::new(n)))
                .collect(),
        ),
        epoch: Instant::now(),
    });
    let length = run_length();
    let until = Instant::now() + length;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, members.clone(), until)))
        .collect();
    let faults = inject_faults(&mut cluster, &members, until).await;
    let mut history = Vec::new();
    let mut refused = Vec::new();
    let mut stats = ClientStats::default();
    for c in clients {
        let (h, r, s) = c.await.expect("client task");
        history.extend(h);
        refused.extend(r);
        stats.writes_ok += s.writes_ok;
        stats.writes_unknown += s.writes_unknown;
        stats.writes_refused += s.writes_refused;
        stats.reads_ok += s.reads_ok;
        stats.reads_failed += s.reads_failed;
        stats.redirects += s.redirects;
    }

    // Healed and all running: a last read of every key on the leader, so
    // that writes of unknown outcome that did take effect are seen.
    let (leader, _) = members.wait_for_leader(&members.ids, 0).await;
    let node = members.get(leader).expect("the leader runs");
    for key in KEYS {
        let invoke = members.now();
        let value = common::within(
            Duration::from_secs(5),
            "the last read",
            node.read(|r| r.get(key)),
        )
        .await
        .unwrap_or_else(|e| panic!("the last read on member {leader}: {e}"));
        history.push(Operation::get(
            CLIENTS,
            key,
            value.as_deref(),
            invoke,
            members.now(),
        ));
    }
    drop(node);
    for id in members.ids.clone() {
        members.stop(&cluster, id).await;
    }
    cluster.shutdown().await;

    for line in &faults.timeline {
        println!("{line}");
    }
    println!(
        "faults: {} isolations, {} one-way cuts, {} leader and {} follower restarts; leaders {:?}",
        faults.isolated,
        faults.cut_one_way,
        faults.stopped_leader,
        faults.stopped_follower,
        faults.leaders
    );
    println!("clients: {stats:?}");
    let checking = Instant::now();
    let result = check(&history);
    let took = checking.elapsed();
    match result {
        Ok(report) => println!(
            "linearizable: {} operations on {} keys, {} of unknown outcome \
             ({} never seen, {} seen), {} NotLeader writes left out; \
             checked in {took:?} ({} steps); the test took {:?}",
            report.operations,
            report.keys,
            report.unknown,
            report.unknown_dropped,
            report.unknown_bounded,
            refused.len(),
            report.steps,
            started.elapsed()
        ),
        Err(CheckError::Violation(v)) => {
            let small = v.minimise(Duration::from_secs(20));
            let mut text = String::new();
            for op in &small {
                text.push_str(&format!("\n  {op}"));
            }
            // Were writes refused with NotLeader taken after all?
            let mut with_refused = history.clone();
            with_refused.extend(refused.iter().map(|op| Operation {
                complete: None,
                ..op.clone()
            }));
            let refused_explains = check(&with_refused).is_ok();
            panic!(
                "{} operations: {}; minimised to {} operations (times in µs):{text}\n\
                 with the NotLeader writes as of unknown outcome it is {}",
                history.len(),
                CheckError::Violation(v),
                small.len(),
                if refused_explains {
                    "linearizable: a refused write took effect"
                } else {
                    "still not linearizable"
                }
            );
        }
        Err(e) => panic!("{e}"),
    }
    assert!(took < Duration::from_secs(20), "checking took {took:?}");

    // It did real work, through real faults.
    assert!(
        stats.writes_ok >= 100,
        "only {} writes completed",
        stats.writes_ok
    );
    assert!(
        stats.reads_ok >= 100,
        "only {} reads completed",
        stats.reads_ok
    );
    assert!(
        faults.isolated >= 1 && faults.cut_one_way >= 1 && faults.stopped_leader >= 1,
        "not every fault ran: {faults:?}"
    );
    // Each fault on the leader made the others elect a new one.
    assert!(
        faults.leaders.len() > 3,
        "too few leader changes: {:?}",
        faults.leaders
    );
}
