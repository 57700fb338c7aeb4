//! A thread of our own that runs user callbacks for events posted from a system thread.
//!
//! Windows runs change-notification callbacks on an IP Helper thread, and
//! `CancelMibChangeNotify2` waits for a running callback to return ("NotifyRouteChange2",
//! "CancelMibChangeNotify2", Win32 docs). A user callback that runs there and blocks, or that
//! drops the registration itself, deadlocks; one that panics unwinds into the OS, which
//! aborts the process. So the system callback only posts to an unbounded channel (it never
//! blocks), and this thread runs the user's callback, catching a panic and going on.
//! Portable, so its rules are tested on every OS.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};

enum Message<T> {
    Event(T),
    Stop,
}

/// Posts events to a [`CallbackThread`] from any thread; never blocks.
pub(crate) struct Poster<T>(mpsc::Sender<Message<T>>);

impl<T> Poster<T> {
    /// Queues `event`; dropped silently once the thread was stopped.
    pub(crate) fn post(&self, event: T) {
        let _ = self.0.send(Message::Event(event));
    }
}

/// Runs `handler` for every posted event, in order, on its own thread.
pub(crate) struct CallbackThread<T: Send + 'static> {
    tx: mpsc::Sender<Message<T>>,
    thread: Option<JoinHandle<()>>,
    id: ThreadId,
    panics: Arc<AtomicU64>,
}

impl<T: Send + 'static> CallbackThread<T> {
    /// Starts the thread, named `name`.
    pub(crate) fn spawn(name: &str, handler: impl Fn(T) + Send + 'static) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Message<T>>();
        let panics = Arc::new(AtomicU64::new(0));
        let counted = panics.clone();
        let thread = thread::Builder::new().name(name.into()).spawn(move || {
            // Ends at `Stop` (the owner dropped), even while posters live on.
            for message in rx {
                let Message::Event(event) = message else {
                    return;
                };
                if catch_unwind(AssertUnwindSafe(|| handler(event))).is_err() {
                    counted.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("a change-notification callback panicked; later changes are still delivered");
                }
            }
        })?;
        Ok(CallbackThread {
            id: thread.thread().id(),
            tx,
            thread: Some(thread),
            panics,
        })
    }

    /// A handle for the system thread to post with: never blocks.
    pub(crate) fn poster(&self) -> Poster<T> {
        Poster(self.tx.clone())
    }

    /// How many callbacks panicked so far.
    pub(crate) fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
}

impl<T: Send + 'static> Drop for CallbackThread<T> {
    /// Stops the thread once the events already posted ran; later posts are dropped. Dropped
    /// from inside a callback (the callback thread itself), it does not wait for itself:
    /// the thread ends after that callback returns.
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            if thread::current().id() != self.id {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use super::*;

    /// Waits (bounded) until `done` holds.
    fn wait_for(state: &(Mutex<Vec<u32>>, Condvar), done: impl Fn(&[u32]) -> bool) -> Vec<u32> {
        let (lock, cv) = state;
        let guard = cv
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(5), |v| !done(v))
            .unwrap()
            .0;
        guard.clone()
    }

    #[test]
    fn callbacks_run_in_order_on_another_thread_and_a_panic_does_not_stop_them() {
        let state = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let seen = state.clone();
        let poster = thread::current().id();
        let callbacks = CallbackThread::spawn("lg-test-callbacks", move |n: u32| {
            assert_ne!(thread::current().id(), poster, "ran on the posting thread");
            if n == 2 {
                panic!("a user callback panics");
            }
            seen.0.lock().unwrap().push(n);
            seen.1.notify_all();
        })
        .unwrap();
        let tx = callbacks.poster();
        for n in 1..=4 {
            tx.post(n);
        }
        assert_eq!(wait_for(&state, |v| v.len() == 3), vec![1, 3, 4]);
        assert_eq!(callbacks.panics(), 1);
    }

    #[test]
    fn posting_never_blocks_on_a_slow_callback() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let held = gate.clone();
        let callbacks = CallbackThread::spawn("lg-test-slow", move |_: u32| {
            let (lock, cv) = &*held;
            let _open = cv
                .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(5), |open| !*open)
                .unwrap();
        })
        .unwrap();
        let tx = callbacks.poster();
        // The first callback is stuck; a thousand posts still return at once.
        for n in 0..1000 {
            tx.post(n);
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        // Joins after the queue drained, although `tx` still lives.
        drop(callbacks);
        tx.post(1001); // after the stop: dropped, not a panic
    }

    #[test]
    fn dropping_the_owner_from_inside_a_callback_does_not_deadlock() {
        let slot: Arc<Mutex<Option<CallbackThread<u32>>>> = Arc::new(Mutex::new(None));
        let state = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (inner_slot, seen) = (slot.clone(), state.clone());
        let callbacks = CallbackThread::spawn("lg-test-self-drop", move |n: u32| {
            // What a user does when it unregisters from its own callback.
            drop(inner_slot.lock().unwrap().take());
            seen.0.lock().unwrap().push(n);
            seen.1.notify_all();
        })
        .unwrap();
        let tx = callbacks.poster();
        *slot.lock().unwrap() = Some(callbacks);
        tx.post(7);
        assert_eq!(wait_for(&state, |v| !v.is_empty()), vec![7]);
        assert!(slot.lock().unwrap().is_none());
    }
}
