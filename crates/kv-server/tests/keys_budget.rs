//! A key listing whose keys fill the frame to within a few bytes: the
//! answer is cut short (`truncated`) so that it fits `--max-frame` with its
//! `Response` around it (the id, the field tags and lengths, `truncated`),
//! never replaced by TOO_LARGE.
//!
//! Keys of 20,000 bytes are where a listing's counted cost (length plus
//! `KEY_LISTING_OVERHEAD`) is closest to their encoded size (a 3-byte length
//! varint), and the largest id makes the wrapper its largest: so the sweep
//! of `--max-frame` across every byte around two keys' cost finds any
//! budget whose margin for the wrapper is too small.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kv_proto::prost::Message;
use kv_proto::{ClientCodec, KeysRequest, Request, Response, request::Command, response};
use kv_server::{ServerConfig, run};
use kv_store::{KEY_LISTING_OVERHEAD, KeyValueStore, StoreOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);
const KEY_LEN: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_near_the_frame_limit_are_truncated_not_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), StoreOptions::default()).unwrap();
    // `put` blocks until its write is durable: not on a runtime worker.
    tokio::task::block_in_place(|| {
        for c in [b'a', b'b', b'c'] {
            store.put(&vec![c; KEY_LEN], b"v").unwrap();
        }
    });
    let two = 2 * (KEY_LEN + KEY_LISTING_OVERHEAD);
    for max_frame in two - 80..two + 80 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let config = ServerConfig {
            max_frame,
            ..ServerConfig::default()
        };
        let task = tokio::spawn(run(listener, store.clone(), config, shutdown.clone()));
        let mut conn = Framed::new(
            TcpStream::connect(addr).await.unwrap(),
            ClientCodec::new(1 << 20),
        );
        conn.send(Request::new(
            u64::MAX,
            Command::Keys(KeysRequest {
                prefix: Bytes::new(),
                limit: 0,
            }),
        ))
        .await
        .unwrap();
        let answer: Response = tokio::time::timeout(DEADLINE, conn.next())
            .await
            .expect("an answer in time")
            .expect("connection open")
            .unwrap()
            .unwrap();
        assert!(
            answer.encoded_len() <= max_frame,
            "max_frame {max_frame}: a {}-byte answer",
            answer.encoded_len()
        );
        match answer.result {
            Some(response::Result::Keys(keys)) => {
                assert!(
                    keys.truncated,
                    "max_frame {max_frame}: three keys never fit"
                );
                assert!(keys.keys.len() <= 2);
            }
            Some(response::Result::Error(e)) => {
                panic!(
                    "max_frame {max_frame}: error {:?} ({})",
                    e.code(),
                    e.message
                )
            }
            other => panic!("max_frame {max_frame}: unexpected {other:?}"),
        }
        drop(conn);
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
