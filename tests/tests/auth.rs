//! Authentication with a token: a server started with one refuses every
//! request of a connection that has not presented it (UNAUTHENTICATED),
//! refuses, logs and slows wrong tokens, and serves kv-client once it has
//! the token from `KV_AUTH_TOKEN` or `--auth-token-file`. The token is
//! never taken from the command line, by either binary.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use e2e::{CLI_DEADLINE, EXIT_DEADLINE, ServerProcess, command, run_to_exit, wait_until};
use kv_client::{AuthToken, Client, ClientError, ClientOptions};
use kv_proto::{AuthRequest, ErrorCode, request, response};

const TOKEN: &str = "correct horse battery staple";

/// Runs `kv-client --addr ADDR ARGS...` with the environment `env`.
fn cli_with_env(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cli = command("kv-client");
    cli.arg("--addr").arg(addr.to_string()).args(args);
    cli.envs(env.iter().copied());
    run_to_exit(cli, b"", CLI_DEADLINE)
}

fn write_token_file(dir: &Path) -> String {
    let path = dir.join("token");
    // As `echo` writes it: the trailing newline is not part of the token.
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

fn unauthenticated(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Server {
            code: ErrorCode::Unauthenticated,
            message,
            ..
        }) => message,
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_before_the_token_and_wrong_tokens_are_refused_logged_and_slowed() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with_env("127.0.0.1:0", dir.path(), &[], &[("KV_AUTH_TOKEN", TOKEN)]);
    let addr = server.addr();

    // No token: every request is refused, and none has any effect.
    let anonymous = Client::connect(addr).await.unwrap();
    let message = unauthenticated(anonymous.put("k", "written-anonymously").await);
    assert!(message.contains("auth token"), "{message}");
    unauthenticated(anonymous.get("k").await);
    unauthenticated(anonymous.keys("", 0).await);
    unauthenticated(anonymous.checkpoint().await);

    // A wrong token: refused, and each further failure on the connection
    // waits longer before its answer.
    let wrong = || {
        request::Command::Auth(AuthRequest {
            token: "guess".into(),
        })
    };
    let started = Instant::now();
    unauthenticated(anonymous.call(wrong()).await);
    let first = started.elapsed();
    let started = Instant::now();
    unauthenticated(anonymous.call(wrong()).await);
    let second = started.elapsed();
    assert!(
        first >= Duration::from_millis(100),
        "a failed attempt was answered without delay: {first:?}"
    );
    assert!(
        second >= Duration::from_millis(200),
        "the second failure was not slowed more: {second:?}"
    );
    // Still unauthenticated.
    unauthenticated(anonymous.get("k").await);

    // Logged with the client's address.
    wait_until(
        "the failed attempts in the server's log",
        Duration::from_secs(10),
        || {
            server
                .stderr()
                .lines()
                .filter(|l| l.contains("authentication failed") && l.contains("127.0.0.1:"))
                .count()
                >= 2
        },
    )
    .await;

    // The library with a wrong token fails to connect, with the server's
    // answer.
    let options = ClientOptions {
        auth_token: Some(AuthToken::new("guess").unwrap()),
        ..ClientOptions::default()
    };
    let message = unauthenticated(Client::connect_with(addr, options).await);
    assert!(message.contains("wrong auth token"), "{message}");

    // The right token: served, and the anonymous put never happened.
    let options = ClientOptions {
        auth_token: Some(AuthToken::new(TOKEN).unwrap()),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(addr, options).await.unwrap();
    assert_eq!(client.get("k").await.unwrap(), None);
    client.put("k", "v").await.unwrap();
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    // Authenticating again on an authenticated connection is fine.
    let again = client
        .call(request::Command::Auth(AuthRequest {
            token: TOKEN.into(),
        }))
        .await
        .unwrap();
    assert!(matches!(again, response::Result::Auth(_)), "{again:?}");
    // The token never reaches the log.
    assert!(!server.stderr().contains(TOKEN), "{}", server.stderr());
}

#[test]
fn the_cli_authenticates_with_kv_auth_token_or_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token_file(dir.path());
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &["--auth-token-file", &token_file]);
    let addr = server.addr();

    let put = cli_with_env(
        addr,
        &["put", "greeting", "hello"],
        &[("KV_AUTH_TOKEN", TOKEN)],
    );
    assert_eq!(put.status.code(), Some(0), "{put:?}");
    assert_eq!(put.stdout, b"OK\n");

    let get = cli_with_env(
        addr,
        &["--auth-token-file", &token_file, "get", "greeting"],
        &[],
    );
    assert_eq!(get.status.code(), Some(0), "{get:?}");
    assert_eq!(get.stdout, b"hello");

    // Without a token, or with a wrong one: exit 2 and one line saying so.
    let none = cli_with_env(addr, &["get", "greeting"], &[]);
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{none:?}");
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(none.stdout.is_empty());

    let wrong = cli_with_env(addr, &["get", "greeting"], &[("KV_AUTH_TOKEN", "guess")]);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    assert!(stderr.contains("wrong auth token"), "{stderr}");

    // Both ways at once is ambiguous: refused before connecting.
    let both = cli_with_env(
        addr,
        &["--auth-token-file", &token_file, "get", "greeting"],
        &[("KV_AUTH_TOKEN", TOKEN)],
    );
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert_eq!(both.status.code(), Some(2), "{both:?}");
    assert!(stderr.contains("give the token one way"), "{stderr}");
}

#[test]
fn the_token_is_never_taken_from_argv_and_an_empty_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();

    // kv-server: no flag takes the token itself; a usage error (exit 2).
    for flag in ["--auth-token", "--token"] {
        let mut server = command("kv-server");
        server
            .args([flag, TOKEN, "--data-dir"])
            .arg(dir.path().join("data"));
        let output = run_to_exit(server, b"", EXIT_DEADLINE);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains("unexpected argument"), "{stderr}");
    }

    // kv-client alike.
    let mut client = command("kv-client");
    client.args(["--auth-token", TOKEN, "get", "k"]);
    let output = run_to_exit(client, b"", CLI_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unexpected argument"), "{stderr}");

    // An empty token file (a newline only) is an error at start: exit 1,
    // one line, nothing opened.
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let data = dir.path().join("data");
    let mut server = command("kv-server");
    server
        .arg("--auth-token-file")
        .arg(&empty)
        .arg("--data-dir")
        .arg(&data);
    let output = run_to_exit(server, b"", EXIT_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is empty"), "{stderr}");
    assert!(!data.join("wal").exists());

    // So is an empty KV_AUTH_TOKEN.
    let mut server = command("kv-server");
    server.arg("--data-dir").arg(&data).env("KV_AUTH_TOKEN", "");
    let output = run_to_exit(server, b"", EXIT_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("KV_AUTH_TOKEN is empty"), "{stderr}");
}
