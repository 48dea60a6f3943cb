//! `kv-client bench`: a load generator for the key-value server.
//!
//! Each connection is one task that owns its socket and drives it without
//! channels or locks: it keeps up to `--pipeline` requests in flight, writes
//! all the requests it can send in one `write`, then decodes every response
//! that has arrived. Responses come back in request order on a connection
//! (the protocol's promise), so the send time of each request waits in a
//! FIFO and its latency is measured when its response is decoded. This keeps
//! the generator's cost per request at one encode, one decode and a share of
//! two system calls, so that it is not the bottleneck it is measuring
//! (`cargo xtask bench` runs it beside the server on the same cores).
//!
//! Latencies go into an HDR histogram per connection, merged at the end.
//! Error responses are counted, the first one is reported, and the command
//! fails once its report is printed, so that a script never mistakes a run
//! full of errors for a fast one.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kv_proto::request::Command;
use kv_proto::{ClientCodec, GetRequest, PutRequest, Request, Response, response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

/// Largest latency the histograms record; a slower request is recorded as
/// this (and would show as the maximum).
const MAX_LATENCY_NS: u64 = 3_600 * 1_000_000_000;

/// Flags of `kv-client bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Connections opened to the server, each driven concurrently.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// Requests kept in flight on each connection (1 = wait for each reply).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub pipeline: u32,

    /// Bytes of each value written.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,

    /// Number of distinct keys the requests choose from.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keyspace: u64,

    /// Share of writes: a fraction from 0 (only gets) to 1 (only puts), or
    /// `put` / `get`.
    #[arg(long, default_value = "put", value_parser = parse_mix)]
    pub mix: f64,

    /// Run for this many seconds, more than 0 and at most 86400 (one day);
    /// the default is 10 unless --requests is given.
    #[arg(long, conflicts_with = "requests", value_parser = parse_run_seconds)]
    pub duration: Option<f64>,

    /// Send exactly this many requests in all, then stop.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Bytes put in front of every key.
    #[arg(long, default_value = "bench:")]
    pub key_prefix: String,

    /// Request number i uses key i modulo --keyspace instead of a random
    /// key: with --requests N --keyspace N this writes exactly N distinct
    /// keys.
    #[arg(long)]
    pub sequential_keys: bool,

    /// Seed of the key and operation choices (each connection derives its
    /// own from it), for repeatable runs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Print one JSON object on stdout instead of the text report, and no
    /// progress bar.
    #[arg(long)]
    pub json: bool,

    /// Threads driving the connections (default: one per CPU). On a machine
    /// shared with the server, fewer leave it more CPU.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

/// Longest `--duration`, in seconds: one day. Longer would be a typo, and
/// past some point `Instant + duration` overflows.
const MAX_RUN_SECS: f64 = 86_400.0;

/// Parses `--duration`: seconds, more than 0 and at most [`MAX_RUN_SECS`].
fn parse_run_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= MAX_RUN_SECS => Ok(secs),
        _ => Err(format!(
            "`{text}` is not a number of seconds more than 0 and at most 86400 (one day)"
        )),
    }
}

/// Parses `--mix`: `put`, `get`, or a write fraction in [0, 1].
fn parse_mix(text: &str) -> Result<f64, String> {
    match text {
        "put" | "puts" | "write" => Ok(1.0),
        "get" | "gets" | "read" => Ok(0.0),
        _ => match text.parse::<f64>() {
            Ok(fraction) if (0.0..=1.0).contains(&fraction) => Ok(fraction),
            _ => Err(format!(
                "`{text}` is not `put`, `get` or a write fraction between 0 and 1"
            )),
        },
    }
}

/// When the run ends.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// After this long: no request is sent after the deadline, and those in
    /// flight are still awaited and counted.
    After(Duration),
    /// After this many requests in all.
    Requests(u64),
}

/// What all connections share. Only counters: each connection owns its
/// socket, buffers and histogram.
struct Shared {
    /// Requests handed out so far (the next request's number).
    issued: AtomicU64,
    /// Responses received so far (for the progress bar).
    completed: AtomicU64,
    /// Set at the deadline of a timed run.
    stopped: AtomicBool,
    stop: Stop,
}

impl Shared {
    /// Claims the number of the next request to send, or `None` once the
    /// run is over.
    fn claim(&self) -> Option<u64> {
        match self.stop {
            Stop::After(_) => {
                if self.stopped.load(Ordering::Relaxed) {
                    None
                } else {
                    Some(self.issued.fetch_add(1, Ordering::Relaxed))
                }
            }
            Stop::Requests(total) => {
                // Claimed numbers are unique and dense, so exactly `total`
                // claims succeed, however the connections interleave.
                let n = self.issued.fetch_add(1, Ordering::Relaxed);
                (n < total).then_some(n)
            }
        }
    }
}

/// How requests are built: shared read-only by all connections.
struct Workload {
    key_prefix: Vec<u8>,
    /// Digits of the key number, zero-padded so that all keys have the same
    /// length.
    key_digits: usize,
    keyspace: u64,
    sequential: bool,
    write_fraction: f64,
    /// One value shared by every put: cloning a `Bytes` copies nothing.
    value: Bytes,
}

impl Workload {
    fn new(args: &BenchArgs) -> Self {
        let key_digits = (args.keyspace - 1).max(1).ilog10() as usize + 1;
        Workload {
            key_prefix: args.key_prefix.as_bytes().to_vec(),
            key_digits,
            keyspace: args.keyspace,
            sequential: args.sequential_keys,
            write_fraction: args.mix,
            value: Bytes::from(vec![b'v'; args.value_size]),
        }
    }

    /// Length of every key, in bytes.
    fn key_len(&self) -> usize {
        self.key_prefix.len() + self.key_digits
    }

    /// The command of request number `n`.
    fn command(&self, n: u64, rng: &mut SmallRng) -> Command {
        let index = if self.sequential {
            n % self.keyspace
        } else {
            rng.random_range(0..self.keyspace)
        };
        let mut key = Vec::with_capacity(self.key_len());
        key.extend_from_slice(&self.key_prefix);
        let mut digits = String::with_capacity(self.key_digits);
        // Writing into a String cannot fail.
        let _ = write!(digits, "{index:0width$}", width = self.key_digits);
        key.extend_from_slice(digits.as_bytes());
        let key = Bytes::from(key);
        let is_put = self.write_fraction >= 1.0
            || (self.write_fraction > 0.0 && rng.random::<f64>() < self.write_fraction);
        if is_put {
            Command::Put(PutRequest {
                key,
                value: self.value.clone(),
                ..Default::default()
            })
        } else {
            Command::Get(GetRequest { key })
        }
    }
}

/// What one connection measured.
struct ConnectionTally {
    latency_ns: Histogram<u64>,
    puts: u64,
    gets: u64,
    /// Gets of a key that was not there (not an error).
    misses: u64,
    errors: u64,
    first_error: Option<String>,
}

impl ConnectionTally {
    fn new() -> anyhow::Result<Self> {
        Ok(ConnectionTally {
            latency_ns: new_histogram()?,
            puts: 0,
            gets: 0,
            misses: 0,
            errors: 0,
            first_error: None,
        })
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).context("cannot create a latency histogram")
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Connections used.
    pub connections: u32,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Bytes per value.
    pub value_size: usize,
    /// Bytes per key.
    pub key_size: usize,
    /// Distinct keys chosen from.
    pub keyspace: u64,
    /// Share of writes asked for.
    pub write_fraction: f64,
    /// Responses received (errors included).
    pub ops: u64,
    /// Puts answered successfully.
    pub puts: u64,
    /// Gets answered successfully (found or not).
    pub gets: u64,
    /// Gets whose key was not found.
    pub misses: u64,
    /// Error responses.
    pub errors: u64,
    /// The first error response, as `CODE: message`.
    pub first_error: Option<String>,
    /// Wall time from the first request to the last response.
    pub elapsed: Duration,
    /// Latency of every request, from just before it was written to the
    /// socket until its response was decoded, in nanoseconds.
    pub latency_ns: Histogram<u64>,
}

impl Summary {
    /// Responses per second over the whole run.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// A latency quantile (0..=1) in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        self.latency_ns.value_at_quantile(quantile) as f64 / 1e3
    }

    /// The one-line JSON object printed by `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections,
            "pipeline": self.pipeline,
            "value_size": self.value_size,
            "key_size": self.key_size,
            "keyspace": self.keyspace,
            "write_fraction": self.write_fraction,
            "ops": self.ops,
            "puts": self.puts,
            "gets": self.gets,
            "misses": self.misses,
            "errors": self.errors,
            "first_error": self.first_error,
            "secs": self.elapsed.as_secs_f64(),
            "ops_per_sec": self.ops_per_sec(),
            "mean_us": self.latency_ns.mean() / 1e3,
            "p50_us": self.quantile_us(0.5),
            "p99_us": self.quantile_us(0.99),
            "p999_us": self.quantile_us(0.999),
            "max_us": self.latency_ns.max() as f64 / 1e3,
        })
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let kind = match self.write_fraction {
            f if f >= 1.0 => "put".to_string(),
            f if f <= 0.0 => "get".to_string(),
            f => format!("{:.0}% put / {:.0}% get", f * 100.0, (1.0 - f) * 100.0),
        };
        // Writing into a String cannot fail.
        let _ = writeln!(
            text,
            "{kind}: {} connections x pipeline {}, {}-byte keys, {}-byte values, keyspace {}",
            self.connections, self.pipeline, self.key_size, self.value_size, self.keyspace
        );
        let _ = writeln!(
            text,
            "{} requests in {:.2} s: {:.0} ops/s ({} puts, {} gets, {} not found, {} errors)",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            self.puts,
            self.gets,
            self.misses,
            self.errors
        );
        let _ = writeln!(
            text,
            "latency: p50 {} p99 {} p99.9 {} max {}",
            format_us(self.quantile_us(0.5)),
            format_us(self.quantile_us(0.99)),
            format_us(self.quantile_us(0.999)),
            format_us(self.latency_ns.max() as f64 / 1e3),
        );
        if let Some(error) = &self.first_error {
            let _ = writeln!(text, "first error: {error}");
        }
        text
    }
}

fn format_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

/// Runs [`run`] on a runtime of its own with `--threads` worker threads.
pub fn main(addr: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads as usize);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(addr, args))
}

/// Runs `kv-client bench` against the server at `addr`, prints the report
/// (text, or one JSON line with `--json`) and fails if any request got an
/// error response, after printing.
pub async fn run(addr: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let summary = measure(addr, args, show_progress).await?;
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    if summary.errors > 0 {
        bail!(
            "{} of {} requests failed; first: {}",
            summary.errors,
            summary.ops,
            summary.first_error.as_deref().unwrap_or("(none recorded)")
        );
    }
    Ok(())
}

/// Runs the load and returns what it measured, without printing.
pub async fn measure(addr: &str, args: &BenchArgs, show_progress: bool) -> anyhow::Result<Summary> {
    let stop = match (args.requests, args.duration) {
        (Some(n), _) => Stop::Requests(n),
        (None, Some(secs)) if secs > 0.0 && secs <= MAX_RUN_SECS => {
            Stop::After(Duration::from_secs_f64(secs))
        }
        (None, Some(secs)) => {
            bail!("--duration must be more than 0 and at most 86400 seconds, not {secs}")
        }
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    let workload = Arc::new(Workload::new(args));
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        stop,
    });

    // Connect every connection before the clock starts, so that connection
    // set-up is not measured as throughput.
    let mut streams = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        // Requests are small and latency-bound: never hold one back.
        stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
        streams.push(stream);
    }

    let progress = progress_bar(stop, show_progress);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, stream) in streams.into_iter().enumerate() {
        let rng =
            SmallRng::seed_from_u64(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index as u64);
        tasks.spawn(drive(
            stream,
            args.pipeline as usize,
            Arc::clone(&workload),
            Arc::clone(&shared),
            rng,
        ));
    }
    let ticker = tokio::spawn(tick(Arc::clone(&shared), progress.clone(), start));

    let mut tallies = Vec::with_capacity(args.connections as usize);
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(tally)) => tallies.push(tally),
            Ok(Err(err)) => {
                // Stop the others too: a run with a dead connection measures
                // something other than what was asked for.
                shared.stopped.store(true, Ordering::Relaxed);
                failure.get_or_insert(err);
            }
            Err(join_error) => {
                shared.stopped.store(true, Ordering::Relaxed);
                failure.get_or_insert(anyhow::anyhow!("a connection task failed: {join_error}"));
            }
        }
    }
    let elapsed = start.elapsed();
    ticker.abort();
    progress.finish_and_clear();
    if let Some(err) = failure {
        return Err(err);
    }

    let mut latency_ns = new_histogram()?;
    let mut summary_counts = (0u64, 0u64, 0u64, 0u64);
    let mut first_error = None;
    for tally in tallies {
        latency_ns
            .add(&tally.latency_ns)
            .context("cannot merge latency histograms")?;
        summary_counts.0 += tally.puts;
        summary_counts.1 += tally.gets;
        summary_counts.2 += tally.misses;
        summary_counts.3 += tally.errors;
        if first_error.is_none() {
            first_error = tally.first_error;
        }
    }
    let (puts, gets, misses, errors) = summary_counts;
    Ok(Summary {
        connections: args.connections,
        pipeline: args.pipeline,
        value_size: args.value_size,
        key_size: workload.key_len(),
        keyspace: args.keyspace,
        write_fraction: args.mix,
        ops: latency_ns.len(),
        puts,
        gets,
        misses,
        errors,
        first_error,
        elapsed,
        latency_ns,
    })
}

fn progress_bar(stop: Stop, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (length, template) = match stop {
        // Position in milliseconds of the planned duration.
        Stop::After(duration) => (
            duration.as_millis() as u64,
            "{bar:40} {elapsed}/{duration} {msg}",
        ),
        Stop::Requests(n) => (n, "{bar:40} {pos}/{len} {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Updates the progress bar a few times a second until aborted.
async fn tick(shared: Arc<Shared>, bar: ProgressBar, start: Instant) {
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        interval.tick().await;
        let done = shared.completed.load(Ordering::Relaxed);
        let elapsed = start.elapsed();
        match shared.stop {
            Stop::After(duration) => {
                if elapsed >= duration {
                    shared.stopped.store(true, Ordering::Relaxed);
                }
                bar.set_position(elapsed.min(duration).as_millis() as u64);
            }
            Stop::Requests(_) => bar.set_position(done),
        }
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        bar.set_message(format!("{done} ops, {rate:.0} ops/s"));
    }
}

/// Drives one connection until the run is over and its in-flight requests
/// are answered.
async fn drive(
    mut stream: TcpStream,
    pipeline: usize,
    workload: Arc<Workload>,
    shared: Arc<Shared>,
    mut rng: SmallRng,
) -> anyhow::Result<ConnectionTally> {
    let deadline = match shared.stop {
        Stop::After(duration) => Some(Instant::now() + duration),
        Stop::Requests(_) => None,
    };
    let mut tally = ConnectionTally::new()?;
    let mut codec = ClientCodec::default();
    let mut outgoing = BytesMut::with_capacity(4096);
    let mut incoming = BytesMut::with_capacity(64 * 1024);
    // (request id, time it was handed to the socket, whether it is a put),
    // oldest first: the order in which responses must arrive.
    let mut in_flight: VecDeque<(u64, Instant, bool)> = VecDeque::with_capacity(pipeline);
    let mut next_id: u64 = 1;

    loop {
        // The deadline is checked here too, not only by the ticker, so that
        // a timed run ends on time even with the progress task starved.
        if let Some(deadline) = deadline
            && !shared.stopped.load(Ordering::Relaxed)
            && Instant::now() >= deadline
        {
            shared.stopped.store(true, Ordering::Relaxed);
        }
        // Top the window up, then send everything in one write.
        let sent_at = Instant::now();
        while in_flight.len() < pipeline {
            let Some(n) = shared.claim() else { break };
            let command = workload.command(n, &mut rng);
            let is_put = matches!(command, Command::Put(_));
            let request = Request::new(next_id, command);
            codec
                .encode(&request, &mut outgoing)
                .context("cannot encode a request")?;
            in_flight.push_back((next_id, sent_at, is_put));
            next_id += 1;
        }
        if !outgoing.is_empty() {
            stream
                .write_all(&outgoing)
                .await
                .context("cannot send to the server")?;
            outgoing.clear();
        }
        if in_flight.is_empty() {
            return Ok(tally);
        }

        // Wait for at least one response, then take every one buffered.
        let mut answered = 0u64;
        while answered == 0 {
            while let Some(frame) = codec
                .decode(&mut incoming)
                .context("cannot read the server's response stream")?
            {
                let response = frame.context("the server sent a response that does not decode")?;
                let Some((id, sent, is_put)) = in_flight.pop_front() else {
                    bail!(
                        "the server sent a response to no request (id {})",
                        response.id
                    );
                };
                if response.id != id {
                    bail!(
                        "responses out of order: expected id {id}, got {}",
                        response.id
                    );
                }
                let latency = sent.elapsed().as_nanos().min(u128::from(MAX_LATENCY_NS)) as u64;
                tally.latency_ns.saturating_record(latency.max(1));
                account(&mut tally, response, is_put);
                answered += 1;
            }
            if answered == 0 {
                let read = stream
                    .read_buf(&mut incoming)
                    .await
                    .context("cannot read from the server")?;
                if read == 0 {
                    bail!(
                        "the server closed the connection with {} requests unanswered",
                        in_flight.len()
                    );
                }
            }
        }
        shared.completed.fetch_add(answered, Ordering::Relaxed);
    }
}

/// Counts one response.
fn account(tally: &mut ConnectionTally, response: Response, is_put: bool) {
    match (response.result, is_put) {
        (Some(response::Result::Put(_)), true) => tally.puts += 1,
        (Some(response::Result::Get(get)), false) => {
            tally.gets += 1;
            if !get.found {
                tally.misses += 1;
            }
        }
        (Some(response::Result::Error(error)), _) => {
            let code = kv_proto::ErrorCode::try_from(error.code)
                .map(|code| code.to_string())
                .unwrap_or_else(|_| format!("error code {}", error.code));
            tally.error(format!("{code}: {}", error.message));
        }
        (None, _) => tally.error("a response without a result".to_string()),
        (Some(other), _) => tally.error(format!("an unexpected response: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    use futures::{SinkExt, StreamExt};
    use kv_proto::{ErrorCode, GetResponse, PutResponse, ServerCodec};
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;

    /// A stand-in server: answers every put OK (recording its key), every
    /// get "not found", and a put of a key ending in `fail_suffix` with
    /// UNAVAILABLE.
    async fn fake_server(fail_suffix: Option<&'static str>) -> (String, Arc<Mutex<Vec<Bytes>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let keys = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&keys);
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut framed = Framed::new(socket, ServerCodec::default());
                    while let Some(Ok(Ok(request))) = framed.next().await {
                        let result = match request.command {
                            Some(Command::Put(put)) => {
                                let fail =
                                    fail_suffix.is_some_and(|s| put.key.ends_with(s.as_bytes()));
                                seen.lock().unwrap().push(put.key);
                                if fail {
                                    response::Result::Error(kv_proto::Error {
                                        code: ErrorCode::Unavailable as i32,
                                        message: "log failed".into(),
                                        ..Default::default()
                                    })
                                } else {
                                    response::Result::Put(PutResponse { seq: 1 })
                                }
                            }
                            _ => response::Result::Get(GetResponse::default()),
                        };
                        framed
                            .send(Response::new(request.id, result))
                            .await
                            .unwrap();
                    }
                });
            }
        });
        (addr, keys)
    }

    fn args(extra: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let mut argv = vec!["bench"];
        argv.extend_from_slice(extra);
        <Cli as clap::Parser>::parse_from(argv).bench
    }

    #[tokio::test]
    async fn sequential_keys_write_exactly_n_distinct_keys() {
        let (addr, keys) = fake_server(None).await;
        let args = args(&[
            "--connections",
            "4",
            "--pipeline",
            "8",
            "--requests",
            "1000",
            "--keyspace",
            "1000",
            "--sequential-keys",
            "--key-prefix",
            "k",
        ]);
        let summary = measure(&addr, &args, false).await.unwrap();
        assert_eq!(summary.ops, 1000);
        assert_eq!(summary.puts, 1000);
        assert_eq!(summary.errors, 0);
        assert_eq!(summary.latency_ns.len(), 1000);
        let keys = keys.lock().unwrap();
        let distinct: HashSet<&Bytes> = keys.iter().collect();
        assert_eq!(keys.len(), 1000);
        assert_eq!(distinct.len(), 1000);
        assert!(keys.iter().all(|k| k.len() == 4 && k.starts_with(b"k")));
        assert!(distinct.contains(&Bytes::from_static(b"k000")));
        assert!(distinct.contains(&Bytes::from_static(b"k999")));
    }

    #[tokio::test]
    async fn error_responses_are_counted_and_fail_the_run() {
        // Keys k0..k9, sequential: exactly one in ten ends in 7.
        let (addr, _) = fake_server(Some("7")).await;
        let args = args(&[
            "--requests",
            "100",
            "--keyspace",
            "10",
            "--sequential-keys",
            "--key-prefix",
            "k",
            "--pipeline",
            "4",
        ]);
        let summary = measure(&addr, &args, false).await.unwrap();
        assert_eq!(summary.ops, 100);
        assert_eq!(summary.errors, 10);
        assert_eq!(summary.puts, 90);
        assert!(
            summary
                .first_error
                .as_deref()
                .unwrap()
                .starts_with("UNAVAILABLE")
        );
        assert!(run(&addr, &args).await.is_err());
    }

    #[tokio::test]
    async fn a_timed_mixed_run_stops_and_counts_both_kinds() {
        let (addr, _) = fake_server(None).await;
        let args = args(&[
            "--duration",
            "0.3",
            "--mix",
            "0.5",
            "--connections",
            "2",
            "--pipeline",
            "4",
        ]);
        let started = Instant::now();
        let summary = measure(&addr, &args, false).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(summary.elapsed >= Duration::from_millis(300));
        assert!(summary.puts > 0 && summary.gets > 0);
        assert_eq!(summary.gets, summary.misses);
        assert_eq!(summary.ops, summary.puts + summary.gets);
        let json = summary.to_json();
        assert_eq!(json["ops"].as_u64(), Some(summary.ops));
        assert!(json["p99_us"].as_f64().unwrap() >= json["p50_us"].as_f64().unwrap());
    }

    #[test]
    fn duration_is_positive_and_at_most_a_day() {
        assert_eq!(parse_run_seconds("0.3"), Ok(0.3));
        assert_eq!(parse_run_seconds("86400"), Ok(86_400.0));
        for bad in ["0", "-1", "86400.5", "1e30", "inf", "NaN", "soon"] {
            assert!(parse_run_seconds(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn mix_accepts_names_and_fractions_only() {
        assert_eq!(parse_mix("put"), Ok(1.0));
        assert_eq!(parse_mix("get"), Ok(0.0));
        assert_eq!(parse_mix("0.25"), Ok(0.25));
        assert!(parse_mix("1.5").is_err());
        assert!(parse_mix("lots").is_err());
    }
}
