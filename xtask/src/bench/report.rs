//! The figures of a run and the markdown report made of them.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::Params;
use super::floor::{Floor, Mode};
use super::json::Object;

/// The machine the figures come from.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub filesystem: String,
    /// The mount holding the data dir: device, type and options.
    pub mount: String,
    pub memory: String,
    pub commit: String,
    pub load_before: String,
    pub load_after: String,
    /// Share of the machine's CPU time used by processes other than this
    /// suite while it measured (see [`CpuSample`]).
    pub others_cpu: Option<f64>,
}

/// CPU time counters, to tell how busy other work kept the machine.
///
/// A lone writer's fdatasync latency is only the disk's if a CPU is free
/// when the I/O completes: with both cores busy elsewhere, the woken thread
/// waits for the next scheduler tick (seen here: every sync taking exactly
/// 4.00 ms while neighbours compiled), and the "disk floor" then measures
/// the scheduler. So the report says how much CPU others took.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// Busy ticks of all CPUs (/proc/stat: all but idle and iowait).
    busy: u64,
    /// All ticks of all CPUs.
    total: u64,
    /// CPU ticks of this process and its waited-for children.
    own: u64,
}

impl CpuSample {
    pub fn read() -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3)? + v.get(4)?;
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime is field 14,
        // so index 11 here, then stime, cutime, cstime.
        let after = &me[me.rfind(')')? + 2..];
        let f: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|x| x.parse().ok())
            .collect();
        Some(CpuSample {
            busy: total - idle,
            total,
            own: f.iter().sum(),
        })
    }

    /// The share of all CPU time between `self` and `later` that went to
    /// other processes.
    pub fn others_share(&self, later: &CpuSample) -> f64 {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        let busy = later.busy.saturating_sub(self.busy) as f64;
        let own = later.own.saturating_sub(self.own) as f64;
        ((busy - own) / total).clamp(0.0, 1.0)
    }
}

/// What `program args` printed, trimmed; `None` if it could not run or
/// failed.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The 1, 5 and 15 minute load averages: the machine may be shared, and a
/// busy neighbour shows here.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

impl Machine {
    pub fn read(data_dir: &Path, root: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(format!("{:.1} GiB", kib / (1024.0 * 1024.0)))
            })
            .unwrap_or_else(|| "unknown".into());
        let root_str = root.to_string_lossy().into_owned();
        let mut commit = command_output("git", &["-C", &root_str, "rev-parse", "--short", "HEAD"])
            .unwrap_or_else(|| "unknown".into());
        if command_output("git", &["-C", &root_str, "status", "--porcelain"])
            .is_some_and(|changes| !changes.is_empty())
        {
            commit.push_str(" (with uncommitted changes)");
        }
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel: command_output("uname", &["-r"]).unwrap_or_else(|| "unknown".into()),
            filesystem: command_output("stat", &["-f", "-c", "%T", &data_dir.to_string_lossy()])
                .unwrap_or_else(|| "unknown".into()),
            mount: mount_of(data_dir).unwrap_or_else(|| "unknown".into()),
            memory,
            commit,
            load_before: loadavg(),
            load_after: String::new(),
            others_cpu: None,
        }
    }
}

/// The /proc/self/mounts entry whose mount point is the longest prefix of
/// `dir`, as `device on point type options`.
fn mount_of(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let point = Path::new(fields.get(1)?);
            dir.starts_with(point).then(|| {
                (
                    point.as_os_str().len(),
                    format!(
                        "{} on {} type {} ({})",
                        fields[0],
                        fields[1],
                        fields.get(2).unwrap_or(&"?"),
                        fields.get(3).unwrap_or(&"?")
                    ),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, text)| text)
}

/// One `kv-client bench` run against the server.
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub op: &'static str,
    pub connections: u32,
    pub pipeline: u32,
    pub obj: Object,
}

/// Server memory after loading keys.
#[derive(Debug, Clone)]
pub struct Memory {
    pub keys: u64,
    pub key_size: u64,
    pub value_size: u64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub load_ops_per_sec: f64,
}

impl Memory {
    pub fn bytes_per_key(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.keys as f64
    }
    pub fn ratio(&self) -> f64 {
        self.bytes_per_key() / (self.key_size + self.value_size) as f64
    }
}

/// Write latency with and without checkpoints running.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    pub warmup_secs: f64,
    /// Duration of each checkpoint run during the measured bench.
    pub checkpoints: Vec<f64>,
    /// Share of the measured bench's time during which a checkpoint ran.
    pub covered_fraction: f64,
    pub baseline: Object,
    pub during: Object,
}

/// One redis-benchmark result.
#[derive(Debug, Clone)]
pub struct RedisRun {
    pub test: &'static str,
    pub connections: u32,
    pub pipeline: u32,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl RedisRun {
    /// Reads redis-benchmark's `--csv` output: a header line, then
    /// `"SET","3300.00","0.2",...` with the columns the header names.
    pub fn parse(
        test: &'static str,
        connections: u32,
        pipeline: u32,
        csv: &str,
    ) -> Result<RedisRun, String> {
        let rows: Vec<Vec<String>> = csv
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.split(',')
                    .map(|c| c.trim().trim_matches('"').to_string())
                    .collect()
            })
            .collect();
        let header = rows.iter().find(|r| r.first().is_some_and(|c| c == "test"));
        let row = rows
            .iter()
            .find(|r| r.first().is_some_and(|c| c.eq_ignore_ascii_case(test)))
            .ok_or_else(|| format!("no {test} row in redis-benchmark's output: {csv:?}"))?;
        let column = |name: &str| -> Option<f64> {
            let index = header?.iter().position(|h| h == name)?;
            row.get(index)?.parse().ok()
        };
        let rps = row
            .get(1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no rate in {row:?}"))?;
        Ok(RedisRun {
            test,
            connections,
            pipeline,
            rps,
            p50_ms: column("p50_latency_ms"),
            p99_ms: column("p99_latency_ms"),
        })
    }
}

/// Which comparison an adjacent floor measurement serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjacent {
    /// Taken just before the wal-core runs of its record size.
    Wal,
    /// Taken just before the single-connection put run (128 B).
    Server,
}

impl Adjacent {
    fn name(self) -> &'static str {
        match self {
            Adjacent::Wal => "just before the wal-core runs of that size",
            Adjacent::Server => "just before the 1-connection put run",
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub machine: Machine,
    pub build_secs: f64,
    pub measure_secs: f64,
    pub floors: Vec<Floor>,
    /// The floor measured again right before the figures compared with it.
    /// The disk may be shared: when a neighbour syncs on the same
    /// filesystem, a single writer's fdatasync latency can jump tenfold for
    /// a while, so a ratio is only meaningful between measurements taken
    /// close together.
    pub adjacent_floors: Vec<(Adjacent, Floor)>,
    pub wal: Vec<Object>,
    pub recovery: Option<Object>,
    pub server: Vec<LoadRun>,
    pub memory: Option<Memory>,
    pub checkpointing: Option<Checkpointing>,
    pub redis: Vec<RedisRun>,
    /// Our server's Redis listener under the same redis-benchmark runs.
    pub ours_resp: Vec<RedisRun>,
    /// The scale step's figures, one object per store size, smaller first.
    pub scale: Vec<Object>,
    /// The plots written beside the report (file names).
    pub plots: Vec<&'static str>,
    pub redis_note: Option<String>,
    pub errors: Vec<String>,
}

impl Results {
    fn floor(&self, mode: Mode, size: usize) -> Option<&Floor> {
        self.floors
            .iter()
            .find(|f| f.mode == mode && f.record_size == size)
    }

    /// The appending floor measured just before the `what` comparison,
    /// else the one of step a.
    fn adjacent_floor(&self, what: Adjacent, size: usize) -> Option<&Floor> {
        self.adjacent_floors
            .iter()
            .find(|(w, f)| *w == what && f.record_size == size)
            .map(|(_, f)| f)
            .or_else(|| self.floor(Mode::Append, size))
    }

    fn wal(&self, policy: &str, size: usize, threads: usize) -> Option<&Object> {
        self.wal.iter().find(|o| {
            o.str("policy") == Some(policy)
                && o.num("record_size").ok() == Some(size as f64)
                && o.num("threads").ok() == Some(threads as f64)
        })
    }

    fn server(&self, op: &str, connections: u32, pipeline: u32) -> Option<f64> {
        self.server
            .iter()
            .find(|r| r.op == op && r.connections == connections && r.pipeline == pipeline)
            .and_then(|r| r.obj.num("ops_per_sec").ok())
    }

    fn redis_rate(&self, test: &str, connections: u32, pipeline: u32) -> Option<f64> {
        self.redis
            .iter()
            .find(|r| r.test == test && r.connections == connections && r.pipeline == pipeline)
            .map(|r| r.rps)
    }
}

/// `1234567.8` as `1,234,568`.
pub fn int(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

fn us(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.1} ms", x / 1e3)
    } else if x >= 1000.0 {
        format!("{:.2} ms", x / 1e3)
    } else if x >= 10.0 {
        format!("{x:.0} µs")
    } else {
        format!("{x:.1} µs")
    }
}

fn num(o: &Object, key: &str) -> f64 {
    o.num(key).unwrap_or(f64::NAN)
}

/// One row of the targets table.
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    /// None when the figure is missing (its step failed or was skipped).
    pub pass: Option<bool>,
}

/// The targets of issue 5 beside the figures of this run.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let put_1 = r.server("put", 1, 1);
    let floor_server = r
        .adjacent_floor(Adjacent::Server, 128)
        .map(Floor::syncs_per_sec);
    out.push(match (put_1, floor_server) {
        (Some(put), Some(floor)) => Target {
            name: "single connection, durable put".into(),
            goal: "≥ 90% of the disk floor's sync rate (128 B appending)".into(),
            measured: format!(
                "{} ops/s = {:.0}% of {} syncs/s",
                int(put),
                put / floor * 100.0,
                int(floor)
            ),
            pass: Some(put >= 0.9 * floor),
        },
        _ => missing(
            "single connection, durable put",
            "≥ 90% of the disk floor's sync rate",
        ),
    });
    for (pipeline, goal) in [(1, 95_000.0), (16, 600_000.0)] {
        let name = format!("durable puts, 64 connections, pipeline {pipeline}");
        let mut goal_text = format!("≥ {} ops/s (2× Redis always)", int(goal));
        let redis = r.redis_rate("set", 64, pipeline);
        if let Some(redis) = redis {
            let _ = write!(goal_text, "; 2× Redis here = {}", int(2.0 * redis));
        }
        out.push(match r.server("put", 64, pipeline) {
            Some(rate) => Target {
                name,
                goal: goal_text,
                measured: with_redis_ratio(rate, redis),
                pass: Some(rate >= goal && redis.is_none_or(|redis| rate >= 2.0 * redis)),
            },
            None => missing(&name, &goal_text),
        });
    }
    for (pipeline, goal) in [(1, 70_000.0), (16, 600_000.0)] {
        let name = format!("gets, 64 connections, pipeline {pipeline}");
        let mut goal_text = format!("≥ {} ops/s (Redis)", int(goal));
        let redis = r.redis_rate("get", 64, pipeline);
        if let Some(redis) = redis {
            let _ = write!(goal_text, "; Redis here = {}", int(redis));
        }
        out.push(match r.server("get", 64, pipeline) {
            Some(rate) => Target {
                name,
                goal: goal_text,
                measured: with_redis_ratio(rate, redis),
                pass: Some(rate >= goal && redis.is_none_or(|redis| rate >= redis)),
            },
            None => missing(&name, &goal_text),
        });
    }
    let wal_64 = r
        .wal("always", 128, 64)
        .and_then(|o| o.num("appends_per_sec").ok());
    let floor_wal = r
        .adjacent_floor(Adjacent::Wal, 128)
        .map(Floor::syncs_per_sec);
    out.push(match (wal_64, floor_wal) {
        (Some(rate), Some(floor)) => Target {
            name: "wal-core group commit, 64 writers, 128 B".into(),
            goal: "≥ 30× the single-writer floor".into(),
            measured: format!(
                "{} appends/s = {:.1}× {}",
                int(rate),
                rate / floor,
                int(floor)
            ),
            pass: Some(rate >= 30.0 * floor),
        },
        _ => missing(
            "wal-core group commit, 64 writers",
            "≥ 30× the single-writer floor",
        ),
    });
    let replay = r
        .recovery
        .as_ref()
        .and_then(|o| o.num("wal_entries_per_sec").ok());
    out.push(match replay {
        Some(rate) => Target {
            name: "recovery from the WAL".into(),
            goal: "≥ 5,000,000 entries/s".into(),
            measured: format!("{} entries/s", int(rate)),
            pass: Some(rate >= 5e6),
        },
        None => missing("recovery from the WAL", "≥ 5,000,000 entries/s"),
    });
    out.push(match &r.memory {
        Some(m) => Target {
            name: "memory, 100-byte values".into(),
            goal: "≤ 2× raw key+value bytes".into(),
            measured: format!(
                "{:.0} B/key = {:.2}× raw ({} B)",
                m.bytes_per_key(),
                m.ratio(),
                m.key_size + m.value_size
            ),
            pass: Some(m.ratio() <= 2.0),
        },
        None => missing("memory, 100-byte values", "≤ 2× raw key+value bytes"),
    });
    out.push(match &r.checkpointing {
        Some(c) => {
            let (base, during) = (num(&c.baseline, "p99_us"), num(&c.during, "p99_us"));
            Target {
                name: "write p99 during a checkpoint".into(),
                goal: "≤ 2× the p99 without one".into(),
                measured: format!("{} vs {} = {:.2}×", us(during), us(base), during / base),
                pass: Some(during <= 2.0 * base),
            }
        }
        None => missing("write p99 during a checkpoint", "≤ 2× the p99 without one"),
    });
    out
}

/// A target that is a ratio of two measured rates.
fn ratio_target(
    name: String,
    goal: &str,
    threshold: f64,
    mine: f64,
    theirs: f64,
    of: &str,
) -> Target {
    Target {
        name,
        goal: goal.into(),
        measured: format!(
            "{} vs {} ops/s = {:.2}× {of}",
            int(mine),
            int(theirs),
            mine / theirs
        ),
        pass: Some(mine >= threshold * theirs),
    }
}

/// The targets of the performance issue (14): redis-benchmark driving
/// both servers, durable writes against our own reads, and the scale run.
pub fn performance_targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let ours = |test: &str, c: u32, p: u32| {
        r.ours_resp
            .iter()
            .find(|x| x.test == test && x.connections == c && x.pipeline == p)
            .map(|x| x.rps)
    };
    for mine in &r.ours_resp {
        let (c, p) = (mine.connections, mine.pipeline);
        let Some(theirs) = r.redis_rate(mine.test, c, p) else {
            continue;
        };
        let (threshold, goal) = match mine.test {
            "set" if c * p >= 16 => (2.0, "≥ 2× Redis's SET"),
            "set" => (1.0, "≥ 1× Redis's SET"),
            _ => (1.2, "≥ 1.2× Redis's GET"),
        };
        let name = format!(
            "{} {c}×{p}, redis-benchmark",
            mine.test.to_ascii_uppercase()
        );
        out.push(ratio_target(
            name, goal, threshold, mine.rps, theirs, "Redis",
        ));
    }
    for mine in r.ours_resp.iter().filter(|x| x.test == "set") {
        let (c, p) = (mine.connections, mine.pipeline);
        if let Some(get) = ours("get", c, p) {
            out.push(ratio_target(
                format!("durable SET {c}×{p} against our GET, redis-benchmark"),
                "≥ 0.9× our GET",
                0.9,
                mine.rps,
                get,
                "our GET",
            ));
        }
    }
    for put in r.server.iter().filter(|x| x.op == "put") {
        let (c, p) = (put.connections, put.pipeline);
        let (Ok(rate), Some(get)) = (put.obj.num("ops_per_sec"), r.server("get", c, p)) else {
            continue;
        };
        out.push(ratio_target(
            format!("durable put {c}×{p} against our get, kv-client bench"),
            "≥ 0.9× our get",
            0.9,
            rate,
            get,
            "our get",
        ));
    }
    out.extend(scale_targets(&r.scale));
    out
}

/// The scale targets, judged on the largest store, with its growth from
/// the smallest.
fn scale_targets(scale: &[Object]) -> Vec<Target> {
    let mut out = Vec::new();
    let Some(big) = scale.last() else {
        return out;
    };
    let n = num(big, "entries");
    let size = if n >= 1e6 {
        format!("{:.0}M keys", n / 1e6)
    } else {
        format!("{} keys", int(n))
    };
    let raw = num(big, "raw_bytes_per_key");
    let per_key = num(big, "bytes_per_key");
    out.push(Target {
        name: format!("memory, {size}"),
        goal: "≤ 1.2× raw key+value bytes".into(),
        measured: format!(
            "{per_key:.0} B/key = {:.2}× raw ({raw:.0} B)",
            per_key / raw
        ),
        pass: Some(per_key <= 1.2 * raw),
    });
    for (key, what) in [
        ("wal_entries_per_sec", "recovery from the WAL"),
        ("snapshot_entries_per_sec", "recovery from a snapshot"),
    ] {
        let rate = num(big, key);
        out.push(Target {
            name: format!("{what}, {size}"),
            goal: "≥ 5,000,000 entries/s".into(),
            measured: format!("{} entries/s", int(rate)),
            pass: Some(rate >= 5e6),
        });
    }
    let (idle, loaded) = (
        num(big, "checkpoint_idle_secs"),
        num(big, "checkpoint_loaded_secs"),
    );
    out.push(Target {
        name: format!("checkpoint, {size}"),
        goal: "≤ 60 s".into(),
        measured: format!("{idle:.1} s alone, {loaded:.1} s under 16 writers"),
        pass: Some(idle <= 60.0),
    });
    let (without, during) = (num(big, "p99_us_without"), num(big, "p99_us_during"));
    out.push(Target {
        name: format!("write p99 during a checkpoint, {size}"),
        goal: "≤ 2× the p99 without one".into(),
        measured: format!(
            "{} vs {} = {:.2}×",
            us(during),
            us(without),
            during / without
        ),
        pass: Some(during <= 2.0 * without),
    });
    if let (Some(small), true) = (scale.first(), scale.len() > 1) {
        // Cost per key at the large size over the same at the small one:
        // 1 is linear growth.
        let growth = |cost: &dyn Fn(&Object) -> f64| cost(big) / cost(small);
        let figures = [
            ("memory", growth(&|o| num(o, "bytes_per_key"))),
            (
                "WAL recovery",
                growth(&|o| 1.0 / num(o, "wal_entries_per_sec")),
            ),
            (
                "snapshot recovery",
                growth(&|o| 1.0 / num(o, "snapshot_entries_per_sec")),
            ),
            (
                "checkpoint",
                growth(&|o| num(o, "checkpoint_idle_secs") / num(o, "entries")),
            ),
        ];
        let worst = figures.iter().map(|(_, g)| *g).fold(f64::NAN, f64::max);
        out.push(Target {
            name: format!(
                "growth from {} to {} keys",
                int(num(small, "entries")),
                int(n)
            ),
            goal: "cost per key ≤ 1.25× (linear, with room for noise)".into(),
            measured: figures
                .iter()
                .map(|(what, g)| format!("{what} {g:.2}×"))
                .collect::<Vec<_>>()
                .join(", "),
            pass: Some(worst <= 1.25),
        });
    }
    out
}

/// `rate ops/s`, and its ratio to Redis's rate when Redis was measured.
fn with_redis_ratio(rate: f64, redis: Option<f64>) -> String {
    match redis {
        Some(redis) => format!("{} ops/s = {:.2}× Redis here", int(rate), rate / redis),
        None => format!("{} ops/s", int(rate)),
    }
}

fn missing(name: &str, goal: &str) -> Target {
    Target {
        name: name.into(),
        goal: goal.into(),
        measured: "not measured (its step failed or was not run)".into(),
        pass: None,
    }
}

pub fn targets_table(r: &Results) -> String {
    table(targets(r))
}

/// The performance issue's targets as a table; empty when none was
/// measured (no --vs-redis, no --scale and no server step).
pub fn performance_table(r: &Results) -> String {
    let rows = performance_targets(r);
    if rows.is_empty() {
        return String::new();
    }
    table(rows)
}

fn table(targets: Vec<Target>) -> String {
    let mut t = String::from("| Target | Goal | Measured | |\n|---|---|---|---|\n");
    for target in targets {
        let verdict = match target.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a",
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {verdict} |",
            target.name, target.goal, target.measured
        );
    }
    t
}

/// The whole report.
pub fn render(r: &Results, p: &Params) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let mode = if p.quick {
        "`cargo xtask bench --quick`"
    } else {
        "`cargo xtask bench`"
    };
    let _ = writeln!(s, "# Benchmark report\n");
    let _ = writeln!(
        s,
        "Made by {mode} at commit {}; measuring took {:.0} s (after a release build of {:.0} s). \
         Everything ran on this one machine: load generator, server and disk.\n",
        m.commit, r.measure_secs, r.build_secs
    );
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| CPU | {} |", m.cpu);
    let _ = writeln!(s, "| cores | {} |", m.cores);
    let _ = writeln!(s, "| memory | {} |", m.memory);
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(
        s,
        "| filesystem of the data dir (`stat -f -c %T`) | {} |",
        m.filesystem
    );
    let _ = writeln!(s, "| its mount (/proc/self/mounts) | `{}` |", m.mount);
    let _ = writeln!(
        s,
        "| load average before / after (1, 5, 15 min) | {} / {} |",
        m.load_before, m.load_after
    );
    let others = m
        .others_cpu
        .map_or("unknown".into(), |x| format!("{:.0}%", x * 100.0));
    let _ = writeln!(
        s,
        "| CPU time used by other processes while measuring | {others} |\n"
    );
    if m.others_cpu.is_some_and(|x| x > 0.1) {
        let _ = writeln!(
            s,
            "**Warning: other work used {others} of this machine's CPU time during the run.** \
             Sync latencies then include waiting for a CPU (a lone writer's fdatasync was seen \
             to take exactly one 4 ms scheduler tick while both cores were busy elsewhere), and \
             throughput figures are lower than on an idle machine. Re-run on an idle machine \
             before drawing conclusions.\n"
        );
    }
    if !r.errors.is_empty() {
        let _ = writeln!(s, "## Failed steps\n");
        for e in &r.errors {
            let _ = writeln!(s, "- {e}");
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Targets (issue 5)\n");
    s.push_str(&targets_table(r));
    s.push('\n');

    let _ = writeln!(
        s,
        "## Targets (performance issue: redis-benchmark against both, writes against reads, scale)\n"
    );
    let performance = performance_table(r);
    if performance.is_empty() {
        let _ = writeln!(
            s,
            "Not measured: pass --vs-redis for the same-generator rows and --scale for the scale rows.\n"
        );
    } else {
        s.push_str(&performance);
        s.push('\n');
    }

    let _ = writeln!(s, "## Parameters\n");
    let _ = writeln!(
        s,
        "- Disk floor: {} s per configuration; one writer; `write` + `fdatasync` of one record per \
         iteration, into a new file (append) or a 64 MiB file written with zeroes and synced first \
         (zero-filled; writes go in from offset 0 and wrap around when they reach its end). \
         `cargo xtask floor-modes` compares more ways to prepare the file.",
        p.floor_secs
    );
    let _ = writeln!(
        s,
        "- wal-core (`bench_wal` example): {} s per configuration; records of {:?} bytes; \
         `SyncPolicy::Always` at {:?} threads, and `SyncPolicy::Never` at 1 thread; default \
         options otherwise (64 MiB segments).",
        p.wal_secs, p.record_sizes, p.wal_threads
    );
    let _ = writeln!(
        s,
        "- Recovery (`bench_recovery` example): {} entries, 16-byte keys, {}-byte values, loaded \
         unsynced then closed (synced); time of `KeyValueStore::open` from the WAL alone, then \
         after a checkpoint from the snapshot.",
        int(p.recovery_entries as f64),
        p.value_size
    );
    let _ = writeln!(
        s,
        "- Server: release `kv-server {}` on 127.0.0.1; `kv-client bench` runs of {} s, \
         {}-byte values, keyspace {} (all loaded before the gets), random keys, connections {:?} × \
         pipeline {:?}. The load generator shares the machine's {} cores with the server.",
        p.server_flags.join(" "),
        p.server_secs,
        p.value_size,
        int(p.server_keyspace as f64),
        p.connections,
        p.pipelines,
        m.cores
    );
    let _ = writeln!(
        s,
        "- Memory: a fresh server; VmRSS after loading {} distinct keys (16 connections × \
         pipeline 16) minus VmRSS before.",
        int(p.memory_keys as f64)
    );
    let _ = writeln!(
        s,
        "- Checkpoint interference: on that server ({} keys), a first checkpoint drops the \
         loading's log; then a {} s put run ({} connections × pipeline 1, random keys over the \
         loaded ones) without checkpoints, then the same run with `kv-client checkpoint` \
         started 0.3 s in and again back to back until the run ends.\n",
        int(p.memory_keys as f64),
        p.checkpoint_secs,
        p.checkpoint_connections
    );
    let _ = writeln!(
        s,
        "MB are 10^6 bytes of payload. Latencies: p50 / p99 / p99.9 / max.\n"
    );

    let _ = writeln!(s, "## a. Disk floor\n");
    let _ = writeln!(
        s,
        "| record | mode | syncs/s | MB/s | p50 | p99 |\n|---|---|---|---|---|---|"
    );
    for f in &r.floors {
        let _ = writeln!(
            s,
            "| {} B | {} | {} | {:.2} | {} | {} |",
            f.record_size,
            f.mode.name(),
            int(f.syncs_per_sec()),
            f.mb_per_sec(),
            us(f.p50_us),
            us(f.p99_us)
        );
    }

    if !r.adjacent_floors.is_empty() {
        let _ = writeln!(
            s,
            "\nThe same appending floor, measured again just before the figures that are \
             compared with it (the disk may be shared with other work, and a neighbour's syncs \
             can slow a lone writer's for a while):\n"
        );
        let _ = writeln!(
            s,
            "| record | when | syncs/s | p50 | p99 |\n|---|---|---|---|---|"
        );
        for (what, f) in &r.adjacent_floors {
            let _ = writeln!(
                s,
                "| {} B | {} | {} | {} | {} |",
                f.record_size,
                what.name(),
                int(f.syncs_per_sec()),
                us(f.p50_us),
                us(f.p99_us)
            );
        }
    }

    let _ = writeln!(s, "\n## b. wal-core appends\n");
    let _ = writeln!(
        s,
        "Ratio: appends/s over the single-writer appending floor of the same record size, \
         measured just before that size's runs.\n"
    );
    let _ = writeln!(
        s,
        "| record | policy | threads | appends/s | MB/s | p50 | p99 | × floor |\n|---|---|---|---|---|---|---|---|"
    );
    for o in &r.wal {
        let size = num(o, "record_size");
        let rate = num(o, "appends_per_sec");
        let ratio = r
            .adjacent_floor(Adjacent::Wal, size as usize)
            .map(|f| format!("{:.1}×", rate / f.syncs_per_sec()))
            .unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            s,
            "| {} B | {} | {} | {} | {:.2} | {} | {} | {ratio} |",
            size,
            o.str("policy").unwrap_or("?"),
            num(o, "threads"),
            int(rate),
            num(o, "mb_per_sec"),
            us(num(o, "p50_us")),
            us(num(o, "p99_us"))
        );
    }

    let _ = writeln!(s, "\n## c. Recovery\n");
    if let Some(o) = &r.recovery {
        let _ = writeln!(
            s,
            "{} entries loaded in {:.2} s (unsynced).\n",
            int(num(o, "entries")),
            num(o, "load_secs")
        );
        let _ = writeln!(
            s,
            "| from | bytes read | open time | entries/s | MB/s |\n|---|---|---|---|---|"
        );
        let _ = writeln!(
            s,
            "| WAL alone ({} entries replayed) | {} | {:.3} s | {} | {:.0} |",
            int(num(o, "wal_replayed")),
            int(num(o, "wal_bytes")),
            num(o, "wal_open_secs"),
            int(num(o, "wal_entries_per_sec")),
            num(o, "wal_mb_per_sec")
        );
        let _ = writeln!(
            s,
            "| snapshot ({} entries) | {} | {:.3} s | {} | {:.0} |",
            int(num(o, "snapshot_entries")),
            int(num(o, "snapshot_bytes")),
            num(o, "snapshot_open_secs"),
            int(num(o, "snapshot_entries_per_sec")),
            num(o, "snapshot_mb_per_sec")
        );
    } else {
        let _ = writeln!(s, "Not measured (the step failed).");
    }

    let _ = writeln!(s, "\n## d. Server end to end\n");
    let has_redis = !r.redis.is_empty();
    let _ = write!(
        s,
        "| op | connections | pipeline | ops/s | p50 | p99 | p99.9 | max | errors |"
    );
    if has_redis {
        let _ = write!(s, " Redis ops/s | Redis p50 / p99 | us / Redis |");
    }
    let _ = writeln!(
        s,
        "\n|---|---|---|---|---|---|---|---|---|{}",
        if has_redis { "---|---|---|" } else { "" }
    );
    for run in &r.server {
        let o = &run.obj;
        let rate = num(o, "ops_per_sec");
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.op,
            run.connections,
            run.pipeline,
            int(rate),
            us(num(o, "p50_us")),
            us(num(o, "p99_us")),
            us(num(o, "p999_us")),
            us(num(o, "max_us")),
            num(o, "errors")
        );
        if has_redis {
            let test = if run.op == "put" { "set" } else { "get" };
            match r.redis.iter().find(|x| {
                x.test == test && x.connections == run.connections && x.pipeline == run.pipeline
            }) {
                Some(x) => {
                    let lat = |v: Option<f64>| v.map_or("?".into(), |ms| us(ms * 1e3));
                    let _ = write!(
                        s,
                        " {} | {} / {} | {:.2}× |",
                        int(x.rps),
                        lat(x.p50_ms),
                        lat(x.p99_ms),
                        rate / x.rps
                    );
                }
                None => {
                    let _ = write!(s, " | | |");
                }
            }
        }
        s.push('\n');
    }
    if let Some(note) = &r.redis_note {
        let _ = writeln!(
            s,
            "\nRedis (`appendonly yes`, `appendfsync always`, redis-benchmark): {note}."
        );
    }

    if !r.ours_resp.is_empty() {
        let _ = writeln!(
            s,
            "\n### Same load generator: redis-benchmark against both\n\n\
             Our Redis listener (every SET fdatasynced before its reply) and Redis \
             (`appendonly yes`, `appendfsync always`), the same flags for both (`-d {} -r {}`), \
             each configuration run on Redis, then on ours.\n\n\
             | test | connections | pipeline | ours ops/s | ours p50 / p99 | Redis ops/s | Redis p50 / p99 | ours / Redis |\n\
             |---|---|---|---|---|---|---|---|",
            p.value_size, p.server_keyspace
        );
        let lat = |v: Option<f64>| v.map_or("?".into(), |ms| us(ms * 1e3));
        for mine in &r.ours_resp {
            let Some(theirs) = r.redis.iter().find(|x| {
                x.test == mine.test
                    && x.connections == mine.connections
                    && x.pipeline == mine.pipeline
            }) else {
                continue;
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} / {} | {} | {} / {} | {:.2}× |",
                mine.test.to_ascii_uppercase(),
                mine.connections,
                mine.pipeline,
                int(mine.rps),
                lat(mine.p50_ms),
                lat(mine.p99_ms),
                int(theirs.rps),
                lat(theirs.p50_ms),
                lat(theirs.p99_ms),
                mine.rps / theirs.rps
            );
        }
        for plot in &r.plots {
            let _ = writeln!(s, "\n![{plot}]({plot})");
        }
    }

    let _ = writeln!(s, "\n## e. Memory\n");
    if let Some(mem) = &r.memory {
        let _ = writeln!(
            s,
            "| keys | key + value | VmRSS before | VmRSS after | bytes/key | × raw | load rate |\n|---|---|---|---|---|---|---|"
        );
        let _ = writeln!(
            s,
            "| {} | {} + {} B | {:.1} MiB | {:.1} MiB | {:.0} | {:.2}× | {} puts/s |",
            int(mem.keys as f64),
            mem.key_size,
            mem.value_size,
            mem.rss_before as f64 / 1048576.0,
            mem.rss_after as f64 / 1048576.0,
            mem.bytes_per_key(),
            mem.ratio(),
            int(mem.load_ops_per_sec)
        );
    } else {
        let _ = writeln!(s, "Not measured (the step failed).");
    }

    let _ = writeln!(s, "\n## f. Checkpoint interference\n");
    if let Some(c) = &r.checkpointing {
        let total: f64 = c.checkpoints.iter().sum();
        let _ = writeln!(
            s,
            "First checkpoint (after loading): {:.2} s. During the measured run: {} checkpoints, \
             {:.2} s each on average; a checkpoint was running {:.0}% of the run.\n",
            c.warmup_secs,
            c.checkpoints.len(),
            if c.checkpoints.is_empty() {
                0.0
            } else {
                total / c.checkpoints.len() as f64
            },
            c.covered_fraction * 100.0
        );
        let _ = writeln!(
            s,
            "| run | puts/s | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|"
        );
        for (name, o) in [
            ("without checkpoint", &c.baseline),
            ("during checkpoints", &c.during),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} |",
                int(num(o, "ops_per_sec")),
                us(num(o, "p50_us")),
                us(num(o, "p99_us")),
                us(num(o, "p999_us")),
                us(num(o, "max_us"))
            );
        }
    } else {
        let _ = writeln!(s, "Not measured (the step failed).");
    }

    let _ = writeln!(s, "\n## g. Scale\n");
    if r.scale.is_empty() {
        let _ = writeln!(s, "Not measured (pass --scale).");
    } else {
        let _ = writeln!(
            s,
            "`figures` example of kv-store (15-byte keys, 100-byte values; filled without syncs, \
             then each figure measured on the reopened store; the p99s are durable puts from 16 \
             threads over the loaded keys).\n\n\
             | keys | bytes/key | × raw | WAL recovery | snapshot recovery | checkpoint alone | \
             checkpoint under writes | p99 without / during a checkpoint |\n\
             |---|---|---|---|---|---|---|---|"
        );
        for o in &r.scale {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2}× | {} entries/s | {} entries/s | {:.1} s | {:.1} s | {} / {} |",
                int(num(o, "entries")),
                num(o, "bytes_per_key"),
                num(o, "bytes_per_key") / num(o, "raw_bytes_per_key"),
                int(num(o, "wal_entries_per_sec")),
                int(num(o, "snapshot_entries_per_sec")),
                num(o, "checkpoint_idle_secs"),
                num(o, "checkpoint_loaded_secs"),
                us(num(o, "p99_us_without")),
                us(num(o, "p99_us_during"))
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::json::parse_object;

    #[test]
    fn cpu_samples_count_our_own_work_as_ours() {
        let before = CpuSample::read().expect("/proc/stat and /proc/self/stat");
        // Burn CPU in this process until its own counter shows 0.2 s (ticks
        // are 10 ms). If the fields were misread, `own` would not follow
        // our work and this would run into the deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let after = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let now = CpuSample::read().unwrap();
            if now.own >= before.own + 20 {
                break now;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "own CPU ticks did not advance"
            );
        };
        std::hint::black_box(x);
        // The machine's busy ticks follow our work too, though not tick for
        // tick: /proc/stat samples each CPU at every tick, while a process's
        // times are its measured run time cut into ticks (a fresh-clone CI
        // run saw fewer than 20 machine ticks for 20 of ours).
        assert!(
            after.busy >= before.busy + 10,
            "busy {} -> {} while own {} -> {}",
            before.busy,
            after.busy,
            before.own,
            after.own
        );
        assert!((0.0..=1.0).contains(&before.others_share(&after)));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(int(0.0), "0");
        assert_eq!(int(999.4), "999");
        assert_eq!(int(1000.0), "1,000");
        assert_eq!(int(1234567.8), "1,234,568");
        assert_eq!(int(-4200.0), "-4,200");
        assert_eq!(int(f64::NAN), "n/a");
    }

    #[test]
    fn reads_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"SET\",\"3300.50\",\"0.300\",\"0.100\",\"0.287\",\"0.400\",\"0.551\",\"2.000\"\n";
        let run = RedisRun::parse("set", 1, 1, csv).unwrap();
        assert_eq!(run.rps, 3300.5);
        assert_eq!(run.p50_ms, Some(0.287));
        assert_eq!(run.p99_ms, Some(0.551));
        assert!(RedisRun::parse("get", 1, 1, csv).is_err());
    }

    fn run(op: &'static str, connections: u32, pipeline: u32, rate: f64) -> LoadRun {
        LoadRun {
            op,
            connections,
            pipeline,
            obj: parse_object(&format!("{{\"ops_per_sec\":{rate},\"p99_us\":100}}")).unwrap(),
        }
    }

    #[test]
    fn targets_pass_miss_and_missing() {
        let floor = Floor {
            mode: Mode::Append,
            record_size: 128,
            syncs: 1000,
            secs: 1.0,
            p50_us: 900.0,
            p99_us: 1500.0,
        };
        let results = Results {
            floors: vec![floor],
            server: vec![run("put", 1, 1, 950.0), run("put", 64, 1, 90_000.0)],
            memory: Some(Memory {
                keys: 1000,
                key_size: 16,
                value_size: 100,
                rss_before: 1_000_000,
                rss_after: 1_200_000,
                load_ops_per_sec: 1.0,
            }),
            ..Results::default()
        };
        let t = targets(&results);
        let by_name = |n: &str| t.iter().find(|x| x.name.starts_with(n)).unwrap().pass;
        assert_eq!(by_name("single connection"), Some(true)); // 95% of the floor
        assert_eq!(
            by_name("durable puts, 64 connections, pipeline 1"),
            Some(false)
        );
        assert_eq!(by_name("durable puts, 64 connections, pipeline 16"), None);
        assert_eq!(by_name("memory"), Some(true)); // 200 B/key = 1.72x of 116
        assert_eq!(by_name("recovery"), None);
        let table = targets_table(&results);
        assert!(table.contains("PASS") && table.contains("MISS") && table.contains("n/a"));
    }

    fn resp(test: &'static str, connections: u32, pipeline: u32, rps: f64) -> RedisRun {
        RedisRun {
            test,
            connections,
            pipeline,
            rps,
            p50_ms: None,
            p99_ms: None,
        }
    }

    #[test]
    fn performance_targets_judge_each_ratio() {
        let scale = |entries: u64, bytes: f64, checkpoint: f64| {
            parse_object(&format!(
                "{{\"entries\":{entries},\"raw_bytes_per_key\":115,\"bytes_per_key\":{bytes},\
                 \"wal_entries_per_sec\":6000000,\"snapshot_entries_per_sec\":4000000,\
                 \"checkpoint_idle_secs\":{checkpoint},\"checkpoint_loaded_secs\":50,\
                 \"p99_us_without\":1000,\"p99_us_during\":3000}}"
            ))
            .unwrap()
        };
        let results = Results {
            // 1×1 needs 1×, 16×1 needs 2×; GET needs 1.2×.
            redis: vec![
                resp("set", 1, 1, 1000.0),
                resp("set", 16, 1, 1000.0),
                resp("get", 16, 1, 1000.0),
            ],
            ours_resp: vec![
                resp("set", 1, 1, 1000.0),
                resp("set", 16, 1, 1900.0),
                resp("get", 16, 1, 2000.0),
            ],
            server: vec![run("put", 16, 1, 950.0), run("get", 16, 1, 1000.0)],
            scale: vec![scale(1_000_000, 120.0, 3.0), scale(10_000_000, 150.0, 45.0)],
            ..Results::default()
        };
        let t = performance_targets(&results);
        let by_name = |n: &str| {
            t.iter()
                .find(|x| x.name.starts_with(n))
                .unwrap_or_else(|| panic!("no row {n}"))
                .pass
        };
        assert_eq!(by_name("SET 1×1"), Some(true));
        assert_eq!(by_name("SET 16×1"), Some(false));
        assert_eq!(by_name("GET 16×1"), Some(true));
        // 1,900 against our GET of 2,000: 0.95×.
        assert_eq!(by_name("durable SET 16×1 against our GET"), Some(true));
        assert_eq!(by_name("durable put 16×1 against our get"), Some(true));
        // No GET at 1×1: no row.
        assert!(t.iter().all(|x| !x.name.starts_with("durable SET 1×1")));
        assert_eq!(by_name("memory, 10M keys"), Some(false)); // 1.30× raw
        assert_eq!(by_name("recovery from the WAL, 10M"), Some(true));
        assert_eq!(by_name("recovery from a snapshot, 10M"), Some(false));
        assert_eq!(by_name("checkpoint, 10M"), Some(true));
        assert_eq!(by_name("write p99 during a checkpoint, 10M"), Some(false));
        // Checkpoint time per key grew 1.5×: worse than linear.
        assert_eq!(by_name("growth from 1,000,000"), Some(false));
    }
}
