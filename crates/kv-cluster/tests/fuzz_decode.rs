//! Randomized input to what kv-cluster decodes from disk and from peers:
//! Raft entries, votes, memberships and log ids (random and mutated
//! protobuf), and the files a member opens (`raft/state`,
//! `snapshot.meta`). Decoding returns a value or a typed error, never
//! panics; a decoded entry re-encodes to the same entry.
//!
//! Cases: `KV_FUZZ_CASES` (default 256 per property; 32 for the file
//! cases, which open a directory each).

use kv_cluster::types::{
    decode_entry, decode_log_id, decode_membership, decode_vote, encode_entry, encode_log_id,
    encode_membership, encode_vote,
};
use kv_cluster::{LogStore, StateMachine};
use kv_proto::prost::Message;
use kv_proto::{
    RaftEntry, RaftLogId, RaftMembership, RaftNode, RaftSnapshotMeta, RaftState, RaftVote,
    RaftVoterSet, raft_entry::Payload,
};
use proptest::prelude::*;

/// Cases per property: `KV_FUZZ_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("KV_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn membership() -> impl Strategy<Value = RaftMembership> {
    (
        prop::collection::vec(prop::collection::vec(0u64..6, 0..4), 0..3),
        prop::collection::btree_map(0u64..6, ("[a-z:0-9]{0,12}", "[a-z:0-9]{0,12}"), 0..4),
    )
        .prop_map(|(configs, nodes)| RaftMembership {
            configs: configs
                .into_iter()
                .map(|voters| RaftVoterSet { voters })
                .collect(),
            nodes: nodes
                .into_iter()
                .map(|(id, (client_addr, peer_addr))| {
                    (
                        id,
                        RaftNode {
                            client_addr,
                            peer_addr,
                        },
                    )
                })
                .collect(),
        })
}

fn log_id() -> impl Strategy<Value = RaftLogId> {
    let edge = prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()];
    (edge.clone(), any::<u64>(), edge).prop_map(|(term, node_id, index)| RaftLogId {
        term,
        node_id,
        index,
    })
}

fn entry() -> impl Strategy<Value = RaftEntry> {
    let payload = prop_oneof![
        Just(None),
        Just(Some(Payload::Blank(kv_proto::RaftBlank {}))),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|c| Some(Payload::Command(c.into()))),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4).prop_map(|cs| {
            Some(Payload::Batch(kv_proto::RaftBatch {
                commands: cs.into_iter().map(Into::into).collect(),
            }))
        }),
        membership().prop_map(|m| Some(Payload::Membership(m))),
    ];
    (prop::option::of(log_id()), payload)
        .prop_map(|(log_id, payload)| RaftEntry { log_id, payload })
}

fn mutate(bytes: &mut [u8], edits: &[(usize, u8)]) {
    for &(i, b) in edits {
        if !bytes.is_empty() {
            let at = i % bytes.len();
            bytes[at] = b;
        }
    }
}

/// Decodes `bytes` as every message kv-cluster reads, and converts each to
/// openraft's types: no panic, whatever the bytes.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(e) = RaftEntry::decode(bytes)
        && let Ok(Some(entry)) = decode_entry(&e)
    {
        let again = decode_entry(&encode_entry(&entry))
            .map_err(|e| TestCaseError::fail(format!("re-encoded entry: {e}")))?;
        prop_assert_eq!(again.map(|e| e.log_id), Some(entry.log_id));
    }
    if let Ok(v) = RaftVote::decode(bytes) {
        let vote = decode_vote(&v);
        prop_assert_eq!(decode_vote(&encode_vote(&vote)), vote);
    }
    if let Ok(m) = RaftMembership::decode(bytes) {
        let _ = encode_membership(&decode_membership(&m));
    }
    if let Ok(id) = RaftLogId::decode(bytes) {
        prop_assert_eq!(encode_log_id(&decode_log_id(&id)), id);
    }
    let _ = RaftState::decode(bytes);
    let _ = RaftSnapshotMeta::decode(bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn random_bytes_decode_or_refuse(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        decode_all(&bytes)?;
    }

    #[test]
    fn entries_decode_or_refuse(entry in entry(), edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        // Unmutated first: what a peer may legally send.
        let _ = decode_entry(&entry);
        let mut bytes = entry.encode_to_vec();
        mutate(&mut bytes, &edits);
        decode_all(&bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(32)))]

    /// A member's state files with random or mutated contents: opening the
    /// log store and the state machine returns `Ok` or a typed error.
    #[test]
    fn member_files_with_random_contents_open_or_refuse(
        state in prop::option::of(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..120),
            (prop::option::of(log_id()), prop::option::of(log_id())).prop_map(|(committed, purged)| {
                RaftState { vote: None, committed, purged }.encode_to_vec()
            }),
        ]),
        meta in prop::option::of((prop::option::of(log_id()), prop::option::of(log_id()), prop::option::of(membership()))),
        meta_edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let raft = dir.path();
        if let Some(state) = &state {
            std::fs::write(raft.join("state"), state).unwrap();
        }
        match LogStore::open(raft) {
            Ok(_) => {}
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let sm_dir = raft.join("sm");
        std::fs::create_dir_all(&sm_dir).unwrap();
        if let Some((last, membership_id, membership)) = meta {
            let mut bytes = RaftSnapshotMeta {
                last_log_id: last,
                membership_log_id: membership_id,
                membership,
                snapshot_id: "fuzz".into(),
                store_position: 0,
            }
            .encode_to_vec();
            mutate(&mut bytes, &meta_edits);
            std::fs::write(sm_dir.join("snapshot.meta"), &bytes).unwrap();
        }
        match StateMachine::open(&sm_dir) {
            Ok(_) => {}
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
