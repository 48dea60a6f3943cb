//! kv-cluster: the key-value store replicated with Raft.
//!
//! The only crate that uses openraft, and only behind our own types
//! ([`types`]): what goes to disk and over the wire is our protobuf
//! (`proto/kv.proto`, `Raft*` messages), never a serde dump of openraft's
//! structs, so an openraft upgrade touches this crate alone.
//!
//! - [`LogStore`]: the Raft log on wal-core (`<data-dir>/raft/log`), the
//!   vote and purge point in an atomically written state file. Appends go
//!   through wal-core's group commit and report durability through its
//!   callback, after the fdatasync; conflicting suffixes are cut with
//!   `truncate_after`, purges use `truncate_before`.
//! - [`StateMachine`]: kv-store's [`Replica`](kv_store::replica::Replica),
//!   changed only by committed entries, snapshotted in kv-store's format
//!   with the Raft log id and membership beside it.
//!
//! # Why openraft 0.9.25, pinned exactly
//!
//! 0.9 is openraft's stable line; 0.10 is a pre-release (alpha) whose API
//! still moves between alphas. 0.9 hands the log an append with a flush
//! callback, which maps onto wal-core's `append_with`, but waits for that
//! callback before it sends the next batch, so appends are not pipelined:
//! a follower's throughput is bounded by one group commit per round trip.
//! That is the price of a stable API today; the storage and network code
//! keep to our own types so that moving to 0.10 changes this crate only.
//! The version is pinned with `=` because even patch releases of openraft
//! have changed trait signatures.
//!
//! Not done yet (see the cluster issue): the peer transport, the server's
//! cluster flags and wiring, client leader discovery, membership commands
//! and the multi-process tests.

#![warn(missing_docs)]

mod error;
mod log_store;
mod members;
pub mod network;
mod node;
mod state_file;
mod state_machine;
pub mod tls;
pub mod types;
pub mod upgrade;

pub use error::{ClusterError, Result};
pub use log_store::{LogStore, MAX_HOLE};
pub use members::parse_initial_cluster;
pub use node::{
    ClusterConfig, ClusterNode, MemberMetrics, MemberStatus, PendingWrite, RequestError,
};
pub use state_machine::StateMachine;
pub use tls::{PeerTls, TlsError};
pub use types::{Batch, BatchResult, CommandResult, Node, NodeId, TypeConfig};
