//! `--metrics-addr`: the endpoint is scraped over HTTP, as Prometheus
//! would, and what it shows is checked against what the test did.

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{ServerProcess, cli, free_addrs, wait_until};
use kv_client::Client;

/// The metrics address a server logged (`metrics: listening on http://ADDR/metrics`).
fn metrics_addr(server: &ServerProcess) -> SocketAddr {
    let stderr = server.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("metrics: listening on http://"))
        .unwrap_or_else(|| panic!("no metrics line in:\n{stderr}"));
    let url = &line[line.find("http://").unwrap() + "http://".len()..];
    url.trim_end_matches("/metrics")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad metrics address in {line:?}: {e}"))
}

/// GET `path`: status, content type and body; HTTP error statuses are
/// answers here, not failures.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.body_mut().read_to_string().expect("a text body");
    (status, content_type, body)
}

/// The value of the sample `name` (with its labels, as written) in a
/// scrape, if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

fn must(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[test]
fn a_single_node_shows_its_requests_log_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--max-total-in-flight-bytes",
            "256MiB",
            "--max-key-size",
            "100",
        ],
    );
    let metrics = metrics_addr(&server);

    let (status, _, body) = get(metrics, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(metrics, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    for i in 0..5 {
        let out = cli(server.addr(), &["put", &format!("k{i}"), "value"], b"");
        assert!(out.status.success(), "{out:?}");
    }
    assert!(cli(server.addr(), &["get", "k1"], b"").status.success());
    assert!(cli(server.addr(), &["delete", "k0"], b"").status.success());
    assert!(cli(server.addr(), &["checkpoint"], b"").status.success());
    // A key over --max-key-size is refused: an error outcome.
    let long_key = "x".repeat(200);
    assert!(
        !cli(server.addr(), &["put", &long_key, "v"], b"")
            .status
            .success()
    );

    let (status, content_type, text) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let put_ok = r#"kv_requests_total{command="put",outcome="ok"}"#;
    assert_eq!(must(&text, put_ok), 5.0);
    assert_eq!(
        must(&text, r#"kv_requests_total{command="get",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        must(&text, r#"kv_requests_total{command="delete",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        must(
            &text,
            r#"kv_requests_total{command="checkpoint",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        must(
            &text,
            r#"kv_requests_total{command="put",outcome="too_large"}"#
        ),
        1.0
    );
    assert_eq!(
        must(&text, r#"kv_request_duration_seconds_count{command="put"}"#),
        6.0
    );
    assert_eq!(must(&text, "kv_keys"), 4.0);
    assert_eq!(must(&text, "kv_checkpoints_total"), 1.0);
    assert_eq!(must(&text, "kv_checkpoints_failed_total"), 0.0);
    assert!(must(&text, "kv_checkpoint_last_duration_seconds") > 0.0);
    assert_eq!(
        must(&text, "kv_in_flight_budget_bytes"),
        (256u64 << 20) as f64
    );
    assert_eq!(must(&text, "kv_log_failed"), 0.0);
    // Six durable writes (five puts and a delete), each synced before it
    // was acknowledged: the log counts their records and fdatasyncs.
    assert_eq!(must(&text, "kv_wal_records_total"), 6.0);
    // Under --sync-policy always, each of one client's writes in turn is
    // synced before it is acknowledged (the checkpoint's rotation may add one).
    let syncs = must(&text, "kv_wal_sync_duration_seconds_count");
    assert!((6.0..=8.0).contains(&syncs), "{syncs} syncs for 6 records");
    assert_eq!(
        must(&text, r#"kv_wal_sync_duration_seconds_bucket{le="+Inf"}"#),
        syncs
    );
    assert_eq!(must(&text, "kv_wal_group_commit_records_sum"), 6.0);
    assert!(must(&text, "kv_wal_segments") >= 1.0);
    assert!(must(&text, "kv_process_resident_memory_bytes") > 0.0);
    assert!(sample(&text, "kv_connections").is_some(), "{text}");

    let (status, _, _) = get(metrics, "/nothing-here");
    assert_eq!(status, 404);
}

#[test]
fn a_taken_metrics_port_refuses_the_start_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = e2e::run_to_exit(
        {
            let mut c = e2e::command("kv-server");
            c.args([
                "--addr",
                "127.0.0.1:0",
                "--metrics-addr",
                &addr,
                "--data-dir",
            ])
            .arg(dir.path());
            c
        },
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot listen for metrics on"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_member_shows_its_role_indexes_and_replication() {
    // Every port chosen up front, metrics included: a port-0 bind of one
    // member could take a port picked for another.
    let addrs = free_addrs(9);
    let spec = (0..3)
        .map(|i| format!("{}={}/{}", i + 1, addrs[2 * i], addrs[2 * i + 1]))
        .collect::<Vec<_>>()
        .join(",");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let members: Vec<ServerProcess> = (0..3)
        .map(|i| {
            ServerProcess::start_on(
                &addrs[2 * i],
                dirs[i].path(),
                &[
                    "--node-id",
                    &(i + 1).to_string(),
                    "--peer-addr",
                    &addrs[2 * i + 1],
                    "--initial-cluster",
                    &spec,
                    "--metrics-addr",
                    &addrs[6 + i],
                ],
            )
        })
        .collect();
    let endpoints: Vec<SocketAddr> = members.iter().map(metrics_addr).collect();

    // Ready once a leader is known; the leader is the member whose scrape
    // says so.
    let mut leader = None;
    wait_until(
        "a leader shown by its metrics",
        Duration::from_secs(30),
        || {
            leader = endpoints.iter().position(|&m| {
                sample(&get(m, "/metrics").2, r#"kv_cluster_role{role="leader"}"#) == Some(1.0)
            });
            leader.is_some()
        },
    )
    .await;
    let leader = leader.unwrap();
    for &m in &endpoints {
        wait_until("every member ready", Duration::from_secs(30), || {
            get(m, "/readyz").0 == 200
        })
        .await;
    }

    let client = Client::connect(addrs[2 * leader].as_str()).await.unwrap();
    for i in 0..10 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    let text = get(endpoints[leader], "/metrics").2;
    assert_eq!(
        must(&text, r#"kv_requests_total{command="put",outcome="ok"}"#),
        10.0
    );
    assert_eq!(must(&text, "kv_keys"), 10.0);
    assert_eq!(must(&text, "kv_cluster_has_leader"), 1.0);
    assert_eq!(must(&text, "kv_cluster_leader"), (leader + 1) as f64);
    let applied = must(&text, "kv_cluster_applied_index");
    assert!(must(&text, "kv_cluster_commit_index") >= applied, "{text}");
    assert!(must(&text, "kv_wal_records_total") >= 10.0, "{text}");

    // The followers catch up: the leader shows each with no lag, and each
    // follower has applied what the leader has.
    for (i, &m) in endpoints.iter().enumerate() {
        if i == leader {
            continue;
        }
        let lag = format!(
            r#"kv_cluster_replication_lag_entries{{follower="{}"}}"#,
            i + 1
        );
        wait_until("a follower caught up", Duration::from_secs(30), || {
            sample(&get(endpoints[leader], "/metrics").2, &lag) == Some(0.0)
                && sample(&get(m, "/metrics").2, "kv_cluster_applied_index") >= Some(applied)
        })
        .await;
        let text = get(m, "/metrics").2;
        assert_eq!(must(&text, r#"kv_cluster_role{role="follower"}"#), 1.0);
        assert_eq!(must(&text, "kv_keys"), 10.0);
        assert!(
            sample(&text, &lag).is_none(),
            "a follower shows no replication"
        );
    }
    // The endpoint lets go of the member at shutdown: SIGTERM still ends
    // it cleanly.
    let mut members = members;
    let follower = (leader + 1) % 3;
    members[follower].sigterm();
    assert!(
        members[follower]
            .wait_exit(Duration::from_secs(30))
            .success()
    );
}
