//! Our RESP command parser (`src/redis/resp.rs`) against redis-protocol's
//! zero-copy decoder, on the same buffer of pipelined commands:
//! `cargo bench -p kv-server --bench resp_parse`. Prints nanoseconds per
//! command for each, three rounds; the figures are in ARCHITECTURE.md.
//!
//! redis-protocol 6 decodes RESP2/RESP3 frames only: it has no inline
//! commands (`PING\r\n`, what telnet and redis-benchmark's PING_INLINE
//! send) and no bound on a bulk length or a line before it buffers them,
//! both of which the listener needs; this measures whether it would at
//! least be faster on the frames it does decode.

#![allow(dead_code)]

#[path = "../src/redis/resp.rs"]
mod resp;

use std::time::Instant;

use bytes::BytesMut;

/// `SET key value` commands, 100-byte values, as redis-benchmark sends.
fn pipeline(n: usize) -> Vec<u8> {
    let value = "x".repeat(100);
    let mut out = Vec::new();
    for i in 0..n {
        let key = format!("key:{:012}", i % 100_000);
        out.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                key.len(),
                value.len()
            )
            .as_bytes(),
        );
    }
    out
}

fn main() {
    let n = 1_000_000;
    let input = pipeline(n);
    let limits = resp::Limits {
        max_bulk: 512 << 20,
        max_inline: 64 << 10,
    };
    for round in 1..=3 {
        let mut buf = BytesMut::from(&input[..]);
        let started = Instant::now();
        let mut ours = 0;
        while let Ok(Some(args)) = resp::parse_command(&mut buf, limits) {
            ours += args.len();
        }
        let ours_ns = started.elapsed().as_nanos() as f64 / n as f64;

        let mut buf = BytesMut::from(&input[..]);
        let started = Instant::now();
        let mut theirs = 0;
        while let Ok(Some((frame, _, _))) =
            redis_protocol::resp2::decode::decode_bytes_mut(&mut buf)
        {
            if let redis_protocol::resp2::types::BytesFrame::Array(args) = frame {
                theirs += args.len();
            }
        }
        let theirs_ns = started.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(ours, 3 * n, "ours parsed {ours} arguments");
        assert_eq!(theirs, 3 * n, "redis-protocol decoded {theirs} arguments");
        println!(
            "round {round}: ours {ours_ns:.0} ns/command, redis-protocol 6 \
             decode_bytes_mut {theirs_ns:.0} ns/command ({n} SET commands)"
        );
    }
}
