//! The calls a Raft log storage makes on wal-core, in the order a follower
//! meets them: append entries without waiting and learn when they are on
//! disk (openraft's "flushed" callback), cut a conflicting suffix, read a
//! range to send to a peer, and drop what a snapshot covers.
//!
//! Run with `cargo run -p wal-core --example raft_log`.

use std::sync::mpsc;

use wal_core::{Wal, WalOptions};

fn main() -> wal_core::Result<()> {
    let tmp = std::env::temp_dir().join(format!("wal-core-raft-log-{}", std::process::id()));
    let wal = Wal::open(&tmp, WalOptions::default())?;

    // 1. Entries from the leader: appended without waiting. The callback
    //    runs once they are fdatasynced, sharing group commit with every
    //    other appender; only then may the follower acknowledge them.
    let (flushed, on_flushed) = mpsc::channel();
    let entries: Vec<Vec<u8>> = (1..=10)
        .map(|i| format!("term 1, entry {i}").into_bytes())
        .collect();
    let lsns = wal.append_with(&entries, move |result| {
        let _ = flushed.send(result);
    })?;
    let durable = on_flushed.recv().expect("the callback runs")?;
    assert_eq!(durable, lsns);
    assert!(wal.durable_lsn() >= 10);
    println!("entries {lsns:?} are durable");

    // 2. A new leader's entries conflict from index 8 on: cut the suffix.
    //    The next append gets LSN 8.
    wal.truncate_after(7)?;
    let replaced = wal.append_batch(&[&b"term 2, entry 8"[..], b"term 2, entry 9"])?;
    assert_eq!(replaced, 8..10);
    println!("conflicting suffix replaced: {replaced:?}");

    // 3. Replication to a lagging peer: a range read through the in-memory
    //    index, bounded by bytes, never a scan from a segment's start.
    let batch = wal.read_range(3, 10, 64 << 10)?;
    for record in &batch {
        println!(
            "send {} = {}",
            record.lsn,
            String::from_utf8_lossy(&record.data)
        );
    }
    assert_eq!(batch.first().map(|r| r.lsn), Some(3));
    assert_eq!(
        wal.read(9)?.map(|r| r.data),
        Some(b"term 2, entry 9".to_vec())
    );

    // 4. A snapshot covers everything up to 9: seal the segment so the log
    //    can drop it, then drop every segment wholly below 10.
    wal.rotate()?;
    let removed = wal.truncate_before(10)?;
    println!(
        "snapshot at 9: {removed} segment(s) dropped, next LSN {}",
        wal.next_lsn()
    );
    assert_eq!(wal.first_lsn(), None);
    assert_eq!(wal.next_lsn(), 10);

    drop(wal);
    std::fs::remove_dir_all(&tmp).map_err(|e| wal_core::Error::Io {
        op: "remove example directory",
        path: tmp.clone(),
        source: e,
    })?;
    Ok(())
}
