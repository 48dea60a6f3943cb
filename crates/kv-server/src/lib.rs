//! kv-server: the TCP service of the durable key-value store.
//!
//! Clients send length-prefixed protobuf [`kv_proto::Request`]s and get one
//! [`kv_proto::Response`] each, in request order, carrying the request's id
//! (the protocol is in `proto/kv.proto`). A write is acknowledged only once
//! the store has made it durable; writes from every connection share the
//! store's group commits, and a connection keeps reading requests while its
//! earlier writes wait for their sync (pipelining).
//!
//! [`run`] is the one entry point, used by the `kv-server` binary and by the
//! tests alike:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use kv_server::{ServerConfig, run};
//! use kv_store::{KeyValueStore, StoreOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! let store = KeyValueStore::open("./data", StoreOptions::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = CancellationToken::new();
//! // Cancel `shutdown` (from a signal handler, say) to stop gracefully.
//! run(listener, store, ServerConfig::default(), shutdown).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Layout: [`config`] holds the flags; `connection` is the only code that
//! turns bytes into frames and back; `command` maps a request to the store
//! call that answers it; `server` is the accept loop, the limits and
//! shutdown; [`metrics`] counts what is served and shows it over HTTP;
//! `redis` is the Redis protocol listener (`--redis-addr`, started by
//! [`run_with_redis`]) on the same store.

#![warn(missing_docs)]

pub mod auth;
mod budget;
mod cluster;
mod command;
pub mod config;
mod connection;
pub mod metrics;
mod ops;
mod redis;
mod server;
pub mod tls;

pub use auth::AuthToken;
pub use cluster::ClusterBackend;
pub use command::Backend;
pub use config::{Args, ServerConfig};
pub use metrics::Metrics;
pub use server::{refuse_until_ready, run, run_with_redis};
pub use tls::ServerTls;

/// Why [`run`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Closing the store at shutdown failed: writes acknowledged under a
    /// relaxed sync policy may not be durable.
    Store(kv_store::Error),
    /// The write-ahead log had failed (fail-stop) while serving: the
    /// shutdown was not clean, whatever else went well. Holds the failure's
    /// reason.
    LogFailed(String),
    /// A server task failed.
    Io(std::io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Store(err) => write!(f, "closing the store failed: {err}"),
            Error::LogFailed(reason) => write!(
                f,
                "the write-ahead log failed while serving ({reason}); writes were refused \
                 since, and the page cache may hold log data the disk never got: restart the \
                 machine or remount the file system before starting the server again"
            ),
            Error::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store(err) => Some(err),
            Error::LogFailed(_) => None,
            Error::Io(err) => Some(err),
        }
    }
}
