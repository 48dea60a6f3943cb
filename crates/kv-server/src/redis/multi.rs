//! MULTI, EXEC, DISCARD, WATCH and UNWATCH: the commands queued after MULTI
//! are submitted by EXEC as one store transaction (all or none, one log
//! record), on condition that every watched key still has the version it
//! had when WATCH read it.
//!
//! Only commands that one store transaction carries with Redis's meaning
//! are queued: SET (without NX, XX or GET), SETEX, PSETEX, MSET, DEL,
//! UNLINK, EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST (and UNWATCH,
//! which does nothing there). In Redis a command of a transaction that
//! fails at EXEC (SETNX of an existing key, INCR of a non-integer) fails
//! alone and the others still run; a store transaction with a failing
//! condition or counter applies nothing. So SETNX, MSETNX, SET NX/XX/GET
//! and the INCR family are refused inside MULTI, as is every other
//! command, with an error that makes EXEC answer EXECABORT, as Redis does
//! for errors found while queuing.
//!
//! Errors Redis finds only at EXEC (a syntax error in SET's options, an
//! invalid expire time) are found there too: that command's reply in the
//! EXEC array is the error and it writes nothing; the others still run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use kv_store::{Condition, Expiry, Write, WriteResult};

use super::commands::{
    Only, Outcome, err, expire_deadline, expire_options_refused, put, set_options, setex_deadline,
    txn, wrong_arity,
};
use super::db::Db;
use super::resp::Frame;

/// Most keys one connection may watch at once.
pub(super) const MAX_WATCHED: usize = 65_536;

/// EXEC's reply after an error while queuing.
pub(super) const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// A transaction being queued (between MULTI and EXEC or DISCARD).
#[derive(Default)]
pub(super) struct Multi {
    /// The commands queued, in order.
    pub(super) queued: Vec<Vec<Bytes>>,
    /// Bytes of the commands queued.
    bytes: usize,
    /// A command was refused while queuing: EXEC answers EXECABORT.
    pub(super) failed: bool,
}

/// The keys a connection watches, each with the condition that it is
/// unchanged since WATCH (`SeqEquals` its version, or `Absent`). Shared
/// with WATCH's reply, which reads the versions when the connection's
/// earlier writes are durable.
pub(super) type Watched = Arc<Mutex<HashMap<Vec<u8>, Condition>>>;

fn lock(watched: &Watched) -> MutexGuard<'_, HashMap<Vec<u8>, Condition>> {
    watched
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Forgets every watched key and returns them (EXEC, DISCARD, UNWATCH).
pub(super) fn unwatch(watched: &Watched) -> HashMap<Vec<u8>, Condition> {
    std::mem::take(&mut *lock(watched))
}

/// Whether a command runs at once inside MULTI instead of being queued.
pub(super) fn runs_inside_multi(name: &str) -> bool {
    matches!(name, "exec" | "discard" | "multi" | "watch" | "quit")
}

/// Queues a command inside MULTI: `+QUEUED`, or the error that makes EXEC
/// abort. `max_bytes` bounds the bytes queued (the transaction is one log
/// record).
pub(super) fn queue(
    multi: &mut Multi,
    args: Vec<Bytes>,
    name: &str,
    max_bytes: usize,
    now: u64,
) -> Frame {
    if let Err(e) = queueable(name, &args, now) {
        multi.failed = true;
        return e;
    }
    let size: usize = args.iter().map(Bytes::len).sum();
    if multi.bytes.saturating_add(size) > max_bytes {
        multi.failed = true;
        return err(format!(
            "ERR a transaction may queue at most {max_bytes} bytes of commands"
        ));
    }
    multi.bytes += size;
    multi.queued.push(args);
    Frame::Simple("QUEUED".into())
}

fn queueable(name: &str, args: &[Bytes], now: u64) -> Result<(), Frame> {
    match name {
        "set" => match set_options(args, now) {
            Ok(options) if options.only != Only::Any || options.get => Err(err(
                "ERR SET with NX, XX or GET inside MULTI is not supported by this server",
            )),
            // An error in the options is SET's reply at EXEC, as in Redis.
            _ => Ok(()),
        },
        "expire" | "pexpire" | "expireat" | "pexpireat" if args.len() > 3 => {
            Err(expire_options_refused(name))
        }
        "setex" | "psetex" | "mset" | "del" | "unlink" | "expire" | "pexpire" | "expireat"
        | "pexpireat" | "persist" | "unwatch" => Ok(()),
        _ => Err(err(format!(
            "ERR '{}' inside MULTI is not supported by this server",
            name.to_ascii_uppercase()
        ))),
    }
}

/// WATCH key...: records each key's version (or its absence) once the
/// connection's earlier writes are durable.
pub(super) fn watch(keys: Vec<Bytes>, watched: &Watched, store: &Db) -> Outcome {
    let watched = Arc::clone(watched);
    let store = store.clone();
    Outcome::Barrier(Box::pin(async move {
        let found = match store.read(|view| view.get_many(&keys)).await {
            Ok(found) => found,
            Err(e) => return e,
        };
        let mut watched = lock(&watched);
        for (key, version) in keys.iter().zip(found) {
            if watched.contains_key(&key[..]) {
                // Redis keeps the first WATCH of a key.
                continue;
            }
            if watched.len() >= MAX_WATCHED {
                return err(format!(
                    "ERR a connection may watch at most {MAX_WATCHED} keys"
                ));
            }
            let condition = version.map_or(Condition::Absent, |v| Condition::SeqEquals(v.seq));
            watched.insert(key.to_vec(), condition);
        }
        Frame::ok()
    }))
}

/// How a queued command's reply is made from its writes' results.
#[derive(Clone, Copy)]
enum Reply {
    /// `+OK`.
    Ok,
    /// The number of keys that existed (DEL, UNLINK).
    Deleted,
    /// 1 or 0: whether the key existed (EXPIRE family) or its deadline was
    /// cleared (PERSIST).
    Deadline { persist: bool },
}

impl Reply {
    fn frame(self, results: &[WriteResult]) -> Frame {
        match self {
            Reply::Ok => Frame::ok(),
            Reply::Deleted => {
                let n = results
                    .iter()
                    .filter(|r| matches!(r, WriteResult::Delete { existed: true }))
                    .count();
                Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX))
            }
            Reply::Deadline { persist } => match results.first() {
                Some(WriteResult::SetDeadline { found, changed }) => {
                    Frame::Integer(i64::from(if persist { *changed } else { *found }))
                }
                _ => Frame::Integer(0),
            },
        }
    }
}

/// One queued command at EXEC.
enum Element {
    /// Its reply is this error; it writes nothing.
    Failed(Frame),
    /// Its writes are `writes[from..to]` of the transaction.
    Writes {
        from: usize,
        to: usize,
        reply: Reply,
    },
}

/// A queued command's writes (its reply an error if it has one).
fn plan(args: &[Bytes], now: u64) -> Result<(Vec<Write>, Reply), Frame> {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let (writes, reply) = match name.as_str() {
        "set" => {
            let options = set_options(args, now)?;
            (vec![put(&args[1], &args[2], options.expiry)], Reply::Ok)
        }
        "setex" | "psetex" => {
            let at = setex_deadline(&name, args, now)?;
            (vec![put(&args[1], &args[3], Expiry::At(at))], Reply::Ok)
        }
        "mset" => {
            if args.len().is_multiple_of(2) {
                return Err(wrong_arity("mset"));
            }
            let writes = args[1..]
                .chunks(2)
                .map(|p| put(&p[0], &p[1], Expiry::Clear))
                .collect();
            (writes, Reply::Ok)
        }
        "del" | "unlink" => {
            let writes = args[1..]
                .iter()
                .map(|k| Write::Delete { key: k.to_vec() })
                .collect();
            (writes, Reply::Deleted)
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" | "persist" => {
            let persist = name == "persist";
            let at = if persist {
                None
            } else {
                Some(expire_deadline(&name, args, now)?)
            };
            let write = Write::SetDeadline {
                key: args[1].to_vec(),
                at,
            };
            (vec![write], Reply::Deadline { persist })
        }
        "unwatch" => (Vec::new(), Reply::Ok),
        _ => return Err(err(format!("ERR '{name}' cannot run inside MULTI"))),
    };
    if writes.iter().any(|w| w.key().is_empty()) {
        return Err(err("ERR key must not be empty"));
    }
    Ok((writes, reply))
}

fn still_holds(condition: &Condition, version: Option<&kv_store::Versioned>) -> bool {
    match condition {
        Condition::Absent => version.is_none(),
        Condition::SeqEquals(seq) => version.is_some_and(|v| v.seq == *seq),
        Condition::Present => version.is_some(),
        Condition::ValueEquals(value) => version.is_some_and(|v| v.value == *value),
    }
}

/// EXEC of `queued`: one transaction of all their writes, on condition
/// that every watched key is unchanged; a nil array when one is not.
pub(super) fn exec(
    store: &Db,
    hold: Option<&mut kv_store::Hold>,
    queued: Vec<Vec<Bytes>>,
    watched: HashMap<Vec<u8>, Condition>,
    now: u64,
) -> Outcome {
    let mut writes = Vec::new();
    let mut elements = Vec::with_capacity(queued.len());
    for args in &queued {
        elements.push(match plan(args, now) {
            Err(e) => Element::Failed(e),
            Ok((w, reply)) => {
                let from = writes.len();
                writes.extend(w);
                Element::Writes {
                    from,
                    to: writes.len(),
                    reply,
                }
            }
        });
    }
    let answer = move |results: &[WriteResult]| {
        Frame::Array(
            elements
                .into_iter()
                .map(|element| match element {
                    Element::Failed(e) => e,
                    Element::Writes { from, to, reply } => {
                        reply.frame(results.get(from..to).unwrap_or(&[]))
                    }
                })
                .collect(),
        )
    };
    let conditions: Vec<(Vec<u8>, Condition)> = watched.into_iter().collect();
    if writes.is_empty() {
        // Nothing to write: the watched keys are compared when the
        // connection's earlier writes are durable.
        let store = store.clone();
        return Outcome::Later(Box::pin(async move {
            let keys: Vec<&[u8]> = conditions.iter().map(|(k, _)| &k[..]).collect();
            let versions = match store.read(|view| view.get_many(&keys)).await {
                Ok(versions) => versions,
                Err(e) => return e,
            };
            let unchanged = conditions
                .iter()
                .zip(&versions)
                .all(|((_, c), v)| still_holds(c, v.as_ref()));
            if unchanged {
                answer(&[])
            } else {
                Frame::NullArray
            }
        }));
    }
    txn(
        store,
        hold,
        conditions,
        writes,
        move |outcome| match outcome {
            Some(results) => answer(results),
            None => Frame::NullArray,
        },
    )
}
