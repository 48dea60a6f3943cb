//! `cargo xtask bench [--quick] [--vs-redis] [--cluster] [--only-cluster] [--scale]`
//! ([`BenchArgs`]): builds the release binaries once, measures the disk
//! floor, wal-core, recovery, the server end to end, memory and checkpoint
//! interference on this machine, and writes `target/bench/report.md` with
//! every figure and the targets of issue 5.
//!
//! The measuring programs are separate processes (`kv-server`,
//! `kv-client bench`, the `bench_wal` and `bench_recovery` examples), each
//! printing one JSON line that [`json`] reads; only the disk floor runs in
//! xtask itself ([`floor`]). A step that fails is reported and the others
//! still run; the command then exits non-zero.
//!
//! `cargo xtask floor-modes` ([`floor_modes`]) runs only a comparison of
//! the disk floor under each way of preparing a log segment, with no build.

mod cluster;
mod floor;
mod json;
mod plots;
mod proc;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use floor::Mode;
use json::Object;
use proc::{Running, Server, TempDir};
use report::{Adjacent, Checkpointing, LoadRun, Memory, RedisRun, Results};

/// What a run measures, and for how long.
#[derive(Debug, Clone)]
pub struct Params {
    pub quick: bool,
    pub floor_secs: f64,
    pub record_sizes: Vec<usize>,
    pub wal_secs: f64,
    pub wal_threads: Vec<usize>,
    pub recovery_entries: u64,
    pub value_size: usize,
    pub server_secs: f64,
    pub server_keyspace: u64,
    pub connections: Vec<u32>,
    pub pipelines: Vec<u32>,
    pub memory_keys: u64,
    /// Bytes of each key the memory and checkpoint steps write.
    pub memory_key_prefix: &'static str,
    pub checkpoint_secs: f64,
    pub checkpoint_connections: u32,
    /// The single node's flags (every single-node server of the suite).
    pub server_flags: Vec<&'static str>,
    /// Store sizes of the scale step, smaller first.
    pub scale_entries: Vec<u64>,
    /// Seconds of the scale step's latency run without a checkpoint.
    pub scale_secs: f64,
}

impl Params {
    fn new(quick: bool) -> Params {
        Params {
            quick,
            floor_secs: if quick { 1.0 } else { 3.0 },
            record_sizes: vec![128, 4096, 65536],
            wal_secs: if quick { 1.0 } else { 3.0 },
            wal_threads: vec![1, 4, 16, 64],
            recovery_entries: 1_000_000,
            value_size: 100,
            server_secs: if quick { 1.5 } else { 5.0 },
            server_keyspace: 100_000,
            connections: vec![1, 16, 64],
            pipelines: vec![1, 16],
            memory_keys: 1_000_000,
            // 10 bytes + 6 digits: 16-byte keys, as in the recovery step.
            memory_key_prefix: "bench:key:",
            checkpoint_secs: if quick { 3.0 } else { 10.0 },
            checkpoint_connections: 16,
            // Durable acknowledgements; no automatic checkpoint, so that
            // only the checkpoints this suite starts ever run.
            server_flags: vec!["--sync-policy", "always", "--checkpoint-after", "0"],
            scale_entries: if quick {
                vec![100_000, 1_000_000]
            } else {
                vec![1_000_000, 10_000_000]
            },
            scale_secs: if quick { 2.0 } else { 5.0 },
        }
    }
}

/// Where things are.
struct Paths {
    /// The workspace root.
    root: PathBuf,
    /// `target/bench` under the root: data, logs and the report.
    bench: PathBuf,
    /// The release binaries (`kv-server`, `kv-client`).
    release: PathBuf,
}

impl Paths {
    fn kv_server(&self) -> PathBuf {
        self.release.join("kv-server")
    }
    fn kv_client(&self) -> PathBuf {
        self.release.join("kv-client")
    }
    fn example(&self, name: &str) -> PathBuf {
        self.release.join("examples").join(name)
    }
}

/// Measure this machine, write target/bench/report.md.
///
/// Builds release binaries and measures, on this machine: the disk's
/// write+fdatasync floor, wal-core appends, recovery of 1M entries, the
/// server end to end, memory per key and write latency during a
/// checkpoint. Writes target/bench/report.md.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Shorter runs (about 3 minutes, build included).
    #[arg(long)]
    quick: bool,
    /// Also measure redis-server (appendonly yes, appendfsync always) with
    /// redis-benchmark, if both are installed.
    #[arg(long)]
    vs_redis: bool,
    /// Also a 3-member cluster: durable puts against the leader, and
    /// failover over 20 leader kills (writes target/bench/cluster.md).
    #[arg(long)]
    cluster: bool,
    /// The server end to end and the cluster only.
    #[arg(long)]
    only_cluster: bool,
    /// Also the scale run: a store of 10,000,000 keys beside one of
    /// 1,000,000 (100,000 and 1,000,000 with --quick): memory per key,
    /// recovery from the log and from a snapshot, checkpoint time and the
    /// write p99 during one (the kv-store `figures` example; needs about
    /// 4 GiB of memory and 3 GiB of disk, and a few minutes).
    #[arg(long)]
    scale: bool,
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    let only_cluster = args.only_cluster;
    let with_cluster = args.cluster || only_cluster;
    let params = Params::new(args.quick);
    let root = workspace_root();
    let build_start = Instant::now();
    build(&root)?;
    let build_secs = build_start.elapsed().as_secs_f64();
    let paths = Paths {
        bench: root.join("target").join("bench"),
        release: target_dir(&root)?.join("release"),
        root,
    };
    std::fs::create_dir_all(&paths.bench)
        .map_err(|e| format!("cannot create {}: {e}", paths.bench.display()))?;
    // Servers append to their logs: start each run with none.
    for entry in std::fs::read_dir(&paths.bench).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|ext| ext == "log") {
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
    }

    let started = Instant::now();
    let cpu_before = report::CpuSample::read();
    let mut results = Results {
        machine: report::Machine::read(&paths.bench, &paths.root),
        build_secs,
        ..Results::default()
    };
    if !only_cluster {
        step(&mut results, "disk floor", |r| {
            disk_floor(&paths, &params, r)
        });
        step(&mut results, "wal-core", |r| wal_core(&paths, &params, r));
        step(&mut results, "recovery", |r| recovery(&paths, &params, r));
    }
    step(&mut results, "server end to end", |r| {
        server_load(&paths, &params, r)
    });
    if !only_cluster {
        step(&mut results, "memory and checkpoint interference", |r| {
            memory_and_checkpoint(&paths, &params, r)
        });
    }
    if args.scale && !only_cluster {
        step(&mut results, "scale", |r| scale(&paths, &params, r));
    }
    if with_cluster {
        step(&mut results, "cluster", |_| {
            let mut text = String::from("# Cluster bench\n\n");
            cluster::run(&paths, &params, &mut text)?;
            cluster::write(&paths.bench, &text)
        });
    }
    if args.vs_redis {
        step(&mut results, "redis", |r| redis(&paths, &params, r));
    } else {
        results.redis_note = Some("not run (pass --vs-redis)".into());
    }
    results.measure_secs = started.elapsed().as_secs_f64();
    results.machine.load_after = report::loadavg();
    results.machine.others_cpu = cpu_before
        .zip(report::CpuSample::read())
        .map(|(before, after)| before.others_share(&after));

    match plots::write(&paths.bench, &results) {
        Ok(plots) => results.plots = plots,
        Err(e) => results.errors.push(e),
    }
    let text = report::render(&results, &params);
    let path = paths.bench.join("report.md");
    std::fs::write(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("{}", report::targets_table(&results));
    println!("{}", report::performance_table(&results));
    eprintln!(
        "xtask: report written to {} (measuring took {:.0} s)",
        path.display(),
        results.measure_secs
    );
    if results.errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} step(s) failed: {}",
            results.errors.len(),
            results.errors.join("; ")
        ))
    }
}

/// Runs one step, recording its failure instead of stopping the suite.
fn step(results: &mut Results, name: &str, f: impl FnOnce(&mut Results) -> Result<(), String>) {
    eprintln!("xtask bench: {name}...");
    let start = Instant::now();
    if let Err(e) = f(results) {
        eprintln!("xtask bench: {name} FAILED: {e}");
        results.errors.push(format!("{name}: {e}"));
    } else {
        eprintln!(
            "xtask bench: {name} done in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn build(root: &Path) -> Result<(), String> {
    let args = [
        "build",
        "--release",
        "-p",
        "kv-server",
        "-p",
        "kv-client",
        "-p",
        "wal-core",
        "-p",
        "kv-store",
        "--bins",
        "--example",
        "bench_wal",
        "--example",
        "bench_recovery",
        "--example",
        "figures",
    ];
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo())
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the release build failed ({status})"))
    }
}

/// Cargo's target directory (honours CARGO_TARGET_DIR and config).
fn target_dir(root: &Path) -> Result<PathBuf, String> {
    let mut cmd = Command::new(cargo());
    cmd.args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root);
    let done = proc::run(cmd, Duration::from_secs(60))?;
    // The metadata is nested JSON; only this one string field is needed.
    let key = "\"target_directory\":\"";
    let start = done
        .stdout
        .find(key)
        .ok_or("cargo metadata has no target_directory")?
        + key.len();
    let rest = &done.stdout[start..];
    let end = rest
        .find('"')
        .ok_or("cargo metadata: unterminated target_directory")?;
    Ok(PathBuf::from(rest[..end].replace("\\\\", "\\")))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// a. The disk floor.
fn disk_floor(paths: &Paths, params: &Params, results: &mut Results) -> Result<(), String> {
    let dir = TempDir::fresh(paths.bench.join("floor"))?;
    for &size in &params.record_sizes {
        for mode in [Mode::Append, Mode::ZeroFilled] {
            let path = dir.0.join(format!("{}-{size}", mode.name()));
            let floor = floor::measure(&path, mode, size, secs(params.floor_secs))?;
            eprintln!(
                "  floor {:>12} {size:>6} B: {:.0} syncs/s, p50 {:.0} us",
                mode.name(),
                floor.syncs_per_sec(),
                floor.p50_us
            );
            results.floors.push(floor);
        }
    }
    Ok(())
}

/// fdatasync rate per way of preparing a log segment; prints a table.
///
/// Measures durable 128 B writes (pwrite + fdatasync, sequential from offset
/// 0) into a file prepared each way a log segment can be: append (new empty
/// file), sparse (set_len), fallocate, zero-filled, recycled (old non-zero
/// data). Writers: 1; 64 batched (group commit: one pwrite of 64 records +
/// one fdatasync); 64 threads each doing its own pwrite + fdatasync
/// concurrently. Also times preparing a 64 MiB segment each way (untimed in
/// the runs). Prints a table; needs no release build.
#[derive(clap::Args)]
pub struct FloorModesArgs {
    /// Seconds per measurement.
    #[arg(long, value_name = "S", default_value_t = 3.0, value_parser = positive_secs)]
    secs: f64,
    /// Directory on the filesystem to measure (default: target/bench, beside
    /// the bench's data directories).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .ok_or_else(|| "must be a positive number of seconds".to_string())
}

/// `cargo xtask floor-modes [--secs S] [--dir DIR]`: the disk floor under
/// each way of preparing a log segment ([`Mode`]), for one writer, for 64
/// writers under group commit (one `pwrite` of their 64 records, one
/// `fdatasync`) and for 64 threads syncing concurrently, with what each
/// preparation of a 64 MiB segment costs. Needs no release build; prints a
/// table on stdout.
pub fn floor_modes(args: &FloorModesArgs) -> Result<(), String> {
    // FloorModesArgs' help repeats these two figures.
    const RECORD: usize = 128;
    const WRITERS: usize = 64;
    let secs_per_cell = args.secs;
    let parent = args.dir.clone();
    let root = workspace_root();
    let parent = parent.unwrap_or_else(|| root.join("target").join("bench"));
    let dir = TempDir::fresh(parent.join("floor-modes"))?;
    let machine = report::Machine::read(&dir.0, &root);
    eprintln!(
        "floor-modes: {} s per cell, {RECORD} B records, in {} ({})",
        secs_per_cell,
        dir.0.display(),
        machine.mount
    );

    let duration = secs(secs_per_cell);
    let cpu_before = report::CpuSample::read();
    let mut rows = Vec::new();
    // Writers outer, modes inner: the modes compared with each other are
    // measured close together in time.
    for writers in [
        floor::Writers::One,
        floor::Writers::Batched(WRITERS),
        floor::Writers::Threads(WRITERS),
    ] {
        for mode in Mode::ALL {
            let path = dir.0.join(mode.name());
            let prepare_ms = floor::prepare_ms(&path, mode, floor::SEGMENT_BYTES)?;
            let bytes = floor::cell_file_bytes(writers, RECORD, duration);
            let cell = floor::measure_cell(&path, mode, writers, RECORD, bytes, duration)?;
            eprintln!(
                "  {:>11} {:>10} {} B: {:.0} syncs/s, {:.0} records/s, p50 {:.0} us",
                mode.name(),
                writers.name(),
                cell.record_size,
                cell.syncs_per_sec(),
                cell.records_per_sec(),
                cell.p50_us
            );
            rows.push((cell, prepare_ms));
        }
    }
    let others = cpu_before
        .zip(report::CpuSample::read())
        .map(|(before, after)| before.others_share(&after));

    println!(
        "| mode | writers | syncs/s | records/s | p50 us | p99 us | prepare ms | file MiB | note |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for (c, prepare_ms) in &rows {
        let file = if c.file_bytes == 0 {
            "-".to_string()
        } else {
            (c.file_bytes >> 20).to_string()
        };
        let note = match c.full_after {
            Some(at) => format!("file full after {at:.2} s, stopped"),
            None => String::new(),
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {file} | {note} |",
            c.mode.name(),
            c.writers.name(),
            c.syncs_per_sec(),
            c.records_per_sec(),
            c.p50_us,
            c.p99_us,
            prepare_ms
        );
    }
    println!(
        "\n{RECORD} B records, {secs_per_cell} s per cell; prepare ms: making a new 64 MiB segment \
         durable that way (recycled: renaming an old one); 64 threads: syncs/s counts their \
         fdatasync calls, which the kernel may merge; mount {}; load {} before, {} after; other \
         processes used {} of the CPU meanwhile.",
        machine.mount,
        machine.load_before,
        report::loadavg(),
        others.map_or("an unknown share".into(), |s| format!("{:.0}%", s * 100.0))
    );
    Ok(())
}

// b. wal-core appends.
fn wal_core(paths: &Paths, params: &Params, results: &mut Results) -> Result<(), String> {
    let dir = TempDir::fresh(paths.bench.join("wal"))?;
    let mut configs: Vec<(usize, usize, &str)> = Vec::new();
    for &size in &params.record_sizes {
        for &threads in &params.wal_threads {
            configs.push((size, threads, "always"));
        }
        configs.push((size, 1, "never"));
    }
    for (n, (size, threads, policy)) in configs.into_iter().enumerate() {
        if threads == 1 && policy == "always" {
            // The first run of each record size: measure the floor again
            // just before it (see `Results::adjacent_floors`).
            let floor = floor::measure(
                &dir.0.join("floor"),
                Mode::Append,
                size,
                secs(params.floor_secs),
            )?;
            eprintln!(
                "  floor  append {size:>6} B: {:.0} syncs/s (adjacent)",
                floor.syncs_per_sec()
            );
            results.adjacent_floors.push((Adjacent::Wal, floor));
        }
        let log_dir = dir.0.join(format!("log-{n}"));
        let mut cmd = Command::new(paths.example("bench_wal"));
        cmd.arg("--dir")
            .arg(&log_dir)
            .args(["--record-size", &size.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--policy", policy])
            .args(["--duration", &params.wal_secs.to_string()]);
        let done = proc::run(cmd, secs(params.wal_secs + 120.0))?;
        let _ = std::fs::remove_dir_all(&log_dir);
        let obj = json::parse_last_object(&done.stdout)?;
        eprintln!(
            "  wal {policy:>6} {size:>6} B x {threads:>2} threads: {:.0} appends/s",
            obj.num("appends_per_sec")?
        );
        results.wal.push(obj);
    }
    Ok(())
}

// c. Recovery of a store of N entries.
fn recovery(paths: &Paths, params: &Params, results: &mut Results) -> Result<(), String> {
    let dir = TempDir::fresh(paths.bench.join("recovery"))?;
    let mut cmd = Command::new(paths.example("bench_recovery"));
    cmd.arg("--dir")
        .arg(dir.0.join("store"))
        .args(["--entries", &params.recovery_entries.to_string()])
        .args(["--value-size", &params.value_size.to_string()]);
    let done = proc::run(cmd, Duration::from_secs(600))?;
    let obj = json::parse_last_object(&done.stdout)?;
    eprintln!(
        "  recovery: WAL {:.0} entries/s, snapshot {:.0} entries/s",
        obj.num("wal_entries_per_sec")?,
        obj.num("snapshot_entries_per_sec")?
    );
    results.recovery = Some(obj);
    Ok(())
}

// g. Scale: the same figures at two store sizes, the larger ten times the
// smaller, so that growth worse than linear shows.
fn scale(paths: &Paths, params: &Params, results: &mut Results) -> Result<(), String> {
    let dir = TempDir::fresh(paths.bench.join("scale"))?;
    for &entries in &params.scale_entries {
        let mut cmd = Command::new(paths.example("figures"));
        // One writer count with a short run: the put figures of this
        // example are not what this step is for.
        cmd.arg(entries.to_string())
            .args(["1", &params.scale_secs.to_string()])
            .arg(&dir.0)
            .arg("--json");
        let done = proc::run(cmd, Duration::from_secs(1800))?;
        let obj = json::parse_last_object(&done.stdout)?;
        eprintln!(
            "  scale {entries}: {:.0} B/key, WAL {:.0} entries/s, snapshot {:.0} entries/s, \
             checkpoint {:.1} s, p99 {:.0} / {:.0} us",
            obj.num("bytes_per_key")?,
            obj.num("wal_entries_per_sec")?,
            obj.num("snapshot_entries_per_sec")?,
            obj.num("checkpoint_idle_secs")?,
            obj.num("p99_us_during")?,
            obj.num("p99_us_without")?
        );
        results.scale.push(obj);
    }
    Ok(())
}

/// Runs `kv-client bench --json` with `flags` against `addr`.
fn client_bench(
    paths: &Paths,
    addr: &str,
    flags: &[String],
    timeout: Duration,
) -> Result<Object, String> {
    let done = proc::run(client_bench_cmd(paths, addr, flags), timeout)?;
    json::parse_last_object(&done.stdout)
}

fn client_bench_cmd(paths: &Paths, addr: &str, flags: &[String]) -> Command {
    let mut cmd = Command::new(paths.kv_client());
    cmd.args(["--addr", addr, "bench", "--json"]).args(flags);
    cmd
}

fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (flag, value) in pairs {
        out.push(flag.to_string());
        if !value.is_empty() {
            out.push(value.clone());
        }
    }
    out
}

/// `kv-client bench` flags for a timed run of `op` over the server
/// keyspace, as the server and cluster steps measure it.
fn load_flags(
    params: &Params,
    op: &str,
    connections: u32,
    pipeline: u32,
    prefix: &str,
) -> Vec<String> {
    flags(&[
        ("--mix", op.into()),
        ("--connections", connections.to_string()),
        ("--pipeline", pipeline.to_string()),
        ("--duration", params.server_secs.to_string()),
        ("--keyspace", params.server_keyspace.to_string()),
        ("--key-prefix", prefix.into()),
        ("--value-size", params.value_size.to_string()),
    ])
}

/// Writes keys 0..n of `prefix` once each (16 connections x pipeline 16).
fn load_keys(
    paths: &Paths,
    addr: &str,
    n: u64,
    prefix: &str,
    value_size: usize,
) -> Result<Object, String> {
    let f = flags(&[
        ("--connections", "16".into()),
        ("--pipeline", "16".into()),
        ("--requests", n.to_string()),
        ("--keyspace", n.to_string()),
        ("--sequential-keys", String::new()),
        ("--key-prefix", prefix.into()),
        ("--value-size", value_size.to_string()),
        ("--mix", "put".into()),
    ]);
    client_bench(paths, addr, &f, Duration::from_secs(900))
}

// d. The server end to end.
fn server_load(paths: &Paths, params: &Params, results: &mut Results) -> Result<(), String> {
    let dir = TempDir::fresh(paths.bench.join("server-data"))?;
    let server = Server::start(
        &paths.kv_server(),
        &dir.0,
        &params.server_flags,
        &paths.bench.join("server-load.log"),
    )?;
    let prefix = "bench:";
    // Every key the gets ask for exists.
    load_keys(
        paths,
        &server.addr,
        params.server_keyspace,
        prefix,
        params.value_size,
    )?;
    for op in ["put", "get"] {
        for &connections in &params.connections {
            for &pipeline in &params.pipelines {
                if op == "put" && connections == 1 && pipeline == 1 {
                    // The single-connection put is judged against the floor:
                    // measure it just before, on the same filesystem.
                    let floor = floor::measure(
                        &paths.bench.join("server-floor"),
                        Mode::Append,
                        128,
                        secs(params.floor_secs),
                    )?;
                    eprintln!(
                        "  floor  append    128 B: {:.0} syncs/s (adjacent)",
                        floor.syncs_per_sec()
                    );
                    results.adjacent_floors.push((Adjacent::Server, floor));
                }
                let f = load_flags(params, op, connections, pipeline, prefix);
                let obj = client_bench(paths, &server.addr, &f, secs(params.server_secs + 60.0))?;
                eprintln!(
                    "  {op} {connections:>2} conn x P{pipeline:<2}: {:.0} ops/s, p99 {:.0} us",
                    obj.num("ops_per_sec")?,
                    obj.num("p99_us")?
                );
                results.server.push(LoadRun {
                    op,
                    connections,
                    pipeline,
                    obj,
                });
            }
        }
    }
    server.stop(Duration::from_secs(30))
}

// e. Memory, then f. checkpoint interference, on one server holding the
// loaded keys.
fn memory_and_checkpoint(
    paths: &Paths,
    params: &Params,
    results: &mut Results,
) -> Result<(), String> {
    let dir = TempDir::fresh(paths.bench.join("memory-data"))?;
    let server = Server::start(
        &paths.kv_server(),
        &dir.0,
        &params.server_flags,
        &paths.bench.join("server-memory.log"),
    )?;
    let rss_before = server.rss_bytes()?;
    let load = load_keys(
        paths,
        &server.addr,
        params.memory_keys,
        params.memory_key_prefix,
        params.value_size,
    )?;
    let rss_after = server.rss_bytes()?;
    let memory = Memory {
        keys: params.memory_keys,
        key_size: load.num("key_size")? as u64,
        value_size: params.value_size as u64,
        rss_before,
        rss_after,
        load_ops_per_sec: load.num("ops_per_sec")?,
    };
    eprintln!(
        "  memory: {:.0} bytes/key ({:.2}x raw)",
        memory.bytes_per_key(),
        memory.ratio()
    );
    results.memory = Some(memory);

    results.checkpointing = Some(checkpoint_interference(paths, params, &server.addr)?);
    server.stop(Duration::from_secs(60))
}

fn checkpoint_interference(
    paths: &Paths,
    params: &Params,
    addr: &str,
) -> Result<Checkpointing, String> {
    let checkpoint = || -> Result<f64, String> {
        let mut cmd = Command::new(paths.kv_client());
        cmd.args(["--addr", addr, "--timeout", "0", "checkpoint"]);
        Ok(proc::run(cmd, Duration::from_secs(300))?
            .elapsed
            .as_secs_f64())
    };
    // The first checkpoint also drops the log of the loading, so that both
    // measured runs start from the same small log.
    let warmup_secs = checkpoint()?;
    let f = flags(&[
        ("--mix", "put".into()),
        ("--connections", params.checkpoint_connections.to_string()),
        ("--pipeline", "1".into()),
        ("--duration", params.checkpoint_secs.to_string()),
        ("--keyspace", params.memory_keys.to_string()),
        ("--key-prefix", params.memory_key_prefix.into()),
        ("--value-size", params.value_size.to_string()),
    ]);
    let timeout = secs(params.checkpoint_secs + 120.0);
    let baseline = client_bench(paths, addr, &f, timeout)?;

    // Checkpoints back to back for the whole run, each a full snapshot of
    // the loaded keys, so that (nearly) every write of the run overlaps one.
    let bench = Running::start(client_bench_cmd(paths, addr, &f))?;
    let bench_start = Instant::now();
    let run_secs = params.checkpoint_secs;
    // Let the load reach a steady state first.
    std::thread::sleep(Duration::from_millis(300));
    let mut checkpoints = Vec::new();
    let mut covered = 0.0;
    while bench_start.elapsed().as_secs_f64() < run_secs - 0.1 {
        let from = bench_start.elapsed().as_secs_f64();
        let took = checkpoint()?;
        let to = (from + took).min(run_secs);
        covered += (to - from).max(0.0);
        checkpoints.push(took);
    }
    let during = json::parse_last_object(&bench.wait(timeout)?.stdout)?;
    let result = Checkpointing {
        warmup_secs,
        checkpoints,
        covered_fraction: covered / during.num("secs")?.max(1e-9),
        baseline,
        during,
    };
    eprintln!(
        "  checkpoint: write p99 {:.0} us without, {:.0} us during ({} checkpoints)",
        result.baseline.num("p99_us")?,
        result.during.num("p99_us")?,
        result.checkpoints.len()
    );
    Ok(result)
}

/// The path of `name` if it is an executable on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The optional comparison with Redis, `appendonly yes`, `appendfsync
/// always`, same connection counts, pipelines and value size.
fn redis(paths: &Paths, params: &Params, results: &mut Results) -> Result<(), String> {
    let (Some(server_bin), Some(bench_bin)) = (on_path("redis-server"), on_path("redis-benchmark"))
    else {
        eprintln!("  redis-server and redis-benchmark are not both on PATH: skipped");
        results.redis_note = Some("skipped: redis-server and redis-benchmark not on PATH".into());
        return Ok(());
    };
    let dir = TempDir::fresh(paths.bench.join("redis-data"))?;
    // A free port: bind, read it, release it. Redis cannot report a port it
    // chose itself.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))?
        .port();
    let mut cmd = Command::new(&server_bin);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(&dir.0)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .args(["--daemonize", "no", "--protected-mode", "yes"]);
    // Owned by the guard: dropped (killed) on every path out of here.
    let redis = Running::start(cmd)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            return Err("redis-server did not accept connections within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let version = proc::run(
        {
            let mut c = Command::new(&server_bin);
            c.arg("--version");
            c
        },
        Duration::from_secs(10),
    )
    .map(|d| d.stdout.trim().to_string())
    .unwrap_or_default();
    results.redis_note = Some(version);

    // Our server on its Redis listener, driven by the same redis-benchmark
    // with the same flags, each configuration right after Redis's.
    let ours_dir = TempDir::fresh(paths.bench.join("resp-data"))?;
    let ours_addrs = free_ports(2)?;
    let ours_redis = format!("127.0.0.1:{}", ours_addrs[1]);
    let ours = Server::start_at(
        &paths.kv_server(),
        &format!("127.0.0.1:{}", ours_addrs[0]),
        &ours_dir.0,
        &["--redis-addr", &ours_redis],
        &paths.bench.join("server-resp.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&ours_redis).is_err() {
        if Instant::now() >= deadline {
            return Err("kv-server's Redis listener did not accept within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    for (test, op) in [("set", "put"), ("get", "get")] {
        for &connections in &params.connections {
            for &pipeline in &params.pipelines {
                // redis-benchmark counts requests, not time: size the count
                // from our own rate for the same configuration so that the
                // run lasts about as long as ours did.
                let ours = results
                    .server
                    .iter()
                    .find(|r| r.op == op && r.connections == connections && r.pipeline == pipeline)
                    .and_then(|r| r.obj.num("ops_per_sec").ok())
                    .unwrap_or(10_000.0);
                let requests = ((ours * params.server_secs) as u64).clamp(2_000, 5_000_000);
                let generator = |port: u16| -> Result<RedisRun, String> {
                    let mut cmd = Command::new(&bench_bin);
                    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
                        .args(["-t", test, "-n", &requests.to_string()])
                        .args(["-c", &connections.to_string(), "-P", &pipeline.to_string()])
                        .args(["-d", &params.value_size.to_string()])
                        .args(["-r", &params.server_keyspace.to_string(), "--csv", "-q"]);
                    let done = proc::run(cmd, Duration::from_secs(300))?;
                    RedisRun::parse(test, connections, pipeline, &done.stdout)
                };
                let run = generator(port)?;
                let mine = generator(ours_addrs[1])?;
                eprintln!(
                    "  redis-benchmark {test} {connections:>2} conn x P{pipeline:<2}: Redis {:.0} ops/s, ours {:.0} ops/s ({:.2}x)",
                    run.rps,
                    mine.rps,
                    mine.rps / run.rps
                );
                results.redis.push(run);
                results.ours_resp.push(mine);
            }
        }
    }
    drop(redis);
    let _ = ours.stop(Duration::from_secs(30));
    Ok(())
}

/// `n` ports that were free a moment ago.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind: {e}"))
        })
        .collect::<Result<_, _>>()?;
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| format!("cannot read a bound address: {e}"))
        })
        .collect()
}
