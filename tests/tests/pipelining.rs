//! Thousands of requests on one connection, written without waiting for any
//! answer: every one is answered, in request order, with its own id, and a
//! read sees the writes pipelined before it.

use std::time::Duration;

use bytes::Bytes;
use e2e::{RawConnection, ServerProcess, read_responses};
use kv_proto::{GetRequest, PutRequest, Request, request::Command, response};
use tokio::io::AsyncWriteExt;

const REQUESTS: u64 = 5000;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("pipe-{i:05}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);

    // Every third request reads the key the request before it wrote (and
    // only it writes), so a read overtaking a pending write on its
    // connection would show.
    let requests: Vec<Request> = (0..REQUESTS)
        .map(|id| {
            let command = if id % 3 == 2 {
                Command::Get(GetRequest { key: key(id - 1) })
            } else {
                Command::Put(PutRequest {
                    key: key(id),
                    value: Bytes::from(format!("value-{id}")),
                    ..Default::default()
                })
            };
            Request::new(id, command)
        })
        .collect();
    let wire = RawConnection::encode(&requests);

    let conn = RawConnection::connect(server.addr()).await.unwrap();
    let (read_half, mut write_half) = conn.into_inner().into_split();
    // Written all at once by one task while another reads: the server must
    // keep reading while earlier writes wait for their syncs.
    let writer = tokio::spawn(async move {
        write_half.write_all(&wire).await.unwrap();
        write_half
    });
    let responses = read_responses(read_half, REQUESTS as usize, Duration::from_secs(120)).await;
    let _write_half = writer.await.unwrap();

    let mut last_seq = 0;
    for (i, response) in responses.iter().enumerate() {
        let id = i as u64;
        assert_eq!(response.id, id, "response {i} out of order");
        match response.result.as_ref().expect("a result") {
            response::Result::Put(put) => {
                assert_ne!(id % 3, 2, "request {id} was a get");
                assert!(put.seq > last_seq, "seq must grow in request order");
                last_seq = put.seq;
            }
            response::Result::Get(get) => {
                assert_eq!(id % 3, 2, "request {id} was a put");
                assert!(get.found, "get {id} must see the put before it");
                assert_eq!(get.value, Bytes::from(format!("value-{}", id - 1)));
            }
            other => panic!("request {id}: unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_connections_interleave_without_mixing_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let mut tasks = Vec::new();
    for conn_id in 0..8u64 {
        let addr = server.addr();
        tasks.push(tokio::spawn(async move {
            let requests: Vec<Request> = (0..500u64)
                .map(|i| {
                    Request::new(
                        conn_id * 1_000_000 + i,
                        Command::Put(PutRequest {
                            key: Bytes::from(format!("conn{conn_id}-{i}")),
                            value: Bytes::from_static(b"v"),
                            ..Default::default()
                        }),
                    )
                })
                .collect();
            let mut conn = RawConnection::connect(addr).await.unwrap();
            conn.send_raw(&RawConnection::encode(&requests))
                .await
                .unwrap();
            let read = conn.into_inner();
            let responses = read_responses(read, requests.len(), Duration::from_secs(120)).await;
            for (request, response) in requests.iter().zip(&responses) {
                assert_eq!(response.id, request.id);
                assert!(matches!(response.result, Some(response::Result::Put(_))));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
