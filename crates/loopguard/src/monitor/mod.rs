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
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # #[cfg(target_os = "linux")] {
//! use loopguard::monitor::{MarkedRoute, Monitor, MonitorConfig, Roaming};
//! use loopguard::{GuardConfig, LinuxMark, SocketFactory};
//!
//! let config = GuardConfig::default();
//! let factory = SocketFactory::new(LinuxMark::new(config));
//! let monitor = Monitor::new(MonitorConfig::default().ignore_interface("tun0"))?;
//! let mut roaming = Roaming::new(monitor, MarkedRoute::new(config));
//! roaming.reset_on_change(factory.clone());
//! roaming.track("192.0.2.10".parse()?).await;
//! while let Some(event) = roaming.next().await {
//!     for rebind in &event.rebind {
//!         println!("rebuild sockets to {}: now via {:?}", rebind.destination, rebind.after);
//!     }
//! }
//! # }
//! # Ok(())
//! # }
//! ```

#[cfg(any(target_os = "macos", target_os = "ios"))]
mod apple;
mod debounce;
#[cfg(target_os = "linux")]
mod linux;
mod roaming;
#[cfg(windows)]
mod windows;

use std::fmt;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::mpsc;

use debounce::Debouncer;
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use roaming::MarkedRoute;
pub use roaming::{
    Egress, EgressFuture, EgressLookup, Rebind, Reset, ResolveEgress, RoamEvent, Roaming,
};

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ChangeKind {
    /// An interface became operational (up and carrier), or appeared up.
    LinkUp,
    /// An interface stopped being operational.
    LinkDown,
    /// An interface was deleted.
    LinkRemoved,
    /// An address was added to an interface.
    AddressAdded,
    /// An address was removed from an interface.
    AddressRemoved,
    /// A route was added.
    RouteAdded,
    /// A route was replaced in place.
    RouteChanged,
    /// A route was removed.
    RouteRemoved,
    /// A policy rule was added.
    RuleAdded,
    /// A policy rule was removed.
    RuleRemoved,
    /// Notifications were lost (the kernel's queue overflowed): assume anything changed.
    Resync,
}

impl ChangeKind {
    /// The kind as a `snake_case` word, as `loopguard watch --json` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::LinkUp => "link_up",
            ChangeKind::LinkDown => "link_down",
            ChangeKind::LinkRemoved => "link_removed",
            ChangeKind::AddressAdded => "address_added",
            ChangeKind::AddressRemoved => "address_removed",
            ChangeKind::RouteAdded => "route_added",
            ChangeKind::RouteChanged => "route_changed",
            ChangeKind::RouteRemoved => "route_removed",
            ChangeKind::RuleAdded => "rule_added",
            ChangeKind::RuleRemoved => "rule_removed",
            ChangeKind::Resync => "resync",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change, or several of the same kind on the same interface merged by the debouncer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The interface's index, when the change concerns one (routes: the output interface).
    pub interface_index: Option<u32>,
    /// The interface's name, when known.
    pub interface: Option<String>,
    /// The address (with prefix length) for address changes, the destination prefix for
    /// route changes. For merged changes, the first one's.
    pub subject: Option<IpNet>,
    /// The routing table of a route, or the table a rule looks up.
    pub table: Option<u32>,
    /// A rule's priority, or a route's metric.
    pub priority: Option<u32>,
    /// The route or rule protocol (tag), when the kernel reported one.
    pub protocol: Option<u8>,
    /// How many raw notifications this change stands for (1 before debouncing).
    pub count: u32,
}

impl Change {
    /// A change of `kind` with nothing else known.
    pub fn new(kind: ChangeKind) -> Self {
        Change {
            kind,
            interface_index: None,
            interface: None,
            subject: None,
            table: None,
            priority: None,
            protocol: None,
            count: 1,
        }
    }

    /// Names the interface.
    pub fn with_interface(mut self, index: u32, name: Option<String>) -> Self {
        self.interface_index = Some(index);
        self.interface = name;
        self
    }

    /// Sets the address or route prefix.
    pub fn with_subject(mut self, subject: IpNet) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Sets the table.
    pub fn with_table(mut self, table: u32) -> Self {
        self.table = Some(table);
        self
    }

    /// Sets the rule priority or route metric.
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the protocol (tag).
    pub fn with_protocol(mut self, protocol: u8) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Whether the debouncer merges `other` into this change: same kind, interface, table.
    fn merges_with(&self, other: &Change) -> bool {
        self.kind == other.kind
            && self.interface_index == other.interface_index
            && self.interface == other.interface
            && self.table == other.table
    }

    /// Whether this change is about `interface` (a name or a decimal index).
    fn concerns(&self, interface: &InterfaceRef) -> bool {
        match interface {
            InterfaceRef::Name(n) => self.interface.as_deref() == Some(n.as_str()),
            InterfaceRef::Index(i) => self.interface_index == Some(*i),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match (&self.interface, self.interface_index) {
            (Some(name), _) => write!(f, " {name}")?,
            (None, Some(i)) => write!(f, " if#{i}")?,
            (None, None) => {}
        }
        if let Some(s) = self.subject {
            write!(f, " {s}")?;
        }
        if let Some(t) = self.table {
            write!(f, " table {t}")?;
        }
        if let Some(p) = self.priority {
            let what = if matches!(self.kind, ChangeKind::RuleAdded | ChangeKind::RuleRemoved) {
                "priority"
            } else {
                "metric"
            };
            write!(f, " {what} {p}")?;
        }
        if self.count > 1 {
            write!(f, " (x{})", self.count)?;
        }
        Ok(())
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

/// A stream of debounced network changes. Call [`next`](Monitor::next) in a loop.
///
/// Dropping the monitor stops its backend.
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    changes: mpsc::UnboundedReceiver<Change>,
    debouncer: Debouncer,
    /// Backend tasks to stop when the monitor goes.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Monitor {
    /// Subscribes to this network namespace's rtnetlink notifications (links, IPv4 and IPv6
    /// addresses, routes and rules). No daemon is needed: it works on a bare host.
    ///
    /// Must be called inside a tokio runtime; the netlink socket belongs to the calling
    /// thread's network namespace.
    #[cfg(target_os = "linux")]
    pub fn new(config: MonitorConfig) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = linux::start(tx)?;
        Ok(Monitor::with_backend(config, rx, tasks))
    }

    /// Registers for Windows' route, interface and address change notifications (IPv4 and
    /// IPv6). Rows carry no interface names: ignore the tunnel with
    /// [`MonitorConfig::ignore_interface_index`], or use [`Monitor::for_tunnel`].
    ///
    /// Must be called inside a tokio runtime. Under Wine the registrations succeed but never
    /// fire.
    #[cfg(windows)]
    pub fn new(config: MonitorConfig) -> std::io::Result<Self> {
        Monitor::for_tunnel(config, crate::route::Tunnel::default())
    }

    /// Like [`Monitor::new`], dropping every notification about `tunnel`'s interfaces (by
    /// LUID, so a renamed or re-indexed adapter stays ignored).
    #[cfg(windows)]
    pub fn for_tunnel(
        config: MonitorConfig,
        tunnel: crate::route::Tunnel,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = windows::start(tunnel, tx)?;
        Ok(Monitor::with_backend(config, rx, tasks))
    }

    /// Opens an `AF_ROUTE` socket and reports route (`RTM_ADD`, `RTM_DELETE`,
    /// `RTM_CHANGE`), address (`RTM_NEWADDR`, `RTM_DELADDR`) and link (`RTM_IFINFO`) changes,
    /// with interface names looked up by index while the interface exists.
    ///
    /// Must be called inside a tokio runtime.
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    pub fn new(config: MonitorConfig) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = apple::start(tx)?;
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
            tasks,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// The next debounced batch; `None` once the source of changes has ended (and the last
    /// batch was returned).
    pub async fn next(&mut self) -> Option<Batch> {
        loop {
            let deadline = self.debouncer.deadline();
            let change = match deadline {
                Some(at) => {
                    tokio::select! {
                        c = self.changes.recv() => c,
                        _ = tokio::time::sleep_until(at.into()) => {
                            if let Some(batch) = self.debouncer.take_due(std::time::Instant::now()) {
                                return Some(batch);
                            }
                            continue;
                        }
                    }
                }
                None => self.changes.recv().await,
            };
            match change {
                Some(c) if self.config.admits(&c) => {
                    self.debouncer.push(std::time::Instant::now(), c);
                }
                Some(c) => tracing::trace!(change = %c, "ignored: the tunnel's own interface"),
                None => return self.debouncer.flush(),
            }
        }
    }
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

    #[test]
    fn changes_print_what_and_where() {
        let c = Change::new(ChangeKind::RouteRemoved)
            .with_interface(2, Some("eth0".into()))
            .with_subject("0.0.0.0/0".parse().unwrap())
            .with_table(254)
            .with_priority(100);
        assert_eq!(
            c.to_string(),
            "route_removed eth0 0.0.0.0/0 table 254 metric 100"
        );
        let r = Change::new(ChangeKind::RuleRemoved).with_priority(32001);
        assert_eq!(r.to_string(), "rule_removed priority 32001");
    }
}
