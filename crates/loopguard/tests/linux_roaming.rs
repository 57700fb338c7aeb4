//! Roaming on Linux, in labs of network namespaces: the monitor, the wiring that resets
//! factories and reports rebinds, and self-healing tunnel routes (guarded DNS is in
//! linux_dns.rs). The client's TUN owns `0.0.0.0/0` and `::/0` (loopguard's `TunnelRoutes`);
//! "entered the TUN" means read from the TUN device by the lab's counter. Times are printed, not asserted: machines are
//! noisy. What must be true (traffic resumed, nothing in the TUN, rules back) is asserted.
#![cfg(target_os = "linux")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{block_on, GuardedLab};
use loopguard::keeper::KeepOptions;
use loopguard::monitor::{
    Batch, EgressFuture, EgressLookup, MarkedRoute, Monitor, MonitorConfig, Reset, Roaming,
};
use loopguard::os::linux::TunnelRoutes;
use loopguard::{DatagramOut, GuardConfig, LinuxMark, SocketFactory};
use loopguard_lab::{Lab, LabOptions, Netns};

/// The second uplink the roaming tests move to.
fn second_uplink(lab: &Lab) {
    lab.add_second_uplink().expect("second uplink");
}

/// What a guarded UDP flow saw across a network change.
#[derive(Debug)]
struct Crossing {
    sent: u64,
    /// Echoes, with when they arrived and the local address they were sent to.
    echoes: Vec<(Instant, Option<IpAddr>)>,
    event_at: Instant,
    /// When the roaming wiring reported a rebind for the server, and what it said.
    rebind: Option<(Instant, String, Option<String>)>,
}

impl Crossing {
    /// Time from the change to the first echo that came back over `via`.
    fn recovery(&self, via: IpAddr) -> Option<Duration> {
        self.echoes
            .iter()
            .find(|(at, dst)| *at >= self.event_at && *dst == Some(via))
            .map(|(at, _)| *at - self.event_at)
    }

    fn echoes_via(&self, via: IpAddr) -> usize {
        self.echoes.iter().filter(|(_, d)| *d == Some(via)).count()
    }
}

/// Runs a guarded UDP flow (a datagram every 5 ms) to the server's IPv4 echo, applies
/// `change` (ip commands in the client namespace) mid-stream, and records what happened.
/// The bound on waiting for what should happen (an echo, a rebind): generous, since each wait
/// ends as soon as it happens.
const BOUND: Duration = Duration::from_secs(10);

/// Waits until `condition` holds; panics after [`BOUND`].
async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !condition() {
        assert!(Instant::now() < deadline, "not reached within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn cross(g: &GuardedLab, change: &[&[&str]]) -> Crossing {
    let server = IpAddr::from(g.lab.server_v4());
    let dst = g.echo.udp_addr(server).unwrap();
    let new_source = IpAddr::from(g.lab.client2_v4());
    let config = g.config;
    let tun = g.lab.tun();
    let ns_name = g.lab.client().name().to_owned();
    let change: Vec<Vec<String>> = change
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    g.lab
        .client()
        .run(move || {
            block_on(async move {
                let factory = SocketFactory::new(LinuxMark::new(config));
                let monitor = Monitor::new(MonitorConfig::default().ignore_interface(tun)).unwrap();
                let mut roaming = Roaming::new(monitor, MarkedRoute::new(config));
                roaming.reset_on_change(factory.clone());
                let before = roaming.track_now(server).await;
                println!("egress before: {before:?}");
                let socket = Arc::new(factory.bind("0.0.0.0:0".parse().unwrap()).unwrap());
                let stop = Arc::new(AtomicBool::new(false));
                let sent = Arc::new(AtomicU64::new(0));
                let echoes = Arc::new(Mutex::new(Vec::new()));
                let sender = tokio::spawn({
                    let (socket, stop, sent) = (socket.clone(), stop.clone(), sent.clone());
                    async move {
                        while !stop.load(Ordering::Relaxed) {
                            let n = sent.fetch_add(1, Ordering::Relaxed);
                            // Sends fail closed while no path exists; the flow keeps trying.
                            let _ = socket.send(&DatagramOut::new(dst, &n.to_be_bytes())).await;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                });
                let receiver = tokio::spawn({
                    let (socket, echoes) = (socket.clone(), echoes.clone());
                    async move {
                        let mut buf = vec![0u8; 65_535 * socket.gro_segments()];
                        while let Ok(meta) = socket.recv_from(&mut buf).await {
                            let n = meta.datagrams(&buf).count();
                            let mut e = echoes.lock().unwrap();
                            for _ in 0..n {
                                e.push((Instant::now(), meta.dst_ip));
                            }
                        }
                    }
                });
                // The flow runs before the change: an echo came back.
                wait_until(|| !echoes.lock().unwrap().is_empty()).await;
                let event_at = Instant::now();
                for args in &change {
                    let out = tokio::process::Command::new("ip")
                        .arg("-n")
                        .arg(&ns_name)
                        .args(args)
                        .output()
                        .await
                        .unwrap();
                    assert!(out.status.success(), "ip {args:?}: {out:?}");
                }
                let rebind = tokio::time::timeout(BOUND, async {
                    while let Some(e) = roaming.next().await {
                        if let Some(r) = e.rebind.iter().find(|r| r.destination == server) {
                            let after = r.after.as_ref().and_then(|a| a.interface.clone());
                            return Some((Instant::now(), r.to_string(), after));
                        }
                    }
                    None
                })
                .await
                .ok()
                .flatten();
                // The flow has resumed over the second uplink.
                wait_until(|| {
                    echoes
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|(at, dst)| *at > event_at && *dst == Some(new_source))
                })
                .await;
                stop.store(true, Ordering::Relaxed);
                let _ = sender.await;
                receiver.abort();
                let echoes = echoes.lock().unwrap().clone();
                Crossing {
                    sent: sent.load(Ordering::Relaxed),
                    echoes,
                    event_at,
                    rebind,
                }
            })
        })
        .unwrap()
}

fn check_crossing(name: &str, g: &GuardedLab, c: &Crossing) {
    let server = IpAddr::from(g.lab.server_v4());
    let new_source = IpAddr::from(g.lab.client2_v4());
    let old_source = IpAddr::from(g.lab.client_v4());
    let recovery = c.recovery(new_source);
    let noticed = c.rebind.as_ref().map(|(at, _, _)| *at - c.event_at);
    println!(
        "{name}: sent {}, echoed {} ({} via {old_source}, {} via {new_source}); traffic resumed \
         over {} after {recovery:?} (target < 1 s); rebind reported after {noticed:?}: {}; TUN \
         packets {}",
        c.sent,
        c.echoes.len(),
        c.echoes_via(old_source),
        c.echoes_via(new_source),
        g.lab.uplink2(),
        c.rebind.as_ref().map_or("-", |(_, r, _)| r.as_str()),
        g.tun_packets_to(server)
    );
    assert!(
        c.echoes_via(old_source) > 0,
        "{name}: the flow never ran on the first uplink"
    );
    assert!(
        recovery.is_some(),
        "{name}: the flow did not resume over the second uplink"
    );
    let after = c.rebind.as_ref().and_then(|(_, _, a)| a.clone());
    assert_eq!(
        after.as_deref(),
        Some(g.lab.uplink2()),
        "{name}: rebind not reported"
    );
    assert_eq!(
        g.tun_packets_to(server),
        0,
        "{name}: guarded packets entered the TUN"
    );
}

#[test]
fn uplink_route_deleted_mid_stream_the_flow_resumes_on_the_other_uplink() {
    if loopguard_lab::skip_unprivileged("uplink_route_deleted_mid_stream") {
        return;
    }
    let g = GuardedLab::build_with("rdel", LabOptions::default(), second_uplink);
    let c = cross(
        &g,
        &[&["-4", "route", "del", "default", "via", "192.0.2.1"]],
    );
    check_crossing("default route deleted", &g, &c);
}

#[test]
fn uplink_link_down_mid_stream_the_flow_resumes_on_the_other_uplink() {
    if loopguard_lab::skip_unprivileged("uplink_link_down_mid_stream") {
        return;
    }
    let g = GuardedLab::build_with("ldown", LabOptions::default(), second_uplink);
    let c = cross(&g, &[&["link", "set", "lg-up0", "down"]]);
    check_crossing("link down", &g, &c);
}

#[test]
fn a_metric_change_preferring_the_other_uplink_is_noticed_and_followed() {
    if loopguard_lab::skip_unprivileged("a_metric_change_preferring_the_other_uplink") {
        return;
    }
    let g = GuardedLab::build_with("metric", LabOptions::default(), second_uplink);
    // Addresses only: link flags such as the TUN's carrier settle asynchronously (linkwatch)
    // and say nothing about addresses.
    let addresses = || -> Vec<String> {
        let shown = g.lab.client().ip(&["-brief", "addr", "show"]).unwrap();
        shown
            .lines()
            .map(|l| {
                let mut f = l.split_whitespace();
                let name = f.next().unwrap_or("").to_owned();
                let _state = f.next();
                format!("{name} {}", f.collect::<Vec<_>>().join(" "))
            })
            .collect()
    };
    let addresses_before = addresses();
    let c = cross(
        &g,
        &[&[
            "-4",
            "route",
            "add",
            "default",
            "via",
            "203.0.113.129",
            "dev",
            "lg-up1",
            "metric",
            "50",
        ]],
    );
    check_crossing("metric 50 on the second uplink", &g, &c);
    assert_eq!(
        addresses(),
        addresses_before,
        "addresses changed: the test would not show a pure metric change"
    );
}

/// A lookup that counts the lookups under way, so a test can tell that a `next` future was
/// dropped while one ran.
struct Watched<L> {
    inner: L,
    running: Arc<AtomicU64>,
}

/// One lookup under way, until it finishes or is dropped.
struct Running(Arc<AtomicU64>);

impl Running {
    fn enter(count: &Arc<AtomicU64>) -> Running {
        count.fetch_add(1, Ordering::SeqCst);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<L: EgressLookup> EgressLookup for Watched<L> {
    fn egress(&self, destination: IpAddr) -> EgressFuture<'_> {
        Box::pin(async move {
            let _running = Running::enter(&self.running);
            self.inner.egress(destination).await
        })
    }
}

/// What one round of the flood test saw.
#[derive(Debug, Default)]
struct FloodRound {
    /// Flood datagrams received while waiting for the event.
    received: u64,
    /// Of those receives, how many won the `select!` while a route lookup of `next` ran:
    /// each dropped the `next` future mid-lookup.
    mid_lookup: u64,
    /// From the change to the rebind event (`None`: none within the bound).
    noticed: Option<Duration>,
    /// The interface the rebind reported.
    after: Option<String>,
    /// The local address a guarded probe's echo came back to, after the event.
    echo_to: Option<IpAddr>,
}

/// The `loopguard watch`-style loop of an application under load: one `tokio::select!` over a
/// guarded socket flooded from the server and `Roaming::next`, through uplink changes.
///
/// Why it fails against a `next` that is not cancel safe: a datagram is ready nearly every
/// time the loop polls, so the receive branch wins and the `next` future is dropped over and
/// over. The old `next` took the batch from the monitor and reset the factories, then awaited
/// the route lookups (a netlink round trip, `Pending` at least once): dropped there, the
/// batch was gone, and no event for that change ever came. A round with `mid_lookup > 0`
/// had such drops, each of which the old `next` would not have survived.
#[test]
fn rebinds_are_reported_in_a_select_beside_a_udp_flood() {
    if loopguard_lab::skip_unprivileged("rebinds_are_reported_in_a_select_beside_a_udp_flood") {
        return;
    }
    let g = GuardedLab::build_with("flood", LabOptions::default(), second_uplink);
    let server = IpAddr::from(g.lab.server_v4());
    let echo = g.echo.udp_addr(server).unwrap();
    let client_v4 = g.lab.client_v4();
    let (old_source, new_source) = (IpAddr::from(client_v4), IpAddr::from(g.lab.client2_v4()));
    let (uplink, uplink2) = (g.lab.uplink(), g.lab.uplink2());
    let (config, tun, ns) = (g.config, g.lab.tun(), g.lab.client().name().to_owned());

    // The flood: as fast as one thread sends, from the server to the guarded socket's port.
    let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, finished, flooded) = (stop.clone(), finished.clone(), flooded.clone());
        let socket = g
            .lab
            .server()
            .run(|| std::net::UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap();
        std::thread::spawn(move || {
            if let Ok(port) = port_rx.recv_timeout(BOUND) {
                let payload = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if socket.send_to(&payload, (client_v4, port)).is_ok() {
                        flooded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            finished.store(true, Ordering::SeqCst);
        })
    };

    // Even rounds prefer the second uplink (metric 50), odd rounds take that route away.
    let preferred = format!("-4 route add default via 203.0.113.129 dev {uplink2} metric 50");
    let removed = preferred.replacen(" add ", " del ", 1);
    let rounds: Vec<(String, &str, IpAddr)> = vec![
        (preferred.clone(), uplink2, new_source),
        (removed.clone(), uplink, old_source),
        (preferred, uplink2, new_source),
        (removed, uplink, old_source),
    ];
    let plan: Vec<(String, IpAddr)> = rounds.iter().map(|(c, _, s)| (c.clone(), *s)).collect();
    let started = Instant::now();
    let stop_flood = stop.clone();
    let seen = g
        .lab
        .client()
        .run(move || {
            let (stop, finished) = (stop_flood, finished);
            block_on(async move {
                let factory = SocketFactory::new(LinuxMark::new(config));
                let monitor = Monitor::new(MonitorConfig::default().ignore_interface(tun)).unwrap();
                let running = Arc::new(AtomicU64::new(0));
                let lookup = Watched {
                    inner: MarkedRoute::new(config),
                    running: running.clone(),
                };
                let mut roaming = Roaming::new(monitor, lookup);
                roaming.reset_on_change(factory.clone());
                let before = roaming.track_now(server).await;
                println!("egress before: {before:?}");
                let socket = factory.bind("0.0.0.0:0".parse().unwrap()).unwrap();
                let probe = factory.bind("0.0.0.0:0".parse().unwrap()).unwrap();
                port_tx.send(socket.local_addr().unwrap().port()).unwrap();
                let mut buf = vec![0u8; 65_535 * socket.gro_segments()];
                // The flood arrives before the first change.
                tokio::time::timeout(BOUND, socket.recv_from(&mut buf))
                    .await
                    .expect("the flood never arrived")
                    .unwrap();
                let mut seen = Vec::new();
                for (round, (change, _)) in plan.iter().enumerate() {
                    let mut args = vec!["-n", ns.as_str()];
                    args.extend(change.split(' '));
                    let out = tokio::process::Command::new("ip")
                        .args(&args)
                        .output()
                        .await
                        .unwrap();
                    assert!(out.status.success(), "ip {change}: {out:?}");
                    let changed_at = Instant::now();
                    let deadline = tokio::time::Instant::now() + BOUND;
                    let mut r = FloodRound::default();
                    let rebind = loop {
                        tokio::select! {
                            got = socket.recv_from(&mut buf) => {
                                if let Ok(meta) = got {
                                    r.received += meta.datagrams(&buf).count() as u64;
                                }
                                if running.load(Ordering::SeqCst) > 0 {
                                    r.mid_lookup += 1;
                                }
                            }
                            e = roaming.next() => {
                                let Some(e) = e else { break None };
                                if let Some(rb) = e.rebind.into_iter().find(|rb| rb.destination == server) {
                                    break Some(rb);
                                }
                            }
                            _ = tokio::time::sleep_until(deadline) => break None,
                        }
                    };
                    r.noticed = rebind.as_ref().map(|_| changed_at.elapsed());
                    r.after = rebind.and_then(|rb| rb.after).and_then(|a| a.interface);
                    r.echo_to = probe_echo(&probe, echo, round as u8).await;
                    seen.push(r);
                }
                // The flood ends while the socket is still open, so its tail draws no ICMP
                // port unreachable (an unguarded kernel reply, which would enter the TUN).
                stop.store(true, Ordering::Relaxed);
                wait_until(|| finished.load(Ordering::SeqCst)).await;
                let quiet = Duration::from_millis(200);
                let deadline = Instant::now() + BOUND;
                while Instant::now() < deadline
                    && tokio::time::timeout(quiet, socket.recv_from(&mut buf))
                        .await
                        .is_ok()
                {}
                seen
            })
        });
    // Also when the client's loop failed: the flood must stop for the lab to go.
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    let seen = seen.expect("the client's loop failed");
    let flooded = flooded.load(Ordering::Relaxed);
    let in_tun = g.tun_packets_to(server);
    println!(
        "flood: {flooded} datagrams sent in {:?} ({:.0}/s); TUN packets to the server: {in_tun}",
        started.elapsed(),
        flooded as f64 / started.elapsed().as_secs_f64()
    );
    for (round, ((change, _, _), r)) in rounds.iter().zip(&seen).enumerate() {
        println!("round {round} ({change}): {r:?}");
    }
    for (round, ((change, interface, source), r)) in rounds.iter().zip(&seen).enumerate() {
        assert!(
            r.noticed.is_some(),
            "round {round} ({change}): no rebind within {BOUND:?} under the flood"
        );
        assert_eq!(
            r.after.as_deref(),
            Some(*interface),
            "round {round} ({change})"
        );
        assert_eq!(
            r.echo_to,
            Some(*source),
            "round {round} ({change}): the guarded probe did not come back over {interface}"
        );
    }
    // Which branch `select!` polls first is random, so a round may see its lookups through
    // without an interruption; across the rounds, some must have been interrupted.
    assert!(
        seen.iter().any(|r| r.mid_lookup > 0),
        "the flood never interrupted a lookup: the test showed nothing"
    );
    assert_eq!(
        in_tun,
        0,
        "guarded packets entered the TUN: {:?}",
        g.tun.snapshot()
    );
}

/// Sends guarded probes tagged `tag` to `echo` until one comes back (bounded); the local
/// address it came back to.
async fn probe_echo(probe: &loopguard::UdpSocket, echo: SocketAddr, tag: u8) -> Option<IpAddr> {
    let deadline = Instant::now() + BOUND;
    let mut buf = vec![0u8; 65_535 * probe.gro_segments()];
    while Instant::now() < deadline {
        probe.send(&DatagramOut::new(echo, &[tag])).await.ok()?;
        let wait = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                let meta = probe.recv_from(&mut buf).await.ok()?;
                // A late echo of an earlier round carries another tag.
                if meta.addr == echo && meta.datagrams(&buf).any(|d| d == [tag]) {
                    return meta.dst_ip;
                }
            }
        });
        if let Ok(to) = wait.await {
            return to;
        }
    }
    None
}

/// Counts resets.
#[derive(Clone, Default)]
struct Resets(Arc<AtomicU64>);

impl Reset for Resets {
    fn reset(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn address_changes_on_the_tunnels_own_interface_cause_no_reset() {
    if loopguard_lab::skip_unprivileged("address_changes_on_the_tunnels_own_interface") {
        return;
    }
    let g = GuardedLab::build("tunaddr");
    let ns = g.lab.client().name().to_owned();
    let (tun, uplink, config) = (g.lab.tun(), g.lab.uplink(), g.config);
    let (quiet, after_uplink) = g
        .lab
        .client()
        .run(move || {
            block_on(async move {
                let resets = Resets::default();
                let factory = SocketFactory::new(LinuxMark::new(config));
                let monitor = Monitor::new(MonitorConfig::default().ignore_interface(tun)).unwrap();
                let mut roaming = Roaming::new(monitor, MarkedRoute::new(config));
                roaming.reset_on_change(resets.clone());
                roaming.reset_on_change(factory);
                let mut batch = String::new();
                for i in 10..30 {
                    batch += &format!("addr add 203.0.113.{i}/32 dev {tun}\n");
                    batch += &format!("addr add 2001:db8:ff::{i}/128 dev {tun} nodad\n");
                }
                for i in 10..20 {
                    batch += &format!("addr del 203.0.113.{i}/32 dev {tun}\n");
                }
                ip_batch(&ns, &batch).await;
                let quiet = tokio::time::timeout(Duration::from_millis(1500), roaming.next()).await;
                let quiet_ok = quiet.is_err();
                let tun_resets = resets.0.load(Ordering::SeqCst);
                // The monitor is not simply deaf: a change on the uplink does reset.
                ip_batch(&ns, &format!("addr add 192.0.2.77/24 dev {uplink}\n")).await;
                let e = tokio::time::timeout(BOUND, roaming.next())
                    .await
                    .ok()
                    .flatten();
                println!(
                    "uplink change: {:?}",
                    e.as_ref().map(|e| e.batch.changes.clone())
                );
                (
                    (quiet_ok, tun_resets),
                    (e.is_some(), resets.0.load(Ordering::SeqCst)),
                )
            })
        })
        .unwrap();
    println!(
        "50 address changes on {}: batch seen: {}, resets {}; then one uplink address: batch \
         seen: {}, resets {}",
        g.lab.tun(),
        !quiet.0,
        quiet.1,
        after_uplink.0,
        after_uplink.1
    );
    assert!(
        quiet.0,
        "changes on the tunnel's own interface produced a batch"
    );
    assert_eq!(
        quiet.1, 0,
        "changes on the tunnel's own interface reset the factory"
    );
    assert!(after_uplink.0, "an uplink address change was not reported");
    assert_eq!(after_uplink.1, 1, "an uplink change must reset once");
}

async fn ip_batch(ns: &str, commands: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(commands.as_bytes()).await.unwrap();
    drop(stdin);
    assert!(child.wait().await.unwrap().success(), "ip -batch failed");
}

#[test]
fn a_burst_of_100_address_changes_yields_a_bounded_number_of_events() {
    if loopguard_lab::skip_unprivileged("a_burst_of_100_address_changes") {
        return;
    }
    let g = GuardedLab::build("burst");
    let ns = g.lab.client().name().to_owned();
    let uplink = g.lab.uplink();
    let (batches, took) = g
        .lab
        .client()
        .run(move || {
            block_on(async move {
                let mut monitor = Monitor::new(MonitorConfig::default()).unwrap();
                let mut commands = String::new();
                for i in 0..100 {
                    commands += &format!("addr add 198.51.100.{}/32 dev {uplink}\n", 100 + i);
                }
                let started = Instant::now();
                ip_batch(&ns, &commands).await;
                let took = started.elapsed();
                println!("100 address additions took {took:?}");
                // Until all 100 are reported (bounded), then for one more debounce window to
                // catch a stray extra batch.
                let mut batches: Vec<Batch> = Vec::new();
                let deadline = tokio::time::Instant::now() + BOUND;
                while added(&batches) < 100 {
                    match tokio::time::timeout_at(deadline, monitor.next()).await {
                        Ok(Some(b)) => batches.push(b),
                        _ => break,
                    }
                }
                while let Ok(Some(b)) =
                    tokio::time::timeout(Duration::from_millis(1500), monitor.next()).await
                {
                    batches.push(b);
                }
                (batches, took)
            })
        })
        .unwrap();
    let raw: u64 = batches.iter().map(|b| b.raw_events).sum();
    println!(
        "burst of 100 address changes: {} debounced batch(es) from {raw} raw notifications: {:?}",
        batches.len(),
        batches
            .iter()
            .map(|b| b
                .changes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    assert!(!batches.is_empty(), "the burst was not reported at all");
    // The debouncer holds a burst for at most 1 s, so a burst that took `took` to make may
    // span that many windows (a loaded machine makes slow bursts), plus the first and last.
    let allowed = 2 + took.as_secs() as usize;
    assert!(
        batches.len() <= allowed.max(5),
        "{} batches for one burst that took {took:?}",
        batches.len()
    );
    assert_eq!(
        added(&batches),
        100,
        "every address addition is accounted for"
    );
}

/// Address additions reported in `batches`.
fn added(batches: &[Batch]) -> u32 {
    batches
        .iter()
        .flat_map(|b| &b.changes)
        .filter(|c| c.kind == loopguard::monitor::ChangeKind::AddressAdded)
        .map(|c| c.count)
        .sum()
}

#[test]
fn a_deleted_loopguard_rule_is_restored_and_a_foreign_rule_never_touched() {
    if loopguard_lab::skip_unprivileged("a_deleted_loopguard_rule_is_restored") {
        return;
    }
    let lab = Lab::build("heal").expect("lab");
    let ns = lab.client();
    // A foreign rule at our very priority, and one pointing at our table: never ours.
    ns.ip(&[
        "rule",
        "add",
        "from",
        "192.0.2.99",
        "lookup",
        "100",
        "priority",
        "32001",
    ])
    .unwrap();
    ns.ip(&[
        "rule",
        "add",
        "from",
        "192.0.2.98",
        "lookup",
        "19527",
        "priority",
        "31000",
    ])
    .unwrap();
    let foreign = |ns: &Netns| {
        let rules = ns.ip(&["rule", "show"]).unwrap();
        rules.contains("from 192.0.2.99 lookup 100")
            && rules.contains("from 192.0.2.98 lookup 19527")
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let tun = lab.tun();
    let keeper_thread = ns
        .spawn(move || {
            block_on(async move {
                let routes = TunnelRoutes::new(GuardConfig::default());
                let prefixes = ["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
                let (_, keeper) = routes
                    .keep(tun, &prefixes, KeepOptions::default())
                    .await
                    .expect("keep");
                ready_tx.send(()).unwrap();
                let _ = stop_rx.await;
                let report = keeper.stop().await.expect("stop");
                done_tx.send((report.restores, report.removed)).unwrap();
            })
        })
        .unwrap();
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("keeper started");
    let ours_v4 = "not from all fwmark 0x3047/0x30ff lookup 19527";
    let deletions: [(&str, &[&str], &Present<'_>); 3] = [
        (
            "IPv4 fwmark rule (ip rule del)",
            &[
                "-4",
                "rule",
                "del",
                "priority",
                "32001",
                "not",
                "fwmark",
                "0x3047/0x30ff",
                "lookup",
                "19527",
            ],
            &|ns: &Netns| ns.ip(&["-4", "rule", "show"]).unwrap().contains(ours_v4),
        ),
        (
            "IPv6 suppress_prefixlength rule",
            &["-6", "rule", "del", "priority", "32000"],
            &|ns: &Netns| ns.ip(&["-6", "rule", "show"]).unwrap().contains("32000:"),
        ),
        (
            "IPv4 route in table 19527",
            &[
                "-4", "route", "del", "default", "dev", "lg-tun0", "table", "19527",
            ],
            &|ns: &Netns| {
                ns.ip(&["-4", "route", "show", "table", "19527"])
                    .unwrap()
                    .contains("default dev lg-tun0")
            },
        ),
    ];
    let mut times = Vec::new();
    for (what, args, present) in deletions {
        assert!(present(ns), "{what}: not installed to begin with");
        // Spaced out so the repairs are not rate-limited as a fight.
        std::thread::sleep(Duration::from_millis(2500));
        ns.ip(args).unwrap_or_else(|e| panic!("{what}: {e}"));
        let deleted_at = Instant::now();
        let mut back = None;
        while deleted_at.elapsed() < BOUND {
            if present(ns) {
                back = Some(deleted_at.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        println!("{what}: deleted, back after {back:?} (target < 1 s)");
        assert!(back.is_some(), "{what} was not restored");
        assert!(
            foreign(ns),
            "a foreign rule was touched after restoring {what}"
        );
        times.push(back);
    }
    stop_tx.send(()).unwrap();
    let (restores, removed) = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    keeper_thread.join().unwrap();
    println!("keeper: {restores} restores; on stop removed {removed:?}");
    assert_eq!(restores, 3);
    assert!(
        foreign(ns),
        "a foreign rule was touched when the keeper stopped"
    );
    assert!(
        !ns.ip(&["-4", "rule", "show"]).unwrap().contains(ours_v4),
        "ours left behind"
    );
}

/// Whether something the keeper restores is in place.
type Present<'a> = dyn Fn(&Netns) -> bool + 'a;
