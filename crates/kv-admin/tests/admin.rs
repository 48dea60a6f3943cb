//! kv-admin against real data directories made by kv-store: clean ones,
//! ones a running store holds, and ones damaged by hand.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kv_store::{KeyValueStore, StoreOptions, WalOptions};

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv-admin"))
        .args(args)
        .output()
        .expect("run kv-admin")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn options() -> StoreOptions {
    StoreOptions {
        // Small segments: several of them, so that damage can sit in one
        // that is not the last.
        wal: WalOptions {
            segment_size: 64 << 10,
            ..WalOptions::default()
        },
        checkpoint_after: None,
        ..StoreOptions::default()
    }
}

/// A store with 300 puts, a checkpoint after the first 100, and deletes.
fn build(dir: &Path) -> KeyValueStore {
    let store = KeyValueStore::open(dir, options()).unwrap();
    for i in 0..300u32 {
        if i == 100 {
            store.checkpoint().unwrap();
        }
        store
            .put(format!("key{i:03}").as_bytes(), &vec![b'v'; 1000])
            .unwrap();
    }
    store.delete(b"key000").unwrap();
    store.delete(b"key150").unwrap();
    store
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "LOCK")
        .collect();
    v.sort();
    v
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for sub in ["wal", "snapshots"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            v.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    v.sort();
    v
}

/// Where the records of `segment` end (the zeroes after are free space).
fn records_end(segment: &Path) -> usize {
    let bytes = std::fs::read(segment).unwrap();
    bytes.iter().rposition(|&b| b != 0).unwrap() + 1
}

#[test]
fn verify_passes_a_clean_directory_and_says_what_recovery_would_do() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).close().unwrap();
    let before = all_bytes(dir.path());
    let out = admin(&["verify", dir.path().to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("clean"), "{t}");
    assert!(t.contains("load the snapshot of LSN 100"), "{t}");
    assert!(t.contains("replay 202 record(s): 298 key(s)"), "{t}");
    assert!(t.contains("checksums good"), "{t}");
    assert_eq!(before, all_bytes(dir.path()), "verify changed a file");
}

#[test]
fn every_command_refuses_a_directory_a_store_holds_naming_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    let d = dir.path().to_str().unwrap();
    for args in [vec!["verify", d], vec!["dump", d], vec!["repair", d]] {
        let out = admin(&args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains("in use") && t.contains("LOCK"), "{args:?}: {t}");
    }
    drop(store);
}

#[test]
fn verify_names_the_file_and_offset_of_corruption_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).close().unwrap();
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());
    // Bit rot in the middle of a segment that is not the last.
    let victim = &segs[segs.len() - 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = records_end(victim) / 2;
    bytes[at] ^= 0xff;
    std::fs::write(victim, &bytes).unwrap();
    let before = all_bytes(dir.path());

    let out = admin(&["verify", dir.path().to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(t.contains(name) && t.contains("offset"), "{t}");
    assert!(t.contains("tolerant"), "names the mode that would cut: {t}");

    let out = admin(&[
        "verify",
        dir.path().to_str().unwrap(),
        "--recovery-mode",
        "tolerant",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("would cut it there") && t.contains("NOT clean"),
        "{t}"
    );
    assert_eq!(before, all_bytes(dir.path()), "verify changed a file");
}

#[test]
fn verify_reports_a_damaged_snapshot_the_log_cannot_replace() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).close().unwrap();
    let snap = &snapshot_files(dir.path())[0];
    let mut bytes = std::fs::read(snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(snap, &bytes).unwrap();
    let out = admin(&["verify", dir.path().to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("damage: corrupt snapshot"), "{t}");
    assert!(t.contains("would refuse to open"), "{t}");
}

#[test]
fn dump_prints_one_line_a_record_within_the_asked_range() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).close().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = admin(&["dump", d, "--from", "101", "--to", "110"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 10, "{lines:?}");
    assert!(
        lines[0].starts_with("101 put key100 (1000 bytes)"),
        "{lines:?}"
    );

    let out = admin(&["dump", d, "--from", "301", "-o", "json", "--values"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let records: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["lsn"], 301);
    assert_eq!(records[0]["op"], "delete");
    assert_eq!(records[0]["key"], "key000");
    assert_eq!(records[1]["key"], "key150");
}

#[test]
fn dump_of_a_snapshot_lists_its_entries_with_escaped_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    store.put(b"a\x00\xff", b"line\nbreak").unwrap();
    store.put(b"b", b"plain").unwrap();
    store.checkpoint().unwrap();
    store.close().unwrap();
    let snap = &snapshot_files(dir.path())[0];
    let out = admin(&["dump", "--snapshot", snap.to_str().unwrap(), "--values"]);
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        t,
        "# snapshot of LSN 2: 2 entries\na\\x00\\xff = line\\nbreak\nb = plain\n"
    );

    // A damaged snapshot is refused, not half printed.
    let mut bytes = std::fs::read(snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(snap, &bytes).unwrap();
    let out = admin(&["dump", "--snapshot", snap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn repair_saves_what_it_cuts_and_leaves_a_store_that_opens_strictly() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).close().unwrap();
    let segs = segments(dir.path());
    let last = segs.last().unwrap().clone();
    let victim = segs[segs.len() - 2].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = records_end(&victim) / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let last_bytes = std::fs::read(&last).unwrap();
    let last_len = records_end(&last);
    let victim_len = records_end(&victim);

    let side = dir.path().join("saved");
    let out = admin(&[
        "repair",
        dir.path().to_str().unwrap(),
        "--side-dir",
        side.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("removed") && t.contains(side.to_str().unwrap()),
        "{t}"
    );
    // The removed last segment was saved whole (up to its free space), and
    // the cut part of the damaged one from the cut on.
    let saved_last = std::fs::read(side.join(last.file_name().unwrap())).unwrap();
    assert!(
        saved_last == last_bytes[..last_len],
        "the saved copy differs"
    );
    let cut_file = std::fs::read_dir(&side)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.contains(".from-"))
        .expect("the cut part of the damaged segment is saved");
    let from: usize = cut_file.rsplit("from-").next().unwrap().parse().unwrap();
    assert!(from <= at, "cut at {from}, damage at {at}");
    let saved = std::fs::read(side.join(&cut_file)).unwrap();
    assert!(
        saved[..] == bytes[from..victim_len],
        "saved {} bytes, want the {} from the cut",
        saved.len(),
        victim_len - from
    );

    // Now clean, and a strict open works; the writes before the damage are
    // there, the first 100 from the snapshot among them.
    let out = admin(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    assert!(
        store.get(b"key000").is_some(),
        "delete after the cut is gone"
    );
    for i in 1..100u32 {
        assert!(store.get(format!("key{i:03}").as_bytes()).is_some());
    }
    assert!(store.get(b"key299").is_none(), "cut with the damage");
    store.close().unwrap();
    drop(store);

    // A second repair has nothing to do.
    let out = admin(&["repair", dir.path().to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("nothing to cut"), "{t}");
}

#[test]
fn restore_makes_a_data_directory_that_continues_after_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    let seq = store.checkpoint().unwrap();
    store.close().unwrap();
    drop(store);
    let backup = dir.path().join("backup.snap");
    std::fs::copy(&snapshot_files(dir.path())[0], &backup).unwrap();

    let target = dir.path().join("restored");
    let out = admin(&[
        "restore",
        backup.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("restored 298 key(s)") && t.contains(&format!("LSN {seq}")),
        "{t}"
    );
    let store = KeyValueStore::open(&target, options()).unwrap();
    assert_eq!(store.stats().keys, 298);
    assert_eq!(store.get(b"key299").as_deref(), Some(&vec![b'v'; 1000][..]));
    assert!(store.get(b"key000").is_none());
    assert_eq!(store.put(b"new", b"1").unwrap(), seq + 1);
    store.close().unwrap();
    drop(store);

    // Never over something, and never from a damaged backup.
    let out = admin(&[
        "restore",
        backup.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not empty"));
    let mut bytes = std::fs::read(&backup).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&backup, &bytes).unwrap();
    let other = dir.path().join("other");
    let out = admin(&["restore", backup.to_str().unwrap(), other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("corrupt snapshot"), "{}", text(&out));
    assert!(!other.exists(), "a refused restore made the directory");
}
