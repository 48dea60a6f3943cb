//! Our types behind openraft's: the type configuration, what a member is,
//! what a command and its answer are, and how each becomes our protobuf.
//! Everything that reaches a disk or a socket goes through [`encode_entry`]
//! and friends, never through serde, so an openraft upgrade cannot change
//! our formats.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kv_proto::{
    RaftBatch, RaftBlank, RaftEntry, RaftLogId, RaftMembership, RaftNode, RaftVote, RaftVoterSet,
    raft_entry::Payload,
};
use openraft::{EntryPayload, LogId, Membership};

use crate::error::ClusterError;

/// A member's id in the cluster (`--node-id`).
pub type NodeId = u64;

/// A member's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Where clients reach it (the native protocol).
    pub client_addr: String,
    /// Where its peers reach it (Raft messages).
    pub peer_addr: String,
}

/// What one Raft entry carries for the store: commands, each one of
/// kv-store's log records ([`kv_store::replica::encode_put`], ...), carried
/// opaquely by Raft and applied in order, each at a store position of its
/// own, so every write keeps a version of its own however many share an
/// entry. The leader gathers into one entry the writes that arrive while
/// its earlier entries are on their way (see `node.rs`), so one log append,
/// one fdatasync on each member and one round trip carry them all.
///
/// The commands are [`Bytes`], so that an entry is cheap to clone: the log
/// keeps its newest entries in memory and hands clones to replication and
/// apply (see `log_store.rs`), and decoding shares the received buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch(pub Vec<Bytes>);

/// What applying a [`Batch`] did: one result per command, in order (none
/// for entries that carry no command).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchResult(pub Vec<CommandResult>);

/// What applying one command did, handed back to its proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandResult {
    /// The store position it was applied at (the key's version).
    pub seq: u64,
    /// The Raft index of the entry that carried it.
    pub index: u64,
    /// Whether the key existed before.
    pub existed: bool,
    /// Why the command could not be applied, if it could not (an
    /// undecodable command changes nothing on any replica).
    pub error: Option<String>,
    /// For a transaction: what it did, or why it did not apply.
    pub txn: Option<Result<kv_store::TxnOutcome, kv_store::replica::Refused>>,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for this store.
    pub TypeConfig:
        D = Batch,
        R = BatchResult,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// openraft's entry for our configuration.
pub type Entry = openraft::Entry<TypeConfig>;

/// Bytes of commands an entry carries (what the log's in-memory tail and
/// an append's size bound count).
pub(crate) fn payload_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(batch) => batch.0.iter().map(|c| c.len()).sum(),
        _ => 0,
    }
}

/// The protobuf form of a log id.
pub fn encode_log_id(id: &LogId<NodeId>) -> RaftLogId {
    RaftLogId {
        term: id.leader_id.term,
        node_id: id.leader_id.node_id,
        index: id.index,
    }
}

/// A log id from its protobuf form.
pub fn decode_log_id(id: &RaftLogId) -> LogId<NodeId> {
    LogId::new(
        openraft::CommittedLeaderId::new(id.term, id.node_id),
        id.index,
    )
}

/// The protobuf form of a vote.
pub fn encode_vote(vote: &openraft::Vote<NodeId>) -> RaftVote {
    RaftVote {
        term: vote.leader_id.term,
        node_id: vote.leader_id.voted_for().unwrap_or_default(),
        committed: vote.committed,
    }
}

/// A vote from its protobuf form.
pub fn decode_vote(vote: &RaftVote) -> openraft::Vote<NodeId> {
    if vote.committed {
        openraft::Vote::new_committed(vote.term, vote.node_id)
    } else {
        openraft::Vote::new(vote.term, vote.node_id)
    }
}

/// The protobuf form of a membership.
pub fn encode_membership(m: &Membership<NodeId, Node>) -> RaftMembership {
    RaftMembership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|set| RaftVoterSet {
                voters: set.iter().copied().collect(),
            })
            .collect(),
        nodes: m
            .nodes()
            .map(|(id, n)| {
                (
                    *id,
                    RaftNode {
                        client_addr: n.client_addr.clone(),
                        peer_addr: n.peer_addr.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// A membership from its protobuf form.
pub fn decode_membership(m: &RaftMembership) -> Membership<NodeId, Node> {
    let configs: Vec<BTreeSet<NodeId>> = m
        .configs
        .iter()
        .map(|set| set.voters.iter().copied().collect())
        .collect();
    let nodes: BTreeMap<NodeId, Node> = m
        .nodes
        .iter()
        .map(|(id, n)| {
            (
                *id,
                Node {
                    client_addr: n.client_addr.clone(),
                    peer_addr: n.peer_addr.clone(),
                },
            )
        })
        .collect();
    Membership::new(configs, nodes)
}

/// The protobuf form of an entry.
pub fn encode_entry(entry: &Entry) -> RaftEntry {
    let payload = match &entry.payload {
        EntryPayload::Blank => Payload::Blank(RaftBlank {}),
        // A batch of one keeps the format entries had before batches.
        EntryPayload::Normal(Batch(commands)) if commands.len() == 1 => {
            Payload::Command(commands[0].clone())
        }
        EntryPayload::Normal(Batch(commands)) => Payload::Batch(RaftBatch {
            commands: commands.clone(),
        }),
        EntryPayload::Membership(m) => Payload::Membership(encode_membership(m)),
    };
    RaftEntry {
        log_id: Some(encode_log_id(&entry.log_id)),
        payload: Some(payload),
    }
}

/// An entry from its protobuf form; `None` for a hole (see
/// `log_store.rs`).
pub fn decode_entry(entry: &RaftEntry) -> Result<Option<Entry>, ClusterError> {
    let Some(id) = &entry.log_id else {
        return Err(ClusterError::Corrupt("Raft entry without a log id".into()));
    };
    let payload = match &entry.payload {
        None => return Ok(None),
        Some(Payload::Blank(_)) => EntryPayload::Blank,
        Some(Payload::Command(c)) => EntryPayload::Normal(Batch(vec![c.clone()])),
        Some(Payload::Batch(b)) => EntryPayload::Normal(Batch(b.commands.clone())),
        Some(Payload::Membership(m)) => EntryPayload::Membership(decode_membership(m)),
    };
    Ok(Some(Entry {
        log_id: decode_log_id(id),
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_protobuf() {
        let nodes = BTreeMap::from([(
            1,
            Node {
                client_addr: "127.0.0.1:7001".into(),
                peer_addr: "127.0.0.1:7101".into(),
            },
        )]);
        let m = Membership::new(vec![BTreeSet::from([1])], nodes);
        let id = LogId::new(openraft::CommittedLeaderId::new(3, 1), 9);
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(Batch(vec![Bytes::from_static(b"cmd")])),
            EntryPayload::Normal(Batch(vec![
                Bytes::from_static(b"one"),
                Bytes::new(),
                Bytes::from_static(b"three"),
            ])),
            EntryPayload::Normal(Batch(Vec::new())),
            EntryPayload::Membership(m),
        ] {
            let e = Entry {
                log_id: id,
                payload,
            };
            let back = decode_entry(&encode_entry(&e)).unwrap().unwrap();
            assert_eq!(back.log_id, e.log_id);
            assert_eq!(format!("{:?}", back.payload), format!("{:?}", e.payload));
        }
        let v = openraft::Vote::new_committed(4, 2);
        assert_eq!(decode_vote(&encode_vote(&v)), v);
    }
}
