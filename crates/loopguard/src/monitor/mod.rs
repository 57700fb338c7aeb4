//! Network change monitoring: notice when the machine roams, so guarded sockets follow.
//!
//! A [`Monitor`] turns the operating system's change notifications (links going up or down,
//! addresses and routes appearing or vanishing, policy rules deleted) into debounced
//! [`Batch`]es. Events about the tunnel's own interface are dropped
//! ([`MonitorConfig::ignore_interface`]): the tunnel reconfiguring itself is not a reason to
//! re-decide anything.
//!
//! [`Roaming`] wires a monitor to the rest of the library: every batch resets the registered
//! factories (their cached paths are re-resolved lazily, on the next send) and reports which
//! tracked destinations now leave by another interface or source ([`Rebind`]), so the
//! application knows which sockets to rebuild.
//!
//! Backends, all behind [`Monitor::new`](Monitor): Linux (rtnetlink multicast groups), Windows
//! (`NotifyRouteChange2`, `NotifyIpInterfaceChange`, `NotifyUnicastIpAddressChange`; also
//! `Monitor::for_tunnel`, filtering by LUID), macOS and iOS (an `AF_ROUTE` socket). Other
//! sources feed [`Monitor::from_changes`] (an Android host forwarding `ConnectivityManager`
//! callbacks, a test).
//!
//! ```no_run
//! # #[cfg(target_os = "linux")]
//! async fn follow() -> Result<(), Box<dyn std::error::Error>> {
//!     use loopguard::monitor::{MarkedRoute, Monitor, MonitorConfig, Roaming};
//!     use loopguard::{GuardConfig, LinuxMark, SocketFactory};
//!
//!     let config = GuardConfig::default();
//!     let factory = SocketFactory::new(LinuxMark::new(config));
//!     let monitor = Monitor::new(MonitorConfig::default().ignore_interface("tun0"))?;
//!     let mut roaming = Roaming::new(monitor, MarkedRoute::new(config));
//!     roaming.reset_on_change(factory.clone());
//!     roaming.track_now("192.0.2.10".parse()?).await;
//!     while let Some(event) = roaming.next().await {
//!         for rebind in &event.rebind {
//!             println!("rebuild sockets to {}: now via {:?}", rebind.destination, rebind.after);
//!         }
//!     }
//!     Ok(())
//! }
//! # fn main() {}
//! ```

#[cfg(any(target_os = "macos", target_os = "ios"))]
mod apple;
mod debounce;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod marked;
mod roaming;
#[cfg(windows)]
mod windows;

// The backend of `Monitor::new`: each offers `start(tx)`.
#[cfg(any(target_os = "macos", target_os = "ios"))]
use apple as backend;
#[cfg(target_os = "linux")]
use linux as backend;
#[cfg(windows)]
use windows as backend;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

pub use crate::change::{Change, ChangeKind};
use debounce::Debouncer;
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use marked::MarkedRoute;
pub use roaming::{
    Egress, EgressFuture, EgressLookup, LookupError, Rebind, Reset, ResolveEgress, RoamEvent,
    Roaming,
};
#[cfg(windows)]
#[cfg_attr(docsrs, doc(cfg(windows)))]
pub use windows::reset_on_change;

impl Change {
    /// Whether this change is about `interface` (a name or a decimal index).
    fn concerns(&self, interface: &InterfaceRef) -> bool {
        match interface {
            InterfaceRef::Name(n) => self.interface.as_deref() == Some(n.as_str()),
            InterfaceRef::Index(i) => self.interface_index == Some(*i),
        }
    }
}

/// The changes of one debounced burst.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The changes, merged by kind and interface, in the order first seen.
    pub changes: Vec<Change>,
    /// How many raw notifications the batch stands for.
    pub raw_events: u64,
}

impl Batch {
    /// Whether any change is of `kind`.
    pub fn contains(&self, kind: ChangeKind) -> bool {
        self.changes.iter().any(|c| c.kind == kind)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum InterfaceRef {
    Name(String),
    Index(u32),
}

/// How a [`Monitor`] filters and debounces.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    quiet: Duration,
    max_delay: Duration,
    ignored: Vec<InterfaceRef>,
}

impl MonitorConfig {
    /// Default quiet time: a burst ends after this much silence.
    pub const DEFAULT_QUIET: Duration = Duration::from_millis(200);
    /// Default upper bound from the first change of a burst to its batch, so a storm still
    /// yields a batch every second.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(1);

    /// Sets the quiet time that ends a burst (default 200 ms).
    pub fn debounce(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// Sets the longest a change may wait in a burst that does not end (default 1 s; raised
    /// to the quiet time when smaller).
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Drops every change about the interface called `name` (the tunnel's own device).
    pub fn ignore_interface(mut self, name: impl Into<String>) -> Self {
        self.ignored.push(InterfaceRef::Name(name.into()));
        self
    }

    /// Drops every change about the interface with this index (a renamed device keeps it).
    pub fn ignore_interface_index(mut self, index: u32) -> Self {
        self.ignored.push(InterfaceRef::Index(index));
        self
    }

    /// The quiet time.
    pub fn quiet(&self) -> Duration {
        self.quiet
    }

    /// The upper bound of a batch's delay.
    pub fn delay_bound(&self) -> Duration {
        self.max_delay.max(self.quiet)
    }

    /// Whether `change` passes the interface filter.
    pub fn admits(&self, change: &Change) -> bool {
        !self.ignored.iter().any(|i| change.concerns(i))
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            quiet: Self::DEFAULT_QUIET,
            max_delay: Self::DEFAULT_MAX_DELAY,
            ignored: Vec::new(),
        }
    }
}

/// A stream of debounced network changes. Call [`next`](Monitor::next) in a loop (it is
/// cancel safe), or poll it as a [`Stream`](futures_core::Stream) of [`Batch`]es.
///
/// Dropping the monitor stops its backend.
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    changes: mpsc::UnboundedReceiver<Change>,
    debouncer: Debouncer,
    /// Wakes the monitor when the pending batch is due; made on first use, inside the
    /// runtime.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Backend tasks to stop when the monitor goes.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Monitor {
    /// Subscribes to the operating system's change notifications:
    ///
    /// - Linux: this network namespace's rtnetlink notifications (links, IPv4 and IPv6
    ///   addresses, routes and rules). No daemon is needed: it works on a bare host. The
    ///   netlink socket belongs to the calling thread's network namespace.
    /// - Windows: the route, interface and address change notifications (IPv4 and IPv6).
    ///   Rows carry no interface names: ignore the tunnel with
    ///   [`MonitorConfig::ignore_interface_index`], or use `Monitor::for_tunnel`, filtering
    ///   by LUID. Under Wine the registrations succeed but never fire.
    /// - macOS and iOS: an `AF_ROUTE` socket, reporting route (`RTM_ADD`, `RTM_DELETE`,
    ///   `RTM_CHANGE`), address (`RTM_NEWADDR`, `RTM_DELADDR`) and link (`RTM_IFINFO`)
    ///   changes, with interface names looked up by index while the interface exists.
    ///
    /// Must be called inside a tokio runtime. Other systems (Android) feed
    /// [`Monitor::from_changes`].
    #[cfg(any(target_os = "linux", windows, target_os = "macos", target_os = "ios"))]
    pub fn new(config: MonitorConfig) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = backend::start(tx)?;
        Ok(Monitor::with_backend(config, rx, tasks))
    }

    /// Like [`Monitor::new`], dropping every notification about `tunnel`'s interfaces (by
    /// LUID, so a renamed or re-indexed adapter stays ignored).
    #[cfg(windows)]
    pub fn for_tunnel(
        config: MonitorConfig,
        tunnel: crate::route::Tunnel,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = windows::start_for(tunnel, tx)?;
        Ok(Monitor::with_backend(config, rx, tasks))
    }

    /// A monitor fed by another source of raw changes: a backend of another operating
    /// system, a host application's callbacks, or a test. The stream ends when every sender
    /// is dropped.
    pub fn from_changes(config: MonitorConfig, changes: mpsc::UnboundedReceiver<Change>) -> Self {
        Monitor::with_backend(config, changes, Vec::new())
    }

    fn with_backend(
        config: MonitorConfig,
        changes: mpsc::UnboundedReceiver<Change>,
        tasks: Vec<tokio::task::AbortHandle>,
    ) -> Self {
        let debouncer = Debouncer::new(config.quiet, config.max_delay);
        Monitor {
            config,
            changes,
            debouncer,
            timer: None,
            tasks,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// The next debounced batch; `None` once the source of changes has ended (and the last
    /// batch was returned).
    ///
    /// Cancel safety: this method is cancel safe. Changes received before the future is
    /// dropped stay in the monitor's debouncer and are part of the next batch.
    pub async fn next(&mut self) -> Option<Batch> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next debounced batch, as [`next`](Monitor::next) awaits it: `Pending`
    /// registers `cx` to be woken by a new change or by the pending batch's deadline.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Batch>> {
        loop {
            // Checked before every change, so a storm that keeps the channel full still
            // yields a batch once the delay bound has passed.
            if let Some(batch) = self.debouncer.take_due(now()) {
                return Poll::Ready(Some(batch));
            }
            match self.changes.poll_recv(cx) {
                Poll::Ready(Some(c)) if self.config.admits(&c) => {
                    self.debouncer.push(now(), c);
                    continue;
                }
                Poll::Ready(Some(c)) => {
                    tracing::trace!(change = %c, "ignored: the tunnel's own interface");
                    continue;
                }
                Poll::Ready(None) => return Poll::Ready(self.debouncer.flush()),
                Poll::Pending => {}
            }
            let Some(at) = self.debouncer.deadline() else {
                return Poll::Pending;
            };
            let at = tokio::time::Instant::from_std(at);
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The deadline passed: the batch is due on the next round.
        }
    }
}

impl futures_core::Stream for Monitor {
    type Item = Batch;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Batch>> {
        Monitor::poll_next(self.get_mut(), cx)
    }
}

/// Now, on tokio's clock, which the debounce timer runs on (a paused test clock too).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tunnels_own_interface_is_filtered_and_the_rest_debounced() {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = MonitorConfig::default()
            .ignore_interface("tun0")
            .ignore_interface_index(9);
        let mut m = Monitor::from_changes(config, rx);
        let tun = Change::new(ChangeKind::AddressAdded).with_interface(5, Some("tun0".into()));
        let by_index = Change::new(ChangeKind::LinkDown).with_interface(9, None);
        let uplink = Change::new(ChangeKind::RouteRemoved).with_interface(2, Some("eth0".into()));
        for _ in 0..10 {
            tx.send(tun.clone()).unwrap();
        }
        tx.send(by_index).unwrap();
        tx.send(uplink.clone()).unwrap();
        tx.send(uplink.clone()).unwrap();
        let batch = m.next().await.unwrap();
        assert_eq!(batch.raw_events, 2);
        assert_eq!(batch.changes.len(), 1);
        assert_eq!(batch.changes[0].interface.as_deref(), Some("eth0"));
        assert_eq!(batch.changes[0].count, 2);
        // Only ignored changes, then the end: no batch at all.
        tx.send(tun).unwrap();
        drop(tx);
        assert_eq!(m.next().await, None);
    }
}
