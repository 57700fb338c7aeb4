//! Route lookups started by a non-blocking send, and the tasks waiting for them.
//!
//! [`UdpSocket::try_send`](super::UdpSocket::try_send) cannot wait for a cache miss, so it
//! starts the lookup, returns `WouldBlock`, and the caller's write-readiness poll waits here
//! until every lookup of the socket has finished. A finished lookup keeps its answer until
//! the next `try_send` to that destination takes it, so an answer the caches do not keep (an
//! I/O error, or a path evicted at once) still reaches the caller, once, and a poller never
//! spins on a miss.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::route::Route;
use crate::Error;

/// A destination, with the explicit source it was asked for (`None`: the strategy's).
pub(super) type Key = (Option<IpAddr>, SocketAddr);

/// Finished answers kept for callers that have not come back for them; beyond this the
/// oldest are dropped (their callers, if they return, look up again).
const MAX_FINISHED: usize = 64;

/// The lookups of one socket.
#[derive(Default)]
pub(super) struct PendingRoutes {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    lookups: HashMap<Key, Lookup>,
    running: usize,
    waiting: Vec<Waker>,
}

enum Lookup {
    Running,
    Finished(Result<Route, Error>),
}

impl PendingRoutes {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the answer of a finished lookup for `key`, if there is one.
    pub(super) fn take_finished(&self, key: Key) -> Option<Result<Route, Error>> {
        let mut inner = self.lock();
        if !matches!(inner.lookups.get(&key), Some(Lookup::Finished(_))) {
            return None;
        }
        match inner.lookups.remove(&key) {
            Some(Lookup::Finished(answer)) => Some(answer),
            _ => None,
        }
    }

    /// Marks `key` as being looked up; `None` when it already is (one lookup per key), else
    /// the [`Finisher`] that the lookup must hand its answer to.
    pub(super) fn begin(self: &Arc<Self>, key: Key) -> Option<Finisher> {
        let mut inner = self.lock();
        if matches!(inner.lookups.get(&key), Some(Lookup::Running)) {
            return None;
        }
        inner.lookups.insert(key, Lookup::Running);
        inner.running += 1;
        Some(Finisher {
            pending: Arc::clone(self),
            key,
            finished: false,
        })
    }

    fn finish(&self, key: Key, answer: Result<Route, Error>) {
        let mut inner = self.lock();
        if inner.lookups.len() >= MAX_FINISHED {
            inner
                .lookups
                .retain(|_, lookup| matches!(lookup, Lookup::Running));
        }
        if let Some(Lookup::Running) = inner.lookups.insert(key, Lookup::Finished(answer)) {
            inner.running -= 1;
        }
        let waiting = if inner.running == 0 {
            std::mem::take(&mut inner.waiting)
        } else {
            Vec::new()
        };
        drop(inner);
        waiting.into_iter().for_each(Waker::wake);
    }

    /// `Ready` when no lookup is running; otherwise `cx` is woken when the last one ends.
    pub(super) fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if inner.running == 0 {
            return Poll::Ready(());
        }
        if !inner.waiting.iter().any(|w| w.will_wake(cx.waker())) {
            inner.waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Hands a lookup's answer to [`PendingRoutes`]; dropped without one (the lookup panicked, or
/// its runtime shut down), it answers with an error, so no poller waits forever.
pub(super) struct Finisher {
    pending: Arc<PendingRoutes>,
    key: Key,
    finished: bool,
}

impl Finisher {
    /// Stores the lookup's answer and wakes the waiting pollers.
    pub(super) fn finish(mut self, answer: Result<Route, Error>) {
        self.finished = true;
        self.pending.finish(self.key, answer);
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        if !self.finished {
            let lost = io::Error::other("the route lookup for this destination did not finish");
            self.pending.finish(self.key, Err(Error::Io(lost)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn key(port: u16) -> Key {
        (None, SocketAddr::from(([192, 0, 2, 1], port)))
    }

    fn route() -> Route {
        Route {
            src: Some(IpAddr::from([198, 51, 100, 2])),
            interface: Some(3),
            resolved: true,
        }
    }

    #[test]
    fn a_poller_waits_for_every_running_lookup_and_is_woken_once_they_end() {
        let pending = Arc::new(PendingRoutes::default());
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        assert!(pending.poll_idle(&mut cx).is_ready());

        let first = pending.begin(key(1)).expect("a new key starts a lookup");
        let second = pending.begin(key(2)).expect("another key starts its own");
        assert!(pending.begin(key(1)).is_none(), "one lookup per key");
        assert!(pending.poll_idle(&mut cx).is_pending());
        assert!(pending.poll_idle(&mut cx).is_pending());

        first.finish(Ok(route()));
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "one lookup still runs");
        assert!(pending.poll_idle(&mut cx).is_pending());
        second.finish(Err(Error::HostUnreachable {
            destination: key(2).1,
        }));
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "woken once, not per poll"
        );
        assert!(pending.poll_idle(&mut cx).is_ready());
    }

    #[test]
    fn a_finished_answer_is_taken_once() {
        let pending = Arc::new(PendingRoutes::default());
        assert!(pending.take_finished(key(1)).is_none());
        let lookup = pending.begin(key(1)).unwrap();
        assert!(pending.take_finished(key(1)).is_none(), "still running");
        lookup.finish(Ok(route()));
        assert_eq!(pending.take_finished(key(1)).unwrap().unwrap(), route());
        assert!(pending.take_finished(key(1)).is_none());
    }

    #[test]
    fn a_lookup_dropped_without_an_answer_ends_with_an_error() {
        let pending = Arc::new(PendingRoutes::default());
        drop(pending.begin(key(1)).unwrap());
        let answer = pending.take_finished(key(1)).expect("an answer");
        assert!(matches!(answer, Err(Error::Io(_))));
        let waker = Waker::noop();
        assert!(pending
            .poll_idle(&mut Context::from_waker(waker))
            .is_ready());
    }

    #[test]
    fn unclaimed_answers_are_bounded() {
        let pending = Arc::new(PendingRoutes::default());
        for port in 0..(MAX_FINISHED as u16 * 3) {
            pending.begin(key(port)).unwrap().finish(Ok(route()));
        }
        assert!(pending.lock().lookups.len() <= MAX_FINISHED);
    }
}
