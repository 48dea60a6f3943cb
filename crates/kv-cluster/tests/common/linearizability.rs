//! A linearizability checker for the store seen as one register per key:
//! a put sets the key's value, a delete removes it, a get returns the
//! value or none.
//!
//! A history is a list of [`Operation`]s, each with the time it was
//! invoked, the time its answer came ([`None`] when the outcome is
//! unknown: a write answered "unavailable" or not answered in time), its
//! input and its output. The history is linearizable if every operation
//! can be given a point in time between its invocation and its completion
//! at which it took effect, so that the gets return what the puts and
//! deletes before them (in that order) left; an operation of unknown
//! outcome may take effect at any point after its invocation, or never.
//!
//! Keys are independent registers, so the history is checked one key at
//! a time (linearizability is compositional). For each key the search is
//! Wing & Gong's: walk the invocations and completions in time order, and
//! at each invocation try to linearize that operation now (it must fit
//! the register's state); reaching the completion of an operation not
//! yet linearized means the choices so far were wrong, so undo the last
//! one and try the next candidate. As in Lowe's refinement (and
//! Porcupine), the search remembers every (set of linearized operations,
//! register state) it has reached, and does not explore one twice: two
//! paths that linearized the same operations and left the same value have
//! the same future.
//!
//! Operations of unknown outcome complete "at infinity", after every
//! known completion; the search succeeds once only such operations are
//! left (they never took effect). Before the search, two rewrites that do
//! not change the verdict keep such operations from widening the search
//! for the rest of the history:
//! - a put of unknown outcome whose value no get returned is dropped: in
//!   any linearization, no get sits between it and the next write (that
//!   get would return its value), so taking it out leaves every get's
//!   answer as it was;
//! - a put of unknown outcome whose value no other put on the key writes,
//!   and that a get returned, must take effect before the first of those
//!   gets to complete: it is given that completion.
//!
//! Gets of unknown outcome tell nothing and are dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// Set the key to this value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Read the key.
    Get,
}

/// What an operation answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// A put or delete was done (or, of unknown outcome, may have been).
    Written,
    /// A get's answer: the value, or none.
    Read(Option<Vec<u8>>),
}

/// One operation of a history. Times are in any unit, from any origin,
/// as long as all operations of a history share them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (for the report only).
    pub client: u64,
    pub key: Vec<u8>,
    pub input: Input,
    pub output: Output,
    /// When it was invoked.
    pub invoke: u64,
    /// When its answer came; `None` when its outcome is unknown.
    pub complete: Option<u64>,
}

impl Operation {
    /// A put, completed at `complete` (or of unknown outcome).
    pub fn put(
        client: u64,
        key: &[u8],
        value: &[u8],
        invoke: u64,
        complete: Option<u64>,
    ) -> Operation {
        Operation {
            client,
            key: key.to_vec(),
            input: Input::Put(value.to_vec()),
            output: Output::Written,
            invoke,
            complete,
        }
    }

    /// A delete, completed at `complete` (or of unknown outcome).
    pub fn delete(client: u64, key: &[u8], invoke: u64, complete: Option<u64>) -> Operation {
        Operation {
            client,
            key: key.to_vec(),
            input: Input::Delete,
            output: Output::Written,
            invoke,
            complete,
        }
    }

    /// A get that returned `value`, completed at `complete`.
    pub fn get(
        client: u64,
        key: &[u8],
        value: Option<&[u8]>,
        invoke: u64,
        complete: u64,
    ) -> Operation {
        Operation {
            client,
            key: key.to_vec(),
            input: Input::Get,
            output: Output::Read(value.map(<[u8]>::to_vec)),
            invoke,
            complete: Some(complete),
        }
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (&self.input, &self.output) {
            (Input::Put(v), _) => format!("put {}={}", show(&self.key), show(v)),
            (Input::Delete, _) => format!("delete {}", show(&self.key)),
            (Input::Get, Output::Read(Some(v))) => {
                format!("get {} -> {}", show(&self.key), show(v))
            }
            (Input::Get, Output::Read(None)) => format!("get {} -> none", show(&self.key)),
            (Input::Get, Output::Written) => format!("get {} -> ?", show(&self.key)),
        };
        match self.complete {
            Some(c) => write!(
                f,
                "[{} .. {}] client {}: {what}",
                self.invoke, c, self.client
            ),
            None => write!(
                f,
                "[{} .. unknown] client {}: {what}",
                self.invoke, self.client
            ),
        }
    }
}

/// How a history is checked.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Apply the two rewrites of unknown-outcome puts (see the module
    /// docs) before the search. Off, only the search decides.
    pub rewrite_unknown: bool,
    /// Give up on a key after this many search steps.
    pub max_steps: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rewrite_unknown: true,
            max_steps: 50_000_000,
        }
    }
}

/// What a successful check saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub keys: usize,
    pub operations: usize,
    /// Operations of unknown outcome.
    pub unknown: usize,
    /// Unknown-outcome operations the rewrites dropped (never observed).
    pub unknown_dropped: usize,
    /// Unknown-outcome puts the rewrites gave a completion (observed).
    pub unknown_bounded: usize,
    /// Search steps over all keys.
    pub steps: u64,
}

/// A key whose operations admit no linearization.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: Vec<u8>,
    /// Every operation on the key, as given.
    pub ops: Vec<Operation>,
    /// The most operations the search linearized at once.
    pub deepest: usize,
    /// At that depth, the first operation whose completion the search
    /// reached without being able to linearize it.
    pub stuck: Option<Operation>,
}

/// Why a history did not check.
#[derive(Debug, Clone)]
pub enum CheckError {
    /// Not linearizable.
    Violation(Box<Violation>),
    /// The search for this key took more than `max_steps`: undecided.
    TooHard { key: Vec<u8>, steps: u64 },
    /// An operation's input and output do not go together.
    Malformed(Operation),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(v) => {
                write!(
                    f,
                    "key {}: not linearizable ({} operations; at most {} linearized",
                    show(&v.key),
                    v.ops.len(),
                    v.deepest
                )?;
                if let Some(s) = &v.stuck {
                    write!(f, ", then stuck at {s}")?;
                }
                write!(f, ")")
            }
            CheckError::TooHard { key, steps } => {
                write!(f, "key {}: undecided after {steps} search steps", show(key))
            }
            CheckError::Malformed(op) => write!(f, "malformed operation: {op}"),
        }
    }
}

/// Checks `history` with the default [`Options`].
pub fn check(history: &[Operation]) -> Result<Report, CheckError> {
    check_with(history, Options::default())
}

/// Checks `history`, one key at a time.
pub fn check_with(history: &[Operation], options: Options) -> Result<Report, CheckError> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in history {
        let fits = matches!(
            (&op.input, &op.output),
            (Input::Put(_) | Input::Delete, Output::Written) | (Input::Get, Output::Read(_))
        );
        if !fits || op.complete.is_some_and(|c| c < op.invoke) {
            return Err(CheckError::Malformed(op.clone()));
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut report = Report {
        keys: by_key.len(),
        operations: history.len(),
        unknown: history.iter().filter(|o| o.complete.is_none()).count(),
        ..Report::default()
    };
    for (key, ops) in by_key {
        let prepared = prepare(&ops, options.rewrite_unknown);
        report.unknown_dropped += prepared.dropped;
        report.unknown_bounded += prepared.bounded;
        match search(&prepared.ops, options.max_steps) {
            Outcome::Linearizable { steps } => report.steps += steps,
            Outcome::TooHard { steps } => {
                return Err(CheckError::TooHard {
                    key: key.to_vec(),
                    steps,
                });
            }
            Outcome::Violation { deepest, stuck } => {
                return Err(CheckError::Violation(Box::new(Violation {
                    key: key.to_vec(),
                    ops: ops.iter().map(|o| (*o).clone()).collect(),
                    deepest,
                    stuck: stuck.map(|i| ops[prepared.ops[i].source].clone()),
                })));
            }
        }
    }
    Ok(report)
}

/// The register's value: an interned value, or none.
type State = Option<u32>;

/// The completion of an operation of unknown outcome.
const NEVER: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Put (`Some`) or delete (`None`).
    Write(State),
    /// A get that returned this.
    Read(State),
}

#[derive(Debug, Clone, Copy)]
struct Op {
    invoke: u64,
    /// [`NEVER`] for an unknown outcome.
    complete: u64,
    step: Step,
    /// Its index among the key's operations as given.
    source: usize,
}

struct Prepared {
    ops: Vec<Op>,
    dropped: usize,
    bounded: usize,
}

/// One key's operations as the search takes them: values interned, gets
/// of unknown outcome dropped, and (with `rewrite`) the unknown-outcome
/// puts rewritten as the module docs say.
fn prepare(ops: &[&Operation], rewrite: bool) -> Prepared {
    fn intern<'a>(ids: &mut HashMap<&'a [u8], u32>, v: &'a [u8]) -> u32 {
        let next = ids.len() as u32;
        *ids.entry(v).or_insert(next)
    }
    let mut ids: HashMap<&[u8], u32> = HashMap::new();
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    let mut dropped = 0;
    for (source, op) in ops.iter().enumerate() {
        let step = match (&op.input, &op.output) {
            (Input::Put(v), _) => Step::Write(Some(intern(&mut ids, v))),
            (Input::Delete, _) => Step::Write(None),
            (Input::Get, Output::Read(v)) => Step::Read(v.as_deref().map(|v| intern(&mut ids, v))),
            (Input::Get, Output::Written) => unreachable!("checked by check_with"),
        };
        if op.complete.is_none() && matches!(step, Step::Read(_)) {
            dropped += 1;
            continue;
        }
        out.push(Op {
            invoke: op.invoke,
            complete: op.complete.unwrap_or(NEVER),
            step,
            source,
        });
    }
    let mut bounded = 0;
    if rewrite {
        // For each value: how many puts write it, and the earliest
        // completion of a get that returned it.
        let mut writers: HashMap<u32, usize> = HashMap::new();
        let mut first_seen: HashMap<u32, u64> = HashMap::new();
        for op in &out {
            match op.step {
                Step::Write(Some(v)) => *writers.entry(v).or_default() += 1,
                Step::Read(Some(v)) => {
                    let seen = first_seen.entry(v).or_insert(op.complete);
                    *seen = (*seen).min(op.complete);
                }
                _ => {}
            }
        }
        out.retain_mut(|op| {
            let Step::Write(Some(v)) = op.step else {
                return true;
            };
            if op.complete != NEVER {
                return true;
            }
            match first_seen.get(&v) {
                None => {
                    dropped += 1;
                    false
                }
                Some(seen) => {
                    if writers[&v] == 1 {
                        // A get that completed before this put was even
                        // invoked is a violation the search still finds:
                        // that get's completion comes first.
                        op.complete = (*seen).max(op.invoke);
                        bounded += 1;
                    }
                    true
                }
            }
        });
    }
    Prepared {
        ops: out,
        dropped,
        bounded,
    }
}

enum Outcome {
    Linearizable {
        steps: u64,
    },
    Violation {
        deepest: usize,
        /// Index into the prepared ops.
        stuck: Option<usize>,
    },
    TooHard {
        steps: u64,
    },
}

/// The set of linearized operations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The invocations and completions in time order, as a doubly linked list
/// that operations are lifted out of (both entries) when linearized and
/// put back in reverse order when the search backtracks.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per entry: the operation, and whether it is the completion.
    what: Vec<(usize, bool)>,
    /// Per operation: its invocation and completion entries.
    of: Vec<(usize, usize)>,
}

/// The sentinels: entries are numbered from 1, and the list runs from
/// `HEAD` to `tail`.
const HEAD: usize = 0;

impl Entries {
    fn new(ops: &[Op]) -> Entries {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            order.push((op.invoke, false, i));
            order.push((op.complete, true, i));
        }
        // At equal times invocations come first: operations that touch
        // in time overlap.
        order.sort_unstable();
        let n = order.len();
        let tail = n + 1;
        let mut e = Entries {
            next: (1..=n + 1).chain([tail]).collect(),
            prev: [HEAD].into_iter().chain(0..=n).collect(),
            what: vec![(usize::MAX, false); n + 2],
            of: vec![(0, 0); ops.len()],
        };
        for (pos, (_, is_completion, op)) in order.into_iter().enumerate() {
            let entry = pos + 1;
            e.what[entry] = (op, is_completion);
            if is_completion {
                e.of[op].1 = entry;
            } else {
                e.of[op].0 = entry;
            }
        }
        e
    }

    fn tail(&self) -> usize {
        self.next.len() - 1
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        self.prev[n] = x;
    }

    fn lift(&mut self, op: usize) {
        let (call, ret) = self.of[op];
        self.unlink(call);
        self.unlink(ret);
    }

    fn unlift(&mut self, op: usize) {
        let (call, ret) = self.of[op];
        self.relink(ret);
        self.relink(call);
    }
}

fn apply(state: State, step: Step) -> Option<State> {
    match step {
        Step::Write(v) => Some(v),
        Step::Read(v) => (v == state).then_some(state),
    }
}

fn search(ops: &[Op], max_steps: u64) -> Outcome {
    let mut list = Entries::new(ops);
    let tail = list.tail();
    let mut state: State = None;
    let mut linearized = Bits::new(ops.len());
    let mut seen: HashSet<(Bits, State)> = HashSet::new();
    // (operation, its invocation entry, the state before it)
    let mut stack: Vec<(usize, usize, State)> = Vec::new();
    let mut entry = list.next[HEAD];
    let mut steps = 0u64;
    let mut deepest = 0;
    let mut stuck = None;
    loop {
        steps += 1;
        if steps > max_steps {
            return Outcome::TooHard { steps };
        }
        if entry == tail {
            return Outcome::Linearizable { steps };
        }
        let (op, is_completion) = list.what[entry];
        if !is_completion {
            if let Some(after) = apply(state, ops[op].step) {
                linearized.set(op);
                if seen.insert((linearized.clone(), after)) {
                    stack.push((op, entry, state));
                    state = after;
                    list.lift(op);
                    entry = list.next[HEAD];
                    continue;
                }
                linearized.clear(op);
            }
            entry = list.next[entry];
        } else if ops[op].complete == NEVER {
            // Completions of unknown outcomes come after every known one:
            // only such operations are left, and they never took effect.
            return Outcome::Linearizable { steps };
        } else {
            // `op` completed without having taken effect: undo the last
            // choice and try the next candidate after it.
            if stack.len() >= deepest {
                if stack.len() > deepest || stuck.is_none() {
                    stuck = Some(op);
                }
                deepest = stack.len();
            }
            let Some((last, call, before)) = stack.pop() else {
                return Outcome::Violation { deepest, stuck };
            };
            linearized.clear(last);
            state = before;
            list.unlift(last);
            entry = list.next[call];
        }
    }
}

impl Violation {
    /// A smaller history on the key that is still not linearizable, found
    /// by taking out chunks of operations (halving the chunk size) for
    /// as long as `budget` allows. Taking out a put also takes out the
    /// gets that returned its value, and a delete the gets that returned
    /// none, so what is left is still a history the system produced, minus
    /// some operations, never one with reads of values nobody wrote.
    pub fn minimise(&self, budget: Duration) -> Vec<Operation> {
        let deadline = Instant::now() + budget;
        let fails = |ops: &[Operation]| matches!(check(ops), Err(CheckError::Violation(_)));
        let mut ops = self.ops.clone();
        ops.sort_by_key(|o| o.invoke);
        let mut chunk = ops.len().div_ceil(2).max(1);
        loop {
            let mut start = 0;
            let mut shrunk = false;
            while start < ops.len() {
                if Instant::now() >= deadline {
                    return ops;
                }
                let end = (start + chunk).min(ops.len());
                let candidate = without(&ops, start..end);
                if candidate.len() < ops.len() && fails(&candidate) {
                    ops = candidate;
                    shrunk = true;
                } else {
                    start = end;
                }
            }
            if chunk == 1 && !shrunk {
                return ops;
            }
            chunk = (chunk / 2).max(1);
        }
    }
}

/// `ops` without those in `range` and the gets that depend on them.
fn without(ops: &[Operation], range: std::ops::Range<usize>) -> Vec<Operation> {
    let mut values: HashSet<&[u8]> = HashSet::new();
    let mut deletes = false;
    for op in &ops[range.clone()] {
        match &op.input {
            Input::Put(v) => {
                values.insert(v);
            }
            Input::Delete => deletes = true,
            Input::Get => {}
        }
    }
    ops.iter()
        .enumerate()
        .filter(|(i, op)| {
            !range.contains(i)
                && match &op.output {
                    Output::Read(Some(v)) => !values.contains(v.as_slice()),
                    Output::Read(None) => !deletes,
                    Output::Written => true,
                }
        })
        .map(|(_, op)| op.clone())
        .collect()
}
