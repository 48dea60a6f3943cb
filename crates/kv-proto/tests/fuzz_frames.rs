//! Randomized input to the frame codec and to every message's decoder:
//! random and mutated byte streams, cut at random points, under random
//! frame limits. Nothing panics; an oversized length is a typed
//! `FrameTooLarge` before its body is read; a stream cut inside a frame is
//! `Truncated` at its end; the buffer grows with the bytes received, not
//! with the lengths claimed; whatever decodes re-encodes to a message that
//! decodes the same.
//!
//! Cases: `KV_FUZZ_CASES` (default 256 per property).

use bytes::{BufMut, Bytes, BytesMut};
use kv_proto::{
    ClientCodec, CodecError, FrameCodec, GetRequest, LogEntry, PeerRequest, PeerResponse,
    PutRequest, RaftEntry, RaftMembership, RaftSnapshotMeta, RaftState, RaftVote, Request,
    Response, ServerCodec, SnapshotEntry, SnapshotHeader, request,
};
use proptest::prelude::*;
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

/// Cases per property: `KV_FUZZ_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("KV_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Room the decoder asks for beyond what has arrived (its documented
/// 64 KiB). `BytesMut::reserve` may double a buffer that lacks room, so
/// the capacity bound below is twice what is buffered plus this.
const RESERVE_AHEAD: usize = 64 * 1024;

/// Feeds `wire` to a codec in pieces cut at `cuts`, then ends the stream.
/// Checks every bound on the way; returns how many frames decoded (as
/// messages or as item errors) and how the stream ended.
fn feed<D: Message + Default, E>(
    codec: &mut FrameCodec<D, E>,
    wire: &[u8],
    cuts: &[usize],
) -> Result<(usize, Option<CodecError>), TestCaseError> {
    let max = codec.max_frame_size();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.push(wire.len());
    cuts.sort_unstable();
    let mut buf = BytesMut::new();
    let mut at = 0;
    let mut frames = 0;
    for cut in cuts {
        buf.extend_from_slice(&wire[at..cut]);
        at = cut;
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(_item)) => frames += 1,
                Ok(None) => {
                    prop_assert!(
                        buf.capacity() <= 2 * (before.max(wire.len()) + RESERVE_AHEAD) + 1024,
                        "capacity {} for {} bytes buffered",
                        buf.capacity(),
                        before
                    );
                    break;
                }
                Err(e) => {
                    // Only an oversized length is fatal before the end, and
                    // it is the length in the header at the front.
                    let CodecError::FrameTooLarge { len, max: m } = &e else {
                        return Err(TestCaseError::fail(format!("unexpected error {e}")));
                    };
                    prop_assert_eq!(*m, max);
                    prop_assert!(*len > max);
                    let header: [u8; 4] = buf[..4].try_into().expect("a header is buffered");
                    prop_assert_eq!(u32::from_be_bytes(header) as usize, *len);
                    prop_assert!(!e.to_string().is_empty());
                    return Ok((frames, Some(e)));
                }
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(_)) => Err(TestCaseError::fail("a whole frame was left for eof")),
        Ok(None) => {
            prop_assert!(buf.is_empty());
            Ok((frames, None))
        }
        Err(CodecError::Truncated { buffered }) => {
            prop_assert_eq!(buffered, buf.len());
            prop_assert!(buffered > 0);
            Ok((frames, Some(CodecError::Truncated { buffered })))
        }
        Err(e) => Err(TestCaseError::fail(format!("unexpected error at eof {e}"))),
    }
}

fn bytes_strategy(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn request_strategy() -> impl Strategy<Value = Request> {
    (
        any::<u64>(),
        bytes_strategy(40),
        bytes_strategy(200),
        any::<bool>(),
    )
        .prop_map(|(id, key, value, put)| {
            let command = if put {
                request::Command::Put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })
            } else {
                request::Command::Get(GetRequest { key })
            };
            Request::new(id, command)
        })
}

/// A change to a byte stream.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn mutate(wire: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = wire.len();
        match m {
            Mutation::Set(i, b) if len > 0 => wire[i % len] = *b,
            Mutation::Insert(i, b) => {
                let at = i % (len + 1);
                wire.splice(at..at, b.iter().copied());
            }
            Mutation::Remove(i, n) if len > 0 => {
                let at = i % len;
                wire.drain(at..(at + n).min(len));
            }
            _ => {}
        }
    }
}

/// Decodes `bytes` as `M`; if that succeeds, the message re-encodes to
/// bytes that decode to the same message (unknown fields aside, which
/// prost drops: so compare the second round with the first).
fn decodes_consistently<M: Message + Default + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    if let Ok(msg) = M::decode(bytes) {
        let again = M::decode(msg.encode_to_vec().as_slice())
            .map_err(|e| TestCaseError::fail(format!("re-encoded message failed: {e}")))?;
        prop_assert!(again == msg, "a re-encoded message decodes differently");
    }
    Ok(())
}

/// Every message of the schema that crosses a trust boundary: the wire
/// (client and peer), the log, snapshots and Raft state files.
fn decode_every_message(bytes: &[u8]) -> Result<(), TestCaseError> {
    decodes_consistently::<Request>(bytes)?;
    decodes_consistently::<Response>(bytes)?;
    decodes_consistently::<LogEntry>(bytes)?;
    decodes_consistently::<SnapshotHeader>(bytes)?;
    decodes_consistently::<SnapshotEntry>(bytes)?;
    decodes_consistently::<PeerRequest>(bytes)?;
    decodes_consistently::<PeerResponse>(bytes)?;
    decodes_consistently::<RaftEntry>(bytes)?;
    decodes_consistently::<RaftState>(bytes)?;
    decodes_consistently::<RaftVote>(bytes)?;
    decodes_consistently::<RaftMembership>(bytes)?;
    decodes_consistently::<RaftSnapshotMeta>(bytes)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Random bytes as a stream of frames, under a random limit.
    #[test]
    fn random_streams_are_framed_or_refused(
        wire in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        max in prop_oneof![Just(0usize), 1usize..64, Just(kv_proto::DEFAULT_MAX_FRAME_SIZE)],
    ) {
        feed(&mut ServerCodec::new(max), &wire, &cuts)?;
        feed(&mut ClientCodec::new(max), &wire, &cuts)?;
    }

    /// Random bytes behind plausible small lengths, so that bodies reach
    /// the message decoders rather than stopping at the length check.
    #[test]
    fn random_bodies_in_valid_frames(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut wire = Vec::new();
        for b in &bodies {
            wire.put_u32(b.len() as u32);
            wire.extend_from_slice(b);
        }
        let (frames, end) = feed(&mut ServerCodec::new(1024), &wire, &cuts)?;
        prop_assert_eq!(frames, bodies.len());
        prop_assert!(end.is_none());
        for b in &bodies {
            decode_every_message(b)?;
        }
    }

    /// Valid frames of real requests, mutated: a changed length may make
    /// a frame too large, shorter or longer, never a panic.
    #[test]
    fn mutated_frames_never_panic(
        requests in prop::collection::vec(request_strategy(), 1..5),
        mutations in prop::collection::vec(mutation(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        max in 64usize..1024,
    ) {
        let mut wire = BytesMut::new();
        let mut codec = ClientCodec::new(1 << 20);
        for r in &requests {
            codec.encode(r, &mut wire).expect("encode");
        }
        let mut wire = wire.to_vec();
        mutate(&mut wire, &mutations);
        feed(&mut ServerCodec::new(max), &wire, &cuts)?;
    }

    /// Every message decoder on random bytes.
    #[test]
    fn every_message_decodes_random_bytes_or_refuses(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        decode_every_message(&bytes)?;
    }

    /// Every message decoder on mutated encodings of real messages, which
    /// get much deeper into the schema than random bytes.
    #[test]
    fn every_message_decodes_mutated_messages_or_refuses(
        request in request_strategy(),
        seq in any::<u64>(),
        key in bytes_strategy(32),
        value in bytes_strategy(64),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let seeds = [
            request.encode_to_vec(),
            LogEntry { seq, op: 1, key: key.clone(), value: value.clone(), timestamp_ms: seq, ..LogEntry::default() }
                .encode_to_vec(),
            SnapshotHeader { version: 1, seq, entry_count: seq, created_ms: 0 }.encode_to_vec(),
            SnapshotEntry { key, value, ..SnapshotEntry::default() }.encode_to_vec(),
        ];
        for seed in seeds {
            let mut bytes = seed;
            mutate(&mut bytes, &mutations);
            decode_every_message(&bytes)?;
        }
    }
}
