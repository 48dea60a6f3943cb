//! Linearizability: the checker of `common::linearizability` on histories
//! whose verdict is known, cross-checked against an exhaustive search on
//! small random ones.

mod common;

use std::time::{Duration, Instant};

use common::linearizability::{CheckError, Input, Operation, Options, Output, check, check_with};

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
