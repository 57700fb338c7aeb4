//! A miss storm: 1,000 tasks send to one destination nobody has resolved yet while its
//! resolution takes 10 ms. Counts the resolutions (one is the goal: the tasks share a single
//! flight) and measures how late a timer's wake-up is served by the same single-threaded
//! runtime meanwhile (a resolution that blocked the runtime thread would make it 10 ms late).
//!
//! The timer is a thread outside the runtime that, every millisecond, sends the time to a task
//! on the runtime; the task records how long the message waited. (tokio's own timer fires on
//! millisecond ticks, so a 1 ms sleep is up to a millisecond late even on an idle runtime; the
//! outside thread shows the runtime's delay alone.) Samples sent while the resolution was under
//! way are reported apart: that is "meanwhile". Two baselines, measured in the same rounds on
//! the same runtime: the same 1,000 sends to a destination already resolved (a woken task
//! queues behind every ready task, so 1,000 tasks with a datagram each delay it by
//! themselves), and the runtime with nothing else to do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loopguard::{DatagramOut, Path, ProtectionError, ResolveError, SocketFactory, Strategy};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::stats::{median, quantile, round};

/// Tasks in the storm, each sending one datagram.
pub const TASKS: usize = 1000;
/// How long the one resolution takes.
pub const RESOLUTION: Duration = Duration::from_millis(10);
/// The timer's period.
const TICK: Duration = Duration::from_millis(1);

/// A strategy whose every resolution sleeps [`RESOLUTION`] (as a slow route lookup would
/// block its thread), is counted, and notes when it ended.
struct SlowResolution {
    resolutions: Arc<AtomicUsize>,
    ended: Arc<Mutex<Option<Instant>>>,
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
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(Path {
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
            interface: None,
        })
    }
}

/// One wake-up: when the timer thread sent it, and how long it waited for the runtime.
type Wake = (Instant, Duration);

/// The timer: a thread outside the runtime and the task on it that takes its messages.
struct Timer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    task: tokio::task::JoinHandle<Vec<Wake>>,
}

impl Timer {
    /// Starts both; call on the runtime.
    fn start() -> Timer {
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now() + TICK;
            while !thread_stop.load(Ordering::Relaxed) {
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if tx.send(Instant::now()).is_err() {
                    return;
                }
                next += TICK;
            }
        });
        let task = tokio::spawn(async move {
            let mut wakes = Vec::new();
            while let Some(sent) = rx.recv().await {
                wakes.push((sent, sent.elapsed()));
            }
            wakes
        });
        Timer { stop, thread, task }
    }

    /// Stops the thread and returns every wake-up the task saw.
    async fn stop(self) -> anyhow::Result<Vec<Wake>> {
        self.stop.store(true, Ordering::Relaxed);
        // The thread drops its sender on leaving, which ends the task.
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the timer thread panicked"))?;
        Ok(self.task.await?)
    }
}

/// What one storm did and how late the timer's wake-ups were meanwhile.
struct Storm {
    resolutions: usize,
    sent: usize,
    /// Every wake-up during the storm, in microseconds.
    wakes_us: Vec<f64>,
    /// Those sent while the resolution was under way.
    during_resolution_us: Vec<f64>,
    took: Duration,
}

fn micros(wakes: impl Iterator<Item = Wake>) -> Vec<f64> {
    wakes
        .map(|(_, waited)| waited.as_secs_f64() * 1e6)
        .collect()
}

/// One storm on `runtime`, to a destination resolved beforehand when `resolved`.
fn storm(runtime: &tokio::runtime::Runtime, resolved: bool) -> anyhow::Result<Storm> {
    runtime.block_on(async {
        let resolutions = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(Mutex::new(None));
        let factory = SocketFactory::new(SlowResolution {
            resolutions: resolutions.clone(),
            ended: ended.clone(),
        });
        let receiver = factory.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let dst = receiver.local_addr()?;
        let sender = Arc::new(factory.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?);
        if resolved {
            sender.send(&DatagramOut::new(dst, b"resolve")).await?;
            resolutions.store(0, Ordering::SeqCst);
        }
        let timer = Timer::start();
        // Let the timer's task start waiting before the storm begins.
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
        let wakes: Vec<Wake> = timer
            .stop()
            .await?
            .into_iter()
            .filter(|(at, _)| *at >= started)
            .collect();
        let ended = *ended.lock().unwrap_or_else(|p| p.into_inner());
        let during = wakes
            .iter()
            .copied()
            .filter(|(at, _)| !resolved && ended.is_some_and(|end| *at < end));
        Ok(Storm {
            resolutions: resolutions.load(Ordering::SeqCst),
            sent,
            during_resolution_us: micros(during),
            wakes_us: micros(wakes.iter().copied()),
            took,
        })
    })
}

/// The baseline: the same timer on the same runtime, with nothing else running, for `how_long`.
fn idle(runtime: &tokio::runtime::Runtime, how_long: Duration) -> anyhow::Result<Vec<f64>> {
    runtime.block_on(async {
        let timer = Timer::start();
        tokio::time::sleep(how_long).await;
        Ok(micros(timer.stop().await?.into_iter()))
    })
}

/// `rounds` rounds on one single-threaded runtime, each a miss storm, the same storm to a
/// resolved destination, and the idle runtime for as long as the miss storm took. The figures
/// pool every wake-up of every round.
pub fn run(rounds: usize) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut during, mut miss_late, mut hit_late, mut idle_late) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut resolutions, mut sent, mut took) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let miss = storm(&runtime, false)?;
        let hit = storm(&runtime, true)?;
        idle_late.extend(idle(&runtime, miss.took)?);
        resolutions.push(miss.resolutions);
        sent.push(miss.sent.min(hit.sent));
        took.push(miss.took.as_secs_f64() * 1e6);
        during.extend(miss.during_resolution_us);
        miss_late.extend(miss.wakes_us);
        hit_late.extend(hit.wakes_us);
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
        "wake_during_resolution": summary(&mut during),
        "wake_miss_storm": summary(&mut miss_late),
        "wake_resolved_storm": summary(&mut hit_late),
        "wake_idle": summary(&mut idle_late),
    }))
}
