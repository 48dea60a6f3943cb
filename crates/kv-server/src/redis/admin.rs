//! The commands about the server rather than keys: COMMAND, INFO, CONFIG
//! GET, and the checkpoint behind SAVE and BGSAVE.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::commands::{
    COMMANDS, REDIS_VERSION, RedisServer, Spec, err, printable, unix_secs, upper, wrong_arity,
};
use super::db::Replication;
use super::keyspace::glob_match;
use super::resp::Frame;

fn command_info(spec: &Spec) -> Frame {
    Frame::Array(vec![
        Frame::bulk(spec.name),
        Frame::Integer(spec.arity),
        Frame::Array(
            spec.flags
                .iter()
                .map(|f| Frame::Simple((*f).into()))
                .collect(),
        ),
        Frame::Integer(spec.keys.0),
        Frame::Integer(spec.keys.1),
        Frame::Integer(spec.keys.2),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

pub(super) fn command(args: &[Bytes]) -> Result<Frame, Frame> {
    if args.len() == 1 {
        return Ok(Frame::Array(COMMANDS.iter().map(command_info).collect()));
    }
    let find = |name: &[u8]| {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        COMMANDS.iter().find(|s| s.name == name)
    };
    match upper(&args[1]).as_str() {
        "COUNT" if args.len() == 2 => Ok(Frame::Integer(
            i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX),
        )),
        "INFO" => Ok(Frame::Array(if args.len() == 2 {
            COMMANDS.iter().map(command_info).collect()
        } else {
            args[2..]
                .iter()
                .map(|n| find(n).map_or(Frame::Null, command_info))
                .collect()
        })),
        // Docs are optional for clients: none are given.
        "DOCS" => Ok(Frame::Map(Vec::new())),
        "COUNT" => Err(wrong_arity("command|count")),
        _ => Err(err(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            printable(&args[1])
        ))),
    }
}

pub(super) fn info(args: &[Bytes], shared: &RedisServer) -> Frame {
    let stats = shared.db.info();
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let uptime = shared.started.elapsed().as_secs();
    let sections: [(&str, String); 6] = [
        (
            "server",
            format!(
                "redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
                 kv_server_version:{}\r\nos:{}\r\narch_bits:{}\r\nprocess_id:{}\r\n\
                 tcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                usize::BITS,
                std::process::id(),
                shared.port,
                uptime / 86_400
            ),
        ),
        (
            "clients",
            format!(
                "connected_clients:{}\r\nmaxclients:{}\r\n",
                shared.connected.load(Ordering::Relaxed),
                shared.max_clients
            ),
        ),
        (
            "persistence",
            format!(
                "loading:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{}\r\n\
                 rdb_last_bgsave_status:ok\r\nrdb_saves:{}\r\naof_enabled:1\r\n\
                 aof_rewrite_in_progress:0\r\naof_last_write_status:ok\r\n",
                shared.last_save.load(Ordering::Relaxed),
                stats.snapshots
            ),
        ),
        (
            "stats",
            format!(
                "total_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 expired_keys:{}\r\n",
                shared.connections_received.load(Ordering::Relaxed),
                shared.commands_processed.load(Ordering::Relaxed),
                stats.expired
            ),
        ),
        ("replication", replication(stats.replication.as_ref())),
        (
            "keyspace",
            if stats.keys > 0 {
                format!(
                    "db0:keys={},expires={},avg_ttl=0\r\n",
                    stats.keys, stats.expiring_keys
                )
            } else {
                String::new()
            },
        ),
    ];
    let mut text = String::new();
    for (name, body) in sections {
        if all || wanted.iter().any(|w| w == name) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let mut title = name.to_string();
            title[..1].make_ascii_uppercase();
            text.push_str(&format!("# {title}\r\n{body}"));
        }
    }
    Frame::bulk(text)
}

/// INFO's replication section, with Redis's field names: a single node
/// and a cluster's leader are `role:master`, a follower `role:slave` with
/// its leader's Redis address as `master_host` and `master_port`; the
/// offsets count Raft entries (the leader's log, what a follower applied,
/// what each follower matched).
fn replication(replication: Option<&Replication>) -> String {
    match replication {
        None => "role:master\r\nconnected_slaves:0\r\n".to_string(),
        Some(Replication::Leader { followers, offset }) => {
            let mut text = format!("role:master\r\nconnected_slaves:{}\r\n", followers.len());
            for (i, (id, addr, matched)) in followers.iter().enumerate() {
                let (ip, port) = split_addr(addr.as_deref());
                text.push_str(&format!(
                    "slave{i}:ip={ip},port={port},state=online,offset={matched},lag=0,node_id={id}\r\n"
                ));
            }
            text.push_str(&format!("master_repl_offset:{offset}\r\n"));
            text
        }
        Some(Replication::Follower { leader, offset }) => {
            let (host, port, status) = match leader {
                Some((_, addr)) => {
                    let (host, port) = split_addr(addr.as_deref());
                    (host, port, "up")
                }
                None => ("?".to_string(), "0".to_string(), "down"),
            };
            let id = leader.as_ref().map_or(0, |(id, _)| *id);
            format!(
                "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\n\
                 master_link_status:{status}\r\nmaster_node_id:{id}\r\n\
                 slave_repl_offset:{offset}\r\nslave_read_only:1\r\nconnected_slaves:0\r\n"
            )
        }
    }
}

/// HOST and PORT of a Redis address (`?` and 0 when not known).
fn split_addr(addr: Option<&str>) -> (String, String) {
    match addr.and_then(|a| a.rsplit_once(':')) {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port.to_string(),
        ),
        None => ("?".to_string(), "0".to_string()),
    }
}

pub(super) fn config(args: &[Bytes], shared: &RedisServer) -> Result<Frame, Frame> {
    if upper(&args[1]) != "GET" {
        return Err(err(format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            printable(&args[1])
        )));
    }
    if args.len() < 3 {
        return Err(wrong_arity("config|get"));
    }
    let table = [
        ("save", String::new()),
        ("appendonly", "yes".into()),
        ("databases", "1".into()),
        ("maxclients", shared.max_clients.to_string()),
        ("proto-max-bulk-len", shared.max_bulk.to_string()),
        ("timeout", shared.idle_timeout.as_secs().to_string()),
    ];
    let mut pairs = Vec::new();
    for (name, value) in &table {
        if args[2..]
            .iter()
            .any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes()))
        {
            pairs.push((Frame::bulk(name.to_string()), Frame::bulk(value.clone())));
        }
    }
    Ok(Frame::Map(pairs))
}

/// A checkpoint (SAVE, BGSAVE).
pub(super) async fn checkpoint(shared: &Arc<RedisServer>) -> Result<(), Frame> {
    shared.db.checkpoint().await?;
    shared.last_save.store(unix_secs(), Ordering::Relaxed);
    Ok(())
}
