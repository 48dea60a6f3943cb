//! `--initial-cluster ID=CLIENT_ADDR/PEER_ADDR,...`: parsed and checked.

use std::collections::BTreeMap;

use crate::types::{Node, NodeId};

/// Parses `--initial-cluster`: comma-separated `ID=CLIENT_ADDR/PEER_ADDR`
/// members, ids positive and distinct, addresses non-empty and distinct.
/// The error is one line that says what is wrong with which member.
pub fn parse_initial_cluster(spec: &str) -> Result<BTreeMap<NodeId, Node>, String> {
    let mut members = BTreeMap::new();
    let mut addrs = std::collections::BTreeSet::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addrs_part) = part
            .split_once('=')
            .ok_or_else(|| format!("member `{part}`: expected ID=CLIENT_ADDR/PEER_ADDR"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| format!("member `{part}`: the id must be a positive integer"))?;
        let (client, peer) = addrs_part
            .split_once('/')
            .ok_or_else(|| format!("member `{part}`: expected CLIENT_ADDR/PEER_ADDR after `=`"))?;
        let (client, peer) = (client.trim(), peer.trim());
        if client.is_empty() || peer.is_empty() {
            return Err(format!("member `{part}`: an address is empty"));
        }
        for addr in [client, peer] {
            if !addrs.insert(addr.to_string()) {
                return Err(format!("address {addr} appears twice"));
            }
        }
        let node = Node {
            client_addr: client.to_string(),
            peer_addr: peer.to_string(),
        };
        if members.insert(id, node).is_some() {
            return Err(format!("node id {id} appears twice"));
        }
    }
    if members.is_empty() {
        return Err("no member given".to_string());
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_example_parses() {
        let m = parse_initial_cluster(
            "1=127.0.0.1:7001/127.0.0.1:7101,2=127.0.0.1:7002/127.0.0.1:7102,3=127.0.0.1:7003/127.0.0.1:7103",
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[&2].client_addr, "127.0.0.1:7002");
        assert_eq!(m[&3].peer_addr, "127.0.0.1:7103");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, says) in [
            ("", "no member"),
            ("1=a", "CLIENT_ADDR/PEER_ADDR after"),
            ("x=a/b", "positive integer"),
            ("0=a/b", "positive integer"),
            ("1=a/b,1=c/d", "appears twice"),
            ("1=a/b,2=a/c", "appears twice"),
            ("1=/b", "empty"),
            ("1a/b", "expected ID="),
        ] {
            let e = parse_initial_cluster(spec).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }
}
