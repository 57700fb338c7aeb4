//! Self-healing for [`TunnelRoutes`] (Linux): [`TunnelRoutes::keep`] keeps every piece of
//! the tunnel's set-up in place while other programs (a network daemon flushing "unknown"
//! rules, a firewall reload, an administrator) or the kernel (a device going down, renamed or
//! re-created) take pieces away, until [`RouteKeeper::stop`].
//!
//! Two triggers: the network [`Monitor`]'s rtnetlink changes (a rule or route of ours
//! deleted, the device changing, lost notifications), and a cheap probe every
//! [`KeepOptions::probe_interval`] for what the kernel does not announce (IPv4 routes dropped
//! with a device going down, a flushed nftables ruleset, a sysctl written back). Every
//! [`KeepOptions::recheck_interval`] a full check runs whatever the probe says. It combines
//! the two layers below it: the routes' probe and repair (in [`os::linux`](crate::os::linux))
//! and the monitor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};

use crate::monitor::{Batch, ChangeKind, Monitor, MonitorConfig};
use crate::os::linux::routes::lock::{self, KeeperLock};
use crate::os::linux::routes::repair::{Device, DeviceState, Probe, Repair};
use crate::os::linux::routes::Rtnl;
use crate::os::linux::{ApplyReport, Piece, RemoveReport, RoutesError, TunnelRoutes};

/// How [`TunnelRoutes::keep`] watches and restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepOptions {
    /// Quiet time before a deletion is repaired (the deleting program often deletes several
    /// things in a row: repair once).
    pub quiet: Duration,
    /// The longest a repair waits for quiet: the restore-time bound while things keep
    /// changing.
    pub max_delay: Duration,
    /// The longest pause between repairs while another program keeps deleting what was
    /// just restored: repairs back off exponentially up to this, instead of fighting at full
    /// speed.
    pub max_backoff: Duration,
    /// How often the cheap probe runs (the device, the sysctls, the nftables table, where
    /// an unmarked packet goes): the restore-time bound for what the kernel does silently.
    pub probe_interval: Duration,
    /// How often a full check runs regardless of the probe.
    pub recheck_interval: Duration,
}

impl Default for KeepOptions {
    fn default() -> Self {
        KeepOptions {
            quiet: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            probe_interval: Duration::from_millis(500),
            recheck_interval: Duration::from_secs(30),
        }
    }
}

/// What the keeper did, as it happens; read with [`RouteKeeper::next_event`].
#[derive(Debug)]
#[non_exhaustive]
pub enum KeeperEvent {
    /// A piece was missing or incomplete and was put back; `count` is how many sysctls,
    /// routes or rules it took (1 for the nftables table).
    Restored {
        /// What was put back.
        piece: Piece,
        /// How many things it took.
        count: usize,
    },
    /// A piece cannot be restored now; retried at the next change, probe or full check.
    /// Reported once until the failure changes or clears.
    RepairFailed {
        /// What is missing.
        piece: Piece,
        /// Why it cannot be restored; the same error [`RouteKeeper::last_error`] returns.
        error: Arc<RoutesError>,
    },
    /// The device was renamed; the keeper follows it by its index.
    DeviceRenamed {
        /// The device's index.
        index: u32,
        /// Its old name.
        from: String,
        /// Its new name.
        to: String,
    },
    /// The device was deleted and a device of the same name appeared; the keeper uses the
    /// new one.
    DeviceReplaced {
        /// The name.
        name: String,
        /// The deleted device's index.
        old_index: u32,
        /// The new device's index.
        new_index: u32,
    },
    /// Every piece is in place again after failures.
    Recovered,
}

impl std::fmt::Display for KeeperEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeeperEvent::Restored { piece, count } => write!(f, "restored {piece} ({count})"),
            KeeperEvent::RepairFailed { piece, error } => {
                write!(f, "cannot restore {piece}: {}", Chain(&**error))
            }
            KeeperEvent::DeviceRenamed { index, from, to } => write!(
                f,
                "device {from:?} (index {index}) was renamed {to:?}: following it"
            ),
            KeeperEvent::DeviceReplaced {
                name,
                old_index,
                new_index,
            } => write!(
                f,
                "device {name:?} was re-created (index {old_index} -> {new_index}): using the new one"
            ),
            KeeperEvent::Recovered => f.write_str("every piece is in place again"),
        }
    }
}

/// What [`RouteKeeper::stop`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopReport {
    /// How many repairs put something back, counted after the last one finished.
    pub restores: u64,
    /// What the removal deleted.
    pub removed: RemoveReport,
}

/// What the keeper has done so far.
#[derive(Debug, Default)]
struct Stats {
    restores: AtomicU64,
    missed_events: AtomicU64,
    last_error: Mutex<Option<Arc<RoutesError>>>,
}

/// How many events wait for [`RouteKeeper::next_event`] before new ones are dropped (and
/// counted in [`RouteKeeper::missed_events`]).
const EVENT_QUEUE: usize = 256;

/// Keeps a tunnel's routes asserted; made by [`TunnelRoutes::keep`].
///
/// [`stop`](RouteKeeper::stop) stops watching and removes the routes. Dropping the keeper
/// stops watching but leaves the routes in place (the next `apply` or `remove` finds them by
/// their tag).
#[derive(Debug)]
pub struct RouteKeeper {
    /// Held until the removal in `stop` is done, so another keeper cannot start in between.
    _lock: KeeperLock,
    routes: TunnelRoutes,
    stats: Arc<Stats>,
    events: mpsc::Receiver<KeeperEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TunnelRoutes {
    /// [`apply`](Self::apply)s, then keeps every piece asserted until
    /// [`RouteKeeper::stop`]: the sysctls, the nftables table, the routes of each family and
    /// the rules, each restored on its own when it goes (a rule or route deleted, a firewall
    /// reload, the device going down and up, `disable_ipv6` toggled, lost notifications).
    /// The device is followed by its index across a rename, and by its name when it is
    /// deleted and created again; while it is gone or down, the rules and last-resort routes
    /// keep unmarked traffic for the tunnel refused. Nothing that is not ours is touched.
    ///
    /// One keeper per configuration: while one keeps this table in this network namespace
    /// (in any process), another `keep` is [`RoutesError::AlreadyKept`] and changes nothing.
    ///
    /// Repairs are rate-limited ([`KeepOptions::max_backoff`]). Must run inside a tokio
    /// runtime, in the network namespace of the routes.
    pub async fn keep(
        &self,
        dev: &str,
        prefixes: &[IpNet],
        options: KeepOptions,
    ) -> Result<(ApplyReport, RouteKeeper), RoutesError> {
        let lock = lock::lock(self.config().table())?;
        // Subscribe before applying: a deletion right after `apply` is not missed.
        let monitor = Monitor::new(
            MonitorConfig::default()
                .debounce(options.quiet)
                .max_delay(options.max_delay),
        )
        .map_err(|e| RoutesError::os("subscribing to rtnetlink notifications", e))?;
        let report = self.apply(dev, prefixes).await?;
        let mut nl = Rtnl::connect()?;
        let (index, _) = nl.link(dev).await?;
        let stats = Arc::new(Stats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let watcher = Watcher {
            routes: self.clone(),
            nl,
            device: Device {
                name: dev.to_owned(),
                index,
            },
            prefixes: prefixes.to_vec(),
            options,
            stats: Arc::clone(&stats),
            events: events_tx,
            failing: Vec::new(),
        };
        let task = tokio::spawn(watcher.run(monitor, stop_rx));
        let keeper = RouteKeeper {
            _lock: lock,
            routes: self.clone(),
            stats,
            events,
            stop: Some(stop_tx),
            task,
        };
        Ok((report, keeper))
    }
}

impl RouteKeeper {
    /// How many repairs put something back so far.
    pub fn restores(&self) -> u64 {
        self.stats.restores.load(Ordering::Relaxed)
    }

    /// How many events were dropped because nobody read them (more than 256 waiting).
    pub fn missed_events(&self) -> u64 {
        self.stats.missed_events.load(Ordering::Relaxed)
    }

    /// Why the last repair failed (for example [`RoutesError::NoSuchDevice`]: the device is
    /// gone), if it failed; `None` once a repair succeeds. Several pieces failing: the first
    /// one's error, the one its [`KeeperEvent::RepairFailed`] carries.
    pub fn last_error(&self) -> Option<Arc<RoutesError>> {
        self.stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next thing the keeper did; `None` once it stopped watching. Cancel-safe: use it
    /// in `tokio::select!` beside a signal.
    pub async fn next_event(&mut self) -> Option<KeeperEvent> {
        self.events.recv().await
    }

    /// Stops watching (after a repair in progress finishes), then removes the routes, rules
    /// and nftables table.
    pub async fn stop(mut self) -> Result<StopReport, RoutesError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Wait for a repair in progress, so it cannot re-add anything after the removal.
        let _ = (&mut self.task).await;
        let restores = self.restores();
        let removed = self.routes.remove().await?;
        Ok(StopReport { restores, removed })
    }
}

impl Drop for RouteKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The keeper's task.
struct Watcher {
    routes: TunnelRoutes,
    nl: Rtnl,
    device: Device,
    prefixes: Vec<IpNet>,
    options: KeepOptions,
    stats: Arc<Stats>,
    events: mpsc::Sender<KeeperEvent>,
    /// The failures already reported, so each is reported once.
    failing: Vec<(Piece, String)>,
}

impl Watcher {
    async fn run(mut self, monitor: Monitor, mut stop: oneshot::Receiver<()>) {
        let mut monitor = Some(monitor);
        let mut limiter = Limiter::new(self.options.max_backoff);
        let mut tick = tokio::time::interval(self.options.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The state right after `apply`: a probe that differs means something changed.
        let mut known = self.probe().await;
        let mut last_full = Instant::now();
        loop {
            let due = tokio::select! {
                _ = &mut stop => return,
                b = next_batch(&mut monitor) => match b {
                    Some(b) => concerns_us(&b, &self.routes, &self.device),
                    None => {
                        tracing::warn!("route keeper: the notification stream ended; probing only");
                        monitor = None;
                        false
                    }
                },
                _ = tick.tick() => {
                    // A probe that keeps failing the same way is no change (the full check
                    // still runs on time): no repair every tick.
                    last_full.elapsed() >= self.options.recheck_interval
                        || self.probe().await != known
                }
            };
            if !due {
                continue;
            }
            if let Some(at) = limiter.next_allowed() {
                tracing::warn!(
                    "route keeper: another program keeps deleting loopguard's rules or routes; \
                     next repair in {:?}",
                    at.saturating_duration_since(Instant::now())
                );
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            let before = self.device.clone();
            let repair = self
                .routes
                .repair(&mut self.nl, &mut self.device, &self.prefixes)
                .await;
            last_full = Instant::now();
            known = self.probe().await;
            if !repair.restored.is_empty() {
                limiter.restored(Instant::now());
            }
            self.report(&before, repair);
        }
    }

    async fn probe(&mut self) -> Option<Probe> {
        match self
            .routes
            .probe(&mut self.nl, &self.device, &self.prefixes)
            .await
        {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "route keeper: probe failed"
                );
                None
            }
        }
    }

    /// Counts, logs and queues what a repair did.
    fn report(&mut self, before: &Device, repair: Repair) {
        let mut events = Vec::new();
        if let Some(DeviceState::Present { device, .. }) = &repair.device {
            if device.index == before.index && device.name != before.name {
                events.push(KeeperEvent::DeviceRenamed {
                    index: device.index,
                    from: before.name.clone(),
                    to: device.name.clone(),
                });
            } else if device.index != before.index {
                events.push(KeeperEvent::DeviceReplaced {
                    name: device.name.clone(),
                    old_index: before.index,
                    new_index: device.index,
                });
            }
        }
        if !repair.restored.is_empty() {
            self.stats.restores.fetch_add(1, Ordering::Relaxed);
        }
        for (piece, count) in repair.restored {
            tracing::info!(%piece, count, "route keeper: restored");
            events.push(KeeperEvent::Restored { piece, count });
        }
        let failed: Vec<(Piece, Arc<RoutesError>)> = repair
            .failed
            .into_iter()
            .map(|(p, e)| (p, Arc::new(e)))
            .collect();
        let failing: Vec<(Piece, String)> =
            failed.iter().map(|(p, e)| (*p, e.to_string())).collect();
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = failed.first().map(|(_, e)| Arc::clone(e));
        let recovered = failing.is_empty() && !self.failing.is_empty();
        for ((piece, error), known) in failed.into_iter().zip(&failing) {
            if !self.failing.contains(known) {
                tracing::warn!(%piece, error = %Chain(&*error), "route keeper: cannot restore");
                events.push(KeeperEvent::RepairFailed { piece, error });
            }
        }
        self.failing = failing;
        if recovered {
            events.push(KeeperEvent::Recovered);
        }
        for event in events {
            if self.events.try_send(event).is_err() {
                self.stats.missed_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The monitor's next batch, or never once it has ended.
async fn next_batch(monitor: &mut Option<Monitor>) -> Option<Batch> {
    match monitor {
        Some(m) => m.next().await,
        None => std::future::pending().await,
    }
}

/// Whether the batch may have taken something of ours away.
fn concerns_us(batch: &Batch, routes: &TunnelRoutes, device: &Device) -> bool {
    let config = routes.config();
    let ours = |table: Option<u32>| table == Some(config.table());
    let our_device = |index: Option<u32>, name: Option<&str>| {
        index == Some(device.index) || name == Some(device.name.as_str())
    };
    batch.changes.iter().any(|c| match c.kind {
        ChangeKind::Resync => true,
        ChangeKind::RuleRemoved => {
            ours(c.table)
                || c.priority
                    .is_some_and(|p| p == config.priority() || p == config.priority() + 1)
        }
        ChangeKind::RouteRemoved => ours(c.table),
        // The kernel drops a device's routes silently when it goes down: any change of the
        // device (down, up, deleted, created again) is worth a look.
        ChangeKind::LinkUp | ChangeKind::LinkDown | ChangeKind::LinkRemoved => {
            our_device(c.interface_index, c.interface.as_deref())
        }
        _ => false,
    })
}

/// Rate limit for repairs: free while repairs are rare, exponential back-off while another
/// program fights us.
#[derive(Debug)]
struct Limiter {
    last: Option<Instant>,
    gap: Duration,
    max: Duration,
}

/// Repairs closer together than this count as a fight.
const FIGHT_WINDOW: Duration = Duration::from_secs(2);
/// The first back-off step.
const FIRST_GAP: Duration = Duration::from_millis(250);

impl Limiter {
    fn new(max: Duration) -> Self {
        Limiter {
            last: None,
            gap: Duration::ZERO,
            max,
        }
    }

    /// When the next repair may run, if not now.
    fn next_allowed(&self) -> Option<Instant> {
        let at = self.last? + self.gap;
        (at > Instant::now()).then_some(at)
    }

    fn restored(&mut self, now: Instant) {
        let fighting = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < FIGHT_WINDOW + self.gap);
        self.gap = if fighting {
            (self.gap * 2).clamp(FIRST_GAP, self.max.max(FIRST_GAP))
        } else {
            Duration::ZERO
        };
        self.last = Some(now);
    }
}

/// Shows an error with each of its sources, `a: b: c`, for messages and logs that print one
/// line (errors themselves keep their sources out of their own text).
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Change;
    use crate::GuardConfig;

    #[test]
    fn repairs_back_off_only_while_fighting() {
        let mut l = Limiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        l.restored(t0);
        assert_eq!(l.gap, Duration::ZERO, "a first repair is free");
        l.restored(t0 + Duration::from_millis(100));
        assert_eq!(l.gap, FIRST_GAP);
        l.restored(t0 + Duration::from_millis(400));
        assert_eq!(l.gap, FIRST_GAP * 2);
        for i in 0..10 {
            l.restored(t0 + Duration::from_millis(500 + i));
        }
        assert_eq!(l.gap, Duration::from_secs(1), "capped");
        // Calm for long enough: free again.
        l.restored(t0 + Duration::from_secs(60));
        assert_eq!(l.gap, Duration::ZERO);
    }

    #[test]
    fn only_our_rules_routes_and_device_trigger_repairs() {
        let routes = TunnelRoutes::new(GuardConfig::default());
        let tun0 = Device {
            name: "tun0".into(),
            index: 5,
        };
        let batch = |c: Change| Batch {
            changes: vec![c],
            raw_events: 1,
        };
        let yes = [
            Change::new(ChangeKind::RuleRemoved).with_priority(32001),
            Change::new(ChangeKind::RuleRemoved).with_table(19527),
            Change::new(ChangeKind::RouteRemoved).with_table(19527),
            Change::new(ChangeKind::LinkUp).with_interface(5, Some("tun0".into())),
            Change::new(ChangeKind::LinkDown).with_interface(5, Some("tun0".into())),
            // Renamed: still ours by index. Re-created: still ours by name.
            Change::new(ChangeKind::LinkDown).with_interface(5, Some("vpn".into())),
            Change::new(ChangeKind::LinkUp).with_interface(9, Some("tun0".into())),
            Change::new(ChangeKind::LinkRemoved).with_interface(5, None),
            Change::new(ChangeKind::Resync),
        ];
        for c in yes {
            assert!(concerns_us(&batch(c.clone()), &routes, &tun0), "{c}");
        }
        let no = [
            Change::new(ChangeKind::RuleRemoved)
                .with_priority(100)
                .with_table(100),
            Change::new(ChangeKind::RouteRemoved).with_table(254),
            Change::new(ChangeKind::RuleAdded).with_priority(32001),
            Change::new(ChangeKind::LinkUp).with_interface(2, Some("eth0".into())),
            Change::new(ChangeKind::LinkRemoved).with_interface(2, Some("eth0".into())),
            Change::new(ChangeKind::AddressRemoved).with_interface(5, Some("tun0".into())),
        ];
        for c in no {
            assert!(!concerns_us(&batch(c.clone()), &routes, &tun0), "{c}");
        }
    }
}
