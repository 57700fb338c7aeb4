//! [`Roaming`]: what a network change means for the application's guarded sockets.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use super::{Batch, Monitor};
use crate::{ResolveError, SocketFactory, Strategy};

/// Something holding decisions made for the old network, forgotten on a change: a factory's
/// path cache, a resolver's answers.
pub trait Reset: Send + Sync {
    /// Forgets every decision; the next use decides again.
    fn reset(&self);
}

impl<S: Strategy> Reset for SocketFactory<S> {
    fn reset(&self) {
        SocketFactory::reset(self)
    }
}

impl<R: Reset + ?Sized> Reset for Arc<R> {
    fn reset(&self) {
        (**self).reset()
    }
}

/// Where traffic to one destination leaves the machine, outside the tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    /// The outgoing interface's index.
    pub interface_index: Option<u32>,
    /// Its name, when known.
    pub interface: Option<String>,
    /// The source address the system would use.
    pub source: Option<IpAddr>,
}

impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.interface, self.interface_index) {
            (Some(n), _) => f.write_str(n)?,
            (None, Some(i)) => write!(f, "if#{i}")?,
            (None, None) => f.write_str("?")?,
        }
        if let Some(s) = self.source {
            write!(f, " from {s}")?;
        }
        Ok(())
    }
}

/// A boxed future, so [`EgressLookup`] stays object-safe.
pub type EgressFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Option<Egress>>> + Send + 'a>>;

/// Asks the system where guarded traffic to a destination leaves now: `Ok(None)` when no
/// path outside the tunnel exists.
pub trait EgressLookup: Send + Sync {
    /// The current egress for `destination`.
    fn egress(&self, destination: IpAddr) -> EgressFuture<'_>;
}

/// The egress a pinning strategy (Windows, macOS) resolves, straight from the strategy
/// (not through a factory's cache, which may hold the old network's answer).
#[derive(Debug, Clone)]
pub struct ResolveEgress<S>(pub S);

impl<S: Strategy> EgressLookup for ResolveEgress<S> {
    fn egress(&self, destination: IpAddr) -> EgressFuture<'_> {
        Box::pin(async move {
            match self.0.resolve(destination) {
                Ok(path) => Ok(Some(Egress {
                    interface_index: path.interface,
                    interface: None,
                    source: Some(path.source),
                })),
                // A tunnel that is gone leaves no trustworthy egress: the same as none.
                Err(ResolveError::NoRoute | ResolveError::TunnelGone { .. }) => Ok(None),
                Err(ResolveError::Io(e)) => Err(e),
            }
        })
    }
}

/// The egress of a tracked destination could not be looked up after a change.
///
/// Match on [`kind`](LookupError::kind) and [`raw_os_error`](LookupError::raw_os_error);
/// the lookup's own error is the [`source`](std::error::Error::source).
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot look up the egress to {destination}")]
pub struct LookupError {
    destination: IpAddr,
    os_code: Option<i32>,
    #[source]
    source: Arc<io::Error>,
}

impl LookupError {
    /// `error`, from looking up the egress to `destination`.
    pub fn new(destination: IpAddr, error: io::Error) -> Self {
        LookupError {
            destination,
            os_code: os_code(&error),
            source: Arc::new(error),
        }
    }

    /// The destination whose egress is unknown.
    pub fn destination(&self) -> IpAddr {
        self.destination
    }

    /// The kind of failure (`PermissionDenied`, `TimedOut`, ...).
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The operating system's error code (an errno, a Win32 error), from the lookup's error
    /// or an error it wraps.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.os_code
    }

    /// The lookup's error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

/// The first OS error code in `error` or in the errors inside it (a lookup often wraps the
/// kernel's answer in an error naming what was looked up).
fn os_code(error: &io::Error) -> Option<i32> {
    if let Some(code) = error.raw_os_error() {
        return Some(code);
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = error
        .get_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = next {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        next = e.source();
    }
    None
}

/// A tracked destination whose egress changed: sockets bound to the old source or
/// interface (connected UDP, TCP streams) should be rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebind {
    /// The destination.
    pub destination: IpAddr,
    /// The egress before the change (`None`: there was no path).
    pub before: Option<Egress>,
    /// The egress now (`None`: no path outside the tunnel; traffic is dropped, fail closed).
    pub after: Option<Egress>,
}

impl fmt::Display for Rebind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |e: &Option<Egress>| e.as_ref().map_or("no path".to_owned(), |e| e.to_string());
        write!(
            f,
            "{}: {} -> {}",
            self.destination,
            show(&self.before),
            show(&self.after)
        )
    }
}

/// One debounced change and what it means for the application.
#[derive(Clone, Debug)]
pub struct RoamEvent {
    /// What changed.
    pub batch: Batch,
    /// Tracked destinations whose egress changed ("rebind likely required").
    pub rebind: Vec<Rebind>,
    /// Tracked destinations whose egress could not be looked up after the change. Their
    /// last known egress is kept and compared again on the next change.
    pub lookup_errors: Vec<LookupError>,
}

impl RoamEvent {
    /// Whether some tracked destination now leaves by another interface or source.
    pub fn rebind_required(&self) -> bool {
        !self.rebind.is_empty()
    }
}

/// A lookup that owns what it needs, so [`Roaming`] can keep it across calls.
type Lookup = Pin<Box<dyn Future<Output = io::Result<Option<Egress>>> + Send>>;

/// Starts looking up the egress to `destination`.
fn start_lookup(lookup: &Arc<dyn EgressLookup>, destination: IpAddr) -> Lookup {
    let lookup = Arc::clone(lookup);
    Box::pin(async move { lookup.egress(destination).await })
}

/// One lookup of a batch: running, or answered.
enum Slot {
    Running(Lookup),
    Answered(io::Result<Option<Egress>>),
}

impl Slot {
    /// Drives the lookup; whether it has answered.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        if let Slot::Running(f) = self {
            let Poll::Ready(answer) = f.as_mut().poll(cx) else {
                return false;
            };
            *self = Slot::Answered(answer);
        }
        true
    }
}

/// One tracked destination.
enum Tracked {
    /// Its first lookup is under way.
    Starting(Lookup),
    /// The egress last seen (`None`: no path).
    Known(Option<Egress>),
}

impl Tracked {
    /// Drives the first lookup; the egress once known. A failed first lookup counts as no
    /// path, so the first answer after a change is reported as a rebind.
    fn poll_known(&mut self, cx: &mut Context<'_>) -> Poll<&Option<Egress>> {
        if let Tracked::Starting(f) = self {
            let answer = ready!(f.as_mut().poll(cx));
            *self = Tracked::Known(answer.ok().flatten());
        }
        match self {
            Tracked::Known(e) => Poll::Ready(e),
            Tracked::Starting(_) => Poll::Pending,
        }
    }
}

/// A batch taken from the monitor and not yet reported: the targets were reset when it was
/// taken, and the lookups of the destinations tracked then run here.
struct InFlight {
    batch: Batch,
    lookups: Vec<(IpAddr, Slot)>,
}

/// A [`Monitor`] wired to the application: on every batch it resets the registered
/// factories and resolvers, then compares the egress of each tracked destination with what it
/// was.
///
/// Made for a `tokio::select!` loop beside the application's own I/O:
/// [`next`](Roaming::next) is cancel safe (everything it has started lives in `self`), and
/// [`track`](Roaming::track) does not wait, so the loop calls it between two polls of
/// `next`. With `futures`, a `Roaming` is also a [`Stream`](futures_core::Stream) of
/// [`RoamEvent`]s.
///
/// ```no_run
/// # #[cfg(target_os = "linux")]
/// async fn serve() -> Result<(), Box<dyn std::error::Error>> {
///     use loopguard::monitor::{MarkedRoute, Monitor, MonitorConfig, Roaming};
///     use loopguard::{GuardConfig, LinuxMark, SocketFactory};
///
///     let config = GuardConfig::default();
///     let factory = SocketFactory::new(LinuxMark::new(config));
///     let socket = factory.bind("0.0.0.0:51820".parse()?)?;
///     let monitor = Monitor::new(MonitorConfig::default().ignore_interface("tun0"))?;
///     let mut roaming = Roaming::new(monitor, MarkedRoute::new(config));
///     roaming.reset_on_change(factory.clone());
///     let mut buf = vec![0u8; 65_535 * socket.gro_segments()];
///     loop {
///         tokio::select! {
///             r = socket.recv_from(&mut buf) => {
///                 // A peer: watch its path too (a no-op once it is tracked).
///                 roaming.track(r?.addr.ip());
///             }
///             e = roaming.next() => match e {
///                 Some(e) => e.rebind.iter().for_each(|r| println!("rebind {r}")),
///                 None => return Ok(()),
///             },
///         }
///     }
/// }
/// # fn main() {}
/// ```
pub struct Roaming {
    monitor: Monitor,
    lookup: Arc<dyn EgressLookup>,
    resets: Vec<Box<dyn Reset>>,
    tracked: BTreeMap<IpAddr, Tracked>,
    in_flight: Option<InFlight>,
}

impl fmt::Debug for Roaming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Roaming")
            .field("monitor", &self.monitor)
            .field("resets", &self.resets.len())
            .field("tracked", &self.tracked.keys().collect::<Vec<_>>())
            .field("in_flight", &self.in_flight.as_ref().map(|f| &f.batch))
            .finish()
    }
}

impl Roaming {
    /// Wires `monitor`, looking egresses up with `lookup`.
    pub fn new(monitor: Monitor, lookup: impl EgressLookup + 'static) -> Self {
        Roaming {
            monitor,
            lookup: Arc::new(lookup),
            resets: Vec::new(),
            tracked: BTreeMap::new(),
            in_flight: None,
        }
    }

    /// Resets `target` (a [`SocketFactory`], a guarded resolver) on every change, from the
    /// next batch taken from the monitor on.
    pub fn reset_on_change(&mut self, target: impl Reset + 'static) {
        self.resets.push(Box::new(target));
    }

    /// Watches the egress of `destination` (a peer, a relay, the control plane) without
    /// waiting; `false` when it was tracked already, which changes nothing.
    ///
    /// Its first lookup runs inside the following calls of [`next`](Roaming::next) (or of
    /// [`track_now`](Roaming::track_now)); later changes are compared with what that lookup
    /// found. Called while an event is being computed (between two polls of `next`), it
    /// applies to the batches taken after it: the batch in flight reports only the
    /// destinations tracked when it was taken. To know the starting egress before going on,
    /// use [`track_now`](Roaming::track_now).
    pub fn track(&mut self, destination: IpAddr) -> bool {
        if self.tracked.contains_key(&destination) {
            return false;
        }
        let first = start_lookup(&self.lookup, destination);
        self.tracked.insert(destination, Tracked::Starting(first));
        true
    }

    /// Like [`track`](Roaming::track), then waits for the egress it starts from (`None`: no
    /// path, or the first lookup failed). For a destination tracked already, the egress
    /// last seen.
    ///
    /// Cancel safety: cancel safe. `destination` is tracked from the call on; if the wait is
    /// dropped, the first lookup goes on inside the next calls of [`next`](Roaming::next).
    pub async fn track_now(&mut self, destination: IpAddr) -> Option<Egress> {
        self.track(destination);
        std::future::poll_fn(|cx| match self.tracked.get_mut(&destination) {
            Some(t) => t.poll_known(cx).map(Option::clone),
            None => Poll::Ready(None),
        })
        .await
    }

    /// Stops watching `destination`, at once: an event being computed leaves it out.
    /// `false` when it was not tracked.
    pub fn untrack(&mut self, destination: IpAddr) -> bool {
        if let Some(f) = &mut self.in_flight {
            f.lookups.retain(|(d, _)| *d != destination);
        }
        self.tracked.remove(&destination).is_some()
    }

    /// The egress last seen for each tracked destination (`None`: no path), leaving out the
    /// ones whose first lookup is still under way.
    pub fn tracked(&self) -> impl Iterator<Item = (&IpAddr, &Option<Egress>)> {
        self.tracked.iter().filter_map(|(d, t)| match t {
            Tracked::Known(e) => Some((d, e)),
            Tracked::Starting(_) => None,
        })
    }

    /// Waits for the next debounced change, resets, and reports which tracked destinations
    /// need their sockets rebuilt. `None` when the monitor ended. Also drives the first
    /// lookups of destinations given to [`track`](Roaming::track).
    ///
    /// Cancel safety: this method is cancel safe, so it can be a branch of `tokio::select!`
    /// beside a busy socket. A batch taken from the monitor stays in `self` until its event
    /// is returned: if the future is dropped while the egress lookups run, the lookups stay
    /// in `self` too, and the next call goes on with them (it does not start them again)
    /// and returns that batch's event. The registered targets are reset once per batch, when
    /// it is taken, before any lookup.
    pub async fn next(&mut self) -> Option<RoamEvent> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next event, as [`next`](Roaming::next) awaits it: `Pending` registers
    /// `cx` to be woken by a change or by a lookup's answer. All progress is kept in `self`.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<RoamEvent>> {
        for t in self.tracked.values_mut() {
            let _ = t.poll_known(cx);
        }
        let mut in_flight = match self.in_flight.take() {
            Some(f) => f,
            None => match ready!(self.monitor.poll_next(cx)) {
                Some(batch) => self.take(batch),
                None => return Poll::Ready(None),
            },
        };
        let mut answered = true;
        for (_, slot) in &mut in_flight.lookups {
            answered &= slot.poll(cx);
        }
        // A destination whose first lookup was still running when the batch was taken is
        // compared with that lookup's answer: wait for it too.
        let first_running = in_flight
            .lookups
            .iter()
            .any(|(d, _)| matches!(self.tracked.get(d), Some(Tracked::Starting(_))));
        if !answered || first_running {
            self.in_flight = Some(in_flight);
            return Poll::Pending;
        }
        Poll::Ready(Some(self.report(in_flight)))
    }

    /// Takes `batch`: resets the targets, then starts looking up every tracked destination.
    fn take(&mut self, batch: Batch) -> InFlight {
        // Reset first: a send racing the lookups resolves afresh rather than reusing a path
        // of the old network.
        for r in &self.resets {
            r.reset();
        }
        let lookups = self
            .tracked
            .keys()
            .map(|d| (*d, Slot::Running(start_lookup(&self.lookup, *d))))
            .collect();
        InFlight { batch, lookups }
    }

    /// The event of an answered batch; the egresses that moved are remembered.
    fn report(&mut self, in_flight: InFlight) -> RoamEvent {
        let mut event = RoamEvent {
            batch: in_flight.batch,
            rebind: Vec::new(),
            lookup_errors: Vec::new(),
        };
        for (destination, slot) in in_flight.lookups {
            let Some(Tracked::Known(last)) = self.tracked.get_mut(&destination) else {
                continue;
            };
            let now = match slot {
                Slot::Answered(Ok(now)) => now,
                Slot::Answered(Err(e)) => {
                    event.lookup_errors.push(LookupError::new(destination, e));
                    continue;
                }
                Slot::Running(_) => continue,
            };
            if egress_changed(last, &now) {
                event.rebind.push(Rebind {
                    destination,
                    before: last.clone(),
                    after: now.clone(),
                });
                *last = now;
            }
        }
        event
    }
}

impl futures_core::Stream for Roaming {
    type Item = RoamEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoamEvent>> {
        Roaming::poll_next(self.get_mut(), cx)
    }
}

/// Interface or source differ (a name change alone does not move traffic).
fn egress_changed(before: &Option<Egress>, after: &Option<Egress>) -> bool {
    match (before, after) {
        (None, None) => false,
        (Some(b), Some(a)) => b.interface_index != a.interface_index || b.source != a.source,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{Change, ChangeKind, MonitorConfig};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::sync::{mpsc, watch};

    /// The bound on waiting for what must happen.
    const BOUND: Duration = Duration::from_secs(10);

    /// A lookup answering from a table the test changes.
    #[derive(Clone, Default)]
    struct Table(Arc<Mutex<Option<Egress>>>);

    impl Table {
        fn set(&self, egress: Option<Egress>) {
            *self.0.lock().unwrap() = egress;
        }

        fn get(&self) -> Option<Egress> {
            self.0.lock().unwrap().clone()
        }
    }

    impl EgressLookup for Table {
        fn egress(&self, _: IpAddr) -> EgressFuture<'_> {
            let now = self.get();
            Box::pin(async move { Ok(now) })
        }
    }

    #[derive(Clone, Default)]
    struct Counter(Arc<AtomicUsize>);

    impl Counter {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Reset for Counter {
        fn reset(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn via(index: u32, source: &str) -> Option<Egress> {
        Some(Egress {
            interface_index: Some(index),
            interface: None,
            source: Some(source.parse().unwrap()),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A monitor fed by the test, with a short quiet time.
    fn monitor() -> (mpsc::UnboundedSender<Change>, Monitor) {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = MonitorConfig::default().debounce(Duration::from_millis(10));
        (tx, Monitor::from_changes(config, rx))
    }

    #[tokio::test]
    async fn a_change_resets_and_reports_only_moved_destinations() {
        let (tx, rx) = mpsc::unbounded_channel();
        let table = Table::default();
        table.set(via(2, "192.0.2.2"));
        let resets = Counter::default();
        let mut roaming = Roaming::new(
            Monitor::from_changes(MonitorConfig::default(), rx),
            table.clone(),
        );
        roaming.reset_on_change(resets.clone());
        let dst = ip("198.51.100.2");
        assert_eq!(roaming.track_now(dst).await, via(2, "192.0.2.2"));
        assert!(!roaming.track(dst), "tracked twice");

        // Something changed, but not this destination's path: reset, no rebind.
        tx.send(Change::new(ChangeKind::AddressAdded).with_interface(3, None))
            .unwrap();
        let e = roaming.next().await.unwrap();
        assert!(!e.rebind_required());
        assert_eq!(resets.get(), 1);

        // The uplink went away: the path moved to interface 3.
        table.set(via(3, "203.0.113.130"));
        tx.send(Change::new(ChangeKind::LinkDown).with_interface(2, None))
            .unwrap();
        let e = roaming.next().await.unwrap();
        assert_eq!(e.rebind.len(), 1);
        assert_eq!(e.rebind[0].before, via(2, "192.0.2.2"));
        assert_eq!(e.rebind[0].after, via(3, "203.0.113.130"));
        assert_eq!(resets.get(), 2);

        // No path at all is a change too (traffic now fails closed).
        table.set(None);
        tx.send(Change::new(ChangeKind::RouteRemoved)).unwrap();
        let e = roaming.next().await.unwrap();
        assert_eq!(e.rebind[0].after, None);
        assert!(
            e.rebind[0].to_string().ends_with("-> no path"),
            "{}",
            e.rebind[0]
        );
        drop(tx);
        // The end, seen through `Stream` as well.
        let end =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut roaming), cx));
        assert!(end.await.is_none());
    }

    /// A lookup answering from a table, each answer held back while the gate is shut; it
    /// counts the lookups that began.
    #[derive(Clone)]
    struct Gated {
        table: Table,
        open: Arc<watch::Sender<bool>>,
        began: Arc<watch::Sender<usize>>,
    }

    impl Gated {
        fn new(egress: Option<Egress>) -> Self {
            let table = Table::default();
            table.set(egress);
            Gated {
                table,
                open: Arc::new(watch::Sender::new(true)),
                began: Arc::new(watch::Sender::new(0)),
            }
        }

        fn began(&self) -> usize {
            *self.began.borrow()
        }
    }

    impl EgressLookup for Gated {
        fn egress(&self, _: IpAddr) -> EgressFuture<'_> {
            Box::pin(async move {
                self.began.send_modify(|n| *n += 1);
                let mut open = self.open.subscribe();
                let _ = open.wait_for(|open| *open).await;
                Ok(self.table.get())
            })
        }
    }

    #[tokio::test]
    async fn a_next_dropped_mid_lookup_keeps_its_batch_and_the_next_call_delivers_it() {
        let (tx, monitor) = monitor();
        let lookup = Gated::new(via(2, "192.0.2.2"));
        let resets = Counter::default();
        let mut roaming = Roaming::new(monitor, lookup.clone());
        roaming.reset_on_change(resets.clone());
        let (a, b, c) = (ip("198.51.100.2"), ip("198.51.100.3"), ip("198.51.100.4"));
        assert_eq!(roaming.track_now(a).await, via(2, "192.0.2.2"));
        assert_eq!(roaming.track_now(c).await, via(2, "192.0.2.2"));
        assert_eq!(lookup.began(), 2);

        // The uplink goes; the lookups that follow hang until the gate opens.
        lookup.open.send_replace(false);
        lookup.table.set(via(3, "203.0.113.130"));
        tx.send(Change::new(ChangeKind::LinkDown).with_interface(2, None))
            .unwrap();
        // Poll `next` until the batch is taken and its lookups (a, c) have begun, then drop it.
        let mut began = lookup.began.subscribe();
        tokio::time::timeout(BOUND, async {
            tokio::select! {
                e = roaming.next() => panic!("an event with the lookups held back: {e:?}"),
                _ = began.wait_for(|n| *n == 4) => {}
            }
        })
        .await
        .expect("the batch's lookups never began");
        assert_eq!(resets.get(), 1, "the batch was taken without a reset");

        // Between two polls: a new destination, and one that is no longer of interest.
        assert!(roaming.track(b));
        assert!(roaming.untrack(c));
        lookup.open.send_replace(true);
        let e = tokio::time::timeout(BOUND, roaming.next())
            .await
            .expect("the batch taken before the drop was lost")
            .unwrap();
        assert!(e.batch.contains(ChangeKind::LinkDown), "{:?}", e.batch);
        assert_eq!(
            e.rebind,
            vec![Rebind {
                destination: a,
                before: via(2, "192.0.2.2"),
                after: via(3, "203.0.113.130"),
            }]
        );
        assert!(e.lookup_errors.is_empty(), "{:?}", e.lookup_errors);
        assert_eq!(resets.get(), 1, "one batch, one reset");
        // a and c once each, then b's first lookup: the batch's lookups were not started over.
        assert_eq!(lookup.began(), 5);
        let seen: Vec<_> = roaming.tracked().map(|(d, e)| (*d, e.clone())).collect();
        assert_eq!(
            seen,
            vec![(a, via(3, "203.0.113.130")), (b, via(3, "203.0.113.130"))]
        );

        // b, tracked while the event was computed, is watched from then on.
        lookup.table.set(via(4, "198.51.100.130"));
        tx.send(Change::new(ChangeKind::RouteAdded)).unwrap();
        let e = tokio::time::timeout(BOUND, roaming.next())
            .await
            .unwrap()
            .unwrap();
        let moved: Vec<_> = e.rebind.iter().map(|r| r.destination).collect();
        assert_eq!(moved, vec![a, b]);
        assert_eq!(resets.get(), 2);
    }

    /// A lookup that needs several wake-ups, as a netlink round trip does, and counts how many
    /// run.
    #[derive(Clone)]
    struct Slow {
        table: Table,
        running: Arc<AtomicUsize>,
    }

    /// Counts a running lookup until it finishes or is dropped.
    struct Running(Arc<AtomicUsize>);

    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl EgressLookup for Slow {
        fn egress(&self, _: IpAddr) -> EgressFuture<'_> {
            Box::pin(async move {
                self.running.fetch_add(1, Ordering::SeqCst);
                let _running = Running(self.running.clone());
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                Ok(self.table.get())
            })
        }
    }

    #[tokio::test]
    async fn in_a_select_beside_a_flood_every_change_is_reported() {
        let (tx, monitor) = monitor();
        let lookup = Slow {
            table: Table::default(),
            running: Arc::default(),
        };
        lookup.table.set(via(2, "192.0.2.2"));
        let mut roaming = Roaming::new(monitor, lookup.clone());
        let dst = ip("198.51.100.2");
        roaming.track_now(dst).await;
        // The flood: a receive that is ready nearly every time the loop polls it.
        let (packets_tx, mut packets) = mpsc::channel::<u64>(1024);
        let flood = tokio::spawn(async move {
            let mut n = 0;
            while packets_tx.send(n).await.is_ok() {
                n += 1;
            }
        });
        let uplinks = [(3, "203.0.113.130"), (2, "192.0.2.2"), (3, "203.0.113.130")];
        for (round, (index, source)) in uplinks.into_iter().enumerate() {
            lookup.table.set(via(index, source));
            tx.send(Change::new(ChangeKind::RouteChanged)).unwrap();
            let deadline = tokio::time::Instant::now() + BOUND;
            let (mut received, mut mid_lookup) = (0u64, 0u64);
            let event = loop {
                tokio::select! {
                    p = packets.recv() => {
                        p.unwrap();
                        received += 1;
                        // This branch won, so the `next` future was dropped: mid-lookup if one
                        // runs. The old `next` lost its batch right there.
                        if lookup.running.load(Ordering::SeqCst) > 0 {
                            mid_lookup += 1;
                        }
                    }
                    e = roaming.next() => break e.unwrap(),
                    _ = tokio::time::sleep_until(deadline) => {
                        panic!("round {round}: no event within {BOUND:?}");
                    }
                }
            };
            assert_eq!(event.rebind.len(), 1, "round {round}: {event:?}");
            assert_eq!(event.rebind[0].after, via(index, source));
            assert!(received > 0, "round {round}: the flood did not run");
            assert!(
                mid_lookup > 0,
                "round {round}: no `next` was dropped mid-lookup; the test shows nothing"
            );
        }
        flood.abort();
    }

    /// What a lookup wraps the kernel's answer in.
    #[derive(Debug, thiserror::Error)]
    #[error("asking the kernel")]
    struct Asking(#[source] io::Error);

    /// A lookup that fails for one destination, keeping the OS error inside its own.
    struct Refusing(IpAddr);

    impl EgressLookup for Refusing {
        fn egress(&self, destination: IpAddr) -> EgressFuture<'_> {
            let refused = destination == self.0;
            Box::pin(async move {
                if refused {
                    let os = io::Error::from_raw_os_error(13);
                    Err(io::Error::new(io::ErrorKind::PermissionDenied, Asking(os)))
                } else {
                    Ok(via(2, "192.0.2.2"))
                }
            })
        }
    }

    #[tokio::test]
    async fn a_failed_lookup_is_reported_with_its_kind_and_os_code() {
        let (tx, monitor) = monitor();
        let (bad, good) = (ip("198.51.100.9"), ip("198.51.100.2"));
        let mut roaming = Roaming::new(monitor, Refusing(bad));
        assert_eq!(roaming.track_now(bad).await, None);
        assert_eq!(roaming.track_now(good).await, via(2, "192.0.2.2"));
        tx.send(Change::new(ChangeKind::LinkUp)).unwrap();
        let e = tokio::time::timeout(BOUND, roaming.next())
            .await
            .unwrap()
            .unwrap();
        assert!(e.rebind.is_empty(), "{:?}", e.rebind);
        let [err] = e.lookup_errors.as_slice() else {
            panic!("{:?}", e.lookup_errors);
        };
        assert_eq!(err.destination(), bad);
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(err.raw_os_error(), Some(13));
        assert_eq!(err.to_string(), "cannot look up the egress to 198.51.100.9");
        let source = std::error::Error::source(err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("asking the kernel"));
    }

    #[test]
    fn roaming_and_monitors_can_move_to_another_task() {
        fn send<T: Send>() {}
        send::<Roaming>();
        send::<Monitor>();
        send::<RoamEvent>();
    }
}
