//! The frame codec: round trips of every message, and what it does with
//! oversized, truncated and garbage input.

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use kv_proto::{
    CheckpointRequest, CheckpointResponse, ClientCodec, CodecError, Condition, ConditionKind,
    DeleteRequest, DeleteResponse, Error, ErrorCode, FrameCodec, GetRequest, GetResponse,
    KeysRequest, KeysResponse, LogEntry, Mutation, MutationKind, Operation, PutRequest,
    PutResponse, Request, Response, ServerCodec, SnapshotEntry, SnapshotHeader, Txn, request,
    response,
};
use proptest::prelude::*;
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

/// Encodes `msg` with a codec for its type and decodes it back, checking
/// the frame's layout on the way.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M) {
    let mut codec = FrameCodec::<M, M>::default();
    let mut wire = BytesMut::new();
    codec.encode(msg, &mut wire).unwrap();
    let len = msg.encoded_len();
    assert_eq!(wire.len(), 4 + len);
    assert_eq!(wire[..4], (len as u32).to_be_bytes());
    let decoded = codec.decode(&mut wire).unwrap().expect("a whole frame");
    assert_eq!(&decoded.unwrap(), msg);
    assert!(wire.is_empty(), "the frame was consumed exactly");
    assert!(codec.decode_eof(&mut wire).unwrap().is_none());
}

fn bytes_strategy() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn command_strategy() -> impl Strategy<Value = request::Command> {
    prop_oneof![
        bytes_strategy().prop_map(|key| request::Command::Get(GetRequest { key })),
        (bytes_strategy(), bytes_strategy()).prop_map(|(key, value)| request::Command::Put(
            PutRequest {
                key,
                value,
                ..Default::default()
            }
        )),
        bytes_strategy().prop_map(|key| request::Command::Delete(DeleteRequest {
            key,
            ..Default::default()
        })),
        (bytes_strategy(), any::<u32>())
            .prop_map(|(prefix, limit)| request::Command::Keys(KeysRequest { prefix, limit })),
        Just(request::Command::Checkpoint(CheckpointRequest {})),
    ]
}

fn result_strategy() -> impl Strategy<Value = response::Result> {
    prop_oneof![
        (0..9i32, ".{0,40}", ".{0,20}").prop_map(|(code, message, leader_addr)| {
            response::Result::Error(Error {
                code,
                message,
                leader_addr,
                ..Error::default()
            })
        }),
        (any::<bool>(), bytes_strategy(), any::<u64>(), any::<u64>()).prop_map(
            |(found, value, seq, expires_at_ms)| response::Result::Get(GetResponse {
                found,
                value,
                seq,
                expires_at_ms
            })
        ),
        any::<u64>().prop_map(|seq| response::Result::Put(PutResponse { seq })),
        (any::<bool>(), any::<u64>())
            .prop_map(|(existed, seq)| response::Result::Delete(DeleteResponse { existed, seq })),
        (prop::collection::vec(bytes_strategy(), 0..8), any::<bool>())
            .prop_map(|(keys, truncated)| response::Result::Keys(KeysResponse { keys, truncated })),
        any::<u64>().prop_map(|seq| response::Result::Checkpoint(CheckpointResponse { seq })),
    ]
}

proptest! {
    #[test]
    fn request_round_trips(id in any::<u64>(), command in prop::option::of(command_strategy())) {
        round_trip(&Request { id, command });
    }

    #[test]
    fn response_round_trips(id in any::<u64>(), result in prop::option::of(result_strategy())) {
        round_trip(&Response { id, result });
    }

    #[test]
    fn log_entry_round_trips(
        seq in any::<u64>(),
        op in 0..4i32,
        key in bytes_strategy(),
        value in bytes_strategy(),
        timestamp_ms in any::<u64>(),
        expires_at_ms in any::<u64>(),
        delta in any::<i64>(),
    ) {
        let txn = (op == Operation::Txn as i32).then(|| Txn {
            conditions: vec![Condition {
                kind: ConditionKind::SeqEquals as i32,
                seq,
                value: value.clone(),
                key: key.clone(),
            }],
            writes: vec![Mutation {
                kind: MutationKind::MutationIncr as i32,
                key: key.clone(),
                delta,
                expires_at_ms,
                ..Mutation::default()
            }],
        });
        round_trip(&LogEntry { seq, op, key, value, timestamp_ms, expires_at_ms, txn });
    }

    #[test]
    fn snapshot_messages_round_trip(
        version in any::<u32>(),
        seq in any::<u64>(),
        entry_count in any::<u64>(),
        created_ms in any::<u64>(),
        key in bytes_strategy(),
        value in bytes_strategy(),
        expires_at_ms in any::<u64>(),
    ) {
        round_trip(&SnapshotHeader { version, seq, entry_count, created_ms });
        round_trip(&SnapshotEntry { key, value, seq, expires_at_ms });
    }

    /// Frames split at arbitrary points decode to the same messages: the
    /// decoder never depends on how the bytes arrive.
    #[test]
    fn split_frames_decode_the_same(
        requests in prop::collection::vec((any::<u64>(), command_strategy()), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let requests: Vec<Request> =
            requests.into_iter().map(|(id, c)| Request::new(id, c)).collect();
        let mut wire = BytesMut::new();
        let mut client = ClientCodec::default();
        for r in &requests {
            client.encode(r, &mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();

        let mut server = ServerCodec::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut at = 0;
        for cut in cuts {
            buf.extend_from_slice(&wire[at..cut]);
            at = cut;
            while let Some(item) = server.decode(&mut buf).unwrap() {
                decoded.push(item.unwrap());
            }
        }
        prop_assert!(server.decode_eof(&mut buf).unwrap().is_none());
        prop_assert_eq!(decoded, requests);
    }
}

#[test]
fn every_message_type_round_trips_with_fixed_contents() {
    round_trip(&Request::new(
        1,
        request::Command::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(&[0, 255, 10, 13]),
            ..Default::default()
        }),
    ));
    round_trip(&Response::error(2, ErrorCode::TooLarge, "too large"));
    round_trip(&LogEntry {
        seq: 3,
        op: Operation::Delete as i32,
        key: Bytes::from_static(b"gone"),
        value: Bytes::new(),
        timestamp_ms: 1_700_000_000_000,
        ..LogEntry::default()
    });
    round_trip(&SnapshotHeader {
        version: 1,
        seq: 9,
        entry_count: 2,
        created_ms: 5,
    });
}

#[test]
fn header_claiming_4_gib_is_refused_without_allocating() {
    let mut codec = ServerCodec::new(1024);
    let mut buf = BytesMut::with_capacity(4);
    buf.put_u32(u32::MAX);
    let capacity_before = buf.capacity();

    match codec.decode(&mut buf) {
        Err(CodecError::FrameTooLarge { len, max }) => {
            assert_eq!(len, u32::MAX as usize);
            assert_eq!(max, 1024);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert_eq!(buf.capacity(), capacity_before, "nothing was reserved");
}

#[test]
fn length_one_over_the_max_is_refused_and_the_max_itself_accepted() {
    let max = 100;
    let mut codec = FrameCodec::<SnapshotEntry, SnapshotEntry>::new(max);

    let mut buf = BytesMut::new();
    buf.put_u32(max as u32 + 1);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::FrameTooLarge { len: 101, max: 100 })
    ));

    // A message of exactly `max` bytes: field 2 (value), 1 tag byte, 1
    // length byte, 98 bytes of value.
    let entry = SnapshotEntry {
        key: Bytes::new(),
        value: Bytes::from(vec![7u8; 98]),
        ..SnapshotEntry::default()
    };
    assert_eq!(entry.encoded_len(), max);
    let mut wire = BytesMut::new();
    codec.encode(&entry, &mut wire).unwrap();
    let decoded = codec.decode(&mut wire).unwrap().unwrap().unwrap();
    assert_eq!(decoded, entry);
}

#[test]
fn incomplete_frame_reserves_only_a_bounded_amount() {
    // A peer announcing a large (allowed) frame and then stalling must not
    // make us allocate the whole announced body.
    let mut codec = ServerCodec::default();
    let mut buf = BytesMut::new();
    buf.put_u32(8 * 1024 * 1024);
    buf.put_slice(&[0u8; 10]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(
        buf.capacity() <= 128 * 1024,
        "capacity grew to {} for 14 bytes received",
        buf.capacity()
    );
}

#[test]
fn encoding_a_message_over_the_max_fails_and_writes_nothing() {
    let mut codec = ClientCodec::new(16);
    let request = Request::new(
        1,
        request::Command::Put(PutRequest {
            key: Bytes::from_static(b"key"),
            value: Bytes::from(vec![1u8; 32]),
            ..Default::default()
        }),
    );
    let mut wire = BytesMut::new();
    match codec.encode(&request, &mut wire) {
        Err(CodecError::FrameTooLarge { len, max: 16 }) => {
            assert_eq!(len, request.encoded_len())
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert!(wire.is_empty());
}

#[test]
fn max_frame_size_is_capped_at_what_a_u32_length_can_say() {
    let codec = ServerCodec::new(usize::MAX);
    assert_eq!(codec.max_frame_size(), u32::MAX as usize);
}

#[test]
fn truncated_frame_waits_then_fails_at_eof() {
    let request = Request::new(
        42,
        request::Command::Get(GetRequest {
            key: Bytes::from_static(b"some key"),
        }),
    );
    let mut wire = BytesMut::new();
    ClientCodec::default().encode(&request, &mut wire).unwrap();
    let full = wire.freeze();

    // Every proper prefix, header included, is "not yet".
    for cut in 0..full.len() {
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::from(&full[..cut]);
        assert!(codec.decode(&mut buf).unwrap().is_none(), "cut at {cut}");
        match codec.decode_eof(&mut buf) {
            Ok(None) if cut == 0 => {}
            Err(CodecError::Truncated { buffered }) if cut > 0 => assert_eq!(buffered, cut),
            other => panic!("cut at {cut}: unexpected {other:?}"),
        }
    }
}

#[test]
fn garbage_body_is_an_item_error_and_the_next_frame_decodes() {
    let mut buf = BytesMut::new();
    // A valid length with a body that is not a protobuf message: 0xff is a
    // tag with wire type 7, which does not exist.
    buf.put_u32(3);
    buf.put_slice(&[0xff, 0xff, 0xff]);
    let next = Request::new(
        5,
        request::Command::Delete(DeleteRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        }),
    );
    ClientCodec::default().encode(&next, &mut buf).unwrap();

    let mut codec = ServerCodec::default();
    let first = codec.decode(&mut buf).unwrap().expect("a whole frame");
    assert!(first.is_err(), "garbage decoded as {first:?}");
    let second = codec.decode(&mut buf).unwrap().expect("a whole frame");
    assert_eq!(second.unwrap(), next);
    assert!(buf.is_empty());
}

#[test]
fn empty_frame_is_an_empty_request() {
    let mut buf = BytesMut::new();
    buf.put_u32(0);
    let request = ServerCodec::default()
        .decode(&mut buf)
        .unwrap()
        .expect("a whole frame")
        .unwrap();
    assert_eq!(request.id, 0);
    assert!(request.command.is_none());
}

/// The codec as server and client use it: over a byte stream, through
/// `FramedRead`/`FramedWrite`.
#[tokio::test]
async fn framed_stream_survives_garbage_and_stops_at_an_oversized_length() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let mut reader = FramedRead::new(server_io, ServerCodec::new(1024));
    let mut writer = FramedWrite::new(client_io, ClientCodec::new(1024));

    let ok = Request::new(1, request::Command::Checkpoint(CheckpointRequest {}));
    writer.send(&ok).await.unwrap();
    let io = writer.get_mut();
    io.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    writer.send(&ok).await.unwrap();
    writer
        .get_mut()
        .write_all(&2048u32.to_be_bytes())
        .await
        .unwrap();
    writer.get_mut().write_all(&[0u8; 16]).await.unwrap();

    assert_eq!(reader.next().await.unwrap().unwrap().unwrap(), ok);
    assert!(reader.next().await.unwrap().unwrap().is_err());
    assert_eq!(reader.next().await.unwrap().unwrap().unwrap(), ok);
    assert!(matches!(
        reader.next().await.unwrap(),
        Err(CodecError::FrameTooLarge {
            len: 2048,
            max: 1024
        })
    ));
}

#[tokio::test]
async fn framed_stream_reports_a_frame_cut_by_eof() {
    let (mut client_io, server_io) = tokio::io::duplex(1024);
    let mut reader = FramedRead::new(server_io, ServerCodec::default());
    client_io.write_all(&[0, 0, 0, 10, 1, 2, 3]).await.unwrap();
    drop(client_io);
    assert!(matches!(
        reader.next().await.unwrap(),
        Err(CodecError::Truncated { buffered: 7 })
    ));
}

#[test]
fn error_code_displays_its_protobuf_name() {
    assert_eq!(ErrorCode::TooLarge.to_string(), "TOO_LARGE");
    assert_eq!(ErrorCode::Unavailable.to_string(), "UNAVAILABLE");
    let response = Response::error(3, ErrorCode::Internal, "boom");
    match response.result {
        Some(response::Result::Error(e)) => {
            assert_eq!(e.code(), ErrorCode::Internal);
            assert_eq!(e.message, "boom");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The codes and the field added for clusters and honest failures keep
/// their numbers (the wire contract: add, never renumber).
#[test]
fn error_codes_keep_their_numbers() {
    let numbered = [
        (ErrorCode::InvalidRequest, 1),
        (ErrorCode::TooLarge, 2),
        (ErrorCode::Unavailable, 3),
        (ErrorCode::Internal, 4),
        (ErrorCode::NotLeader, 5),
        (ErrorCode::ConditionFailed, 6),
        (ErrorCode::Unauthenticated, 7),
        (ErrorCode::OutcomeUnknown, 8),
    ];
    for (code, number) in numbered {
        assert_eq!(code as i32, number, "{code}");
    }
    assert_eq!(ErrorCode::OutcomeUnknown.to_string(), "OUTCOME_UNKNOWN");
    // leader_addr is field 3 of Error: tag (3 << 3 | 2) = 0x1a.
    let error = Error {
        code: ErrorCode::NotLeader as i32,
        message: String::new(),
        leader_addr: "h:1".into(),
        ..Error::default()
    };
    assert_eq!(
        error.encode_to_vec(),
        [0x08, 0x05, 0x1a, 0x03, b'h', b':', b'1']
    );
}
