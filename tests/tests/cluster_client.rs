//! `kv-client --addr c1,c2,c3` against a real three-member cluster: a
//! command given the members in any order reaches the leader (followed from
//! a follower's NOT_LEADER), and after the leader is killed it reaches the
//! new one (the dead address is skipped).

use std::process::Output;
use std::time::{Duration, Instant};

use e2e::{CLI_DEADLINE, ServerProcess, free_addrs};
use kv_client::{ClusterClient, ClusterOptions};

/// How long the cluster may take to elect a leader.
const ELECTION_DEADLINE: Duration = Duration::from_secs(30);

/// Three members started as DESIGN.md's cluster command line says; their
/// client addresses, and the processes (index i is node i + 1).
fn start_cluster() -> (Vec<String>, Vec<ServerProcess>, Vec<tempfile::TempDir>) {
    let (clients, processes, dirs, _) = start_cluster_with_spec();
    (clients, processes, dirs)
}

/// As [`start_cluster`], also returning the `--initial-cluster` given.
fn start_cluster_with_spec() -> (
    Vec<String>,
    Vec<ServerProcess>,
    Vec<tempfile::TempDir>,
    String,
) {
    let addrs = free_addrs(6);
    let (clients, peers): (Vec<String>, Vec<String>) = (0..3)
        .map(|i| (addrs[2 * i].clone(), addrs[2 * i + 1].clone()))
        .unzip();
    let spec = (0..3)
        .map(|i| format!("{}={}/{}", i + 1, clients[i], peers[i]))
        .collect::<Vec<_>>()
        .join(",");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let processes = (0..3)
        .map(|i| {
            let node = (i + 1).to_string();
            ServerProcess::start_on(
                &clients[i],
                dirs[i].path(),
                &[
                    "--node-id",
                    &node,
                    "--peer-addr",
                    &peers[i],
                    "--initial-cluster",
                    &spec,
                ],
            )
        })
        .collect();
    (clients, processes, dirs, spec)
}

/// The client address of the leader, once there is one: a write through a
/// ClusterClient succeeded there.
async fn wait_for_leader(members: &[String]) -> String {
    let client = ClusterClient::new(members.iter().cloned(), ClusterOptions::default()).unwrap();
    let until = Instant::now() + ELECTION_DEADLINE;
    loop {
        if client.put("leader-probe", "x").await.is_ok() {
            return client.connected_to().await.expect("connected after a put");
        }
        assert!(
            Instant::now() < until,
            "no leader within {ELECTION_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `kv-client --addr ADDRS ARGS...`.
async fn kv(addrs: &str, args: &[&str]) -> Output {
    let mut command = e2e::command("kv-client");
    command.arg("--addr").arg(addrs).args(args);
    tokio::task::spawn_blocking(move || e2e::run_to_exit(command, b"", CLI_DEADLINE))
        .await
        .expect("the CLI's thread")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn assert_put_then_get(addrs: &str, key: &str, value: &str) {
    let put = kv(addrs, &["put", key, value]).await;
    assert_eq!(
        (put.status.code(), text(&put.stdout).as_str()),
        (Some(0), "OK\n"),
        "put {key} via {addrs}: {}",
        text(&put.stderr)
    );
    let get = kv(addrs, &["get", key]).await;
    assert_eq!(
        (get.status.code(), text(&get.stdout).as_str()),
        (Some(0), value),
        "get {key} via {addrs}: {}",
        text(&get.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_with_every_member_reaches_the_leader_in_any_order() {
    let (members, mut processes, _dirs) = start_cluster();
    let leader = wait_for_leader(&members).await;

    // Each member first in turn: two of the three orders start on a
    // follower, whose NOT_LEADER the CLI must follow.
    let mut started_on_a_follower = 0;
    for first in 0..3 {
        let order: Vec<&str> = (0..3).map(|i| members[(first + i) % 3].as_str()).collect();
        if order[0] != leader {
            started_on_a_follower += 1;
        }
        let addrs = order.join(",");
        assert_put_then_get(&addrs, &format!("k{first}"), &format!("v{first}")).await;
    }
    assert_eq!(started_on_a_follower, 2);

    // Kill the leader; once a new one is elected, the same command line
    // (the dead member first) reaches it, and the earlier writes are there.
    let dead = members.iter().position(|m| *m == leader).unwrap();
    processes[dead].kill9();
    let survivors: Vec<String> = members.iter().filter(|m| **m != leader).cloned().collect();
    let new_leader = wait_for_leader(&survivors).await;
    assert_ne!(new_leader, leader);
    let order: Vec<&str> = (0..3).map(|i| members[(dead + i) % 3].as_str()).collect();
    let addrs = order.join(",");
    assert_put_then_get(&addrs, "after", "failover").await;
    for first in 0..3 {
        let get = kv(&addrs, &["get", &format!("k{first}")]).await;
        assert_eq!(
            (get.status.code(), text(&get.stdout)),
            (Some(0), format!("v{first}")),
            "{}",
            text(&get.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_add_and_remove_from_the_cli() {
    let (members, _processes, _dirs, spec) = start_cluster_with_spec();
    let leader = wait_for_leader(&members).await;
    let all = members.join(",");

    // Status: one line per member as it sees itself, then the leader.
    let until = Instant::now() + ELECTION_DEADLINE;
    let status = loop {
        let out = kv(&all, &["cluster", "status"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let status = text(&out.stdout);
        // Settled: every member answered and one of them leads.
        if status.matches(" leader term=").count() == 1 && !status.contains("unreachable") {
            break status;
        }
        assert!(Instant::now() < until, "the views never settled:\n{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 4, "{status}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&leader) && l.contains(" leader term=")),
        "{status}"
    );
    assert!(lines[3].starts_with("leader: "), "{status}");

    // A fourth member started with --join is added, catches up and is
    // listed; then member 3 is removed.
    let addrs = free_addrs(2);
    let dir = tempfile::tempdir().unwrap();
    let _fourth = ServerProcess::start_on(
        &addrs[0],
        dir.path(),
        &[
            "--node-id",
            "4",
            "--join",
            "--peer-addr",
            &addrs[1],
            "--initial-cluster",
            &spec,
        ],
    );
    let member4 = format!("{}/{}", addrs[0], addrs[1]);
    let added = kv(&all, &["cluster", "add", "4", &member4]).await;
    assert_eq!(added.status.code(), Some(0), "{}", text(&added.stderr));
    assert_eq!(
        text(&added.stdout).lines().count(),
        5,
        "{}",
        text(&added.stdout)
    );
    assert!(text(&added.stdout).contains(&addrs[0]));
    // The new member holds the data: after a write through the cluster,
    // it applies as far as the leader.
    assert_put_then_get(&all, "after-add", "yes").await;
    let removed = kv(&all, &["cluster", "remove", "3"]).await;
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed.stderr));
    assert_eq!(
        text(&removed.stdout).lines().count(),
        4,
        "{}",
        text(&removed.stdout)
    );
    let with4 = format!("{all},{}", addrs[0]);
    assert_put_then_get(&with4, "after-remove", "yes").await;
}
