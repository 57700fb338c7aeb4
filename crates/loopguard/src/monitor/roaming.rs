//! [`Roaming`]: what a network change means for the application's guarded sockets.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

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

/// Linux: the kernel's route for a packet carrying the guard's mark (`ip route get DST mark
/// M`), which is exactly the path a guarded socket's next packet takes.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy)]
pub struct MarkedRoute {
    mark: u32,
}

#[cfg(target_os = "linux")]
impl MarkedRoute {
    /// Looks routes up with `config`'s mark.
    pub fn new(config: crate::GuardConfig) -> Self {
        MarkedRoute {
            mark: config.mark(),
        }
    }
}

#[cfg(target_os = "linux")]
impl EgressLookup for MarkedRoute {
    fn egress(&self, destination: IpAddr) -> EgressFuture<'_> {
        use crate::os::linux::{route_get, RoutesError};
        Box::pin(async move {
            match route_get(destination, Some(self.mark)).await {
                Ok(r) => Ok(Some(Egress {
                    interface_index: r.interface_index,
                    interface: r.interface,
                    source: r.source,
                })),
                Err(RoutesError::Unreachable { .. }) => Ok(None),
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }
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
    /// Destinations whose egress could not be looked up, with the error.
    pub lookup_errors: Vec<(IpAddr, String)>,
}

impl RoamEvent {
    /// Whether some tracked destination now leaves by another interface or source.
    pub fn rebind_required(&self) -> bool {
        !self.rebind.is_empty()
    }
}

/// A [`Monitor`] wired to the application: on every batch it resets the registered
/// factories and resolvers, then compares the egress of each tracked destination with what it
/// was.
pub struct Roaming {
    monitor: Monitor,
    lookup: Box<dyn EgressLookup>,
    resets: Vec<Box<dyn Reset>>,
    tracked: BTreeMap<IpAddr, Option<Egress>>,
}

impl fmt::Debug for Roaming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Roaming")
            .field("monitor", &self.monitor)
            .field("resets", &self.resets.len())
            .field("tracked", &self.tracked)
            .finish()
    }
}

impl Roaming {
    /// Wires `monitor`, looking egresses up with `lookup`.
    pub fn new(monitor: Monitor, lookup: impl EgressLookup + 'static) -> Self {
        Roaming {
            monitor,
            lookup: Box::new(lookup),
            resets: Vec::new(),
            tracked: BTreeMap::new(),
        }
    }

    /// Resets `target` (a [`SocketFactory`], a guarded resolver) on every change.
    pub fn reset_on_change(&mut self, target: impl Reset + 'static) {
        self.resets.push(Box::new(target));
    }

    /// Watches the egress of `destination` (a peer, a relay, the control plane), starting
    /// from its current one, which is returned.
    pub async fn track(&mut self, destination: IpAddr) -> Option<Egress> {
        let now = self.lookup.egress(destination).await.ok().flatten();
        self.tracked.insert(destination, now.clone());
        now
    }

    /// Stops watching `destination`.
    pub fn untrack(&mut self, destination: IpAddr) {
        self.tracked.remove(&destination);
    }

    /// The egress last seen for each tracked destination.
    pub fn tracked(&self) -> impl Iterator<Item = (&IpAddr, &Option<Egress>)> {
        self.tracked.iter()
    }

    /// Waits for the next debounced change, resets, and reports which tracked destinations
    /// need their sockets rebuilt. `None` when the monitor ended.
    pub async fn next(&mut self) -> Option<RoamEvent> {
        let batch = self.monitor.next().await?;
        // Reset first: a send racing this call resolves afresh rather than reusing a path of
        // the old network.
        for r in &self.resets {
            r.reset();
        }
        let mut event = RoamEvent {
            batch,
            rebind: Vec::new(),
            lookup_errors: Vec::new(),
        };
        for (destination, last) in self.tracked.iter_mut() {
            let now = match self.lookup.egress(*destination).await {
                Ok(now) => now,
                Err(e) => {
                    event.lookup_errors.push((*destination, e.to_string()));
                    continue;
                }
            };
            if egress_changed(last, &now) {
                event.rebind.push(Rebind {
                    destination: *destination,
                    before: last.clone(),
                    after: now.clone(),
                });
                *last = now;
            }
        }
        Some(event)
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

    /// A lookup answering from a table the test changes.
    #[derive(Clone, Default)]
    struct Table(Arc<Mutex<Option<Egress>>>);

    impl EgressLookup for Table {
        fn egress(&self, _: IpAddr) -> EgressFuture<'_> {
            let now = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(now) })
        }
    }

    #[derive(Clone, Default)]
    struct Counter(Arc<AtomicUsize>);

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

    #[tokio::test]
    async fn a_change_resets_and_reports_only_moved_destinations() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let table = Table::default();
        *table.0.lock().unwrap() = via(2, "192.0.2.2");
        let resets = Counter::default();
        let mut roaming = Roaming::new(
            Monitor::from_changes(MonitorConfig::default(), rx),
            table.clone(),
        );
        roaming.reset_on_change(resets.clone());
        let dst: IpAddr = "198.51.100.2".parse().unwrap();
        assert_eq!(roaming.track(dst).await, via(2, "192.0.2.2"));

        // Something changed, but not this destination's path: reset, no rebind.
        tx.send(Change::new(ChangeKind::AddressAdded).with_interface(3, None))
            .unwrap();
        let e = roaming.next().await.unwrap();
        assert!(!e.rebind_required());
        assert_eq!(resets.0.load(Ordering::SeqCst), 1);

        // The uplink went away: the path moved to interface 3.
        *table.0.lock().unwrap() = via(3, "203.0.113.130");
        tx.send(Change::new(ChangeKind::LinkDown).with_interface(2, None))
            .unwrap();
        let e = roaming.next().await.unwrap();
        assert_eq!(e.rebind.len(), 1);
        assert_eq!(e.rebind[0].before, via(2, "192.0.2.2"));
        assert_eq!(e.rebind[0].after, via(3, "203.0.113.130"));
        assert_eq!(resets.0.load(Ordering::SeqCst), 2);

        // No path at all is a change too (traffic now fails closed).
        *table.0.lock().unwrap() = None;
        tx.send(Change::new(ChangeKind::RouteRemoved)).unwrap();
        let e = roaming.next().await.unwrap();
        assert_eq!(e.rebind[0].after, None);
        assert!(
            e.rebind[0].to_string().ends_with("-> no path"),
            "{}",
            e.rebind[0]
        );
        drop(tx);
        assert!(roaming.next().await.is_none());
    }
}
