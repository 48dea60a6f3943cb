//! Project automation, run as `cargo xtask <command>`.
//!
//! - `ci`: everything CI checks: formatting, clippy (warnings denied), the
//!   tests (`test` below) and the docs (warnings denied).
//! - `test [CARGO_TEST_ARGS]... [-- TEST_ARGS...]`: builds the binaries the
//!   end-to-end tests drive, then runs every test in the workspace (or of
//!   the packages `-p` names), handing its arguments on to `cargo test` as
//!   given. This is the test command README.md gives.
//! - `bench [--quick] [--vs-redis] [--cluster] [--only-cluster]`: builds
//!   release binaries and measures the disk floor, wal-core, recovery, the
//!   server, memory and checkpoint interference (with `--cluster`, a
//!   3-member cluster too); writes `target/bench/report.md` (see
//!   `bench/mod.rs`).
//! - `floor-modes [--secs S] [--dir DIR]`: durable small writes into a log
//!   segment prepared each possible way (append, sparse, fallocate,
//!   zero-filled, recycled) for 1 and 64 writers, and what each preparation
//!   costs; prints a table (see `bench/mod.rs` and `bench/floor.rs`).
//!
//! Arguments are parsed with clap: `cargo xtask help` and `--help` on each
//! command say what it takes. A usage error exits 2 with clap's message;
//! a failing command prints one line, `xtask: ...`, and exits 1.

mod bench;

use std::env;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

/// Project automation for this workspace.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// What CI runs: fmt --check, clippy -D warnings, the tests, the docs.
    ///
    /// `cargo fmt --all --check`, `cargo clippy --workspace --all-targets --
    /// -D warnings`, `cargo xtask test`, then `cargo doc --workspace
    /// --no-deps` with warnings denied; stops at the first that fails.
    Ci,
    /// Build the binaries, then run every test in the workspace.
    ///
    /// Builds the binaries the end-to-end tests drive (`cargo build
    /// --workspace --bins`), then runs `cargo test --workspace` with the
    /// arguments given, in their order: `cargo xtask test --release`, `cargo
    /// xtask test -- --nocapture`. With `-p PACKAGE` the tests are those of
    /// the packages named, not `--workspace`.
    Test(TestArgs),
    Bench(bench::BenchArgs),
    FloorModes(bench::FloorModesArgs),
}

/// What `cargo xtask test` hands on to `cargo test --workspace`, in the
/// order given.
#[derive(clap::Args)]
struct TestArgs {
    /// Flags for `cargo test`, e.g. `-p wal-core`, `--release` or `--test
    /// cluster`.
    #[arg(value_name = "CARGO_TEST_ARGS", allow_hyphen_values = true)]
    cargo_args: Vec<String>,
    /// After `--`: arguments for the test binaries, e.g. `--nocapture` or a
    /// test name filter.
    #[arg(value_name = "TEST_ARGS", last = true)]
    test_args: Vec<String>,
}

impl TestArgs {
    /// The arguments as given: an unknown flag or a `--` that follows one
    /// is taken by `cargo_args` verbatim, a leading `--` splits off
    /// `test_args`.
    fn to_vec(&self) -> Vec<String> {
        let mut args = self.cargo_args.clone();
        if !self.test_args.is_empty() {
            args.push("--".into());
            args.extend(self.test_args.iter().cloned());
        }
        args
    }
}

fn main() -> ExitCode {
    // Usage errors and --help are clap's (a usage error exits 2).
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Ci => ci(),
        Task::Test(args) => test(&args.to_vec()),
        Task::Bench(args) => bench::run(&args),
        Task::FloorModes(args) => bench::floor_modes(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
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
    // `cargo test` does not build for another package. They are built with
    // the tests (`--tests`) so that both see the same features of every
    // dependency (dev-dependencies turn on more): built alone, the
    // binaries would need a second build of most of the tree. A profile
    // chosen for the tests is the binaries' too, so the tests find them
    // beside themselves.
    let mut build = vec!["build", "--workspace", "--bins", "--tests"];
    build.extend(profile_flags(extra));
    cargo(&build, &[])?;
    let mut args = vec!["test"];
    // Cargo ignores `-p` beside `--workspace`: `cargo xtask test -p
    // wal-core` would run every test.
    if !names_packages(extra) {
        args.push("--workspace");
    }
    args.extend(extra.iter().map(String::as_str));
    cargo(&args, &[])
}

/// The cargo flags in `args` (those before a `--`) that choose a profile:
/// `--release`, `--profile NAME`, `--profile=NAME`.
fn profile_flags(args: &[String]) -> Vec<&str> {
    let mut flags = Vec::new();
    let mut args = args.iter().take_while(|a| *a != "--");
    while let Some(arg) = args.next() {
        if arg == "--release" || arg.starts_with("--profile=") {
            flags.push(arg.as_str());
        } else if arg == "--profile" {
            flags.push(arg.as_str());
            if let Some(name) = args.next() {
                flags.push(name.as_str());
            }
        }
    }
    flags
}

/// Whether the cargo flags in `args` (those before a `--`) choose packages.
fn names_packages(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a.starts_with("-p") || a == "--package" || a.starts_with("--package="))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn profile_flags_are_those_before_the_test_arguments() {
        let args = strings(&["-p", "wal-core", "--release", "--", "--profile", "x"]);
        assert_eq!(profile_flags(&args), ["--release"]);
        let args = strings(&["--profile", "bench", "--test", "cluster"]);
        assert_eq!(profile_flags(&args), ["--profile", "bench"]);
        let args = strings(&["--profile=bench"]);
        assert_eq!(profile_flags(&args), ["--profile=bench"]);
        assert!(profile_flags(&strings(&["--", "--release"])).is_empty());
        assert!(names_packages(&strings(&["-p", "wal-core"])));
        assert!(!names_packages(&strings(&["--", "-p"])));
    }
}
