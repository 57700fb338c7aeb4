//! `loopguard demo`: a lab where a TUN device captures all traffic, and the same UDP and TCP
//! exchanges made once through plain sockets (they loop into the TUN) and once through
//! loopguard's factory (they reach the server, and nothing enters the TUN).
//!
//! A second act shows roaming: the client gains a second uplink, a guarded UDP flow runs, and
//! the preferred uplink's default route is deleted mid-stream; the flow must go on over the
//! other uplink with nothing entering the TUN.
//!
//! Every number printed is measured: "echoed" counts echoes actually received by the client,
//! "TUN packets" counts packets actually read from the TUN device and addressed to the server,
//! "tripwire" counts those packets that loopguard's `LoopTripwire` (fed every packet read from
//! the TUN, as a tunnel client would feed it) recognised as a loop. The tripwire knows the
//! guarded factory's sockets by itself; the plain sockets are not the factory's, so the demo
//! registers each one with `LoopTripwire::watch` (their port, and the peer for TCP) for as
//! long as its path runs: the loop it reports for them is their own packets coming back.

mod exchange;
mod paths;
mod report;
mod roaming;
mod setup;
mod signal;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context};
use loopguard::{GuardConfig, LinuxMark, LoopEvent, SocketFactory};
use loopguard_lab::{remove_leftovers, EchoServers, Lab, TunCounter};

use paths::{drive_traffic, Tripwire};
use report::{print_counters, print_roaming, print_table, DemoReport};
use roaming::roaming_act;
use setup::install_tunnel_routes;
use signal::{check, wait_for_signal};

/// Tag of every namespace the demo creates (`lg-demo...`), also used to clear leftovers.
const TAG: &str = "demo";
/// Port of the echo servers in the server namespace (the classic echo port).
const ECHO_PORT: u16 = 7;
/// UDP datagrams per path.
const DATAGRAMS: u32 = 5;
/// TCP connections per path.
const CONNECTIONS: u32 = 3;

/// Runs the demo and prints its table (or, with `json`, one JSON object with a `paths`
/// array). `Ok(true)` when every guarded path was fully echoed with zero packets in the TUN
/// and every plain path looped into it; `Ok(false)` when the lab ran but the claim failed;
/// an error when the lab could not run (not root, interrupted, a setup step failed).
///
/// Everything it creates is removed before it returns, also on Ctrl-C or SIGTERM.
pub async fn run(json: bool) -> anyhow::Result<bool> {
    if let Err(why) = loopguard_lab::lab_available() {
        bail!("loopguard demo: {why}");
    }
    let cancel = Arc::new(AtomicBool::new(false));
    // The lab is built and driven on a blocking thread; this task only watches for signals and
    // raises the flag that makes the body stop at its next step and drop (remove) everything.
    let body = tokio::task::spawn_blocking({
        let cancel = Arc::clone(&cancel);
        move || demo(json, &cancel)
    });
    let watcher = tokio::spawn({
        let cancel = Arc::clone(&cancel);
        async move {
            if wait_for_signal().await.is_ok() {
                eprintln!("interrupted: removing the lab");
                cancel.store(true, Ordering::SeqCst);
            }
        }
    });
    let result = body.await;
    watcher.abort();
    match result {
        Ok(outcome) => outcome,
        Err(e) => Err(anyhow!("the demo thread failed: {e}")),
    }
}

/// The demo proper, on a blocking thread. Drop order (counter, echo servers, lab) detaches
/// from the TUN, stops the servers, then deletes the namespaces with everything in them.
fn demo(json: bool, cancel: &AtomicBool) -> anyhow::Result<bool> {
    // A run killed with SIGKILL cannot clean up; its namespaces carry our tag.
    remove_leftovers(TAG);
    check(cancel)?;
    let lab = Lab::build(TAG).context("building the lab of network namespaces")?;
    check(cancel)?;
    let servers = lab.server_addrs();
    let echo =
        EchoServers::start(lab.server(), &servers, ECHO_PORT).context("starting echo servers")?;
    install_tunnel_routes(&lab)?;
    check(cancel)?;
    let factory = SocketFactory::new(LinuxMark::new(GuardConfig::default()));
    let tripwire = factory.tripwire();
    let loops = Arc::new(Mutex::new(Vec::<LoopEvent>::new()));
    let counter = TunCounter::start_with(lab.client(), lab.tun(), servers.to_vec(), {
        let (tripwire, loops) = (tripwire.clone(), Arc::clone(&loops));
        move |packet| {
            if let Some(event) = tripwire.check(packet) {
                loops.lock().unwrap_or_else(|p| p.into_inner()).push(event);
            }
        }
    })
    .context("attaching the TUN packet counter")?;
    let tripwire = Tripwire {
        tripwire: &tripwire,
        loops: &loops,
    };
    let (reports, counters) = lab
        .client()
        .run(|| drive_traffic(&lab, &echo, &counter, &factory, &tripwire, cancel))
        .context("running traffic in the client namespace")??;
    check(cancel)?;
    let roaming = roaming_act(&lab, &echo, &counter)?;
    let success = reports.iter().all(|r| r.ok) && roaming.ok;
    if json {
        let report = DemoReport {
            success,
            tun_device: lab.tun(),
            tunnel_routes: ["0.0.0.0/0", "::/0"],
            paths: &reports,
            counters,
            roaming: &roaming,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&lab, &reports, success)?;
        print_counters(&counters)?;
        print_roaming(&roaming)?;
    }
    Ok(success)
}
