//! The store features of the native protocol, shared by the single node
//! ([`crate::command`]) and a cluster member ([`crate::cluster`]): how a
//! request becomes a kv-store write or read, and how the outcome becomes a
//! response. Both backends decide with kv-store's one function, so they
//! answer alike.
//!
//! Times to live become absolute deadlines here, when the request is taken
//! (from this server's clock), so a retried or replayed write means the
//! same moment everywhere.

use bytes::Bytes;
use kv_proto::{
    BatchRequest, BatchResponse, DeleteRequest, DeleteResponse, ErrorCode, ExpireRequest,
    ExpireResponse, GetResponse, IncrRequest, IncrResponse, MgetResponse, PutRequest, PutResponse,
    Response, ScanItem, ScanRequest, ScanResponse, TtlResponse, response,
};
use kv_store::{Expiry, ScanPage, ScanRange, Txn, TxnOutcome, Versioned, Write, WriteResult};

/// Which request a transaction answers, so its outcome becomes that
/// request's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnKind {
    Put,
    Delete,
    Batch,
    Incr,
    Expire,
}

/// A write request as the store takes it.
#[derive(Debug)]
pub(crate) enum WriteAsk {
    /// A put without condition: the fast path.
    Put {
        key: Bytes,
        value: Bytes,
        deadline: Option<u64>,
    },
    /// A delete without condition.
    Delete { key: Bytes },
    /// Anything decided against the current state.
    Txn(TxnKind, Txn),
}

type Result<T> = std::result::Result<T, kv_store::Error>;

/// A put request, at `now_ms`.
pub(crate) fn put(put: PutRequest, now_ms: u64) -> Result<WriteAsk> {
    let expiry =
        kv_store::expiry_from_request(put.ttl_ms, put.expires_at_ms, put.keep_ttl, now_ms)?;
    let condition = match &put.condition {
        Some(c) => kv_store::condition_from_request(c)?,
        None => None,
    };
    Ok(match (condition, expiry) {
        (None, Expiry::Clear) => WriteAsk::Put {
            key: put.key,
            value: put.value,
            deadline: None,
        },
        (None, Expiry::At(at)) => WriteAsk::Put {
            key: put.key,
            value: put.value,
            deadline: Some(at),
        },
        (condition, expiry) => WriteAsk::Txn(
            TxnKind::Put,
            Txn {
                conditions: condition
                    .map(|c| (put.key.to_vec(), c))
                    .into_iter()
                    .collect(),
                writes: vec![Write::Put {
                    key: put.key.to_vec(),
                    value: put.value.to_vec(),
                    expiry,
                }],
            },
        ),
    })
}

/// A delete request.
pub(crate) fn delete(delete: DeleteRequest) -> Result<WriteAsk> {
    let condition = match &delete.condition {
        Some(c) => kv_store::condition_from_request(c)?,
        None => None,
    };
    Ok(match condition {
        None => WriteAsk::Delete { key: delete.key },
        Some(c) => WriteAsk::Txn(
            TxnKind::Delete,
            Txn {
                conditions: vec![(delete.key.to_vec(), c)],
                writes: vec![Write::Delete {
                    key: delete.key.to_vec(),
                }],
            },
        ),
    })
}

/// A batch request, at `now_ms`.
pub(crate) fn batch(batch: &BatchRequest, now_ms: u64) -> Result<WriteAsk> {
    let txn = kv_store::txn_from_request(&batch.conditions, &batch.writes, now_ms)?;
    Ok(WriteAsk::Txn(TxnKind::Batch, txn))
}

/// An increment.
pub(crate) fn incr(incr: &IncrRequest) -> WriteAsk {
    WriteAsk::Txn(
        TxnKind::Incr,
        Txn {
            conditions: Vec::new(),
            writes: vec![Write::Incr {
                key: incr.key.to_vec(),
                delta: incr.delta,
            }],
        },
    )
}

/// A deadline change, at `now_ms`: exactly one of a time to live, an
/// absolute time and `persist`.
pub(crate) fn expire(expire: &ExpireRequest, now_ms: u64) -> Result<WriteAsk> {
    let at = match (expire.ttl_ms, expire.expires_at_ms, expire.persist) {
        (0, 0, true) => None,
        (0, 0, false) => {
            return Err(kv_store::Error::InvalidRequest(
                "expire needs a time to live, an expiry time or persist".into(),
            ));
        }
        (ttl, at, false) => match kv_store::expiry_from_request(ttl, at, false, now_ms)? {
            Expiry::At(at) => Some(at),
            Expiry::Clear | Expiry::Keep => None,
        },
        (_, _, true) => {
            return Err(kv_store::Error::InvalidRequest(
                "persist takes no time to live or expiry time".into(),
            ));
        }
    };
    Ok(WriteAsk::Txn(
        TxnKind::Expire,
        Txn {
            conditions: Vec::new(),
            writes: vec![Write::SetDeadline {
                key: expire.key.to_vec(),
                at,
            }],
        },
    ))
}

/// The response to a transaction of `kind` that applied.
pub(crate) fn txn_result(kind: TxnKind, outcome: &TxnOutcome) -> response::Result {
    let seq = outcome.seq;
    let first = outcome.results.first().copied();
    match kind {
        TxnKind::Put => response::Result::Put(PutResponse { seq }),
        TxnKind::Delete => {
            let existed = matches!(first, Some(WriteResult::Delete { existed: true }));
            response::Result::Delete(DeleteResponse {
                existed,
                seq: if existed { seq } else { 0 },
            })
        }
        TxnKind::Batch => response::Result::Batch(BatchResponse { seq }),
        TxnKind::Incr => {
            let value = match first {
                Some(WriteResult::Incr { value }) => value,
                _ => 0,
            };
            response::Result::Incr(IncrResponse { value, seq })
        }
        TxnKind::Expire => {
            let (found, changed) = match first {
                Some(WriteResult::SetDeadline { found, changed }) => (found, changed),
                _ => (false, false),
            };
            response::Result::Expire(ExpireResponse {
                found,
                changed,
                seq: if changed { seq } else { 0 },
            })
        }
    }
}

/// A key's value and version as a get answer.
pub(crate) fn get_response(found: Option<Versioned>) -> GetResponse {
    match found {
        Some(v) => GetResponse {
            found: true,
            value: Bytes::from(v.value),
            seq: v.seq,
            expires_at_ms: v.expires_at_ms.unwrap_or(0),
        },
        None => GetResponse::default(),
    }
}

/// A key's remaining time at `now_ms`.
pub(crate) fn ttl_response(found: Option<Versioned>, now_ms: u64) -> TtlResponse {
    match found {
        None => TtlResponse::default(),
        Some(v) => TtlResponse {
            found: true,
            has_deadline: v.expires_at_ms.is_some(),
            remaining_ms: v.expires_at_ms.map_or(0, |at| at.saturating_sub(now_ms)),
            expires_at_ms: v.expires_at_ms.unwrap_or(0),
        },
    }
}

/// Room in a frame for one value of a multi-get answer beside its bytes
/// (tags, lengths, seq, deadline), with margin.
const MGET_ITEM_OVERHEAD: usize = 32;

/// A multi-get answer, or TOO_LARGE (as the message of an error response
/// for request `id`) when the values would not fit in `budget` bytes.
pub(crate) fn mget_response(
    id: u64,
    found: Vec<Option<Versioned>>,
    budget: usize,
) -> std::result::Result<MgetResponse, Response> {
    let size: usize = found
        .iter()
        .map(|v| MGET_ITEM_OVERHEAD + v.as_ref().map_or(0, |v| v.value.len()))
        .sum();
    if size > budget {
        return Err(Response::error(
            id,
            ErrorCode::TooLarge,
            format!(
                "the {} values asked for take about {size} bytes, over the {budget} one \
                 response may carry: ask for fewer keys at a time",
                found.len()
            ),
        ));
    }
    Ok(MgetResponse {
        values: found.into_iter().map(get_response).collect(),
    })
}

/// What a scan request asks: the range, where to resume, the limit (0: as
/// many as fit) and whether values come too.
#[derive(Debug)]
pub(crate) struct ScanAsk {
    pub(crate) range: ScanRange,
    pub(crate) after: Option<Vec<u8>>,
    pub(crate) limit: usize,
    pub(crate) values: bool,
}

/// A scan request, or INVALID_REQUEST for a prefix given with a range.
pub(crate) fn scan(scan: &ScanRequest) -> Result<ScanAsk> {
    let ranged = !scan.start.is_empty() || !scan.end.is_empty();
    if !scan.prefix.is_empty() && ranged {
        return Err(kv_store::Error::InvalidRequest(
            "a scan takes a prefix or a start and end, not both".into(),
        ));
    }
    if !scan.start.is_empty() && !scan.end.is_empty() && scan.start >= scan.end {
        return Err(kv_store::Error::InvalidRequest(
            "a scan's start must be before its end".into(),
        ));
    }
    let range = if scan.prefix.is_empty() {
        ScanRange::between(&scan.start, &scan.end)
    } else {
        ScanRange::prefix(&scan.prefix)
    };
    Ok(ScanAsk {
        range: if scan.reverse {
            range.reversed()
        } else {
            range
        },
        after: (!scan.after.is_empty()).then(|| scan.after.to_vec()),
        limit: usize::try_from(scan.limit).unwrap_or(usize::MAX),
        values: scan.values,
    })
}

/// A page of a scan as its response.
pub(crate) fn scan_response(page: ScanPage) -> ScanResponse {
    ScanResponse {
        items: page
            .items
            .into_iter()
            .map(|item| ScanItem {
                key: Bytes::from(item.key),
                value: item.value.map(Bytes::from).unwrap_or_default(),
                seq: item.seq,
            })
            .collect(),
        more: page.more,
        resume_after: Bytes::from(page.resume_after),
    }
}

/// The response for a store error; a failed condition carries the key and
/// its current version.
pub(crate) fn error_response(id: u64, code: ErrorCode, err: &kv_store::Error) -> Response {
    let mut response = Response::error(id, code, err.to_string());
    if let kv_store::Error::ConditionFailed { key, current } = err.cause()
        && let Some(response::Result::Error(e)) = response.result.as_mut()
    {
        e.key = Bytes::copy_from_slice(key);
        e.current_seq = current.unwrap_or(0);
        e.current_exists = current.is_some();
    }
    response
}
