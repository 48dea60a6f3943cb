//! Decoding allocates for the bytes received, never for the lengths they
//! claim: a frame header announcing the largest allowed frame, or a
//! protobuf field announcing gigabytes inside a small frame, costs about
//! what arrived.
//!
//! The test binary counts its heap through a global allocator; the tests
//! take a lock so that one's allocations do not count in another's peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, BytesMut};
use kv_proto::{LogEntry, PeerRequest, Request, ServerCodec, SnapshotEntry};
use prost::Message;
use tokio_util::codec::Decoder;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the same arguments;
// the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `System.alloc`, with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` and returns the most heap it held at once beyond what was live
/// before.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

/// A frame header claiming the largest allowed body, then the body a few
/// bytes at a time: the buffer holds what arrived plus the decoder's
/// 64 KiB of room ahead, never the 8 MiB claimed.
#[test]
fn a_frame_claiming_the_maximum_costs_what_arrived() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut codec = ServerCodec::default();
    let peak = peak_during(|| {
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
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Field 1 (or 2, 3), wire type 2, then the length 0x7fff_ffff as a
    // varint, then three bytes.
    let claims: Vec<Vec<u8>> = [0x0au8, 0x12, 0x1a, 0x22]
        .iter()
        .map(|&tag| vec![tag, 0xff, 0xff, 0xff, 0xff, 0x07, 1, 2, 3])
        .collect();
    let peak = peak_during(|| {
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
