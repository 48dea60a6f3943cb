//! Protected mode: without an auth token, a server told to listen beyond
//! loopback refuses to start, in one line saying why, unless an auth token
//! is set or `--allow-unauthenticated` (or `KV_ALLOW_UNAUTHENTICATED`) says
//! that is intended.

use std::net::{Ipv4Addr, SocketAddr};

use e2e::{CLI_DEADLINE, EXIT_DEADLINE, ServerProcess, cli, command, run_to_exit};

#[test]
fn a_non_loopback_addr_without_auth_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut open = command("kv-server");
    open.args(["--addr", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path());
    let output = run_to_exit(open, b"", EXIT_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert!(
        stderr.starts_with("kv-server: error: refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert!(stderr.contains("--allow-unauthenticated"), "{stderr}");
    assert!(stderr.contains("--auth-token-file"), "{stderr}");
    // Refused before anything was opened.
    assert!(!dir.path().join("wal").exists());

    // Allowed by the flag, or by the environment: it serves, and says it is
    // exposed.
    let by_flag = ServerProcess::start_on("0.0.0.0:0", dir.path(), &["--allow-unauthenticated"]);
    assert!(by_flag.stderr().contains("without authentication"));
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, by_flag.addr().port()));
    let put = cli(local, &["put", "exposed", "yes"], b"");
    assert_eq!(put.status.code(), Some(0), "{put:?}");
    drop(by_flag);

    let by_env = ServerProcess::start_with_env(
        "0.0.0.0:0",
        dir.path(),
        &[],
        &[("KV_ALLOW_UNAUTHENTICATED", "true")],
    );
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, by_env.addr().port()));
    let get = cli(local, &["get", "exposed"], b"");
    assert_eq!(get.stdout, b"yes", "{get:?}");
    drop(by_env);

    // An auth token satisfies protected mode: the server starts, serves
    // only clients that present it, and warns that without TLS the token
    // crosses the network in clear.
    let with_token =
        ServerProcess::start_with_env("0.0.0.0:0", dir.path(), &[], &[("KV_AUTH_TOKEN", "s3cret")]);
    let stderr = with_token.stderr();
    assert!(!stderr.contains("without authentication"), "{stderr}");
    assert!(stderr.contains("without TLS"), "{stderr}");
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, with_token.addr().port()));
    let anonymous = cli(local, &["get", "exposed"], b"");
    assert_eq!(anonymous.status.code(), Some(2), "{anonymous:?}");
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("UNAUTHENTICATED"));
    let mut get = command("kv-client");
    get.args(["--addr", &local.to_string(), "get", "exposed"])
        .env("KV_AUTH_TOKEN", "s3cret");
    let get = run_to_exit(get, b"", CLI_DEADLINE);
    assert_eq!(get.stdout, b"yes", "{get:?}");
}
