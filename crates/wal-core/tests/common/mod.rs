//! Helpers for tests that run on the real file system.

use std::path::Path;

/// The segment files (`*.wal`) in `dir`, sorted: oldest first.
pub fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names
}
