//! What the sockets did: the counts that show no datagram was lost silently.
//!
//! Every UDP socket counts into atomics of its own (relaxed, uncontended: one add per send
//! call, not per datagram), and its factory adds up the live sockets and those already
//! dropped when asked. A datagram the caller handed to `send` is either counted as sent or
//! as dropped, with the reason.

use std::ops::AddAssign;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A snapshot of counters, of one socket or of every socket a factory made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Datagrams the kernel accepted (each GSO segment counts).
    pub datagrams_sent: u64,
    /// Send system calls that succeeded (a GSO batch is one).
    pub sends: u64,
    /// Datagrams dropped because no route outside the tunnel existed, or the tunnel was gone
    /// from the host's tables (fail closed).
    pub dropped_no_route: u64,
    /// Datagrams dropped because the send failed otherwise (returned as [`Error::Io`]).
    ///
    /// [`Error::Io`]: crate::Error::Io
    pub dropped_send_error: u64,
    /// Sends retried because the queue was full (`ENOBUFS`).
    pub queue_full_retries: u64,
    /// Batches sent again one datagram at a time because the device refused GSO.
    pub gso_fallbacks: u64,
    /// Sources resolved again after the kernel said the cached one was gone.
    pub sources_re_resolved: u64,
    /// Datagrams received (each GRO segment counts).
    pub datagrams_received: u64,
    /// Sockets the strategy could not protect, so the factory never handed them out.
    pub protection_failures: u64,
    /// Packets of this factory's sockets that a [`LoopTripwire`](crate::LoopTripwire) found
    /// in the TUN: routing loops (factory-wide; always 0 for one socket's counters).
    pub loops_detected: u64,
}

impl Counters {
    /// Every datagram dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_no_route + self.dropped_send_error
    }
}

impl AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.datagrams_sent += o.datagrams_sent;
        self.sends += o.sends;
        self.dropped_no_route += o.dropped_no_route;
        self.dropped_send_error += o.dropped_send_error;
        self.queue_full_retries += o.queue_full_retries;
        self.gso_fallbacks += o.gso_fallbacks;
        self.sources_re_resolved += o.sources_re_resolved;
        self.datagrams_received += o.datagrams_received;
        self.protection_failures += o.protection_failures;
        self.loops_detected += o.loops_detected;
    }
}

/// One counter of [`Counters`], for [`SocketCounters::add`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    DatagramsSent,
    Sends,
    DroppedNoRoute,
    DroppedSendError,
    QueueFullRetries,
    GsoFallbacks,
    SourcesReResolved,
    DatagramsReceived,
    ProtectionFailures,
}

const COUNTERS: usize = 9;

/// The live counters of one socket.
#[derive(Debug, Default)]
pub(crate) struct SocketCounters {
    values: [AtomicU64; COUNTERS],
}

impl SocketCounters {
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.values[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let v = |c: Counter| self.values[c as usize].load(Ordering::Relaxed);
        Counters {
            datagrams_sent: v(Counter::DatagramsSent),
            sends: v(Counter::Sends),
            dropped_no_route: v(Counter::DroppedNoRoute),
            dropped_send_error: v(Counter::DroppedSendError),
            queue_full_retries: v(Counter::QueueFullRetries),
            gso_fallbacks: v(Counter::GsoFallbacks),
            sources_re_resolved: v(Counter::SourcesReResolved),
            datagrams_received: v(Counter::DatagramsReceived),
            protection_failures: v(Counter::ProtectionFailures),
            loops_detected: 0,
        }
    }
}

/// A factory's view of its sockets' counters.
#[derive(Debug, Default)]
pub(crate) struct CounterRegistry {
    /// Counts of sockets already dropped, and factory-level counts (protection failures).
    retired: SocketCounters,
    live: Mutex<Vec<Weak<SocketCounters>>>,
}

impl CounterRegistry {
    /// Counters for a new socket, included in [`total`](Self::total) from now on.
    pub(crate) fn register(&self) -> Arc<SocketCounters> {
        let counters = Arc::new(SocketCounters::default());
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&counters));
        counters
    }

    /// Keeps the counts of a socket being dropped.
    pub(crate) fn retire(&self, counters: &SocketCounters) {
        // Under the lock, so a concurrent total never counts the socket twice or not at all.
        let _live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let done = counters.snapshot();
        for (i, n) in counter_values(&done).into_iter().enumerate() {
            self.retired.values[i].fetch_add(n, Ordering::Relaxed);
        }
        // Zero them, in case the socket's Arc outlives the socket for a moment.
        for value in &counters.values {
            value.store(0, Ordering::Relaxed);
        }
    }

    /// Counts at the factory level, not tied to a socket.
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.retired.add(counter, n);
    }

    /// The sum over every socket, live or dropped.
    pub(crate) fn total(&self) -> Counters {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = self.retired.snapshot();
        for counters in live.iter().filter_map(Weak::upgrade) {
            total += counters.snapshot();
        }
        total
    }
}

fn counter_values(c: &Counters) -> [u64; COUNTERS] {
    let mut out = [0; COUNTERS];
    out[Counter::DatagramsSent as usize] = c.datagrams_sent;
    out[Counter::Sends as usize] = c.sends;
    out[Counter::DroppedNoRoute as usize] = c.dropped_no_route;
    out[Counter::DroppedSendError as usize] = c.dropped_send_error;
    out[Counter::QueueFullRetries as usize] = c.queue_full_retries;
    out[Counter::GsoFallbacks as usize] = c.gso_fallbacks;
    out[Counter::SourcesReResolved as usize] = c.sources_re_resolved;
    out[Counter::DatagramsReceived as usize] = c.datagrams_received;
    out[Counter::ProtectionFailures as usize] = c.protection_failures;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_include_live_and_dropped_sockets_once() {
        let registry = CounterRegistry::default();
        let a = registry.register();
        let b = registry.register();
        a.add(Counter::DatagramsSent, 3);
        b.add(Counter::DatagramsSent, 4);
        b.add(Counter::DroppedNoRoute, 2);
        registry.add(Counter::ProtectionFailures, 1);
        assert_eq!(registry.total().datagrams_sent, 7);
        registry.retire(&b);
        drop(b);
        let total = registry.total();
        assert_eq!(total.datagrams_sent, 7);
        assert_eq!(total.dropped(), 2);
        assert_eq!(total.protection_failures, 1);
        assert_eq!(a.snapshot().datagrams_sent, 3);
    }

    #[test]
    fn every_counter_round_trips_through_the_array() {
        let c = SocketCounters::default();
        let all = [
            Counter::DatagramsSent,
            Counter::Sends,
            Counter::DroppedNoRoute,
            Counter::DroppedSendError,
            Counter::QueueFullRetries,
            Counter::GsoFallbacks,
            Counter::SourcesReResolved,
            Counter::DatagramsReceived,
            Counter::ProtectionFailures,
        ];
        for (i, counter) in all.into_iter().enumerate() {
            c.add(counter, 1 << i);
        }
        let snapshot = c.snapshot();
        let values = counter_values(&snapshot);
        for (i, v) in values.into_iter().enumerate() {
            assert_eq!(v, 1 << i);
        }
    }
}
