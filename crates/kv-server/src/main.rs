//! The `kv-server` binary: parses flags, binds, opens (recovers) the store
//! while answering clients UNAVAILABLE, then serves until SIGINT/SIGTERM. Exit status: 0 clean shutdown, 1 start-up or serving
//! failure (one line on stderr), 2 usage error.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use kv_server::config::{EXIT_FAILURE, EXIT_OK, LogFormat, check_exposure};
use kv_server::{Args, refuse_until_ready};
use kv_store::{KeyValueStore, RecoveryMode};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Usage errors exit 2 inside clap. Not clap's `Args::parse`: this one
    // also records which flags were given explicitly, for the checks below.
    let args = Args::parse_command_line();
    // The cluster flags are checked together (and a member refuses the
    // single-node ones); a bad combination is a usage error, like a bad flag.
    let checked = args.check_limits().and_then(|()| args.cluster_config());
    let cluster = match checked {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("kv-server: error: {e}");
            return ExitCode::from(kv_server::config::EXIT_USAGE);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }

    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads())
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(args, cluster)));
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("kv-server: error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn serve(args: Args, cluster: Option<kv_cluster::ClusterConfig>) -> anyhow::Result<()> {
    if !args.frame_fits_largest_request() {
        tracing::warn!(
            max_frame = args.max_frame,
            max_key_size = args.max_key_size,
            max_value_size = args.max_value_size,
            "--max-frame is smaller than a put of the largest key and value: such puts \
             will close their connection instead of getting TOO_LARGE"
        );
    }
    // Resolve and bind before the (possibly long) recovery, so a name that
    // does not resolve or a taken port fails fast.
    let candidates: Vec<std::net::SocketAddr> = tokio::net::lookup_host(args.addr.as_str())
        .await
        .with_context(|| format!("cannot resolve --addr {}", args.addr))?
        .collect();
    if candidates.is_empty() {
        anyhow::bail!("cannot resolve --addr {}: no addresses", args.addr);
    }
    // Secrets and certificates are read before anything is bound or
    // opened: a bad file fails at once, in one line naming it.
    let auth_token = args.auth_token().map_err(anyhow::Error::msg)?;
    let tls = args.server_tls().map_err(anyhow::Error::msg)?;
    check_exposure(
        &args.addr,
        &candidates,
        auth_token.is_some(),
        args.allow_unauthenticated,
    )
    .map_err(anyhow::Error::msg)?;
    let exposed = candidates
        .iter()
        .any(|a| !a.ip().to_canonical().is_loopback());
    if exposed && auth_token.is_none() {
        tracing::warn!(
            addr = %args.addr,
            "serving beyond loopback without authentication (--allow-unauthenticated): \
             anyone who can reach this address can read and write every key"
        );
    }
    if exposed && auth_token.is_some() && tls.is_none() {
        tracing::warn!(
            addr = %args.addr,
            "serving beyond loopback without TLS: the auth token and every key and value \
             cross the network in clear text (give --tls-cert and --tls-key)"
        );
    }
    let mut server_config = args.server_config();
    server_config.auth_token = auth_token;
    server_config.tls = tls;
    // The first candidate that can be bound, as `TcpListener::bind` does.
    let listener = tokio::net::TcpListener::bind(candidates.as_slice())
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // The Redis listener: resolved, checked for protected mode and bound
    // like --addr, before recovery; it accepts once the store is open.
    let redis_listener = match &args.redis_addr {
        Some(redis_addr) => {
            let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host(redis_addr.as_str())
                .await
                .with_context(|| format!("cannot resolve --redis-addr {redis_addr}"))?
                .collect();
            check_exposure(
                redis_addr,
                &resolved,
                server_config.auth_token.is_some(),
                args.allow_unauthenticated,
            )
            .map_err(anyhow::Error::msg)?;
            Some(
                tokio::net::TcpListener::bind(resolved.as_slice())
                    .await
                    .with_context(|| format!("cannot listen for Redis clients on {redis_addr}"))?,
            )
        }
        None => None,
    };
    let metrics_listener = match &args.metrics_addr {
        Some(metrics_addr) => Some(
            tokio::net::TcpListener::bind(metrics_addr.as_str())
                .await
                .with_context(|| format!("cannot listen for metrics on {metrics_addr}"))?,
        ),
        None => None,
    };
    // Every flag as it took effect (defaults and environment included),
    // once the flags have passed their checks, so that a refused start
    // stays one line; files are named, never read here: no secret is
    // logged.
    tracing::info!(config = ?args, "kv-server {} starting", env!("CARGO_PKG_VERSION"));
    tracing::info!(
        auth = if server_config.auth_token.is_some() {
            "token"
        } else {
            "none"
        },
        tls = server_config.tls.is_some(),
        "client security"
    );
    // The endpoint serves from now on: /healthz answers during recovery,
    // /readyz says 503 until the server is ready.
    let stop_metrics = CancellationToken::new();
    if let Some(metrics_listener) = metrics_listener {
        let metrics = kv_server::Metrics::new();
        let metrics_addr = metrics_listener
            .local_addr()
            .context("cannot read the bound metrics address")?;
        tracing::info!("metrics: listening on http://{metrics_addr}/metrics");
        tokio::spawn(serve_metrics(
            metrics_listener,
            std::sync::Arc::clone(&metrics),
            stop_metrics.clone(),
        ));
        server_config.metrics = Some(metrics);
    }
    let _stop_metrics = stop_metrics.drop_guard();

    if let Some(config) = cluster {
        return serve_cluster(args, config, server_config, listener, redis_listener, addr).await;
    }

    let data_dir = args.data_dir.clone();
    // A member's data directory holds nothing a single node reads: it
    // would start empty and hide the member's data.
    kv_cluster::upgrade::check_single_node(&data_dir)?;
    tracing::info!(
        data_dir = %data_dir.display(),
        worker_threads = args.worker_threads(),
        %addr,
        "opening the store; until it is recovered, clients get UNAVAILABLE"
    );
    let options = args.store_options();
    let mode = options.wal.recovery_mode;
    let dir = data_dir.clone();
    let opening = tokio::task::spawn_blocking(move || KeyValueStore::open(&dir, options));
    let store = refuse_until_ready(&listener, server_config.tls.as_ref(), opening)
        .await
        .context("store open task failed")?
        .map_err(|err| open_error(&data_dir, mode, err))?;
    let recovery = store.recovery();
    for warning in &recovery.warnings {
        tracing::warn!("recovery: {warning}");
    }
    tracing::info!(
        snapshot_seq = recovery.snapshot_seq,
        snapshot_entries = recovery.snapshot_entries,
        replayed = recovery.replayed,
        duration_ms = recovery.duration.as_secs_f64() * 1e3,
        "recovered {} entries from the snapshot and replayed {} log entries in {:.1?}",
        recovery.snapshot_entries,
        recovery.replayed,
        recovery.duration
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let backend = kv_server::Backend::from(store);
    if let Some(metrics) = &server_config.metrics {
        metrics.ready(&backend);
    }
    // Tests and scripts read the real port from this line, and take it to
    // mean that the server is ready.
    log_redis_addr(redis_listener.as_ref())?;
    tracing::info!("ready: listening on {addr}");
    kv_server::run_with_redis(listener, redis_listener, backend, server_config, shutdown).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Logs the Redis listener's address; tests and scripts read the port from
/// this line.
fn log_redis_addr(redis: Option<&tokio::net::TcpListener>) -> anyhow::Result<()> {
    if let Some(redis) = redis {
        let redis_addr = redis
            .local_addr()
            .context("cannot read the bound Redis address")?;
        tracing::info!("redis: listening on {redis_addr}");
    }
    Ok(())
}

/// The Redis address a member announces to its peers: the bound one, with
/// a wildcard host (0.0.0.0, ::) replaced by the host of the member's
/// client address in the member list, which is where clients reach it.
fn announced_redis_addr(bound: std::net::SocketAddr, config: &kv_cluster::ClusterConfig) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = config
        .members
        .get(&config.node_id)
        .and_then(|m| m.client_addr.rsplit_once(':').map(|(h, _)| h.to_string()));
    match host {
        Some(host) => format!("{host}:{}", bound.port()),
        None => bound.to_string(),
    }
}

/// Serves as a member of a cluster: binds the peer address, opens the Raft
/// state under `<data-dir>/raft` and joins (or forms) the cluster, answering
/// clients UNAVAILABLE until then.
async fn serve_cluster(
    args: Args,
    mut config: kv_cluster::ClusterConfig,
    server_config: kv_server::ServerConfig,
    listener: tokio::net::TcpListener,
    redis_listener: Option<tokio::net::TcpListener>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    config.tls = args.peer_tls().map_err(anyhow::Error::msg)?;
    if let Some(redis) = &redis_listener {
        let bound = redis
            .local_addr()
            .context("cannot read the bound Redis address")?;
        config.redis_addr = Some(announced_redis_addr(bound, &config));
    }
    let peer_addr = args.peer_listen_addr(&config);
    let peers = tokio::net::TcpListener::bind(peer_addr.as_str())
        .await
        .with_context(|| format!("cannot listen for peers on {peer_addr}"))?;
    let node_id = config.node_id;
    tracing::info!(
        node = node_id,
        members = config.members.len(),
        data_dir = %config.data_dir.display(),
        %peer_addr,
        peer_tls = config.tls.is_some(),
        "joining the cluster; until then, clients get UNAVAILABLE"
    );
    let store_options = args.store_options();
    let starting = async move {
        // Single-node data in the directory is imported (a one-member
        // cluster) or refused before Raft opens anything.
        let (dir, members, join) = (config.data_dir.clone(), config.members.clone(), config.join);
        tokio::task::spawn_blocking(move || {
            kv_cluster::upgrade::prepare_member(&dir, node_id, &members, join, store_options)
        })
        .await
        .map_err(|e| anyhow::anyhow!("data directory check failed: {e}"))??;
        anyhow::Ok(kv_cluster::ClusterNode::start(config, peers).await?)
    };
    let node = refuse_until_ready(&listener, server_config.tls.as_ref(), starting)
        .await
        .context("cannot start the cluster member")?;
    let node = std::sync::Arc::new(node);
    let backend = kv_server::ClusterBackend {
        node: std::sync::Arc::clone(&node),
        max_key_size: args.max_key_size as usize,
        max_value_size: args.max_value_size as usize,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let backend = kv_server::Backend::from(backend);
    if let Some(metrics) = &server_config.metrics {
        metrics.ready(&backend);
    }
    log_redis_addr(redis_listener.as_ref())?;
    tracing::info!("ready: listening on {addr} (cluster member {node_id}, peers on {peer_addr})");
    kv_server::run_with_redis(listener, redis_listener, backend, server_config, shutdown).await?;
    if let Ok(node) = std::sync::Arc::try_unwrap(node) {
        node.shutdown().await;
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The start-up error for a store that would not open, in one line.
fn open_error(
    data_dir: &std::path::Path,
    mode: RecoveryMode,
    err: kv_store::Error,
) -> anyhow::Error {
    match err {
        kv_store::Error::Wal(wal_core::Error::Locked { .. }) => anyhow::anyhow!(
            "data directory {} is locked: another kv-server is using it",
            data_dir.display()
        ),
        kv_store::Error::Wal(wal_core::Error::Corrupt {
            segment,
            offset,
            reason,
            cut_by,
        }) => {
            let what = format!(
                "the write-ahead log is damaged: {} at offset {offset}: {reason}; \
                 --recovery-mode {mode} does not cut it",
                segment.display()
            );
            match cut_by {
                Some(cut_by) if cut_by > mode => anyhow::anyhow!(
                    "{what}: start with --recovery-mode {cut_by} to cut the log there, losing \
                     what follows (copy {} aside first)",
                    data_dir.display()
                ),
                _ => anyhow::anyhow!(
                    "{what}, and no recovery mode would: restore the data directory from a \
                     backup"
                ),
            }
        }
        err => anyhow::Error::new(err)
            .context(format!("cannot open the store in {}", data_dir.display())),
    }
}

/// Serves the metrics endpoint until `stop`; a failure is logged, and the
/// store serves on without it.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<kv_server::Metrics>,
    stop: CancellationToken,
) {
    if let Err(err) = kv_server::metrics::serve(listener, metrics, stop).await {
        tracing::error!(error = %err, "the metrics endpoint failed; serving on without it");
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    match wait_for_signal().await {
        Ok(name) => {
            tracing::info!("{name} received: shutting down");
            shutdown.cancel();
        }
        // Without handlers the signals keep their default action (the
        // process ends at once); serving on is better than refusing to run.
        Err(err) => tracing::warn!(error = %err, "cannot listen for signals"),
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<&'static str> {
    tokio::signal::ctrl_c().await?;
    Ok("Ctrl-C")
}
