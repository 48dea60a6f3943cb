//! The metrics endpoint (`--metrics-addr`): Prometheus text on `/metrics`,
//! liveness on `/healthz`, readiness on `/readyz`.
//!
//! Two kinds of figures. Requests are counted and timed as they are
//! answered: one counter increment and one histogram observation per
//! request, labelled by command (and outcome). Everything the store, its
//! write-ahead log, the in-flight budget and Raft already count is read
//! only when the endpoint is scraped (a [`Collector`]), so serving pays
//! nothing more for it.
//!
//! The endpoint is plain HTTP without authentication, like every
//! Prometheus exporter: it shows counts and sizes, never a key or a value.
//! Bind it where only the monitoring system reaches it.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kv_proto::{ErrorCode, Response, response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::budget::InflightBudget;
use crate::command::{Backend, Shared};

/// The content type of the OpenMetrics text format `prometheus-client`
/// writes (Prometheus reads it).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    command: &'static str,
    outcome: &'static str,
}

/// Labels of the request latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: &'static str,
}

/// Request latency buckets: 50 µs to about 6.5 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 18))
}

/// The server's metrics, shared by the connections that record them and
/// the endpoint that shows them. Create one with [`Metrics::new`], serve it
/// with [`serve`], and hand it to [`crate::run`] in
/// [`crate::ServerConfig::metrics`].
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<CommandLabel, Histogram, fn() -> Histogram>,
    connections: Gauge,
    refused: Counter,
    /// What the scrape-time figures are read from; set once the store is
    /// recovered.
    source: Arc<Source>,
    /// Set when the server begins its shutdown.
    stopping: AtomicBool,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("ready", &self.source.backend().is_some())
            .finish_non_exhaustive()
    }
}

/// What a server's figures are read from, once it has them.
#[derive(Default)]
struct Source {
    /// Set once the store is recovered (or the member has started), taken
    /// back when [`crate::run`] returns: the endpoint must not keep the
    /// store or the member alive past its shutdown.
    backend: RwLock<Option<Backend>>,
    /// Set once [`crate::run`] serves.
    budget: OnceLock<Arc<InflightBudget>>,
}

/// When a request was read, and what it asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    pub(crate) command: &'static str,
    pub(crate) at: Instant,
}

impl Started {
    pub(crate) fn now(command: &'static str) -> Started {
        Started {
            command,
            at: Instant::now(),
        }
    }
}

impl Metrics {
    /// Metrics of a server that is not serving yet: `/readyz` answers 503
    /// until [`crate::run`] starts with them.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<CommandLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let connections = Gauge::default();
        let refused = Counter::default();
        registry.register(
            "kv_requests",
            "Requests answered, by command and outcome (ok, or the error code)",
            requests.clone(),
        );
        registry.register(
            "kv_request_duration_seconds",
            "Time from reading a request to having its response ready, by command",
            latency.clone(),
        );
        registry.register(
            "kv_connections",
            "Client connections being served",
            connections.clone(),
        );
        registry.register(
            "kv_connections_refused",
            "Client connections refused because --max-connections were being served",
            refused.clone(),
        );
        let source = Arc::new(Source::default());
        registry.register_collector(Box::new(Figures {
            source: Arc::clone(&source),
        }));
        Arc::new(Metrics {
            registry,
            requests,
            latency,
            connections,
            refused,
            source,
            stopping: AtomicBool::new(false),
        })
    }

    /// The Prometheus (OpenMetrics) text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            // Only a failing writer fails, and a String does not.
            text.clear();
        }
        text
    }

    /// Whether the server is ready for clients; why not if it is not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let backend = self.source.backend();
        let Some(backend) = backend.as_ref() else {
            return Err("recovering its data".into());
        };
        match backend {
            Backend::Single(store) => match store.failure() {
                Some(reason) => Err(format!("the write-ahead log failed: {reason}")),
                None => Ok(()),
            },
            Backend::Cluster(cluster) => match cluster.node.status().leader {
                Some(_) => Ok(()),
                None => Err("no leader known".into()),
            },
        }
    }

    /// Marks the server ready to serve `backend`: from now on its figures
    /// are shown and `/readyz` can answer 200. Call it once the store is
    /// recovered, before telling anyone the server is ready ([`crate::run`]
    /// calls it too, for callers that do not). Only the first call counts.
    pub fn ready(&self, backend: &Backend) {
        let mut current = self
            .source
            .backend
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.is_none() && !self.stopping.load(Ordering::Acquire) {
            *current = Some(backend.clone());
        }
    }

    /// Called by [`crate::run`] once it serves.
    pub(crate) fn serving(&self, shared: &Shared, budget: &Arc<InflightBudget>) {
        self.ready(&shared.backend);
        let _ = self.source.budget.set(Arc::clone(budget));
    }

    /// Called by [`crate::run`] when its shutdown begins.
    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Called by [`crate::run`] when it returns: lets go of the backend.
    pub(crate) fn stopped(&self) {
        self.stopping();
        let taken = self
            .source
            .backend
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(taken);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.dec();
    }

    pub(crate) fn connection_refused(&self) {
        self.refused.inc();
    }

    /// Records the answer to a request read at `started`.
    pub(crate) fn answered(&self, started: Started, response: &Response) {
        let outcome = match &response.result {
            Some(response::Result::Error(error)) => error_label(error.code),
            _ => "ok",
        };
        self.requests
            .get_or_create(&RequestLabels {
                command: started.command,
                outcome,
            })
            .inc();
        self.latency
            .get_or_create(&CommandLabel {
                command: started.command,
            })
            .observe(started.at.elapsed().as_secs_f64());
    }
}

/// The outcome label of an error code: its protobuf name in lower case.
fn error_label(code: i32) -> &'static str {
    match ErrorCode::try_from(code) {
        Ok(ErrorCode::InvalidRequest) => "invalid_request",
        Ok(ErrorCode::TooLarge) => "too_large",
        Ok(ErrorCode::Unavailable) => "unavailable",
        Ok(ErrorCode::Internal) => "internal",
        Ok(ErrorCode::NotLeader) => "not_leader",
        Ok(ErrorCode::ConditionFailed) => "condition_failed",
        Ok(ErrorCode::Unauthenticated) => "unauthenticated",
        Ok(ErrorCode::OutcomeUnknown) => "outcome_unknown",
        Ok(ErrorCode::Unspecified) | Err(_) => "unspecified",
    }
}

/// Serves `metrics` on `listener` (`/metrics`, `/healthz`, `/readyz`)
/// until `shutdown` is cancelled.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    // Reading the store's figures takes its map's read lock for a moment:
    // off the async workers, like every other blocking call.
    let text = tokio::task::spawn_blocking(move || metrics.render()).await;
    match text {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics failed: {err}\n"),
        )
            .into_response(),
    }
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: recovered, the log working, and in a cluster a leader known.
async fn readyz(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    match metrics.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

impl Source {
    fn backend(&self) -> std::sync::RwLockReadGuard<'_, Option<Backend>> {
        self.backend.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The figures read at scrape time.
struct Figures {
    source: Arc<Source>,
}

impl fmt::Debug for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Figures").finish_non_exhaustive()
    }
}

impl Collector for Figures {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> fmt::Result {
        let out = &mut out;
        if let Some(rss) = resident_bytes() {
            gauge(
                out,
                "kv_process_resident_memory_bytes",
                "Resident memory of the server process",
                rss,
            )?;
        }
        if let Some(budget) = self.source.budget.get() {
            gauge(
                out,
                "kv_in_flight_bytes",
                "Bytes of requests read and not yet answered, over all connections",
                budget.used() as u64,
            )?;
            gauge(
                out,
                "kv_in_flight_budget_bytes",
                "Most bytes of requests in flight the server holds (--max-total-in-flight-bytes)",
                budget.total() as u64,
            )?;
        }
        let backend = self.source.backend();
        let Some(backend) = backend.as_ref() else {
            return Ok(());
        };
        match backend {
            Backend::Single(store) => {
                let stats = store.stats();
                store_size(out, stats.keys, stats.bytes)?;
                gauge(
                    out,
                    "kv_last_lsn",
                    "LSN of the last write applied",
                    stats.last_lsn,
                )?;
                gauge(
                    out,
                    "kv_log_failed",
                    "1 once the write-ahead log has failed (fail-stop: writes refused)",
                    u64::from(store.failure().is_some()),
                )?;
                counter(
                    out,
                    "kv_checkpoints",
                    "Checkpoints written since start",
                    stats.snapshots_taken,
                )?;
                counter(
                    out,
                    "kv_checkpoints_failed",
                    "Checkpoints that failed since start",
                    stats.checkpoints_failed,
                )?;
                let total = ConstCounter::new(stats.checkpoint_duration_total.as_secs_f64());
                total.encode(out.encode_descriptor(
                    "kv_checkpoint_duration_seconds",
                    "Wall time of the checkpoints written since start",
                    None,
                    total.metric_type(),
                )?)?;
                let last = ConstGauge::new(stats.last_checkpoint_duration.as_secs_f64());
                last.encode(out.encode_descriptor(
                    "kv_checkpoint_last_duration_seconds",
                    "Wall time of the last checkpoint written",
                    None,
                    last.metric_type(),
                )?)?;
                gauge(
                    out,
                    "kv_wal_disk_bytes",
                    "Bytes of write-ahead log segment files on disk",
                    stats.wal_bytes,
                )?;
                wal(out, &stats.wal)?;
            }
            Backend::Cluster(cluster) => {
                let m = cluster.node.metrics();
                store_size(out, m.keys, m.bytes)?;
                cluster_figures(out, &m)?;
                wal(out, &m.log)?;
            }
        }
        Ok(())
    }
}

fn store_size(out: &mut DescriptorEncoder<'_>, keys: u64, bytes: u64) -> fmt::Result {
    gauge(out, "kv_keys", "Keys in the store", keys)?;
    gauge(
        out,
        "kv_data_bytes",
        "Key and value bytes in the store (its map holds them, plus overhead)",
        bytes,
    )
}

/// Role, term, indexes and replication of a cluster member.
fn cluster_figures(out: &mut DescriptorEncoder<'_>, m: &kv_cluster::MemberMetrics) -> fmt::Result {
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Role {
        role: &'static str,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Follower {
        follower: u64,
    }
    let status = &m.status;
    let mut roles = out.encode_descriptor(
        "kv_cluster_role",
        "1 for this member's Raft role, 0 for the others",
        None,
        MetricType::Gauge,
    )?;
    for role in ["leader", "follower", "candidate", "learner", "shutdown"] {
        ConstGauge::new(i64::from(status.role == role))
            .encode(roles.encode_family(&Role { role })?)?;
    }
    gauge(out, "kv_cluster_term", "The current Raft term", status.term)?;
    gauge(
        out,
        "kv_cluster_has_leader",
        "1 while this member knows a leader",
        u64::from(status.leader.is_some()),
    )?;
    if let Some(leader) = status.leader {
        gauge(
            out,
            "kv_cluster_leader",
            "The node id of the leader",
            leader,
        )?;
    }
    let index = |i: Option<u64>| i.unwrap_or(0);
    gauge(
        out,
        "kv_cluster_last_log_index",
        "Index of the last entry in this member's log",
        index(status.last_log_index),
    )?;
    gauge(
        out,
        "kv_cluster_commit_index",
        "Index of the last entry known committed",
        index(m.committed_index),
    )?;
    gauge(
        out,
        "kv_cluster_applied_index",
        "Index of the last entry applied to the state machine",
        index(status.applied_index),
    )?;
    if !m.replication.is_empty() {
        let last = index(status.last_log_index);
        let mut lag = out.encode_descriptor(
            "kv_cluster_replication_lag_entries",
            "On the leader: entries of its log a follower is not known to hold",
            None,
            MetricType::Gauge,
        )?;
        for (follower, matched) in &m.replication {
            let behind = last.saturating_sub(index(*matched));
            ConstGauge::new(i64::try_from(behind).unwrap_or(i64::MAX)).encode(
                lag.encode_family(&Follower {
                    follower: *follower,
                })?,
            )?;
        }
    }
    Ok(())
}

/// The write-ahead log's counters and histograms.
fn wal(out: &mut DescriptorEncoder<'_>, stats: &kv_store::WalStats) -> fmt::Result {
    gauge(
        out,
        "kv_wal_segments",
        "Segment files the write-ahead log holds",
        stats.segments,
    )?;
    gauge(
        out,
        "kv_wal_durable_lsn",
        "The last LSN made durable",
        stats.durable_lsn,
    )?;
    counter(
        out,
        "kv_wal_records",
        "Records appended to the write-ahead log since start",
        stats.records,
    )?;
    counter(
        out,
        "kv_wal_written_bytes",
        "Bytes written to write-ahead log segments since start (framing included)",
        stats.written_bytes,
    )?;
    // Bucket i of the log's histograms counts values in 2^i ..= 2^(i+1) - 1.
    let syncs: Vec<(f64, u64)> = power_buckets(&stats.sync_micros, |upper| upper as f64 / 1e6);
    histogram(
        out,
        "kv_wal_sync_duration_seconds",
        "Time of one group commit's write and fdatasync",
        stats.sync_micros_total as f64 / 1e6,
        &syncs,
    )?;
    let groups: Vec<(f64, u64)> = power_buckets(&stats.group_records, |upper| (upper - 1) as f64);
    histogram(
        out,
        "kv_wal_group_commit_records",
        "Records written by one group commit",
        stats.records as f64,
        &groups,
    )
}

/// Prometheus buckets (upper bound, count) of a power-of-two histogram
/// whose bucket `i` counts values below `2^(i+1)`; the last is `+Inf`.
fn power_buckets(counts: &[u64], bound: impl Fn(u64) -> f64) -> Vec<(f64, u64)> {
    let last = counts.len().saturating_sub(1);
    counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let upper = if i == last {
                f64::MAX
            } else {
                bound(1u64 << (i + 1))
            };
            (upper, n)
        })
        .collect()
}

fn gauge(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    gauge.encode(out.encode_descriptor(name, help, None, gauge.metric_type())?)
}

fn counter(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let counter = ConstCounter::new(value);
    counter.encode(out.encode_descriptor(name, help, None, counter.metric_type())?)
}

fn histogram(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    sum: f64,
    buckets: &[(f64, u64)],
) -> fmt::Result {
    let count = buckets.iter().map(|(_, n)| n).sum();
    out.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, buckets, None)
}

/// The process's resident memory, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_buckets_end_in_infinity() {
        let b = power_buckets(&[1, 2, 3], |upper| upper as f64);
        assert_eq!(b, vec![(2.0, 1), (4.0, 2), (f64::MAX, 3)]);
    }

    #[test]
    fn answered_requests_are_counted_by_command_and_outcome() {
        let metrics = Metrics::new();
        metrics.answered(
            Started::now("get"),
            &Response::error(1, ErrorCode::NotLeader, "x"),
        );
        metrics.answered(
            Started::now("get"),
            &Response::error(2, ErrorCode::NotLeader, "x"),
        );
        let text = metrics.render();
        assert!(
            text.contains("kv_requests_total{command=\"get\",outcome=\"not_leader\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("kv_request_duration_seconds_count{command=\"get\"} 2"),
            "{text}"
        );
        assert!(metrics.readiness().is_err(), "not serving yet");
    }
}
