//! `kv-client --addr c1,c2,c3` against a real three-member cluster: a
//! command given the members in any order reaches the leader (followed from
//! a follower's NOT_LEADER), and after the leader is killed it reaches the
//! new one (the dead address is skipped).

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use e2e::{CLI_DEADLINE, ServerProcess};
use kv_client::{ClusterClient, ClusterOptions};

/// How long the cluster may take to elect a leader.
const ELECTION_DEADLINE: Duration = Duration::from_secs(30);

/// Ports that were free a moment ago (bound, then released).
fn free_addrs(n: usize) -> Vec<String> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect()
}

/// Three members started as DESIGN.md's cluster command line says; their
/// client addresses, and the processes (index i is node i + 1).
fn start_cluster() -> (Vec<String>, Vec<ServerProcess>, Vec<tempfile::TempDir>) {
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
    (clients, processes, dirs)
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
