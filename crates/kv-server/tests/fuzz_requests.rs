//! Random request bytes through the server's request path: frames of
//! random bytes, mutated encodings of every command, and well-formed
//! requests with random fields (cluster, backup and auth commands on a
//! single node included), one frame at a time on one connection.
//!
//! Every frame gets exactly one answer and the connection goes on (an
//! undecodable one gets INVALID_REQUEST); no server task panics; the server
//! still answers a fresh connection at the end. A seeded generator, so a
//! failure names the seed that reproduces it.
//!
//! Frames: `KV_FUZZ_CASES` (default 300); seed: `KV_FUZZ_SEED`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use kv_proto::prost::Message;
use kv_proto::{
    AuthRequest, BackupRequest, CheckpointRequest, ClientCodec, ClusterAddRequest,
    ClusterRemoveRequest, ClusterStatusRequest, DeleteRequest, ErrorCode, GetRequest, KeysRequest,
    PutRequest, Request, Response, request::Command, response,
};
use kv_server::{ServerConfig, run};
use kv_store::{KeyValueStore, StoreOptions, SyncPolicy, WalOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Framed};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);
const MAX_FRAME: usize = 4096;

/// xorshift64*: small, seeded, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, max: u64) -> Bytes {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn text(&mut self, max: u64) -> String {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| (b' ' + self.below(95) as u8) as char)
            .collect()
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn command(rng: &mut Rng) -> Command {
    match rng.below(10) {
        0 => Command::Get(GetRequest { key: rng.bytes(40) }),
        1 => Command::Put(PutRequest {
            key: rng.bytes(40),
            value: rng.bytes(200),
            ..Default::default()
        }),
        2 => Command::Delete(DeleteRequest {
            key: rng.bytes(40),
            ..Default::default()
        }),
        3 => Command::Keys(KeysRequest {
            prefix: rng.bytes(3),
            limit: rng.next() as u32,
        }),
        4 => Command::Checkpoint(CheckpointRequest {}),
        5 => Command::ClusterStatus(ClusterStatusRequest {}),
        6 => Command::ClusterAdd(ClusterAddRequest {
            node_id: rng.next(),
            client_addr: rng.text(30),
            peer_addr: rng.text(30),
        }),
        7 => Command::ClusterRemove(ClusterRemoveRequest {
            node_id: rng.next(),
        }),
        8 => Command::Backup(BackupRequest {
            start: rng.below(2) == 0,
            seq: rng.next() >> rng.below(64),
            offset: rng.next() >> rng.below(64),
        }),
        _ => Command::Auth(AuthRequest {
            token: rng.bytes(40),
        }),
    }
}

/// One frame body: random bytes, a mutated request, or a whole one.
fn body(rng: &mut Rng) -> (Bytes, Option<u64>) {
    match rng.below(3) {
        0 => (rng.bytes(300), None),
        1 => {
            let mut b = Request::new(rng.next(), command(rng)).encode_to_vec();
            for _ in 0..=rng.below(4) {
                if !b.is_empty() {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] = rng.next() as u8;
                }
            }
            (b.into(), None)
        }
        _ => {
            let id = rng.next();
            let body = Request::new(id, command(rng)).encode_to_vec();
            (body.into(), Some(id))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_get_one_answer_each_and_the_connection_goes_on() {
    let panics = Arc::new(AtomicUsize::new(0));
    let previous = std::panic::take_hook();
    let counted = Arc::clone(&panics);
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));

    let seed = env("KV_FUZZ_SEED", 0x5eed_f00d);
    let frames = env("KV_FUZZ_CASES", 300);
    let mut rng = Rng(seed | 1);

    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        wal: WalOptions {
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        },
        ..StoreOptions::default()
    };
    let store = KeyValueStore::open(dir.path(), options).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        max_frame: MAX_FRAME,
        ..ServerConfig::default()
    };
    let task = tokio::spawn(run(listener, store, config, shutdown.clone()));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut codec = ClientCodec::new(1 << 20);
    let mut buf = BytesMut::new();
    for n in 0..frames {
        let (body, id) = body(&mut rng);
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_u32(body.len() as u32);
        frame.put_slice(&body);
        stream.write_all(&frame).await.unwrap();
        let answer: Response = loop {
            if let Some(item) = codec.decode(&mut buf).unwrap() {
                break item.unwrap();
            }
            use tokio::io::AsyncReadExt;
            let read = tokio::time::timeout(DEADLINE, stream.read_buf(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("seed {seed:#x}, frame {n}: no answer in time"))
                .unwrap();
            assert!(
                read > 0,
                "seed {seed:#x}, frame {n}: the server closed the connection"
            );
        };
        if let Some(id) = id {
            assert_eq!(answer.id, id, "seed {seed:#x}, frame {n}");
        }
        if Request::decode(body.clone()).is_err() {
            match &answer.result {
                Some(response::Result::Error(e)) => {
                    assert_eq!(
                        e.code(),
                        ErrorCode::InvalidRequest,
                        "seed {seed:#x}, frame {n}"
                    )
                }
                other => panic!("seed {seed:#x}, frame {n}: undecodable, answered {other:?}"),
            }
        }
    }

    // The server is well: a fresh connection is served.
    let mut fresh = Framed::new(
        TcpStream::connect(addr).await.unwrap(),
        ClientCodec::default(),
    );
    fresh
        .send(Request::new(
            1,
            Command::Get(GetRequest {
                key: Bytes::from_static(b"k"),
            }),
        ))
        .await
        .unwrap();
    let answer = tokio::time::timeout(DEADLINE, fresh.next())
        .await
        .expect("an answer in time")
        .expect("connection open")
        .unwrap()
        .unwrap();
    assert!(
        matches!(answer.result, Some(response::Result::Get(_))),
        "{answer:?}"
    );
    drop(fresh);
    drop(stream);
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "seed {seed:#x}: a server task panicked"
    );
}
