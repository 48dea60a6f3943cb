//! The Redis commands: each maps to the store call that answers it, with
//! Redis's semantics and error texts.
//!
//! Like the native protocol, a write is submitted when its command is read
//! (so on one connection the commit order is the command order) and
//! answered once durable; a read runs when the connection's writer reaches
//! it, after every earlier reply on the connection has resolved. Commands
//! that must see the old value and then write (GETSET, SET ... GET,
//! GETDEL, APPEND, GETEX with an option) read, then write with the
//! condition that the key still has the version read, retrying when another
//! client wrote in between; the reader waits for them before reading further
//! commands, so that no later write of the same connection overtakes them.
//! FLUSHDB and FLUSHALL wait the same way while they delete every key.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kv_store::{Condition, Expiry, ScanRange, Txn, Versioned, Write, WriteResult};

use super::admin::{checkpoint, command, config, info};
use super::db::{Db, Failed, View};
use super::keyspace::{Cursors, keys, scan};
use super::multi::{self, EXECABORT, Multi};
use super::resp::Frame;
use super::session::{Session, auth, client, hello};
use crate::AuthToken;
use kv_store::Hold;

/// A reply still to be resolved, in the connection's order.
pub(crate) type Later = Pin<Box<dyn Future<Output = Frame> + Send>>;

/// What a command turned into.
pub(crate) enum Outcome {
    /// Answered at once.
    Ready(Frame),
    /// Answered when the writer reaches it (reads) or when durable
    /// (writes, submitted already).
    Later(Later),
    /// A read-then-write: the reader waits for it before reading on.
    Barrier(Later),
    /// Answered, then the connection closes (QUIT).
    Close(Frame),
}

/// What every Redis connection of one server shares.
pub(crate) struct RedisServer {
    pub(crate) db: Db,
    pub(crate) token: Option<AuthToken>,
    pub(crate) port: u16,
    pub(crate) max_bulk: usize,
    pub(crate) max_clients: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) started: Instant,
    pub(crate) next_client_id: AtomicU64,
    pub(crate) connected: AtomicUsize,
    pub(crate) connections_received: AtomicU64,
    pub(crate) commands_processed: AtomicU64,
    /// Unix seconds of the last successful SAVE/BGSAVE (start-up before).
    pub(crate) last_save: AtomicU64,
    pub(super) cursors: Mutex<Cursors>,
}

impl RedisServer {
    pub(crate) fn new(
        db: Db,
        token: Option<AuthToken>,
        port: u16,
        max_bulk: usize,
        max_clients: usize,
        idle_timeout: Duration,
    ) -> RedisServer {
        RedisServer {
            db,
            token,
            port,
            max_bulk,
            max_clients,
            idle_timeout,
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
            connected: AtomicUsize::new(0),
            connections_received: AtomicU64::new(0),
            commands_processed: AtomicU64::new(0),
            last_save: AtomicU64::new(unix_secs()),
            cursors: Mutex::new(Cursors::default()),
        }
    }
}

/// A command's name, arity (negative: at least that many), flags and key
/// positions, as COMMAND reports them.
pub(super) struct Spec {
    pub(super) name: &'static str,
    pub(super) arity: i64,
    pub(super) flags: &'static [&'static str],
    pub(super) keys: (i64, i64, i64),
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
    }
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "fast"];
const A: &[&str] = &["fast", "loading", "stale"];
const TX: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];
const NONE: (i64, i64, i64) = (0, 0, 0);
const ONE: (i64, i64, i64) = (1, 1, 1);

/// Every command served. Anything else is an unknown command.
pub(super) const COMMANDS: &[Spec] = &[
    spec("ping", -1, A, NONE),
    spec("echo", 2, A, NONE),
    spec("quit", -1, A, NONE),
    spec("hello", -1, A, NONE),
    spec("auth", -2, A, NONE),
    spec("select", 2, A, NONE),
    spec("client", -2, A, NONE),
    spec("command", -1, A, NONE),
    spec("info", -1, A, NONE),
    spec("config", -2, A, NONE),
    spec("dbsize", 1, R, NONE),
    spec("time", 1, A, NONE),
    spec("get", 2, R, ONE),
    spec("set", -3, W, ONE),
    spec("setnx", 3, W, ONE),
    spec("setex", 4, W, ONE),
    spec("psetex", 4, W, ONE),
    spec("getset", 3, W, ONE),
    spec("getdel", 2, WF, ONE),
    spec("getex", -2, WF, ONE),
    spec("append", 3, &["write", "denyoom", "fast"], ONE),
    spec("mget", -2, R, (1, -1, 1)),
    spec("mset", -3, W, (1, -1, 2)),
    spec("msetnx", -3, W, (1, -1, 2)),
    spec("del", -2, &["write"], (1, -1, 1)),
    spec("unlink", -2, WF, (1, -1, 1)),
    spec("exists", -2, R, (1, -1, 1)),
    spec("incr", 2, W, ONE),
    spec("incrby", 3, W, ONE),
    spec("decr", 2, W, ONE),
    spec("decrby", 3, W, ONE),
    spec("strlen", 2, R, ONE),
    spec("expire", -3, WF, ONE),
    spec("pexpire", -3, WF, ONE),
    spec("expireat", -3, WF, ONE),
    spec("pexpireat", -3, WF, ONE),
    spec("ttl", 2, R, ONE),
    spec("pttl", 2, R, ONE),
    spec("persist", 2, WF, ONE),
    spec("type", 2, R, ONE),
    spec("keys", 2, &["readonly"], NONE),
    spec("scan", -2, &["readonly"], NONE),
    spec("save", 1, &["admin", "noscript"], NONE),
    spec("bgsave", -1, &["admin", "noscript"], NONE),
    spec("lastsave", 1, A, NONE),
    spec("flushdb", -1, &["write"], NONE),
    spec("flushall", -1, &["write"], NONE),
    spec("multi", 1, TX, NONE),
    spec(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        NONE,
    ),
    spec("discard", 1, TX, NONE),
    spec("watch", -2, TX, (1, -1, 1)),
    spec("unwatch", 1, TX, NONE),
];

/// The version reported to clients: the Redis command set this listener
/// follows (clients choose features by it).
pub(crate) const REDIS_VERSION: &str = "7.2.0";

pub(super) fn err(text: impl Into<String>) -> Frame {
    Frame::error(text)
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub(super) const SYNTAX: &str = "ERR syntax error";

pub(super) fn wrong_arity(name: &str) -> Frame {
    err(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Redis's words for a command it does not have.
fn unknown_command(args: &[Bytes]) -> Frame {
    let name = printable(&args[0]);
    let rest: String = args[1..]
        .iter()
        .map(|a| format!("'{}' ", printable(a)))
        .collect();
    err(format!(
        "ERR unknown command '{name}', with args beginning with: {rest}"
    ))
}

/// An argument as quoted in an error: at most 128 bytes, and no bytes that
/// would break the error line.
pub(super) fn printable(arg: &[u8]) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(128)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub(super) fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

/// An integer as Redis reads one: decimal, no sign but `-`, no spaces or
/// leading zeros.
pub(super) fn parse_int(arg: &[u8]) -> Result<i64, Frame> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok().filter(|n| n.to_string() == s))
        .ok_or_else(|| err(NOT_INTEGER))
}

pub(super) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A store error as a Redis error. The store's counter errors already use
/// Redis's words.
pub(super) fn store_error(e: &kv_store::Error) -> Frame {
    err(format!("ERR {}", e.cause()))
}

/// An absolute deadline from a command's time argument: `n` in units of
/// `unit_ms`, from now if `relative`. Overflow or a time past the year
/// 9999 is `ERR invalid expire time in '<cmd>' command`; a time not after
/// now is returned as is (the key expires at once).
fn deadline(cmd: &str, n: i64, unit_ms: i64, relative: bool, now: u64) -> Result<i64, Frame> {
    let invalid = || err(format!("ERR invalid expire time in '{cmd}' command"));
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if relative {
        ms.checked_add(i64::try_from(now).map_err(|_| invalid())?)
            .ok_or_else(invalid)?
    } else {
        ms
    };
    if at > i64::try_from(kv_store::MAX_DEADLINE_MS).unwrap_or(i64::MAX) {
        return Err(invalid());
    }
    Ok(at)
}

/// SETEX / PSETEX key time value: the absolute deadline.
pub(super) fn setex_deadline(cmd: &str, args: &[Bytes], now: u64) -> Result<u64, Frame> {
    let unit = if cmd == "setex" { 1000 } else { 1 };
    let n = parse_int(&args[2])?;
    if n <= 0 {
        return Err(err(format!("ERR invalid expire time in '{cmd}' command")));
    }
    deadline(cmd, n, unit, true, now).map(i64::unsigned_abs)
}

/// The text refusing the EXPIRE options NX XX GT LT.
pub(super) fn expire_options_refused(cmd: &str) -> Frame {
    err(format!(
        "ERR {} options (NX XX GT LT) are not supported by this server",
        cmd.to_ascii_uppercase()
    ))
}

/// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key time: the absolute
/// deadline, at least 1 (a time already past removes the key, as in
/// Redis).
pub(super) fn expire_deadline(cmd: &str, args: &[Bytes], now: u64) -> Result<u64, Frame> {
    if args.len() > 3 {
        return Err(expire_options_refused(cmd));
    }
    let unit = if cmd.starts_with('p') { 1 } else { 1000 };
    let relative = !cmd.ends_with("at");
    let at = deadline(cmd, parse_int(&args[2])?, unit, relative, now)?;
    Ok(u64::try_from(at).unwrap_or(0).max(1))
}

/// Starts answering one command.
pub(crate) fn dispatch(
    args: Vec<Bytes>,
    session: &mut Session,
    shared: &Arc<RedisServer>,
) -> Outcome {
    shared.commands_processed.fetch_add(1, Ordering::Relaxed);
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    if !session.authenticated && !matches!(name.as_str(), "auth" | "hello" | "quit") {
        return Outcome::Ready(err("NOAUTH Authentication required."));
    }
    // Inside MULTI, an unknown command or a wrong arity makes EXEC abort.
    let queue_failed = |session: &mut Session| {
        if let Some(multi) = session.multi.as_mut() {
            multi.failed = true;
        }
    };
    let Some(spec) = COMMANDS.iter().find(|s| s.name == name) else {
        queue_failed(session);
        return Outcome::Ready(unknown_command(&args));
    };
    let n = i64::try_from(args.len()).unwrap_or(i64::MAX);
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        queue_failed(session);
        return Outcome::Ready(wrong_arity(spec.name));
    }
    let ready = |f: Result<Frame, Frame>| Outcome::Ready(f.unwrap_or_else(|e| e));
    let store = &shared.db;
    let now = kv_store::now_ms();
    if let Some(queue) = session.multi.as_mut()
        && !multi::runs_inside_multi(spec.name)
    {
        return Outcome::Ready(multi::queue(queue, args, spec.name, shared.max_bulk, now));
    }
    match spec.name {
        "multi" => Outcome::Ready(if session.multi.is_some() {
            err("ERR MULTI calls can not be nested")
        } else {
            session.multi = Some(Multi::default());
            Frame::ok()
        }),
        "exec" => match session.multi.take() {
            None => Outcome::Ready(err("ERR EXEC without MULTI")),
            Some(queued) => {
                let watched = multi::unwatch(&session.watched);
                if queued.failed {
                    Outcome::Ready(err(EXECABORT))
                } else {
                    multi::exec(store, session.hold.as_mut(), queued.queued, watched, now)
                }
            }
        },
        "discard" => Outcome::Ready(match session.multi.take() {
            None => err("ERR DISCARD without MULTI"),
            Some(_) => {
                multi::unwatch(&session.watched);
                Frame::ok()
            }
        }),
        "watch" => {
            if session.multi.is_some() {
                return Outcome::Ready(err("ERR WATCH inside MULTI is not allowed"));
            }
            multi::watch(args[1..].to_vec(), &session.watched, store)
        }
        "unwatch" => {
            multi::unwatch(&session.watched);
            Outcome::Ready(Frame::ok())
        }
        "ping" => Outcome::Ready(match args.len() {
            1 => Frame::Simple("PONG".into()),
            2 => Frame::Bulk(args[1].clone()),
            _ => wrong_arity("ping"),
        }),
        "echo" => Outcome::Ready(Frame::Bulk(args[1].clone())),
        "quit" => Outcome::Close(Frame::ok()),
        "hello" => ready(hello(&args, session, shared)),
        "auth" => ready(auth(&args, session, shared)),
        "select" => ready(parse_int(&args[1]).and_then(|db| {
            if db == 0 {
                Ok(Frame::ok())
            } else {
                Err(err("ERR DB index is out of range"))
            }
        })),
        "client" => ready(client(&args, session)),
        "command" => ready(command(&args)),
        "info" => {
            let shared = Arc::clone(shared);
            Outcome::Later(Box::pin(async move { info(&args, &shared) }))
        }
        "config" => ready(config(&args, shared)),
        "dbsize" => read(store, |store| {
            Frame::Integer(i64::try_from(store.len()).unwrap_or(i64::MAX))
        }),
        "time" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Outcome::Ready(Frame::Array(vec![
                Frame::bulk(now.as_secs().to_string()),
                Frame::bulk(now.subsec_micros().to_string()),
            ]))
        }
        "get" => read(store, move |store| {
            store
                .get_versioned(&args[1])
                .map_or(Frame::Null, |v| Frame::bulk(v.value))
        }),
        "strlen" => read(store, move |store| {
            Frame::Integer(
                store
                    .get_versioned(&args[1])
                    .map_or(0, |v| i64::try_from(v.value.len()).unwrap_or(i64::MAX)),
            )
        }),
        "type" => read(store, move |store| {
            Frame::Simple(if store.get_versioned(&args[1]).is_some() {
                "string".into()
            } else {
                "none".into()
            })
        }),
        "mget" => read(store, move |store| {
            Frame::Array(
                store
                    .get_many(&args[1..])
                    .into_iter()
                    .map(|v| v.map_or(Frame::Null, |v| Frame::bulk(v.value)))
                    .collect(),
            )
        }),
        "exists" => read(store, move |store| {
            let found = store.get_many(&args[1..]).iter().flatten().count();
            Frame::Integer(i64::try_from(found).unwrap_or(i64::MAX))
        }),
        "ttl" | "pttl" => {
            let millis = spec.name == "pttl";
            read(store, move |store| {
                Frame::Integer(match store.get_versioned(&args[1]) {
                    None => -2,
                    Some(Versioned {
                        expires_at_ms: None,
                        ..
                    }) => -1,
                    Some(Versioned {
                        expires_at_ms: Some(at),
                        ..
                    }) => {
                        let left = at.saturating_sub(kv_store::now_ms());
                        let left = if millis { left } else { (left + 500) / 1000 };
                        i64::try_from(left).unwrap_or(i64::MAX)
                    }
                })
            })
        }
        "set" => set(args, store, session.hold.as_mut(), now),
        "setnx" => txn(
            store,
            session.hold.as_mut(),
            vec![(args[1].to_vec(), Condition::Absent)],
            vec![put(&args[1], &args[2], Expiry::Clear)],
            |outcome| Frame::Integer(i64::from(outcome.is_some())),
        ),
        "setex" | "psetex" => match setex_deadline(spec.name, &args, now) {
            Err(e) => Outcome::Ready(e),
            Ok(at) => plain_put(store, session.hold.as_mut(), &args[1], &args[3], Some(at)),
        },
        "getset" => swap(
            store,
            args[1].clone(),
            SwapWrite::Put(args[2].clone(), Expiry::Clear),
            Only::Any,
        ),
        "getdel" => swap(store, args[1].clone(), SwapWrite::Delete, Only::Any),
        "getex" => getex(&args, store, now),
        "append" => append(store, args[1].clone(), args[2].clone()),
        "flushdb" | "flushall" => {
            if args.len() > 2
                || (args.len() == 2 && !matches!(upper(&args[1]).as_str(), "ASYNC" | "SYNC"))
            {
                return Outcome::Ready(err(SYNTAX));
            }
            flush(store)
        }
        "mset" | "msetnx" => {
            if args.len().is_multiple_of(2) {
                return Outcome::Ready(wrong_arity(spec.name));
            }
            let nx = spec.name == "msetnx";
            let pairs = args[1..].chunks(2);
            let conditions = if nx {
                pairs
                    .clone()
                    .map(|p| (p[0].to_vec(), Condition::Absent))
                    .collect()
            } else {
                Vec::new()
            };
            let writes = pairs.map(|p| put(&p[0], &p[1], Expiry::Clear)).collect();
            txn(
                store,
                session.hold.as_mut(),
                conditions,
                writes,
                move |outcome| {
                    if nx {
                        Frame::Integer(i64::from(outcome.is_some()))
                    } else {
                        Frame::ok()
                    }
                },
            )
        }
        "del" | "unlink" => {
            let writes = args[1..]
                .iter()
                .map(|k| Write::Delete { key: k.to_vec() })
                .collect();
            txn(
                store,
                session.hold.as_mut(),
                Vec::new(),
                writes,
                |outcome| {
                    let removed = outcome.map_or(0, |results| {
                        results
                            .iter()
                            .filter(|r| matches!(r, WriteResult::Delete { existed: true }))
                            .count()
                    });
                    Frame::Integer(i64::try_from(removed).unwrap_or(i64::MAX))
                },
            )
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            let delta = match spec.name {
                "incr" => Ok(1),
                "decr" => Ok(-1),
                "incrby" => parse_int(&args[2]),
                _ => parse_int(&args[2]).and_then(|d| {
                    d.checked_neg()
                        .ok_or_else(|| err("ERR decrement would overflow"))
                }),
            };
            match delta {
                Err(e) => Outcome::Ready(e),
                Ok(delta) => txn(
                    store,
                    session.hold.as_mut(),
                    Vec::new(),
                    vec![Write::Incr {
                        key: args[1].to_vec(),
                        delta,
                    }],
                    |outcome| match outcome.and_then(|r| r.first().copied()) {
                        Some(WriteResult::Incr { value }) => Frame::Integer(value),
                        _ => err("ERR the increment was not applied"),
                    },
                ),
            }
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            match expire_deadline(spec.name, &args, now) {
                Err(e) => Outcome::Ready(e),
                Ok(at) => set_deadline(store, session.hold.as_mut(), &args[1], Some(at)),
            }
        }
        "persist" => set_deadline(store, session.hold.as_mut(), &args[1], None),
        "keys" => {
            let (max, store) = (shared.max_bulk, store.clone());
            Outcome::Later(Box::pin(async move { keys(&store, &args[1], max).await }))
        }
        "scan" => {
            let shared = Arc::clone(shared);
            Outcome::Later(Box::pin(async move { scan(&args, &shared).await }))
        }
        "save" => {
            let shared = Arc::clone(shared);
            Outcome::Later(Box::pin(async move {
                match checkpoint(&shared).await {
                    Ok(()) => Frame::ok(),
                    Err(e) => e,
                }
            }))
        }
        "bgsave" => {
            if args.len() > 2 || (args.len() == 2 && upper(&args[1]) != "SCHEDULE") {
                return Outcome::Ready(err(SYNTAX));
            }
            let shared = Arc::clone(shared);
            tokio::spawn(async move {
                if let Err(e) = checkpoint(&shared).await {
                    tracing::warn!(error = ?e, "BGSAVE: checkpoint failed");
                }
            });
            Outcome::Ready(Frame::Simple("Background saving started".into()))
        }
        "lastsave" => Outcome::Ready(Frame::Integer(
            i64::try_from(shared.last_save.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        )),
        _ => Outcome::Ready(unknown_command(&args)),
    }
}

/// A read, run when its turn comes.
fn read(db: &Db, f: impl FnOnce(View<'_>) -> Frame + Send + 'static) -> Outcome {
    let db = db.clone();
    Outcome::Later(Box::pin(
        async move { db.read(f).await.unwrap_or_else(|e| e) },
    ))
}

/// A key's current version, read when called (linearizable on a member).
async fn current(db: &Db, key: &[u8]) -> Result<Option<Versioned>, Frame> {
    db.read(|view| view.get_versioned(key)).await
}

/// A put of `key` to `value` with `expiry`, as a transaction write.
pub(super) fn put(key: &[u8], value: &[u8], expiry: Expiry) -> Write {
    Write::Put {
        key: key.to_vec(),
        value: value.to_vec(),
        expiry,
    }
}

/// An unconditional put, answered `+OK` once durable.
fn plain_put(
    db: &Db,
    hold: Option<&mut Hold>,
    key: &[u8],
    value: &[u8],
    deadline: Option<u64>,
) -> Outcome {
    match db.submit_put(hold, key, value, deadline) {
        Err(e) => Outcome::Ready(e.into_frame()),
        Ok(ticket) => Outcome::Later(Box::pin(async move {
            match ticket.done().await {
                Ok(()) => Frame::ok(),
                Err(e) => e.into_frame(),
            }
        })),
    }
}

/// A transaction submitted now; `answer` gets the results once durable,
/// `None` when a condition failed.
pub(super) fn txn(
    db: &Db,
    hold: Option<&mut Hold>,
    conditions: Vec<(Vec<u8>, Condition)>,
    writes: Vec<Write>,
    answer: impl FnOnce(Option<&[WriteResult]>) -> Frame + Send + 'static,
) -> Outcome {
    match db.submit_txn(hold, Txn { conditions, writes }) {
        Err(Failed::Condition) => Outcome::Ready(answer(None)),
        Err(Failed::Reply(e)) => Outcome::Ready(e),
        Ok(ticket) => Outcome::Later(Box::pin(async move {
            match ticket.done().await {
                Ok(outcome) => answer(Some(&outcome.results)),
                Err(Failed::Condition) => answer(None),
                Err(Failed::Reply(e)) => e,
            }
        })),
    }
}

fn set_deadline(store: &Db, hold: Option<&mut Hold>, key: &[u8], at: Option<u64>) -> Outcome {
    let persist = at.is_none();
    txn(
        store,
        hold,
        Vec::new(),
        vec![Write::SetDeadline {
            key: key.to_vec(),
            at,
        }],
        move |outcome| match outcome.and_then(|r| r.first().copied()) {
            Some(WriteResult::SetDeadline { found, changed }) => {
                Frame::Integer(i64::from(if persist { changed } else { found }))
            }
            _ => Frame::Integer(0),
        },
    )
}

/// Which existing state a swap writes over (SET's NX and XX).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Only {
    /// Either (no NX or XX).
    Any,
    /// NX: only a missing key.
    Absent,
    /// XX: only an existing key.
    Present,
}

enum SwapWrite {
    Put(Bytes, Expiry),
    Delete,
}

/// Reads the old value, then writes on condition that the key is still as
/// read; answers the old value (or nil).
fn swap(store: &Db, key: Bytes, write: SwapWrite, only: Only) -> Outcome {
    let store = store.clone();
    Outcome::Barrier(Box::pin(async move {
        loop {
            let current = match current(&store, &key).await {
                Ok(current) => current,
                Err(e) => return e,
            };
            let old = current
                .as_ref()
                .map_or(Frame::Null, |v| Frame::bulk(v.value.clone()));
            let skip = match only {
                Only::Any => false,
                Only::Absent => current.is_some(),
                Only::Present => current.is_none(),
            };
            if skip || (matches!(write, SwapWrite::Delete) && current.is_none()) {
                return old;
            }
            let condition = unchanged(current.as_ref());
            let w = match &write {
                SwapWrite::Put(value, expiry) => put(&key, value, *expiry),
                SwapWrite::Delete => Write::Delete { key: key.to_vec() },
            };
            match write_if(&store, &key, condition, w).await {
                Ok(_) => return old,
                Err(None) => {}
                Err(Some(e)) => return e,
            }
        }
    }))
}

/// Submits `write` on condition that `key` is as `condition` says, and
/// waits until it is durable: `Ok` with its results, `Err(None)` when the
/// condition failed, `Err(Some(error))` for any other failure.
async fn write_if(
    db: &Db,
    key: &[u8],
    condition: Condition,
    write: Write,
) -> Result<Vec<WriteResult>, Option<Frame>> {
    let submitted = db.submit_txn(
        None,
        Txn {
            conditions: vec![(key.to_vec(), condition)],
            writes: vec![write],
        },
    );
    let result = match submitted {
        Ok(ticket) => ticket.done().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(outcome) => Ok(outcome.results),
        Err(Failed::Condition) => Err(None),
        Err(Failed::Reply(e)) => Err(Some(e)),
    }
}

/// The condition that a key is still as `current` found it.
fn unchanged(current: Option<&Versioned>) -> Condition {
    match current {
        Some(v) => Condition::SeqEquals(v.seq),
        None => Condition::Absent,
    }
}

/// APPEND key value: the new length. The key keeps its deadline.
fn append(store: &Db, key: Bytes, tail: Bytes) -> Outcome {
    let store = store.clone();
    Outcome::Barrier(Box::pin(async move {
        loop {
            let current = match current(&store, &key).await {
                Ok(current) => current,
                Err(e) => return e,
            };
            let condition = unchanged(current.as_ref());
            let mut value = current.map_or_else(Vec::new, |v| v.value);
            value.extend_from_slice(&tail);
            let len = i64::try_from(value.len()).unwrap_or(i64::MAX);
            let write = Write::Put {
                key: key.to_vec(),
                value,
                expiry: Expiry::Keep,
            };
            match write_if(&store, &key, condition, write).await {
                Ok(_) => return Frame::Integer(len),
                Err(None) => {}
                Err(Some(e)) => return e,
            }
        }
    }))
}

/// `GETEX key [EX s|PX ms|EXAT ts|PXAT ms|PERSIST]`: the value (or nil),
/// and the deadline set or cleared, on condition that the key is still the
/// version whose value is answered.
fn getex(args: &[Bytes], store: &Db, now: u64) -> Outcome {
    // `Some(None)`: PERSIST.
    let mut change: Option<Option<u64>> = None;
    let mut i = 2;
    while i < args.len() {
        let opt = upper(&args[i]);
        let has_next = i + 1 < args.len();
        match opt.as_str() {
            "PERSIST" if change.is_none() => change = Some(None),
            "EX" | "PX" | "EXAT" | "PXAT" if change.is_none() && has_next => {
                i += 1;
                let n = match parse_int(&args[i]) {
                    Ok(n) => n,
                    Err(e) => return Outcome::Ready(e),
                };
                if n <= 0 {
                    return Outcome::Ready(err("ERR invalid expire time in 'getex' command"));
                }
                let unit = if opt.starts_with('E') { 1000 } else { 1 };
                match deadline("getex", n, unit, !opt.ends_with("AT"), now) {
                    // A time already past removes the key, as in Redis.
                    Ok(at) => change = Some(Some(at.unsigned_abs().max(1))),
                    Err(e) => return Outcome::Ready(e),
                }
            }
            _ => return Outcome::Ready(err(SYNTAX)),
        }
        i += 1;
    }
    let key = args[1].clone();
    let Some(at) = change else {
        return read(store, move |store| {
            store
                .get_versioned(&key)
                .map_or(Frame::Null, |v| Frame::bulk(v.value))
        });
    };
    let store = store.clone();
    Outcome::Barrier(Box::pin(async move {
        loop {
            let current = match current(&store, &key).await {
                Ok(Some(current)) => current,
                Ok(None) => return Frame::Null,
                Err(e) => return e,
            };
            let condition = Condition::SeqEquals(current.seq);
            let write = Write::SetDeadline {
                key: key.to_vec(),
                at,
            };
            match write_if(&store, &key, condition, write).await {
                Ok(_) => return Frame::bulk(current.value),
                Err(None) => {}
                Err(Some(e)) => return e,
            }
        }
    }))
}

/// Keys FLUSHDB deletes per transaction (and bytes of keys, at most).
const FLUSH_KEYS: usize = 1024;
const FLUSH_BYTES: usize = 256 << 10;

/// FLUSHDB / FLUSHALL: deletes every key, a page of keys per transaction.
/// Not atomic, unlike Redis's: a write of another connection made while
/// it runs may survive it.
fn flush(store: &Db) -> Outcome {
    let store = store.clone();
    Outcome::Barrier(Box::pin(async move {
        let range = ScanRange::all();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store
                .read(|view| view.scan(&range, after.as_deref(), FLUSH_KEYS, FLUSH_BYTES, false))
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => return e,
            };
            if !page.items.is_empty() {
                let writes = page
                    .items
                    .into_iter()
                    .map(|item| Write::Delete { key: item.key })
                    .collect();
                let submitted = store.submit_txn(
                    None,
                    Txn {
                        conditions: Vec::new(),
                        writes,
                    },
                );
                let result = match submitted {
                    Ok(ticket) => ticket.done().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    return e.into_frame();
                }
            }
            if !page.more {
                return Frame::ok();
            }
            after = Some(page.resume_after);
        }
    }))
}

/// SET's options.
pub(super) struct SetOptions {
    /// NX / XX.
    pub(super) only: Only,
    /// GET.
    pub(super) get: bool,
    /// EX, PX, EXAT, PXAT (as an absolute deadline) or KEEPTTL.
    pub(super) expiry: Expiry,
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms|KEEPTTL]`.
fn set(args: Vec<Bytes>, store: &Db, hold: Option<&mut Hold>, now: u64) -> Outcome {
    let SetOptions { only, get, expiry } = match set_options(&args, now) {
        Ok(options) => options,
        Err(e) => return Outcome::Ready(e),
    };
    let (key, value) = (args[1].clone(), args[2].clone());
    if get {
        return swap(store, key, SwapWrite::Put(value, expiry), only);
    }
    match (only, expiry) {
        (Only::Any, Expiry::Clear) => plain_put(store, hold, &key, &value, None),
        (Only::Any, Expiry::At(at)) => plain_put(store, hold, &key, &value, Some(at)),
        (only, expiry) => {
            let conditions = match only {
                Only::Any => Vec::new(),
                Only::Absent => vec![(key.to_vec(), Condition::Absent)],
                Only::Present => vec![(key.to_vec(), Condition::Present)],
            };
            txn(
                store,
                hold,
                conditions,
                vec![put(&key, &value, expiry)],
                |outcome| {
                    if outcome.is_some() {
                        Frame::ok()
                    } else {
                        Frame::Null
                    }
                },
            )
        }
    }
}

/// Parses SET's options (after the key and value).
pub(super) fn set_options(args: &[Bytes], now: u64) -> Result<SetOptions, Frame> {
    let mut only = Only::Any;
    let mut get = false;
    let mut expiry: Option<Expiry> = None;
    let mut i = 3;
    while i < args.len() {
        let opt = upper(&args[i]);
        let has_next = i + 1 < args.len();
        match opt.as_str() {
            "NX" if only != Only::Present => only = Only::Absent,
            "XX" if only != Only::Absent => only = Only::Present,
            "GET" => get = true,
            "KEEPTTL" if expiry.is_none() => expiry = Some(Expiry::Keep),
            "EX" | "PX" | "EXAT" | "PXAT" if expiry.is_none() && has_next => {
                i += 1;
                let n = parse_int(&args[i])?;
                if n <= 0 {
                    return Err(err("ERR invalid expire time in 'set' command"));
                }
                let unit = if opt.starts_with('E') { 1000 } else { 1 };
                let at = deadline("set", n, unit, !opt.ends_with("AT"), now)?;
                expiry = Some(Expiry::At(at.unsigned_abs()));
            }
            _ => return Err(err(SYNTAX)),
        }
        i += 1;
    }
    Ok(SetOptions {
        only,
        get,
        expiry: expiry.unwrap_or(Expiry::Clear),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(parse_int(b"-12"), Ok(-12));
        for bad in [
            &b"+1"[..],
            b"01",
            b" 1",
            b"1.0",
            b"",
            b"99999999999999999999",
        ] {
            assert!(parse_int(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_command_words() {
        let args = vec![Bytes::from("FOO"), Bytes::from("a"), Bytes::from("b")];
        assert_eq!(
            unknown_command(&args),
            Frame::error("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")
        );
    }
}
