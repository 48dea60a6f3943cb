//! `--recovery-mode`: damage in the middle of the log stops a strict start
//! with one line naming the file, the offset and the flag that would cut
//! there; a tolerant start cuts the log there and serves what precedes it.

use std::path::{Path, PathBuf};

use e2e::{EXIT_DEADLINE, ServerProcess, command, run_to_exit};

const RECORDS: usize = 40;

fn value(i: usize) -> String {
    format!("value-{i:04}")
}

/// The data directory's only log segment.
fn only_segment(data_dir: &Path) -> PathBuf {
    let segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.into_iter().next().unwrap()
}

/// Flips one byte inside the value of record `i`; returns the byte's offset.
fn corrupt_value_of(segment: &Path, i: usize) -> usize {
    let mut bytes = std::fs::read(segment).unwrap();
    let needle = value(i).into_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the value is in the segment");
    bytes[at] ^= 0x20;
    std::fs::write(segment, bytes).unwrap();
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_log_damage_is_refused_by_name_and_cut_by_tolerant() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--segment-size", "64KiB"];
    let mut server = ServerProcess::start(dir.path(), &args);
    let client = kv_client::Client::connect(server.addr()).await.unwrap();
    // One at a time, so that record i holds key i.
    for i in 0..RECORDS {
        client.put(format!("key-{i}"), value(i)).await.unwrap();
    }
    drop(client);
    server.sigterm();
    assert_eq!(server.wait_exit(EXIT_DEADLINE).code(), Some(0));

    let segment = only_segment(dir.path());
    let damaged = RECORDS / 2;
    let flipped = corrupt_value_of(&segment, damaged);

    // Strict, the default: refused, in one line that says what to do.
    let mut strict = command("kv-server");
    strict
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args);
    let output = run_to_exit(strict, b"", EXIT_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("kv-server: error: "), "{last}");
    assert!(last.contains(&segment.display().to_string()), "{last}");
    let offset: usize = last
        .split("at offset ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in: {last}"));
    assert!(
        offset <= flipped && flipped - offset < 64,
        "offset {offset} is not the damaged record's (byte {flipped} was flipped)"
    );
    assert!(
        last.contains(
            "start with --recovery-mode tolerant to cut the log there, losing what follows"
        ),
        "{last}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");

    // Tolerant: the log is cut at the damaged record, with a warning.
    let tolerant_args = ["--segment-size", "64KiB", "--recovery-mode", "tolerant"];
    let server = ServerProcess::start(dir.path(), &tolerant_args);
    assert!(server.stderr().contains("WARN"), "{}", server.stderr());
    let client = kv_client::Client::connect(server.addr()).await.unwrap();
    for i in 0..RECORDS {
        let got = client.get(format!("key-{i}")).await.unwrap();
        let want = (i < damaged).then(|| value(i).into_bytes());
        assert_eq!(got.as_deref(), want.as_deref(), "key-{i}");
    }
    // And it takes writes again.
    client.put("after-the-cut", "yes").await.unwrap();
}
