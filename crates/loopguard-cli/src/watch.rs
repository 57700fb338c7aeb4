//! `loopguard watch [--json]`: one line per debounced network change, until SIGINT or
//! SIGTERM. With `--track IP`, also one line whenever the guarded path to IP moves
//! ("rebind likely required").

use std::net::IpAddr;

use clap::Args;

use crate::args::MarkArg;

/// Arguments of `loopguard watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Print one JSON object per line (fields: batch, elapsed_ms, kind, interface, ...)
    #[arg(long)]
    pub json: bool,
    /// Ignore changes about this interface, e.g. the tunnel's own device (repeatable)
    #[arg(long = "ignore", value_name = "IFACE")]
    pub ignore: Vec<String>,
    /// Quiet time that ends a burst of changes, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub debounce_ms: u64,
    /// Longest a change waits while a burst goes on, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub max_delay_ms: u64,
    /// Report when the guarded path to this destination changes interface or source
    /// (repeatable)
    #[arg(long = "track", value_name = "IP")]
    pub track: Vec<IpAddr>,
    #[command(flatten)]
    pub mark: MarkArg,
}

/// Registers for SIGINT, SIGTERM and SIGHUP now (so a signal arriving right after cannot kill
/// the process before its clean-up) and returns a future that completes on the first of
/// them. SIGHUP (the terminal closed, or a service manager's "reload") is a stop like the
/// others: a watcher never dies without its clean-up. Must be called inside a tokio runtime.
#[cfg(unix)]
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

/// Runs `loopguard watch`; `Ok(true)` when stopped by a signal.
#[cfg(target_os = "linux")]
pub async fn run(args: WatchArgs) -> anyhow::Result<bool> {
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use loopguard::monitor::{MarkedRoute, Monitor, MonitorConfig, Roaming};
    use serde_json::json;

    let config = args.mark.config()?;
    let mut monitor_config = MonitorConfig::default()
        .debounce(Duration::from_millis(args.debounce_ms))
        .max_delay(Duration::from_millis(args.max_delay_ms));
    for name in &args.ignore {
        monitor_config = monitor_config.ignore_interface(name.clone());
    }
    let stop = stop_signal().context("registering for SIGINT, SIGTERM and SIGHUP")?;
    let monitor = Monitor::new(monitor_config).context("subscribing to rtnetlink notifications")?;
    let mut roaming = Roaming::new(monitor, MarkedRoute::new(config));
    for ip in &args.track {
        let egress = roaming.track_now(*ip).await;
        let now = egress.map_or("no path outside the tunnel".to_owned(), |e| e.to_string());
        eprintln!("tracking {ip}: {now}");
    }
    // Printed once subscribed: a script may start changing things after this line.
    eprintln!("watching network changes (Ctrl-C to stop)");
    let started = Instant::now();
    tokio::pin!(stop);
    let mut batch_no = 0u64;
    loop {
        let event = tokio::select! {
            _ = &mut stop => return Ok(true),
            e = roaming.next() => match e {
                Some(e) => e,
                None => anyhow::bail!("the kernel's notification stream ended"),
            },
        };
        batch_no += 1;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        for c in &event.batch.changes {
            if args.json {
                let line = json!({
                    "batch": batch_no,
                    "elapsed_ms": elapsed_ms,
                    "kind": c.kind.as_str(),
                    "interface": c.interface,
                    "interface_index": c.interface_index,
                    "subject": c.subject.map(|s| s.to_string()),
                    "table": c.table,
                    "priority": c.priority,
                    "count": c.count,
                });
                outln!("{line}");
            } else {
                outln!("[{:>8.3}s] {c}", elapsed_ms as f64 / 1e3);
            }
        }
        for r in &event.rebind {
            if args.json {
                let line = json!({
                    "batch": batch_no,
                    "elapsed_ms": elapsed_ms,
                    "kind": "rebind",
                    "interface": r.after.as_ref().and_then(|a| a.interface.clone()),
                    "destination": r.destination.to_string(),
                    "before": r.before.as_ref().map(ToString::to_string),
                    "after": r.after.as_ref().map(ToString::to_string),
                });
                outln!("{line}");
            } else {
                outln!(
                    "[{:>8.3}s] rebind likely required: {r}",
                    elapsed_ms as f64 / 1e3
                );
            }
        }
    }
}

/// Runs `loopguard watch`: Linux only for now.
#[cfg(not(target_os = "linux"))]
pub async fn run(_args: WatchArgs) -> anyhow::Result<bool> {
    Err(crate::linux_only("watch"))
}
