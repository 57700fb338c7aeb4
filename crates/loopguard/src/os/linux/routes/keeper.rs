//! Self-healing: keep the tunnel's rules and routes in place while other programs (a network
//! daemon flushing "unknown" rules, an administrator) delete them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::oneshot;

use super::{ApplyReport, RemoveReport, RoutesError, TunnelRoutes};
use crate::monitor::{Batch, ChangeKind, Monitor, MonitorConfig};

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
}

impl Default for KeepOptions {
    fn default() -> Self {
        KeepOptions {
            quiet: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the keeper has done so far.
#[derive(Debug, Default)]
struct Stats {
    restores: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Keeps a tunnel's routes asserted; made by [`TunnelRoutes::keep`].
///
/// [`stop`](RouteKeeper::stop) stops watching and removes the routes. Dropping the keeper
/// stops watching but leaves the routes in place (the next `apply` or `remove` finds them by
/// their tag).
#[derive(Debug)]
pub struct RouteKeeper {
    routes: TunnelRoutes,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TunnelRoutes {
    /// [`apply`](Self::apply)s, then watches rules and routes and applies again whenever
    /// something of ours disappears (a rule deleted, a route of our table deleted, the device
    /// coming back up, lost notifications). Nothing that is not ours is touched: `apply` only
    /// deletes what carries our tag.
    ///
    /// Repairs are rate-limited ([`KeepOptions::max_backoff`]). Must run inside a tokio
    /// runtime, in the network namespace of the routes.
    pub async fn keep(
        &self,
        dev: &str,
        prefixes: &[IpNet],
        options: KeepOptions,
    ) -> Result<(ApplyReport, RouteKeeper), RoutesError> {
        // Subscribe before applying: a deletion right after `apply` is not missed.
        let monitor = Monitor::new(
            MonitorConfig::default()
                .debounce(options.quiet)
                .max_delay(options.max_delay),
        )
        .map_err(|e| RoutesError::os("subscribing to rtnetlink notifications", e))?;
        let report = self.apply(dev, prefixes).await?;
        let stats = Arc::new(Stats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(watch(
            self.clone(),
            dev.to_owned(),
            prefixes.to_vec(),
            options,
            monitor,
            Arc::clone(&stats),
            stop_rx,
        ));
        let keeper = RouteKeeper {
            routes: self.clone(),
            stats,
            stop: Some(stop_tx),
            task,
        };
        Ok((report, keeper))
    }
}

impl RouteKeeper {
    /// How many times something was missing and was put back.
    pub fn restores(&self) -> u64 {
        self.stats.restores.load(Ordering::Relaxed)
    }

    /// The last repair failure (for example the device is gone), if the last repair failed.
    pub fn last_error(&self) -> Option<String> {
        self.stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops watching, then removes the routes, rules and nftables table.
    pub async fn stop(mut self) -> Result<RemoveReport, RoutesError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Wait for a repair in progress, so it cannot re-add anything after the removal.
        let _ = (&mut self.task).await;
        self.routes.remove().await
    }
}

impl Drop for RouteKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(
    routes: TunnelRoutes,
    dev: String,
    prefixes: Vec<IpNet>,
    options: KeepOptions,
    mut monitor: Monitor,
    stats: Arc<Stats>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut limiter = Limiter::new(options.max_backoff);
    loop {
        let batch = tokio::select! {
            _ = &mut stop => return,
            b = monitor.next() => match b {
                Some(b) => b,
                None => {
                    tracing::warn!("route keeper: the notification stream ended; no longer watching");
                    return;
                }
            },
        };
        if !concerns_us(&batch, &routes, &dev) {
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
        let outcome = routes.apply(&dev, &prefixes).await;
        let mut error = stats.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(report) if report.rules_added + report.routes_added > 0 => {
                stats.restores.fetch_add(1, Ordering::Relaxed);
                limiter.restored(Instant::now());
                tracing::info!(
                    rules = report.rules_added,
                    routes = report.routes_added,
                    "route keeper: restored what another program deleted"
                );
                *error = None;
            }
            Ok(_) => *error = None,
            Err(e) => {
                tracing::warn!(error = %e, "route keeper: cannot restore the tunnel routes");
                *error = Some(e.to_string());
            }
        }
    }
}

/// Whether the batch may have taken something of ours away.
fn concerns_us(batch: &Batch, routes: &TunnelRoutes, dev: &str) -> bool {
    let config = routes.config();
    let ours = |table: Option<u32>| table == Some(config.table());
    batch.changes.iter().any(|c| match c.kind {
        ChangeKind::Resync => true,
        ChangeKind::RuleRemoved => {
            ours(c.table)
                || c.priority
                    .is_some_and(|p| p == config.priority() || p == config.priority() + 1)
        }
        ChangeKind::RouteRemoved => ours(c.table),
        // The kernel drops a device's routes silently when it goes down: repair when it
        // comes back.
        ChangeKind::LinkUp => c.interface.as_deref() == Some(dev),
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
        let batch = |c: Change| Batch {
            changes: vec![c],
            raw_events: 1,
        };
        let yes = [
            Change::new(ChangeKind::RuleRemoved).with_priority(32001),
            Change::new(ChangeKind::RuleRemoved).with_table(19527),
            Change::new(ChangeKind::RouteRemoved).with_table(19527),
            Change::new(ChangeKind::LinkUp).with_interface(5, Some("tun0".into())),
            Change::new(ChangeKind::Resync),
        ];
        for c in yes {
            assert!(concerns_us(&batch(c.clone()), &routes, "tun0"), "{c}");
        }
        let no = [
            Change::new(ChangeKind::RuleRemoved)
                .with_priority(100)
                .with_table(100),
            Change::new(ChangeKind::RouteRemoved).with_table(254),
            Change::new(ChangeKind::RuleAdded).with_priority(32001),
            Change::new(ChangeKind::LinkUp).with_interface(2, Some("eth0".into())),
        ];
        for c in no {
            assert!(!concerns_us(&batch(c.clone()), &routes, "tun0"), "{c}");
        }
    }
}
