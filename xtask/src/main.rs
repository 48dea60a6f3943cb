//! Project automation, run as `cargo xtask <command>`.
//!
//! - `ci`: everything CI checks: formatting, clippy (warnings denied), the
//!   tests (`test` below) and the docs (warnings denied).
//! - `test`: builds the binaries the end-to-end tests drive, then runs every
//!   test in the workspace. This is the test command README.md gives.
//! - `bench [--quick] [--vs-redis]`: builds release binaries and measures
//!   the disk floor, wal-core, recovery, the server, memory and checkpoint
//!   interference; writes `target/bench/report.md` (see `bench/mod.rs`).
//! - `floor-modes [--secs S] [--dir DIR]`: durable small writes into a log
//!   segment prepared each possible way (append, sparse, fallocate,
//!   zero-filled, recycled) for 1 and 64 writers, and what each preparation
//!   costs; prints a table (see `bench/floor.rs`).

mod bench;

use std::env;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("floor-modes") => bench::floor_modes(&args[1..]),
        Some("help") | Some("--help") | Some("-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`; run `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "usage: cargo xtask <command>\n\n\
         commands:\n  \
         ci     fmt --check, clippy -D warnings, tests, docs (what CI runs)\n  \
         test   build the binaries, then run every test in the workspace\n  \
         bench  [--quick] [--vs-redis]: measure on this machine, write target/bench/report.md\n  \
         floor-modes  [--secs S] [--dir DIR]: fdatasync rate per way of preparing a segment\n"
    );
}

/// Runs `cargo` with `args`, failing with a clear message if it fails.
fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn test(extra: &[String]) -> Result<(), String> {
    // The end-to-end tests in tests/ drive the real binaries, which
    // `cargo test` does not build for another package.
    cargo(&["build", "--workspace", "--bins"], &[])?;
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args, &[])
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    test(&[])?;
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}
