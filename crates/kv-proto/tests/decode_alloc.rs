//! Decoding allocates for the bytes received, never for the lengths they
//! claim: a frame header announcing the largest allowed frame, or a
//! protobuf field announcing gigabytes inside a small frame, costs about
//! what arrived.
//!
//! The test binary counts its heap through a global allocator; the tests
//! take a lock so that one's allocations do not count in another's peak.

use bytes::{BufMut, BytesMut};
use kv_proto::{LogEntry, PeerRequest, Request, ServerCodec, SnapshotEntry};
use prost::Message;
use tokio_util::codec::Decoder;

#[global_allocator]
static ALLOCATOR: heap_peak::Counting = heap_peak::Counting;

/// A frame header claiming the largest allowed body, then the body a few
/// bytes at a time: the buffer holds what arrived plus the decoder's
/// 64 KiB of room ahead, never the 8 MiB claimed.
#[test]
fn a_frame_claiming_the_maximum_costs_what_arrived() {
    let _serial = heap_peak::serial();
    let mut codec = ServerCodec::default();
    let peak = heap_peak::peak_during(|| {
        let mut buf = BytesMut::new();
        buf.put_u32(kv_proto::DEFAULT_MAX_FRAME_SIZE as u32);
        for _ in 0..64 {
            buf.put_slice(&[0x0a; 100]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
        }
        drop(buf);
    });
    assert!(peak < 256 << 10, "decoder held {peak} bytes at once");
}

/// A varint length claiming about 2 GiB for a bytes field, in a frame of
/// a dozen bytes: refused by every decoder without allocating the claim.
#[test]
fn a_field_claiming_gigabytes_is_refused_without_allocating_them() {
    let _serial = heap_peak::serial();
    // Field 1 (or 2, 3), wire type 2, then the length 0x7fff_ffff as a
    // varint, then three bytes.
    let claims: Vec<Vec<u8>> = [0x0au8, 0x12, 0x1a, 0x22]
        .iter()
        .map(|&tag| vec![tag, 0xff, 0xff, 0xff, 0xff, 0x07, 1, 2, 3])
        .collect();
    let peak = heap_peak::peak_during(|| {
        for body in &claims {
            assert!(Request::decode(body.as_slice()).is_err());
            assert!(LogEntry::decode(body.as_slice()).is_err());
            assert!(SnapshotEntry::decode(body.as_slice()).is_err());
            assert!(PeerRequest::decode(body.as_slice()).is_err());
            let mut frame = BytesMut::new();
            frame.put_u32(body.len() as u32);
            frame.put_slice(body);
            let item = ServerCodec::default().decode(&mut frame).unwrap();
            assert!(matches!(item, Some(Err(_))));
        }
    });
    assert!(peak < 64 << 10, "decoders held {peak} bytes at once");
}
