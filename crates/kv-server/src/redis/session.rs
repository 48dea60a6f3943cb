//! One connection's state, and the commands that change it: AUTH, HELLO
//! and CLIENT (MULTI's queue and the watched keys are kept here too; their
//! commands are in `multi`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::commands::{
    REDIS_VERSION, RedisServer, SYNTAX, err, parse_int, printable, upper, wrong_arity,
};
use super::db::Db;
use super::multi::{Multi, Watched};
use super::resp::Frame;

/// One connection's state.
pub(super) struct Session {
    /// RESP version of the replies: 2, or 3 after `HELLO 3`.
    pub(crate) version: u8,
    pub(crate) authenticated: bool,
    pub(crate) name: Option<Bytes>,
    pub(crate) id: u64,
    /// Failed AUTH attempts: each doubles the pause before reading on.
    pub(crate) failures: u32,
    /// Set by a failed AUTH: how long the reader pauses.
    pub(crate) delay: Duration,
    /// The transaction being queued, after MULTI.
    pub(super) multi: Option<Multi>,
    /// The keys WATCH recorded.
    pub(super) watched: Watched,
    /// On a single node, the writes started since the reader last waited
    /// for anything: released (sent to the commit thread together, so a
    /// pipeline shares one sync) before the reader reads the socket again
    /// or waits for anything else.
    pub(super) hold: Option<kv_store::Hold>,
}

impl Session {
    pub(super) fn new(shared: &RedisServer) -> Session {
        Session {
            version: 2,
            authenticated: shared.token.is_none(),
            name: None,
            id: shared.next_client_id.fetch_add(1, Ordering::Relaxed),
            failures: 0,
            delay: Duration::ZERO,
            multi: None,
            watched: Arc::default(),
            hold: match &shared.db {
                Db::Single(store) => Some(store.hold()),
                Db::Member(_) => None,
            },
        }
    }

    /// Sends the held writes on (see [`Session::hold`]).
    pub(super) fn release(&mut self) {
        if let Some(hold) = self.hold.as_mut() {
            hold.release();
        }
    }
}

/// Checks the credentials presented (the user, if given, must be
/// `default`) and authenticates the connection; a failure sets the pause
/// before the connection's next command, doubling with each failure.
fn check_auth(
    user: Option<&[u8]>,
    pass: &[u8],
    session: &mut Session,
    shared: &RedisServer,
) -> Result<(), Frame> {
    let ok = match &shared.token {
        // Redis's default user without a password takes any password.
        None => user.is_none_or(|u| u == b"default"),
        Some(token) => user.is_none_or(|u| u == b"default") && token.matches(pass),
    };
    if ok {
        session.authenticated = true;
        session.failures = 0;
        Ok(())
    } else {
        session.failures += 1;
        let delay = crate::auth::FIRST_FAILURE_DELAY
            .saturating_mul(1 << (session.failures - 1).min(16))
            .min(crate::auth::MAX_FAILURE_DELAY);
        session.delay = delay;
        tracing::warn!(client = session.id, "Redis AUTH with a wrong token");
        Err(err(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ))
    }
}

pub(super) fn auth(
    args: &[Bytes],
    session: &mut Session,
    shared: &RedisServer,
) -> Result<Frame, Frame> {
    match args.len() {
        2 if shared.token.is_none() => Err(err(
            "ERR AUTH <password> called without any password configured for the default \
             user. Are you sure your configuration is correct?",
        )),
        2 => check_auth(None, &args[1], session, shared).map(|()| Frame::ok()),
        3 => check_auth(Some(&args[1]), &args[2], session, shared).map(|()| Frame::ok()),
        _ => Err(err(SYNTAX)),
    }
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]].
pub(super) fn hello(
    args: &[Bytes],
    session: &mut Session,
    shared: &RedisServer,
) -> Result<Frame, Frame> {
    let mut version = session.version;
    if args.len() > 1 {
        let v = parse_int(&args[1])
            .map_err(|_| err("ERR Protocol version is not an integer or out of range"))?;
        version = match v {
            2 => 2,
            3 => 3,
            _ => return Err(err("NOPROTO unsupported protocol version")),
        };
    }
    let mut i = 2;
    let mut name = None;
    let mut credentials = None;
    while i < args.len() {
        let opt = upper(&args[i]);
        match opt.as_str() {
            "AUTH" if i + 2 < args.len() => {
                credentials = Some((args[i + 1].clone(), args[i + 2].clone()));
                i += 3;
            }
            "SETNAME" if i + 1 < args.len() => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => {
                return Err(err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    printable(&args[i])
                )));
            }
        }
    }
    if let Some((user, pass)) = credentials {
        check_auth(Some(&user), &pass, session, shared)?;
    }
    if !session.authenticated {
        return Err(err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client \
             and select the RESP protocol version at the same time",
        ));
    }
    if let Some(name) = name {
        check_name(&name)?;
        session.name = Some(name);
    }
    session.version = version;
    let s = |t: &str| Frame::bulk(t.to_string());
    Ok(Frame::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(REDIS_VERSION)),
        (s("proto"), Frame::Integer(i64::from(version))),
        (
            s("id"),
            Frame::Integer(i64::try_from(session.id).unwrap_or(i64::MAX)),
        ),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Frame::Array(Vec::new())),
    ]))
}

fn check_name(name: &[u8]) -> Result<(), Frame> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

pub(super) fn client(args: &[Bytes], session: &mut Session) -> Result<Frame, Frame> {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(wrong_arity(&format!("client|{sub}")))
        }
    };
    match sub.as_str() {
        "setname" => {
            arity(3)?;
            check_name(&args[2])?;
            session.name = (!args[2].is_empty()).then(|| args[2].clone());
            Ok(Frame::ok())
        }
        "getname" => {
            arity(2)?;
            Ok(session.name.clone().map_or(Frame::Null, Frame::Bulk))
        }
        "setinfo" => {
            arity(4)?;
            match upper(&args[2]).as_str() {
                "LIB-NAME" | "LIB-VER" => Ok(Frame::ok()),
                _ => Err(err(format!(
                    "ERR Unrecognized option '{}'",
                    printable(&args[2])
                ))),
            }
        }
        "id" => {
            arity(2)?;
            Ok(Frame::Integer(
                i64::try_from(session.id).unwrap_or(i64::MAX),
            ))
        }
        _ => Err(err(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            printable(&args[1])
        ))),
    }
}
