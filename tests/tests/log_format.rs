//! `--log-format json`: every line the server writes to stderr is one JSON
//! object, a start line names the effective configuration, and start-up says
//! what recovery did and how long it took.

use e2e::{ServerProcess, cli};

fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

#[test]
fn json_logs_name_the_configuration_and_the_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        dir.path(),
        &["--log-format", "json", "--segment-size", "1MiB"],
    );
    let out = cli(server.addr(), &["put", "k", "v"], b"");
    assert!(out.status.success());
    server.sigterm();
    assert!(
        server
            .wait_exit(std::time::Duration::from_secs(30))
            .success()
    );
    let server = server.restart();
    let lines = json_lines(&server.stderr());
    let first = lines
        .iter()
        .find(|l| message(l).contains("starting"))
        .expect("no start line");
    let config = first["fields"]["config"].as_str().unwrap_or("");
    assert!(
        config.contains("segment_size: 1048576") && config.contains("log_format: Json"),
        "configuration not logged: {config}"
    );
    for line in &lines {
        assert!(
            line["level"].is_string() && line["timestamp"].is_string(),
            "{line}"
        );
    }
    let recovered = lines
        .iter()
        .find(|l| message(l).starts_with("recovered"))
        .expect("no recovery line");
    assert_eq!(recovered["fields"]["replayed"], 1, "{recovered}");
    assert!(
        recovered["fields"]["duration_ms"].is_number(),
        "{recovered}"
    );
    assert!(
        lines
            .iter()
            .any(|l| message(l).starts_with("ready: listening on")),
        "no ready line"
    );
}

#[test]
fn an_unknown_log_format_is_a_usage_error() {
    let out = e2e::command("kv-server")
        .args(["--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
