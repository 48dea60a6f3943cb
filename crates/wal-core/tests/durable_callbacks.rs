//! `append_with`, `durable_lsn` and `wait_durable` promise durability, not
//! just a write: checked against the simulated disk's durable image, and
//! under power cuts at every step.

#[allow(dead_code)]
mod sweep;

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sweep::{DIR, fresh_fs, options, payload};
use wal_core::sim::SimFs;
use wal_core::{Error, Lsn, SyncPolicy, Vfs, Wal, WalOptions};

fn never() -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Never,
        ..options()
    }
}

/// Whether some segment's durable image (what a crash now keeps) holds
/// `bytes`.
fn durably_holds(fs: &SimFs, bytes: &[u8]) -> bool {
    fs.list_dir(Path::new(DIR)).unwrap().iter().any(|name| {
        fs.durable_file(&Path::new(DIR).join(name))
            .is_ok_and(|d| d.windows(bytes.len()).any(|w| w == bytes))
    })
}

#[test]
fn append_with_calls_back_only_once_the_records_are_durable() {
    // Under SyncPolicy::Never nothing else syncs: the callback's promise
    // is the only reason the records reach the disk.
    let fs = fresh_fs();
    let wal = Arc::new(Wal::open_with_vfs(DIR, never(), fs.shared()).unwrap());
    let (tx, rx) = mpsc::channel();
    let mut expected = Vec::new();
    for i in 0..12 {
        let data = vec![payload(i), payload(100 + i)];
        let (fs2, wal2, tx, probe) = (fs.clone(), Arc::clone(&wal), tx.clone(), data.clone());
        let lsns = wal
            .append_with(&data, move |result| {
                // Checked inside the callback: by the time it runs, the
                // disk holds the records and durable_lsn covers them.
                let durable = probe.iter().all(|p| durably_holds(&fs2, p));
                let covered = result
                    .as_ref()
                    .is_ok_and(|r| wal2.durable_lsn() >= r.end - 1);
                tx.send((result.map_err(|e| e.to_string()), durable, covered))
                    .unwrap();
            })
            .unwrap();
        assert_eq!(lsns, 2 * i as u64 + 1..2 * i as u64 + 3, "LSNs at once");
        expected.push(lsns);
    }
    for lsns in expected {
        let (result, durable, covered) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(result, Ok(lsns.clone()), "callbacks in LSN order");
        assert!(
            durable,
            "callback for {lsns:?} before the records were durable"
        );
        assert!(covered, "durable_lsn below {lsns:?} in its callback");
    }
}

#[test]
fn records_acknowledged_by_append_with_survive_a_crash_at_every_point() {
    // Power cut after every mutating call of a workload of append_with
    // batches over several segments: every range a callback reported Ok
    // is on disk after the crash.
    fn workload(fs: &SimFs, acked: &Arc<Mutex<Vec<Range<Lsn>>>>) -> Option<Wal> {
        let wal = Wal::open_with_vfs(DIR, never(), fs.shared()).ok()?;
        for i in 0..10 {
            let data: Vec<Vec<u8>> = (0..1 + i % 3).map(|j| payload(i * 10 + j)).collect();
            let acked = Arc::clone(acked);
            wal.append_with(&data, move |r| {
                if let Ok(r) = r {
                    acked.lock().unwrap().push(r);
                }
            })
            .ok()?;
        }
        let last = wal.last_lsn()?;
        wal.wait_durable(last).ok()?;
        Some(wal)
    }
    let n = {
        let fs = fresh_fs();
        let base = fs.mutation_count();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let wal = workload(&fs, &acked).unwrap();
        let count = fs.mutation_count() - base;
        drop(wal);
        // Dropping the log joined its flusher: every callback has run.
        let acked = acked.lock().unwrap();
        assert_eq!(acked.iter().map(|r| r.end - r.start).sum::<u64>(), 19);
        count
    };
    let (mut some, mut all) = (0, 0);
    for k in 0..=n {
        let fs = fresh_fs();
        fs.power_cut_after(k);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let wal = workload(&fs, &acked);
        let crashed = fs.crash();
        // Dropping joins the flusher: no callback runs after this.
        drop(wal);
        let acked = acked.lock().unwrap().clone();
        let wal = Wal::open_with_vfs(DIR, options(), crashed.shared())
            .unwrap_or_else(|e| panic!("crash after {k}: open: {e}"));
        let last = wal.last_lsn().unwrap_or(0);
        some += usize::from(!acked.is_empty());
        all += usize::from(acked.len() == 10);
        for r in &acked {
            assert!(
                r.end - 1 <= last,
                "crash after {k}: {r:?} acknowledged durable, log ends at {last}"
            );
        }
    }
    // Not vacuous: many crash points came after some callbacks, and only
    // the last few after all of them.
    assert!(some > n as usize / 2 && all < some, "{some} / {all} of {n}");
}

#[test]
fn wait_durable_syncs_and_durable_lsn_follows_the_syncs() {
    let fs = fresh_fs();
    let wal = Wal::open_with_vfs(DIR, never(), fs.shared()).unwrap();
    let lsn = wal.append(b"not yet durable").unwrap();
    assert!(wal.durable_lsn() < lsn, "durable_lsn moved without a sync");
    assert!(!durably_holds(&fs, b"not yet durable"));
    wal.wait_durable(lsn).unwrap();
    assert!(wal.durable_lsn() >= lsn);
    assert!(durably_holds(&fs, b"not yet durable"));
    match wal.wait_durable(lsn + 1) {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("wait_durable of an LSN not appended: {other:?}"),
    }
    // truncate_after takes durable_lsn back with the records it removes.
    wal.append(b"two").unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.durable_lsn(), lsn + 1);
    wal.truncate_after(lsn).unwrap();
    assert_eq!(wal.durable_lsn(), lsn);
}
