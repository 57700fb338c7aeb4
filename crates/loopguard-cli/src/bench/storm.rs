//! A miss storm: 1,000 tasks send to one destination nobody has resolved yet while its
//! resolution takes 10 ms. Counts the resolutions (one is the goal: the tasks share a single
//! flight) and measures how late a 1 ms timer on the same single-threaded runtime fires
//! meanwhile (a resolution that blocked the runtime thread would make it 10 ms late).
//!
//! Two baselines, measured in the same rounds on the same runtime: the same 1,000 sends to a
//! destination already resolved (a woken timer task queues behind every ready task, so
//! 1,000 tasks with a datagram each delay it by themselves), and the timer with nothing else
//! to do (tokio's timer has millisecond ticks, so even an idle runtime's timer is up to about a
//! millisecond late). What the miss storm adds over the first is the resolution's doing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loopguard::{DatagramOut, Path, ProtectionError, ResolveError, SocketFactory, Strategy};
use serde_json::{json, Value};

use super::stats::{median, round};

/// Tasks in the storm, each sending one datagram.
pub const TASKS: usize = 1000;
/// How long the one resolution takes.
pub const RESOLUTION: Duration = Duration::from_millis(10);
/// The timer's period.
const TICK: Duration = Duration::from_millis(1);

/// A strategy whose every resolution sleeps [`RESOLUTION`] (as a slow route lookup would
/// block its thread) and is counted.
struct SlowResolution {
    resolutions: Arc<AtomicUsize>,
}

impl Strategy for SlowResolution {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, _destination: IpAddr) -> Result<Path, ResolveError> {
        self.resolutions.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(RESOLUTION);
        Ok(Path {
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
            interface: None,
        })
    }
}

/// Runs a [`TICK`] timer until `stop` is set; returns how late (after its deadline) it woke
/// each time, in microseconds.
async fn timer_lateness(stop: Arc<AtomicBool>) -> Vec<f64> {
    let mut late = Vec::new();
    let mut deadline = tokio::time::Instant::now() + TICK;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(deadline).await;
        let now = tokio::time::Instant::now();
        late.push((now - deadline).as_secs_f64() * 1e6);
        deadline = now + TICK;
    }
    late
}

/// The `q` quantile (0..=1) of `values`, which it sorts.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// What one storm did and how late the timer was meanwhile.
struct Storm {
    resolutions: usize,
    sent: usize,
    lateness_us: Vec<f64>,
    took: Duration,
}

/// One storm on `runtime`, to a destination resolved beforehand when `resolved`.
fn storm(runtime: &tokio::runtime::Runtime, resolved: bool) -> anyhow::Result<Storm> {
    runtime.block_on(async {
        let resolutions = Arc::new(AtomicUsize::new(0));
        let factory = SocketFactory::new(SlowResolution {
            resolutions: resolutions.clone(),
        });
        let receiver = factory.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let dst = receiver.local_addr()?;
        let sender = Arc::new(factory.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?);
        if resolved {
            sender.send(&DatagramOut::new(dst, b"resolve")).await?;
            resolutions.store(0, Ordering::SeqCst);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let timer = tokio::spawn(timer_lateness(stop.clone()));
        // Let the timer arm before the storm begins.
        tokio::task::yield_now().await;
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let sender = sender.clone();
                tokio::spawn(async move {
                    let payload = (i as u32).to_be_bytes();
                    sender.send(&DatagramOut::new(dst, &payload)).await
                })
            })
            .collect();
        let mut sent = 0;
        for task in tasks {
            if task.await?.is_ok() {
                sent += 1;
            }
        }
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        Ok(Storm {
            resolutions: resolutions.load(Ordering::SeqCst),
            sent,
            lateness_us: timer.await?,
            took,
        })
    })
}

/// The baseline: the same timer on the same runtime, with nothing else running, for `how_long`.
fn idle(runtime: &tokio::runtime::Runtime, how_long: Duration) -> anyhow::Result<Vec<f64>> {
    runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let timer = tokio::spawn(timer_lateness(stop.clone()));
        tokio::time::sleep(how_long).await;
        stop.store(true, Ordering::Relaxed);
        Ok(timer.await?)
    })
}

/// `rounds` rounds on one single-threaded runtime, each a miss storm, the same storm to a
/// resolved destination, and the idle timer for as long as the miss storm took. The lateness
/// figures pool every tick of every round.
pub fn run(rounds: usize) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut miss_late, mut hit_late, mut idle_late) = (Vec::new(), Vec::new(), Vec::new());
    let (mut resolutions, mut sent, mut took) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let miss = storm(&runtime, false)?;
        let hit = storm(&runtime, true)?;
        idle_late.extend(idle(&runtime, miss.took)?);
        resolutions.push(miss.resolutions);
        sent.push(miss.sent.min(hit.sent));
        took.push(miss.took.as_secs_f64() * 1e6);
        miss_late.extend(miss.lateness_us);
        hit_late.extend(hit.lateness_us);
    }
    let summary = |late: &mut Vec<f64>| {
        json!({
            "ticks": late.len(),
            "worst_us": round(quantile(late, 1.0), 1),
            "p50_us": round(quantile(late, 0.5), 1),
        })
    };
    Ok(json!({
        "tasks": TASKS,
        "resolution_ms": RESOLUTION.as_millis() as u64,
        "runtime": "tokio current_thread",
        "resolutions_max": resolutions.iter().max(),
        "datagrams_sent_min": sent.iter().min(),
        "storm_us": round(median(&took), 0),
        "timer_miss_storm": summary(&mut miss_late),
        "timer_resolved_storm": summary(&mut hit_late),
        "timer_idle": summary(&mut idle_late),
    }))
}
