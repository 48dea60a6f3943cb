//! Protected mode: with no authentication (none exists yet), a server told
//! to listen beyond loopback refuses to start, in one line saying why,
//! unless `--allow-unauthenticated` (or `KV_ALLOW_UNAUTHENTICATED`) says
//! that is intended.

use std::net::{Ipv4Addr, SocketAddr};

use e2e::{EXIT_DEADLINE, ServerProcess, cli, command, run_to_exit};

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
}
