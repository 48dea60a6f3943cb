//! TLS, with certificates made at run time by rcgen (no key is ever
//! committed): kv-client round trips over TLS to a server whose CA it
//! trusts; a client that trusts another CA, a plain-text client on the TLS
//! listener and a TLS client on a plain listener each fail at once with one
//! clear line; three members with mutual TLS on their peer links form a
//! cluster and replicate; a member whose certificate another CA signed is
//! refused by its peers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use e2e::{CLI_DEADLINE, ServerProcess, command, free_addrs, run_to_exit, wait_until};
use kv_client::{AuthToken, Client, ClientOptions, ClientTls, ClusterClient, ClusterOptions};
use kv_proto::{ClusterStatusRequest, ClusterStatusResponse, request, response};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// Writes the CA's certificate to `dir/name.pem`.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// A certificate for 127.0.0.1 and localhost, good for server and
    /// client authentication, written as `dir/name.crt` and `dir/name.key`.
    fn issue(&self, dir: &Path, name: &str) -> (String, String) {
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (
            cert_path.to_str().unwrap().to_owned(),
            key_path.to_str().unwrap().to_owned(),
        )
    }
}

fn kv_client(addr: &str, args: &[&str]) -> Output {
    let mut cli = command("kv-client");
    cli.args(["--addr", addr]).args(args);
    let started = Instant::now();
    let output = run_to_exit(cli, b"", CLI_DEADLINE);
    // A failure must be prompt: not a wait for a timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "kv-client {args:?} took {:?}: {output:?}",
        started.elapsed()
    );
    output
}

fn one_line_failure(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(output.stdout.is_empty(), "{output:?}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_round_trip_over_tls_and_the_wrong_ones_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("kv test CA");
    let ca_file = ca.write(dir.path(), "ca");
    let (cert, key) = ca.issue(dir.path(), "server");
    let other_ca_file = Ca::new("another CA").write(dir.path(), "other-ca");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tls-token\n").unwrap();
    let token_file = token_file.to_str().unwrap().to_owned();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--auth-token-file",
            &token_file,
        ],
    );
    let addr = server.addr().to_string();
    let ca_path = ca_file.to_str().unwrap();
    let secured = ["--tls-ca", ca_path, "--auth-token-file", &token_file];

    // The CLI over TLS, by IP address and by host name (both in the
    // certificate).
    let put = kv_client(
        &addr,
        &[&secured[..], &["put", "greeting", "hello"]].concat(),
    );
    assert_eq!(put.status.code(), Some(0), "{put:?}");
    let by_name = format!("localhost:{}", server.addr().port());
    let get = kv_client(&by_name, &[&secured[..], &["get", "greeting"]].concat());
    assert_eq!(get.status.code(), Some(0), "{get:?}");
    assert_eq!(get.stdout, b"hello");

    // The library, with many calls pipelined on one TLS connection.
    let options = ClientOptions {
        tls: Some(ClientTls::with_ca_file(&ca_file).unwrap()),
        auth_token: Some(AuthToken::from_file(Path::new(&token_file)).unwrap()),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(server.addr(), options).await.unwrap();
    let puts = (0..200).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.put(format!("k{i}"), vec![b'v'; 1000]).await })
    });
    for put in puts {
        put.await.unwrap().unwrap();
    }
    assert_eq!(client.keys("k", 0).await.unwrap().keys.len(), 200);

    // A client that trusts another CA: refused in the handshake.
    let untrusting = kv_client(
        &addr,
        &[
            "--tls-ca",
            other_ca_file.to_str().unwrap(),
            "--auth-token-file",
            &token_file,
            "get",
            "greeting",
        ],
    );
    let stderr = one_line_failure(&untrusting);
    assert!(stderr.contains("TLS handshake"), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");

    // A plain-text client on the TLS listener: told so, at once.
    let plain = kv_client(
        &addr,
        &["--auth-token-file", &token_file, "get", "greeting"],
    );
    let stderr = one_line_failure(&plain);
    assert!(stderr.contains("needs TLS"), "{stderr}");

    // A TLS client on a plain listener: the handshake fails, at once.
    let plain_server = ServerProcess::start(&dir.path().join("plain-data"), &[]);
    let tls_on_plain = kv_client(
        &plain_server.addr().to_string(),
        &["--tls-ca", ca_path, "get", "greeting"],
    );
    let stderr = one_line_failure(&tls_on_plain);
    assert!(stderr.contains("TLS handshake"), "{stderr}");
}

/// Three members with peer mTLS; member `id` gets the certificate `cert_of(id)`.
struct Cluster {
    members: BTreeMap<u64, (String, ServerProcess)>,
}

fn start_cluster(dir: &Path, ca_file: &Path, cert_of: impl Fn(u64) -> (String, String)) -> Cluster {
    let addrs = free_addrs(6);
    let spec = (1..=3u64)
        .map(|id| {
            let i = (id - 1) as usize;
            format!("{id}={}/{}", addrs[2 * i], addrs[2 * i + 1])
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let i = (id - 1) as usize;
        let (cert, key) = cert_of(id);
        let node = id.to_string();
        let process = ServerProcess::start_on(
            &addrs[2 * i],
            &dir.join(format!("d{id}")),
            &[
                "--node-id",
                &node,
                "--peer-addr",
                &addrs[2 * i + 1],
                "--initial-cluster",
                &spec,
                "--peer-tls-cert",
                &cert,
                "--peer-tls-key",
                &key,
                "--peer-tls-ca",
                ca_file.to_str().unwrap(),
            ],
        );
        members.insert(id, (addrs[2 * i].clone(), process));
    }
    Cluster { members }
}

async fn status(addr: &str) -> ClusterStatusResponse {
    let client = Client::connect(addr).await.unwrap();
    match client
        .call(request::Command::ClusterStatus(ClusterStatusRequest {}))
        .await
        .unwrap()
    {
        response::Result::ClusterStatus(s) => s,
        other => panic!("not a status: {other:?}"),
    }
}

/// A client of the members at `addrs`, once they have a leader: a probe
/// write succeeded. (A write during the first elections may get
/// OUTCOME_UNKNOWN when its leader steps down; that is no test of TLS.)
async fn cluster_client(addrs: &[&str]) -> ClusterClient {
    let options = ClusterOptions {
        retry_for: Duration::from_secs(20),
        ..ClusterOptions::default()
    };
    let client = ClusterClient::new(addrs.iter().copied(), options).unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while let Err(e) = client.put("leader-probe", "x").await {
        assert!(Instant::now() < until, "no leader within 20 s: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_with_peer_mtls_form_a_cluster_and_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let ca_file = ca.write(dir.path(), "ca");
    let cluster = start_cluster(dir.path(), &ca_file, |id| {
        ca.issue(dir.path(), &format!("node{id}"))
    });
    let addrs: Vec<&str> = cluster.members.values().map(|(a, _)| a.as_str()).collect();
    let client = cluster_client(&addrs).await;
    let mut last = 0;
    for i in 0..20 {
        last = client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    assert_eq!(client.get("k7").await.unwrap().as_deref(), Some(&b"v7"[..]));

    // Every member applies every write: the peer links carry them.
    for (id, (addr, _)) in &cluster.members {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let s = status(addr).await;
            if s.has_log && s.applied_index + 1 >= last {
                break;
            }
            assert!(Instant::now() < until, "member {id} never caught up: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (id, (_, process)) in &cluster.members {
        let stderr = process.stderr();
        assert!(!stderr.contains("peer refused"), "member {id}:\n{stderr}");
        assert!(stderr.contains("peer_tls=true"), "member {id}:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_certificate_another_ca_signed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let rogue_ca = Ca::new("rogue CA");
    let ca_file = ca.write(dir.path(), "ca");
    // Member 3 trusts the cluster's CA, but its own certificate is the
    // rogue CA's.
    let cluster = start_cluster(dir.path(), &ca_file, |id| {
        if id == 3 {
            rogue_ca.issue(dir.path(), "node3")
        } else {
            ca.issue(dir.path(), &format!("node{id}"))
        }
    });
    let good: Vec<&str> = [1, 2]
        .iter()
        .map(|id| cluster.members[id].0.as_str())
        .collect();
    // Members 1 and 2 are a majority: they form the cluster without 3.
    let client = cluster_client(&good).await;
    for i in 0..5 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    // They refuse member 3 in the handshake, and say so.
    wait_until(
        "members 1 and 2 to log the refused peer",
        Duration::from_secs(20),
        || {
            [1, 2].iter().any(|id| {
                cluster.members[id]
                    .1
                    .stderr()
                    .lines()
                    .any(|l| l.contains("peer refused: TLS handshake failed"))
            })
        },
    )
    .await;
    // Member 3 got nothing: no entry beyond its own initial membership,
    // and no leader it could follow.
    let s3 = status(&cluster.members[&3].0).await;
    assert_ne!(s3.role, "leader", "{s3:?}");
    assert_eq!(s3.leader_id, 0, "{s3:?}");
    assert!(!s3.has_log || s3.applied_index == 0, "{s3:?}");
    let s1 = status(&cluster.members[&1].0).await;
    assert!(s1.applied_index >= 5, "{s1:?}");
}
