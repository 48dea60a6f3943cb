//! The upgrade path (README, "Upgrading a single node to a cluster"): a
//! single node's data directory restarted as a one-member cluster keeps
//! every key, members added to it catch up and take over, a restart does
//! not import again, a kill -9 in the middle of the import is redone, and
//! every start that would hide data is refused with one line.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::{CLI_DEADLINE, EXIT_DEADLINE, ServerProcess, free_addrs};
use kv_client::{Client, ClusterClient, ClusterOptions};

/// How long a cluster may take to elect a leader or catch a member up.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);

/// What the single node held when it stopped.
type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// One member's client and peer addresses.
struct Member {
    id: u64,
    client: String,
    peer: String,
}

impl Member {
    fn new(id: u64) -> Member {
        let addrs = free_addrs(2);
        Member {
            id,
            client: addrs[0].clone(),
            peer: addrs[1].clone(),
        }
    }

    /// `ID=CLIENT/PEER`, as `--initial-cluster` and `cluster add` take it.
    fn spec(&self) -> String {
        format!("{}={}/{}", self.id, self.client, self.peer)
    }

    /// The flags that start it as a member of `initial_cluster`.
    fn args(&self, initial_cluster: &str, join: bool) -> Vec<String> {
        let mut args = vec![
            "--node-id".to_string(),
            self.id.to_string(),
            "--peer-addr".to_string(),
            self.peer.clone(),
            "--initial-cluster".to_string(),
            initial_cluster.to_string(),
        ];
        if join {
            args.push("--join".to_string());
        }
        args
    }

    fn start(&self, data_dir: &Path, initial_cluster: &str, join: bool) -> ServerProcess {
        let args = self.args(initial_cluster, join);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServerProcess::start_on(&self.client, data_dir, &args)
    }
}

/// Writes a single node's worth of history through `addr`: overwrites,
/// deletes, binary keys and values, and a checkpoint in the middle, so
/// that both the snapshot and the log after it hold data. Returns what
/// every key must hold.
async fn write_history(addr: std::net::SocketAddr) -> Model {
    async fn put(client: &Client, model: &mut Model, k: Vec<u8>, v: Vec<u8>) {
        client.put(k.clone(), v.clone()).await.unwrap();
        model.insert(k, v);
    }
    let client = Client::connect(addr).await.unwrap();
    let mut model = Model::new();
    for i in 0..200u32 {
        put(
            &client,
            &mut model,
            format!("key-{i:03}").into_bytes(),
            b"before".to_vec(),
        )
        .await;
    }
    let binary_key = vec![0u8, 0xff, 0x80, b'\n', 0];
    let binary_value: Vec<u8> = (0..=255u8).rev().collect();
    put(&client, &mut model, binary_key, binary_value).await;
    put(
        &client,
        &mut model,
        b"overwritten".to_vec(),
        b"first".to_vec(),
    )
    .await;
    put(
        &client,
        &mut model,
        b"deleted-after-checkpoint".to_vec(),
        b"x".to_vec(),
    )
    .await;
    put(
        &client,
        &mut model,
        b"deleted-before-checkpoint".to_vec(),
        b"x".to_vec(),
    )
    .await;
    client.delete("deleted-before-checkpoint").await.unwrap();
    model.remove(&b"deleted-before-checkpoint"[..]);
    client.checkpoint().await.unwrap();
    // After the checkpoint: only in the log.
    for i in (0..200u32).step_by(4) {
        put(
            &client,
            &mut model,
            format!("key-{i:03}").into_bytes(),
            format!("after-{i}").into_bytes(),
        )
        .await;
    }
    put(
        &client,
        &mut model,
        b"overwritten".to_vec(),
        b"second".to_vec(),
    )
    .await;
    put(
        &client,
        &mut model,
        b"only-in-log".to_vec(),
        vec![0u8; 3000],
    )
    .await;
    client.delete("deleted-after-checkpoint").await.unwrap();
    model.remove(&b"deleted-after-checkpoint"[..]);
    for i in (1..200u32).step_by(9) {
        let key = format!("key-{i:03}").into_bytes();
        client.delete(key.clone()).await.unwrap();
        model.remove(&key);
    }
    model
}

/// Stops a server with SIGTERM and checks that it exited cleanly.
fn stop(mut server: ServerProcess) {
    server.sigterm();
    let status = server.wait_exit(EXIT_DEADLINE);
    assert!(status.success(), "{status:?}; stderr:\n{}", server.stderr());
}

fn cluster_client(members: &[&Member]) -> ClusterClient {
    ClusterClient::new(
        members.iter().map(|m| m.client.clone()),
        ClusterOptions::default(),
    )
    .unwrap()
}

/// Polls `get` of `key` until the cluster answers (it may be electing).
async fn get(client: &ClusterClient, key: &[u8]) -> Option<Bytes> {
    let until = Instant::now() + CLUSTER_DEADLINE;
    loop {
        match client.get(key.to_vec()).await {
            Ok(value) => return value,
            Err(e) => assert!(
                Instant::now() < until,
                "get {key:?}: no answer within {CLUSTER_DEADLINE:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every key of `model` has its value, and the deleted ones are absent.
async fn assert_holds(client: &ClusterClient, model: &Model, context: &str) {
    for (key, value) in model {
        let got = get(client, key).await;
        assert_eq!(got.as_deref(), Some(&value[..]), "{context}: key {key:?}");
    }
    for gone in [
        &b"deleted-before-checkpoint"[..],
        b"deleted-after-checkpoint",
        b"key-001",
        b"key-010",
    ] {
        assert_eq!(get(client, gone).await, None, "{context}: {gone:?}");
    }
    let keys = client.keys("", 0).await.unwrap();
    assert_eq!(keys.keys.len(), model.len(), "{context}: key count");
}

/// Runs `kv-client --addr ADDR ARGS...`.
async fn kv(addr: &str, args: &[&str]) -> Output {
    let mut command = e2e::command("kv-client");
    command.arg("--addr").arg(addr).args(args);
    tokio::task::spawn_blocking(move || e2e::run_to_exit(command, b"", CLI_DEADLINE))
        .await
        .expect("the CLI's thread")
}

/// Runs `kv-server` with `args` on `data_dir`, expecting it to refuse to
/// start: its exit code and stderr.
fn refused_start(data_dir: &Path, args: &[String]) -> (Option<i32>, String) {
    let addr = free_addrs(1).remove(0);
    let mut command = e2e::command("kv-server");
    command
        .arg("--addr")
        .arg(&addr)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn");
    let out = e2e::run_to_exit(command, b"", EXIT_DEADLINE);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_becomes_the_first_of_three_members_keeping_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let single = ServerProcess::start(dir.path(), &[]);
    let model = write_history(single.addr()).await;
    stop(single);

    // Restarted as a one-member cluster on the same directory: imported.
    let m1 = Member::new(1);
    let initial = m1.spec();
    let first = m1.start(dir.path(), &initial, false);
    assert!(
        first.stderr().contains("importing the single-node data"),
        "{}",
        first.stderr()
    );
    assert!(dir.path().join("single-node.imported/wal").is_dir());
    assert!(!dir.path().join("wal").exists());
    let one = cluster_client(&[&m1]);
    assert_holds(&one, &model, "after the import").await;

    // Members 2 and 3 join (with the cluster's --initial-cluster, which
    // names it) and are added from the CLI: they catch up from the
    // leader's snapshot and log.
    let m2 = Member::new(2);
    let m3 = Member::new(3);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let _second = m2.start(dirs[0].path(), &initial, true);
    let _third = m3.start(dirs[1].path(), &initial, true);
    for m in [&m2, &m3] {
        let member = format!("{}/{}", m.client, m.peer);
        let added = kv(&m1.client, &["cluster", "add", &m.id.to_string(), &member]).await;
        assert_eq!(
            added.status.code(),
            Some(0),
            "add {}: {}",
            m.id,
            String::from_utf8_lossy(&added.stderr)
        );
    }
    let all = cluster_client(&[&m1, &m2, &m3]);
    all.put("after-upgrade", "three members").await.unwrap();

    // The first member dies: a new leader among the others serves every
    // key, imported or written since.
    let mut first = first;
    first.kill9();
    let survivors = cluster_client(&[&m2, &m3]);
    let mut model = model;
    model.insert(b"after-upgrade".to_vec(), b"three members".to_vec());
    assert_holds(&survivors, &model, "after member 1 died").await;
    survivors.put("after-failover", "yes").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_does_not_import_again() {
    let dir = tempfile::tempdir().unwrap();
    let single = ServerProcess::start(dir.path(), &[]);
    let client = Client::connect(single.addr()).await.unwrap();
    client.put("k", "single-node value").await.unwrap();
    client.put("kept", "yes").await.unwrap();
    drop(client);
    stop(single);

    let m1 = Member::new(1);
    let member = m1.start(dir.path(), &m1.spec(), false);
    let cluster = cluster_client(&[&m1]);
    assert_eq!(
        get(&cluster, b"k").await.as_deref(),
        Some(&b"single-node value"[..])
    );
    cluster.put("k", "written after the upgrade").await.unwrap();
    cluster.delete("kept").await.unwrap();
    stop(member);

    let member = m1.start(dir.path(), &m1.spec(), false);
    assert!(
        !member.stderr().contains("importing"),
        "imported again:\n{}",
        member.stderr()
    );
    assert_eq!(
        get(&cluster, b"k").await.as_deref(),
        Some(&b"written after the upgrade"[..])
    );
    assert_eq!(get(&cluster, b"kept").await, None);
    stop(member);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_the_middle_of_the_import_is_redone_on_restart() {
    // Enough data that recovering the single node and writing the import
    // take far longer than noticing the log line and killing.
    let dir = tempfile::tempdir().unwrap();
    let single = ServerProcess::start(dir.path(), &[]);
    let client = Client::connect(single.addr()).await.unwrap();
    let value = vec![b'v'; 2000];
    let mut model = Model::new();
    for chunk in 0..80u32 {
        let puts = (0..256u32).map(|i| {
            let key = format!("bulk-{chunk:03}-{i:03}");
            model.insert(key.clone().into_bytes(), value.clone());
            client.put(key, value.clone())
        });
        for result in futures::future::join_all(puts).await {
            result.unwrap();
        }
    }
    drop(client);
    stop(single);

    let m1 = Member::new(1);
    let mut command = e2e::command("kv-server");
    command
        .arg("--addr")
        .arg(&m1.client)
        .arg("--data-dir")
        .arg(dir.path())
        .args(m1.args(&m1.spec(), false))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn kv-server");
    let stderr = child.stderr.take().expect("piped stderr");
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("importing the single-node data") {
                let _ = seen_tx.send(());
            }
        }
    });
    let seen = seen_rx.recv_timeout(CLUSTER_DEADLINE);
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.is_ok(), "the import never started");
    assert!(
        !dir.path().join("raft/imported").exists(),
        "the import had finished before the kill: the test needs more data"
    );
    assert!(
        dir.path().join("wal").is_dir(),
        "single-node files moved too early"
    );

    let member = m1.start(dir.path(), &m1.spec(), false);
    assert!(member.stderr().contains("importing the single-node data"));
    let cluster = cluster_client(&[&m1]);
    let keys = {
        let until = Instant::now() + CLUSTER_DEADLINE;
        loop {
            match cluster.keys("bulk-", 0).await {
                Ok(page) if !page.truncated => break page.keys,
                Ok(_) => panic!("listing truncated"),
                Err(e) => assert!(Instant::now() < until, "no answer: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(keys.len(), model.len());
    for key in model.keys().step_by(97) {
        assert_eq!(
            get(&cluster, key).await.as_deref(),
            Some(&value[..]),
            "{key:?}"
        );
    }
    stop(member);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_that_would_hide_data_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let single = ServerProcess::start(dir.path(), &[]);
    let client = Client::connect(single.addr()).await.unwrap();
    client.put("k", "v").await.unwrap();
    drop(client);
    stop(single);

    // Single-node data given to a member of a three-member cluster, or to
    // one joining a cluster: refused, saying how to upgrade.
    let members: Vec<Member> = (1..=3).map(Member::new).collect();
    let three = members
        .iter()
        .map(Member::spec)
        .collect::<Vec<_>>()
        .join(",");
    for args in [
        members[0].args(&three, false),
        Member::new(4).args(&three, true),
    ] {
        let (code, stderr) = refused_start(dir.path(), &args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("one-member cluster"), "{stderr}");
        assert!(stderr.contains("cluster add"), "{stderr}");
    }
    assert!(
        !dir.path().join("raft").exists(),
        "the refusal wrote Raft state"
    );

    // A member's directory (this one after its upgrade, and a fresh
    // member's) given to a single node: refused.
    let m1 = Member::new(1);
    let member = m1.start(dir.path(), &m1.spec(), false);
    stop(member);
    let fresh = tempfile::tempdir().unwrap();
    let m5 = Member::new(5);
    let member = m5.start(fresh.path(), &m5.spec(), false);
    stop(member);
    for data_dir in [dir.path(), fresh.path()] {
        let (code, stderr) = refused_start(data_dir, &[]);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("cluster member's state"), "{stderr}");
    }

    // The upgraded member still starts and serves the single node's key.
    let member = m1.start(dir.path(), &m1.spec(), false);
    let cluster = cluster_client(&[&m1]);
    assert_eq!(get(&cluster, b"k").await.as_deref(), Some(&b"v"[..]));
    stop(member);
}
