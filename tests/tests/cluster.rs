//! Three kv-server processes on 127.0.0.1 form a cluster with the command
//! DESIGN.md gives; the leader is killed with SIGKILL under load from 16
//! clients, twice; every acknowledged write must be on the new leader, and
//! the time from the kill to the first acknowledged write there is printed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{ServerProcess, free_addrs};
use kv_client::{Client, ClientError};
use kv_proto::{ClusterStatusRequest, ErrorCode, request, response};

struct Member {
    client: String,
    peer: String,
    dir: tempfile::TempDir,
    process: Option<ServerProcess>,
}

struct Cluster {
    members: BTreeMap<u64, Member>,
    spec: String,
}

impl Cluster {
    fn start(n: u64) -> Cluster {
        let addrs = free_addrs(2 * n as usize);
        let mut members = BTreeMap::new();
        for id in 1..=n {
            let i = (id - 1) as usize;
            members.insert(
                id,
                Member {
                    client: addrs[2 * i].clone(),
                    peer: addrs[2 * i + 1].clone(),
                    dir: tempfile::tempdir().expect("temp dir"),
                    process: None,
                },
            );
        }
        let spec = members
            .iter()
            .map(|(id, m)| format!("{id}={}/{}", m.client, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster { members, spec };
        for id in 1..=n {
            cluster.start_member(id);
        }
        cluster
    }

    fn start_member(&mut self, id: u64) {
        let spec = self.spec.clone();
        let m = self.members.get_mut(&id).expect("member");
        let node = id.to_string();
        m.process = Some(ServerProcess::start_on(
            &m.client,
            m.dir.path(),
            &[
                "--node-id",
                &node,
                "--peer-addr",
                &m.peer,
                "--initial-cluster",
                &spec,
            ],
        ));
    }

    /// The member whose put succeeds, trying them all until `deadline`.
    async fn leader(&self, deadline: Duration) -> (u64, Client) {
        let until = Instant::now() + deadline;
        loop {
            for (id, m) in &self.members {
                if m.process.is_none() {
                    continue;
                }
                if let Ok(client) = Client::connect(m.client.as_str()).await
                    && client.put("leader-probe", "x").await.is_ok()
                {
                    return (*id, client);
                }
            }
            assert!(Instant::now() < until, "no leader within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let (first_leader, probe) = cluster.leader(Duration::from_secs(20)).await;

    // A follower refuses writes and names the leader.
    let follower = *cluster
        .members
        .keys()
        .find(|id| **id != first_leader)
        .unwrap();
    let f = Client::connect(cluster.members[&follower].client.as_str())
        .await
        .unwrap();
    match f.put("k", "v").await {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::NotLeader);
            assert!(
                message.contains(&cluster.members[&first_leader].client),
                "{message}"
            );
        }
        other => panic!("a follower took a write: {other:?}"),
    }
    drop(probe);

    // Every member's view: three members, and (once the views settle, a
    // follower may not have heard the latest heartbeat yet) one leader
    // that they all name.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let mut views = Vec::new();
        for m in cluster.members.values() {
            let c = Client::connect(m.client.as_str()).await.unwrap();
            let answer = c
                .call(request::Command::ClusterStatus(ClusterStatusRequest {}))
                .await
                .unwrap();
            let response::Result::ClusterStatus(s) = answer else {
                panic!("not a status: {answer:?}");
            };
            assert_eq!(s.members.len(), 3, "{s:?}");
            // A member that has not yet heard from the leader may have
            // applied nothing: part of settling, not a failure.
            let applied = s.has_log && s.applied_index > 0;
            views.push((s.leader_id, s.role == "leader", s.node_id, applied));
        }
        let leader = views[0].0;
        let agreed = leader != 0
            && views.iter().all(|v| v.0 == leader && v.3)
            && views.iter().filter(|v| v.1).map(|v| v.2).eq([leader]);
        if agreed {
            break;
        }
        assert!(
            Instant::now() < until,
            "the members never agreed: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    for round in 0..2 {
        let (leader, _) = cluster.leader(Duration::from_secs(20)).await;
        let addr = cluster.members[&leader].client.clone();
        // 16 clients write to the leader until it dies.
        let mut writers = Vec::new();
        for c in 0..16 {
            let addr = addr.clone();
            let acked = Arc::clone(&acked);
            writers.push(tokio::spawn(async move {
                let Ok(client) = Client::connect(addr.as_str()).await else {
                    return;
                };
                for i in 0.. {
                    let key = format!("r{round}-c{c}-{i}");
                    match client.put(key.clone(), key.clone()).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(key.clone(), key);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let some writes be acknowledged, then kill the leader.
        let until = Instant::now() + Duration::from_secs(20);
        while acked.lock().unwrap().len() < 200 * (round + 1) {
            assert!(Instant::now() < until, "the load made no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let killed = Instant::now();
        if let Some(p) = cluster.members.get_mut(&leader).unwrap().process.as_mut() {
            p.kill9();
        }
        cluster.members.get_mut(&leader).unwrap().process = None;
        for w in writers {
            let _ = w.await;
        }
        let (new_leader, client) = cluster.leader(Duration::from_secs(20)).await;
        println!(
            "round {round}: leader {leader} killed; member {new_leader} acknowledged a write \
             {:?} after the kill",
            killed.elapsed()
        );
        assert_ne!(new_leader, leader);
        let acked = acked.lock().unwrap().clone();
        for (key, value) in &acked {
            let got = client.get(key.clone()).await.unwrap();
            assert_eq!(
                got.as_deref(),
                Some(value.as_bytes()),
                "acknowledged {key} lost"
            );
        }
        // The killed member comes back and rejoins from its data directory.
        cluster.start_member(leader);
    }
}
