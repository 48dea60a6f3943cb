//! The byte budget for requests in flight: how many bytes of requests the
//! server holds between reading them and answering them, per connection and
//! for the whole server.
//!
//! A request is charged the length of its frame before its body is read
//! (the reader knows it from the frame's header), and the charge is released
//! once its reply has resolved (a put is durable and applied to the map, a
//! get has its value). What a charge stands for: the frame while it is read,
//! then whatever the request became (a put's map entry queued for the commit
//! thread, or a Raft entry on a cluster member), never the reply's bytes,
//! which the connection's writer holds one batch at a time.
//!
//! Two limits:
//!
//! - Per connection, `per_connection` bytes: a connection that holds that
//!   much waits for its own replies before its next frame is read. A frame
//!   larger than the whole per-connection budget (possible when it is set
//!   below the maximum frame) is read once the connection holds nothing, and
//!   charged in full: one oversize request at a time, never refused.
//! - For the server, `total` bytes. When a request does not fit, its reader
//!   waits in line; released bytes go first to the waiting connection that
//!   would hold the least with its request granted (what it holds plus the
//!   request; the earliest among equals). So the connections that hold the
//!   most are the ones that stop being read, and a client with one small
//!   request is not stuck behind a flood of large ones, even from
//!   connections that hold nothing yet either. A connection can overtake a
//!   waiting request only while it holds less than that request would, so
//!   no request waits forever.
//!
//! Waiting is backpressure, not refusal: a waiting reader reads nothing more
//! from its socket, the kernel's buffers fill, and TCP flow control stops
//! the client. Nothing read is ever dropped or failed for the budget.
//!
//! The bound is hard: the server's charges never exceed `total` (which is
//! at least the largest frame, so every frame fits once the others drain).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, oneshot};

/// The whole server's budget, shared by every connection.
#[derive(Debug)]
pub(crate) struct InflightBudget {
    total: usize,
    per_connection: usize,
    state: Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    /// Bytes charged, over all connections.
    used: usize,
    /// Readers waiting for room: at most one per connection (only its
    /// reader charges), so a linear search for the next one is cheap.
    waiters: Vec<Waiter>,
    next_ticket: u64,
    /// Whether the server has been at its limit since it last had room:
    /// logged when it gets there, not once per waiting request.
    exhausted: bool,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    bytes: usize,
    holder: Arc<Holder>,
    grant: oneshot::Sender<()>,
}

/// One connection's share.
#[derive(Debug, Default)]
struct Holder {
    /// Bytes this connection's requests are charged, in flight.
    held: AtomicUsize,
    /// Signalled whenever one of this connection's charges is released.
    released: Notify,
}

impl InflightBudget {
    /// A budget of `total` bytes for the server and `per_connection` for
    /// each connection. `total` is raised to `max_frame` if it is smaller,
    /// so that the largest frame can always be read (the `kv-server` flags
    /// refuse such a setting instead); a zero `per_connection` is taken as
    /// 1 (one request at a time).
    pub(crate) fn new(total: usize, per_connection: usize, max_frame: usize) -> Arc<Self> {
        Arc::new(InflightBudget {
            total: total.max(max_frame).max(1),
            per_connection: per_connection.max(1),
            state: Mutex::new(BudgetState::default()),
        })
    }

    /// A new connection's share, holding nothing.
    pub(crate) fn connection(self: &Arc<Self>) -> ConnectionBudget {
        ConnectionBudget {
            budget: Arc::clone(self),
            holder: Arc::new(Holder::default()),
        }
    }

    /// Bytes charged now, over all connections.
    pub(crate) fn used(&self) -> usize {
        self.lock().used
    }

    /// The server's budget, in bytes.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        // Every update under this lock is a few integer operations that
        // cannot panic halfway; a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands room to waiting readers: the one whose connection would hold
    /// the least with its request first, as long as its request fits. Stops
    /// at the first that does not fit, so that a large request is not
    /// overtaken forever by smaller ones.
    fn grant_waiters(&self, state: &mut BudgetState) {
        loop {
            let Some(next) = state
                .waiters
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| {
                    let held = w.holder.held.load(Ordering::Relaxed);
                    (held.saturating_add(w.bytes), w.ticket)
                })
                .map(|(i, _)| i)
            else {
                if state.exhausted {
                    state.exhausted = false;
                    tracing::debug!(used = state.used, "in-flight byte budget has room again");
                }
                return;
            };
            let bytes = state.waiters[next].bytes;
            if state.used + bytes > self.total {
                if !state.exhausted {
                    state.exhausted = true;
                    tracing::info!(
                        used = state.used,
                        limit = self.total,
                        waiting = state.waiters.len(),
                        "in-flight byte budget of the server reached: pausing reads from the \
                         connections that hold the most until replies drain"
                    );
                }
                return;
            }
            let waiter = state.waiters.swap_remove(next);
            state.used += bytes;
            waiter.holder.held.fetch_add(bytes, Ordering::Relaxed);
            if waiter.grant.send(()).is_err() {
                // Unreachable while `Waiting::drop` removes its waiter under
                // this lock; undone to be safe.
                state.used -= bytes;
                waiter.holder.held.fetch_sub(bytes, Ordering::Relaxed);
            }
        }
    }

    fn release(&self, holder: &Holder, bytes: usize) {
        {
            let mut state = self.lock();
            state.used -= bytes;
            holder.held.fetch_sub(bytes, Ordering::Relaxed);
            if !state.waiters.is_empty() {
                self.grant_waiters(&mut state);
            }
        }
        holder.released.notify_one();
    }
}

/// One connection's share of the budget. Only the connection's reader
/// charges it; charges are released wherever they are dropped.
#[derive(Debug)]
pub(crate) struct ConnectionBudget {
    budget: Arc<InflightBudget>,
    holder: Arc<Holder>,
}

impl ConnectionBudget {
    /// Waits until a request of `bytes` fits this connection's budget and
    /// the server's, then charges it. Cancel safe: dropping the future
    /// charges nothing (a grant that arrives meanwhile is given back).
    pub(crate) async fn charge(&self, bytes: usize) -> Charge {
        if bytes == 0 {
            return self.nothing();
        }
        let per_connection = self.budget.per_connection;
        loop {
            let held = self.holder.held.load(Ordering::Acquire);
            if held == 0 || held.saturating_add(bytes) <= per_connection {
                break;
            }
            // A release between the check and this wait leaves a permit in
            // the Notify, so the wake-up is not lost.
            self.holder.released.notified().await;
        }
        let waiting = {
            let mut state = self.budget.lock();
            if state.waiters.is_empty() && state.used + bytes <= self.budget.total {
                state.used += bytes;
                self.holder.held.fetch_add(bytes, Ordering::Relaxed);
                None
            } else {
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                let (grant, granted) = oneshot::channel();
                state.waiters.push(Waiter {
                    ticket,
                    bytes,
                    holder: Arc::clone(&self.holder),
                    grant,
                });
                self.budget.grant_waiters(&mut state);
                Some(Waiting {
                    budget: &self.budget,
                    holder: &self.holder,
                    ticket,
                    bytes,
                    granted,
                    taken: false,
                })
            }
        };
        if let Some(mut waiting) = waiting {
            // The sender lives in the waiter list until it is granted, and
            // `Waiting` is dropped only after this, so it cannot be dropped
            // unsent.
            let _ = (&mut waiting.granted).await;
            waiting.taken = true;
        }
        Charge {
            budget: Arc::clone(&self.budget),
            holder: Arc::clone(&self.holder),
            bytes,
        }
    }

    /// A charge of nothing, for a reply that stands for no bytes read (the
    /// refusal of an oversized frame).
    pub(crate) fn nothing(&self) -> Charge {
        Charge {
            budget: Arc::clone(&self.budget),
            holder: Arc::clone(&self.holder),
            bytes: 0,
        }
    }

    /// Bytes this connection's requests hold now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.holder.held.load(Ordering::Acquire)
    }
}

/// A reader waiting in line; on drop (cancelled), leaves the line, or gives
/// back a grant it never took.
struct Waiting<'a> {
    budget: &'a InflightBudget,
    holder: &'a Holder,
    ticket: u64,
    bytes: usize,
    granted: oneshot::Receiver<()>,
    taken: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut state = self.budget.lock();
        if let Some(i) = state.waiters.iter().position(|w| w.ticket == self.ticket) {
            state.waiters.swap_remove(i);
            // It may have been the one the others waited behind.
            self.budget.grant_waiters(&mut state);
        } else if self.granted.try_recv().is_ok() {
            drop(state);
            self.budget.release(self.holder, self.bytes);
        }
    }
}

/// Bytes charged for one request; released when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<InflightBudget>,
    holder: Arc<Holder>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(&self.holder, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Polls once: the charge if it was granted at once.
    fn try_now<F: Future<Output = Charge>>(future: std::pin::Pin<&mut F>) -> Option<Charge> {
        match future.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(charge) => Some(charge),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_connection_waits_for_its_own_replies_past_its_budget() {
        let budget = InflightBudget::new(1000, 100, 10);
        let conn = budget.connection();
        let a = try_now(pin!(conn.charge(60))).expect("fits");
        let mut b = pin!(conn.charge(60));
        assert!(try_now(b.as_mut()).is_none(), "160 > 100 per connection");
        drop(a);
        let b = try_now(b.as_mut()).expect("room after the release");
        assert_eq!(conn.held(), 60);
        drop(b);
        assert_eq!((conn.held(), budget.used()), (0, 0));
    }

    #[test]
    fn a_request_larger_than_the_connection_budget_goes_alone() {
        let budget = InflightBudget::new(1000, 100, 500);
        let conn = budget.connection();
        let big = try_now(pin!(conn.charge(500))).expect("alone, it is read");
        assert_eq!(conn.held(), 500, "charged in full");
        let mut small = pin!(conn.charge(1));
        assert!(try_now(small.as_mut()).is_none(), "nothing beside it");
        drop(big);
        assert!(try_now(small.as_mut()).is_some());
    }

    #[test]
    fn the_server_total_is_never_exceeded_and_the_smallest_holder_goes_first() {
        let budget = InflightBudget::new(100, 100, 10);
        let (heavy, other, light) = (
            budget.connection(),
            budget.connection(),
            budget.connection(),
        );
        let h1 = try_now(pin!(heavy.charge(60))).unwrap();
        let o1 = try_now(pin!(other.charge(30))).unwrap();
        // 90 of 100 used: the heavy one's next 30 waits. The light one's 10
        // fits, and its connection holds less than the heavy one, so it is
        // served at once rather than behind it.
        let mut h2 = pin!(heavy.charge(30));
        assert!(try_now(h2.as_mut()).is_none());
        let l1 = try_now(pin!(light.charge(10))).expect("the lightest holder is served first");
        assert_eq!(budget.used(), 100);
        // The other connection (holding 30) and the heavy one (60) both
        // wait; a release goes to the one that holds less.
        let mut o2 = pin!(other.charge(30));
        assert!(try_now(o2.as_mut()).is_none());
        drop(l1);
        assert!(try_now(h2.as_mut()).is_none(), "10 free: neither fits");
        drop(o1);
        // 40 free, other holds 0 now and goes first; heavy's 30 does not
        // fit in the 10 left.
        let o2 = try_now(o2.as_mut()).expect("the lighter holder");
        assert!(try_now(h2.as_mut()).is_none());
        assert_eq!(budget.used(), 90);
        drop(h1);
        let h2 = try_now(h2.as_mut()).expect("room at last");
        assert_eq!(budget.used(), 60);
        drop((h2, o2));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_small_request_overtakes_large_ones_from_connections_holding_nothing() {
        let budget = InflightBudget::new(100, 100, 100);
        let (flood, big_a, big_b, small) = (
            budget.connection(),
            budget.connection(),
            budget.connection(),
            budget.connection(),
        );
        let f1 = try_now(pin!(flood.charge(95))).unwrap();
        // Two large requests from connections that hold nothing queue first.
        let mut a = pin!(big_a.charge(50));
        let mut b = pin!(big_b.charge(50));
        assert!(try_now(a.as_mut()).is_none());
        assert!(try_now(b.as_mut()).is_none());
        // The small one fits in the 5 left, and goes ahead of them.
        let s = try_now(pin!(small.charge(5))).expect("not stuck behind the large ones");
        drop(s);
        drop(f1);
        // Then the large ones, in their order.
        let a = try_now(a.as_mut()).expect("the first large one");
        let b = try_now(b.as_mut()).expect("the second large one");
        assert_eq!(budget.used(), 100);
        drop((a, b));
    }

    #[test]
    fn a_cancelled_wait_leaves_nothing_charged() {
        let budget = InflightBudget::new(100, 100, 10);
        let (a, b) = (budget.connection(), budget.connection());
        let held = try_now(pin!(a.charge(100))).unwrap();
        {
            let mut waiting = pin!(b.charge(50));
            assert!(try_now(waiting.as_mut()).is_none());
        }
        drop(held);
        assert_eq!(budget.used(), 0, "the cancelled wait was not granted");
        // Granted while nobody polled, then dropped: given back.
        let held = try_now(pin!(a.charge(100))).unwrap();
        {
            let mut waiting = pin!(b.charge(50));
            assert!(try_now(waiting.as_mut()).is_none());
            drop(held);
            assert_eq!(budget.used(), 50, "granted on release");
        }
        assert_eq!((budget.used(), b.held()), (0, 0));
    }

    #[test]
    fn the_total_is_at_least_one_frame() {
        let budget = InflightBudget::new(10, 10, 1000);
        let conn = budget.connection();
        assert!(try_now(pin!(conn.charge(1000))).is_some());
    }
}
