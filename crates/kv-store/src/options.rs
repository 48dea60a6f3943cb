//! Options of the store.

use wal_core::WalOptions;

use crate::error::{Error, Result};
use crate::record;

/// Options for [`KeyValueStore::open`](crate::KeyValueStore::open).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Options of the write-ahead log (sync policy, segment size, ...).
    ///
    /// [`SyncPolicy::GroupCommit`](wal_core::SyncPolicy::GroupCommit)
    /// (`max_delay`) is carried out by the store rather than handed to the
    /// log. The store's commit thread is the log's only appender (one
    /// `Wal::append_batch` per batch), so a log whose group leader waits
    /// `max_delay` for company would wait alone. The log is therefore opened
    /// with [`SyncPolicy::Always`](wal_core::SyncPolicy::Always), and the
    /// commit thread, after receiving the first write of a batch, keeps gathering
    /// writes until `max_delay` after that first arrival (or until the batch
    /// holds 4096 writes or 4 MiB of records), then makes them all durable
    /// with one write and one fdatasync. Every write may wait up to
    /// `max_delay` longer; under load, syncs are fewer and larger. A
    /// `max_delay` of zero is `Always`. Under `Always` itself the commit
    /// thread takes only what is already queued, with no timer: writers that
    /// arrive during a sync share the next one.
    pub wal: WalOptions,
    /// Largest key accepted, in bytes.
    pub max_key_size: usize,
    /// Largest value accepted, in bytes.
    pub max_value_size: usize,
    /// Start an automatic checkpoint once the WAL exceeds this many bytes;
    /// `None` disables automatic checkpoints.
    pub checkpoint_after: Option<u64>,
    /// Most bytes per second a checkpoint writes its snapshot at; `None`
    /// writes as fast as the disk takes it. Pacing keeps a checkpoint from
    /// taking the disk and a core away from writers for long, at the cost of
    /// a longer checkpoint: at the default of 32 MiB/s, a snapshot of 1M keys
    /// with 100-byte values (128 MB) takes about 4 s. Must not be `Some(0)`.
    pub checkpoint_write_rate: Option<u64>,
    /// Most expired keys per second the sweeper removes (with ordinary
    /// delete records, in batches ten times a second); 0 disables it, and
    /// expired keys then stay invisible but take memory until overwritten
    /// or deleted. Bounding it keeps a mass expiry from taking the log and
    /// the commit thread away from writers.
    pub expiry_sweep_rate: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            wal: WalOptions::default(),
            max_key_size: 64 << 10,
            max_value_size: 4 << 20,
            checkpoint_after: Some(256 << 20),
            checkpoint_write_rate: Some(32 << 20),
            expiry_sweep_rate: 20_000,
        }
    }
}

impl StoreOptions {
    /// Checks that every key and value the limits admit fits in one log
    /// record, so that a validated write can never be refused by the log
    /// (which would look like a failure of the log, not of the request).
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_key_size == 0 {
            return Err(Error::InvalidOptions(
                "max_key_size must be at least 1".into(),
            ));
        }
        if self.max_key_size > crate::state::MAX_KEY_LEN {
            return Err(Error::InvalidOptions(format!(
                "max_key_size {} exceeds {}",
                self.max_key_size,
                crate::state::MAX_KEY_LEN
            )));
        }
        if self.checkpoint_write_rate == Some(0) {
            return Err(Error::InvalidOptions(
                "checkpoint_write_rate must be at least 1 byte/s (None for unpaced)".into(),
            ));
        }
        let largest = record::max_encoded_len(self.max_key_size, self.max_value_size);
        if largest > self.wal.max_record_size as usize {
            return Err(Error::InvalidOptions(format!(
                "a key of {} bytes and a value of {} bytes make a log record of up to {largest} \
                 bytes, over the log's max_record_size of {}",
                self.max_key_size, self.max_value_size, self.wal.max_record_size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_checkpoint_rate_is_refused() {
        let opts = StoreOptions {
            checkpoint_write_rate: Some(0),
            ..StoreOptions::default()
        };
        assert!(matches!(opts.validate(), Err(Error::InvalidOptions(_))));
        let unpaced = StoreOptions {
            checkpoint_write_rate: None,
            ..StoreOptions::default()
        };
        assert!(unpaced.validate().is_ok());
        assert!(StoreOptions::default().validate().is_ok());
    }
}
