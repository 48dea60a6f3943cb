//! kv-client: an async client for kv-server, and the `kv-client` command
//! line built on it.
//!
//! A [`Client`] holds one TCP connection. It is cheap to clone and its
//! methods take `&self`, so many tasks can share it: their requests are
//! pipelined on the connection and matched with their answers by id. The
//! number of requests in flight is bounded ([`ClientOptions::max_in_flight`]),
//! so a flood of calls waits instead of growing memory.
//!
//! ```no_run
//! use kv_client::Client;
//!
//! # async fn example() -> kv_client::Result<()> {
//! let client = Client::connect("127.0.0.1:7878").await?;
//! let seq = client.put("greeting", "hello").await?; // durable when it returns
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//!
//! // Concurrent calls on clones share the connection.
//! let writes = (0..100).map(|i| {
//!     let client = client.clone();
//!     tokio::spawn(async move { client.put(format!("key-{i}"), "v").await })
//! });
//! for write in writes {
//!     assert!(write.await.expect("task ran")? > seq);
//! }
//! assert_eq!(client.delete("greeting").await?, Some(seq + 101));
//! # Ok(())
//! # }
//! ```
//!
//! Beyond get, put and delete, the store's features each have a typed
//! call: versions and conditional writes ([`Client::get_versioned`],
//! [`Client::put_with`], [`Client::delete_if`]), atomic batches
//! ([`Client::batch`]), counters ([`Client::incr`]), expiry
//! ([`Client::expire`], [`Client::expire_at`], [`Client::persist`],
//! [`Client::ttl`]), scans ([`Client::scan`] one page,
//! [`Client::scan_all`] every page), multi-get ([`Client::mget`]) and
//! [`Client::stats`]. A condition that does not hold fails the call with
//! [`ClientError::ConditionFailed`], which names the key's current version.
//!
//! ```no_run
//! use std::time::Duration;
//! use kv_client::{Client, ClientError, Condition, PutOptions, ScanOptions};
//!
//! # async fn example() -> kv_client::Result<()> {
//! let client = Client::connect("127.0.0.1:7878").await?;
//! // Read, then write only if nobody wrote in between.
//! let current = client.get_versioned("config").await?;
//! let options = PutOptions {
//!     condition: Some(match &current {
//!         Some(found) => Condition::SeqEquals(found.seq),
//!         None => Condition::Absent,
//!     }),
//!     ttl: Some(Duration::from_secs(3600)),
//!     ..PutOptions::default()
//! };
//! match client.put_with("config", "v2", options).await {
//!     Ok(seq) => println!("written at version {seq}"),
//!     Err(ClientError::ConditionFailed { current, .. }) => {
//!         println!("someone else wrote it first (now at {current:?})")
//!     }
//!     Err(other) => return Err(other),
//! }
//! let visits = client.incr("visits", 1).await?.value;
//! let users = client.scan_all(ScanOptions::prefix("user:")).await?;
//! # let _ = (visits, users);
//! # Ok(())
//! # }
//! ```
//!
//! For a replicated cluster, a [`ClusterClient`] takes several members'
//! addresses, sends each call to the leader, follows NOT_LEADER answers and
//! fails over when the leader goes; it never sends a write twice, so a write
//! whose connection failed before its answer came fails with
//! [`ClientError::OutcomeUnknown`].
//!
//! Security: [`ClientOptions::tls`] ([`ClientTls`]: the CAs to trust)
//! connects over TLS, and [`ClientOptions::auth_token`] ([`AuthToken`])
//! authenticates every new connection before its first call.

#![warn(missing_docs)]

mod backup;
mod client;
mod cluster;
mod connection;
mod error;
mod model;
mod tls;

pub use backup::BackupInfo;
pub use client::{Client, ClientOptions, KeysPage};
pub use cluster::{ClusterClient, ClusterOptions};
pub use error::{ClientError, Result};
pub use kv_proto;
pub use model::{
    Condition, Counter, DeadlineChange, KeyCondition, PutOptions, ScanItem, ScanOptions, ScanPage,
    Stats, Ttl, Versioned, Write,
};
pub use tls::{AUTH_TOKEN_ENV, AuthToken, ClientTls, SetupError};
