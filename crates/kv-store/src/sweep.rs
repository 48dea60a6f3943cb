//! The expiry sweeper: removes expired keys, so that their memory comes
//! back, with ordinary delete records.
//!
//! Ten times a second it takes up to a tenth of
//! [`StoreOptions::expiry_sweep_rate`](crate::StoreOptions::expiry_sweep_rate)
//! keys whose deadline has passed, oldest deadline first, and submits them
//! as one sweep to the commit thread, which removes each one that still has
//! the version it had when found (a key written again meanwhile is left
//! alone) with one batch record, and waits for it. Reads never depend on
//! it: an expired key is invisible at once. Replay and replicas see only
//! the delete records, so the log alone decides the state.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::commit::Command;
use crate::store::{KeyValueStore, Shared, read};

/// How often the sweeper looks.
const TICK: Duration = Duration::from_millis(100);

/// Starts the sweeper, removing at most `rate` keys a second; it stops
/// when the returned sender is dropped.
pub(crate) fn start(
    shared: Arc<Shared>,
    tx: Sender<Command>,
    rate: u64,
) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let per_tick = usize::try_from((rate / 10).max(1)).unwrap_or(usize::MAX);
    let thread = std::thread::Builder::new()
        .name("kv-expiry".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                if shared.failure().is_some() {
                    continue;
                }
                let now = crate::record::now_ms();
                let keys = read(&shared.state).expired(now, per_tick);
                if keys.is_empty() {
                    continue;
                }
                match KeyValueStore::submit_sweep(&tx, keys).and_then(|p| p.wait()) {
                    Ok(n) => tracing::debug!(removed = n, "expired keys swept"),
                    Err(e) => tracing::warn!(error = %e, "sweeping expired keys failed"),
                }
            }
        })?;
    Ok((stop, thread))
}
