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

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use loopguard::os::linux::TunnelRoutes;
use loopguard::{GuardConfig, LinuxMark, LoopEvent, LoopProtocol, LoopTripwire, SocketFactory};
use loopguard_lab::{remove_leftovers, EchoServers, Lab, Transport, TunCounter};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// Tag of every namespace the demo creates (`lg-demo...`), also used to clear leftovers.
const TAG: &str = "demo";
/// Port of the echo servers in the server namespace (the classic echo port).
const ECHO_PORT: u16 = 7;
/// UDP datagrams per path.
const DATAGRAMS: u32 = 5;
/// TCP connections per path.
const CONNECTIONS: u32 = 3;
/// How long a path may wait for its echoes or connections. A plain path loops and always waits
/// this long; a guarded one returns as soon as everything is echoed, so its bound is generous
/// (a loaded machine must not turn a working path into a failure).
fn path_timeout(kind: SocketKind) -> Duration {
    match kind {
        SocketKind::Plain => Duration::from_millis(1200),
        SocketKind::Guarded => Duration::from_secs(10),
    }
}

/// Plain sockets or sockets from loopguard's factory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum SocketKind {
    Plain,
    Guarded,
}

/// One measured path: one socket kind, family and transport.
#[derive(Clone, Debug, Serialize)]
struct PathReport {
    family: &'static str,
    transport: &'static str,
    socket: SocketKind,
    destination: SocketAddr,
    /// Datagrams sent, or connections attempted.
    sent: u32,
    /// Echoes received: datagrams, or connections whose message came back.
    echoed: u32,
    /// Packets to the server read from the TUN while this path ran.
    tun_packets: u64,
    /// Of those, the packets the loop tripwire recognised as this path's sockets' own.
    tripwire: u64,
    /// Whether the path showed what it should.
    ok: bool,
    verdict: String,
    /// The first error a socket reported, if any (a looping TCP connect times out).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What `--json` prints.
#[derive(Serialize)]
struct DemoReport<'a> {
    success: bool,
    tun_device: &'a str,
    tunnel_routes: [&'a str; 2],
    paths: &'a [PathReport],
    /// What the guarded factory of the table counted (`SocketFactory::counters`).
    counters: CountersReport,
    roaming: &'a RoamReport,
}

/// A factory's counters, as printed: every guarded UDP datagram sent, received or dropped
/// (with the reason).
#[derive(Clone, Copy, Debug, Serialize)]
struct CountersReport {
    datagrams_sent: u64,
    sends: u64,
    datagrams_received: u64,
    dropped_no_route: u64,
    dropped_send_error: u64,
    queue_full_retries: u64,
    gso_fallbacks: u64,
    sources_re_resolved: u64,
    protection_failures: u64,
    loops_detected: u64,
}

impl From<loopguard::Counters> for CountersReport {
    fn from(c: loopguard::Counters) -> Self {
        CountersReport {
            datagrams_sent: c.datagrams_sent,
            sends: c.sends,
            datagrams_received: c.datagrams_received,
            dropped_no_route: c.dropped_no_route,
            dropped_send_error: c.dropped_send_error,
            queue_full_retries: c.queue_full_retries,
            gso_fallbacks: c.gso_fallbacks,
            sources_re_resolved: c.sources_re_resolved,
            protection_failures: c.protection_failures,
            loops_detected: c.loops_detected,
        }
    }
}

/// What the roaming act measured.
#[derive(Clone, Debug, Serialize)]
struct RoamReport {
    destination: SocketAddr,
    /// The uplink whose default route was deleted mid-stream.
    removed: &'static str,
    /// The uplink expected to carry the flow afterwards.
    took_over: &'static str,
    sent: u64,
    echoed: u64,
    /// From the deletion to the first echo received over the other uplink.
    recovery_ms: Option<f64>,
    /// From the deletion to loopguard's monitor reporting the rebind (debounced).
    rebind_ms: Option<f64>,
    rebind: Option<String>,
    /// Packets to the server read from the TUN during the act.
    tun_packets: u64,
    ok: bool,
    verdict: String,
}

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

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
    Ok(())
}

fn check(cancel: &AtomicBool) -> anyhow::Result<()> {
    if cancel.load(Ordering::SeqCst) {
        bail!("interrupted; the lab was removed");
    }
    Ok(())
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

/// Installs `0.0.0.0/0` and `::/0` on the TUN with loopguard's own `TunnelRoutes`, inside the
/// client namespace: its netlink sockets and sysctl writes act on the calling thread's
/// namespace. Deleting the namespace later removes the rules, routes and nftables table too.
fn install_tunnel_routes(lab: &Lab) -> anyhow::Result<()> {
    let tun = lab.tun();
    lab.client()
        .run(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let routes = TunnelRoutes::new(GuardConfig::default());
                let prefixes: [ipnet::IpNet; 2] = ["0.0.0.0/0".parse()?, "::/0".parse()?];
                routes
                    .apply(tun, &prefixes)
                    .await
                    .context("installing the tunnel routes on the TUN")?;
                Ok(())
            })
        })
        .context("entering the client namespace")?
}

/// The loop tripwire fed by the TUN reader, and the loops it found so far.
struct Tripwire<'a> {
    tripwire: &'a LoopTripwire,
    loops: &'a Mutex<Vec<LoopEvent>>,
}

impl Tripwire<'_> {
    fn found(&self) -> usize {
        self.loops.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Loops found since `since` (a [`found`](Self::found) count) with `destination` and
    /// `transport`.
    fn loops_to(&self, since: usize, destination: SocketAddr, transport: Transport) -> u64 {
        let protocol = match transport {
            Transport::Tcp => LoopProtocol::Tcp,
            _ => LoopProtocol::Udp,
        };
        let loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops
            .get(since..)
            .unwrap_or_default()
            .iter()
            .filter(|e| {
                e.protocol == protocol && canonical(e.destination) == canonical(destination)
            })
            .count() as u64
    }
}

/// Sends every path's traffic from inside the client namespace and measures it; also returns
/// the guarded factory's counters.
fn drive_traffic(
    lab: &Lab,
    echo: &EchoServers,
    counter: &TunCounter,
    factory: &SocketFactory<LinuxMark>,
    tripwire: &Tripwire<'_>,
    cancel: &AtomicBool,
) -> anyhow::Result<(Vec<PathReport>, CountersReport)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut reports = Vec::new();
        // Plain sockets first: the problem, then the fix.
        for socket in [SocketKind::Plain, SocketKind::Guarded] {
            for ip in lab.server_addrs() {
                for transport in [Transport::Udp, Transport::Tcp] {
                    check(cancel)?;
                    let destination = match transport {
                        Transport::Tcp => echo.tcp_addr(ip),
                        _ => echo.udp_addr(ip),
                    }
                    .ok_or_else(|| anyhow!("no echo server on {ip}"))?;
                    let before = counter.count_to(ip, transport);
                    let loops_before = tripwire.found();
                    let watch = tripwire.tripwire;
                    let outcome = match transport {
                        Transport::Tcp => tcp_path(socket, factory, watch, destination).await,
                        _ => udp_path(socket, factory, watch, destination).await,
                    };
                    // Counts everything the path queued in the TUN (the counter drains first).
                    let tun_packets = counter.count_to(ip, transport).saturating_sub(before);
                    let caught = tripwire.loops_to(loops_before, destination, transport);
                    reports.push(judge(
                        socket,
                        ip,
                        transport,
                        destination,
                        outcome,
                        (tun_packets, caught),
                    ));
                }
            }
        }
        Ok((reports, factory.counters().into()))
    })
}

/// What one path's sockets achieved.
struct Outcome {
    sent: u32,
    echoed: u32,
    error: Option<String>,
}

fn judge(
    socket: SocketKind,
    ip: IpAddr,
    transport: Transport,
    destination: SocketAddr,
    outcome: Outcome,
    (tun_packets, tripwire): (u64, u64),
) -> PathReport {
    let (ok, verdict) = match socket {
        SocketKind::Guarded => {
            let delivered = outcome.sent > 0 && outcome.echoed == outcome.sent;
            match (delivered, tun_packets) {
                _ if tripwire > 0 => (false, format!("FAIL: the tripwire caught {tripwire} loops")),
                (true, 0) => (true, "delivered, no loop".to_owned()),
                (true, n) => (false, format!("FAIL: {n} packets entered the TUN")),
                (false, 0) => (false, "FAIL: not delivered".to_owned()),
                (false, n) => (false, format!("FAIL: looped ({n} packets in the TUN)")),
            }
        }
        SocketKind::Plain => match (tun_packets, tripwire) {
            (0, _) => (false, "FAIL: expected a loop, none seen".to_owned()),
            (_, 0) => (
                false,
                "FAIL: looped, but the tripwire saw nothing".to_owned(),
            ),
            (_, t) => (true, format!("looped into the TUN; tripwire caught {t}")),
        },
    };
    PathReport {
        family: if ip.is_ipv4() { "IPv4" } else { "IPv6" },
        transport: if transport == Transport::Tcp {
            "TCP"
        } else {
            "UDP"
        },
        socket,
        destination,
        sent: outcome.sent,
        echoed: outcome.echoed,
        tun_packets,
        tripwire,
        ok,
        verdict,
        error: outcome.error,
    }
}

fn unspecified_for(destination: SocketAddr) -> SocketAddr {
    match destination {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

fn payload(transport: &str, i: u32) -> Vec<u8> {
    format!("loopguard demo {transport} #{i}").into_bytes()
}

/// The same address, with an IPv4-mapped IPv6 form folded to IPv4, for comparing senders.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Either kind of UDP socket, so both paths run the same exchange.
enum Udp {
    Plain(tokio::net::UdpSocket),
    Guarded(loopguard::UdpSocket),
}

impl Udp {
    async fn send(&self, payload: &[u8], dst: SocketAddr) -> anyhow::Result<()> {
        match self {
            Udp::Plain(s) => s.send_to(payload, dst).await.map(drop)?,
            // `src` left empty: the strategy (the socket's mark) decides the path.
            Udp::Guarded(s) => s.send(&loopguard::DatagramOut::new(dst, payload)).await?,
        }
        Ok(())
    }

    /// Receives one buffer: the sender and the datagrams in it.
    async fn recv(&self, buf: &mut [u8]) -> anyhow::Result<(SocketAddr, Vec<Vec<u8>>)> {
        match self {
            Udp::Plain(s) => {
                let (n, from) = s.recv_from(buf).await?;
                Ok((from, vec![buf[..n].to_vec()]))
            }
            Udp::Guarded(s) => {
                let meta = s.recv_from(buf).await?;
                Ok((meta.addr, meta.datagrams(buf).map(<[u8]>::to_vec).collect()))
            }
        }
    }
}

async fn udp_path(
    kind: SocketKind,
    factory: &SocketFactory<LinuxMark>,
    tripwire: &LoopTripwire,
    dst: SocketAddr,
) -> Outcome {
    let mut outcome = Outcome {
        sent: 0,
        echoed: 0,
        error: None,
    };
    let socket = match kind {
        SocketKind::Plain => tokio::net::UdpSocket::bind(unspecified_for(dst))
            .await
            .map(Udp::Plain)
            .map_err(anyhow::Error::from),
        SocketKind::Guarded => factory
            .bind(unspecified_for(dst))
            .map(Udp::Guarded)
            .map_err(anyhow::Error::from),
    };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            outcome.error = Some(format!("{e:#}"));
            return outcome;
        }
    };
    // A plain socket is not the factory's: the tripwire watches it only when told to.
    let _watched = match &socket {
        Udp::Plain(s) => s
            .local_addr()
            .ok()
            .map(|local| tripwire.watch(LoopProtocol::Udp, local, None)),
        Udp::Guarded(_) => None,
    };
    let mut pending = HashSet::new();
    for i in 0..DATAGRAMS {
        let p = payload("udp", i);
        match socket.send(&p, dst).await {
            Ok(()) => {
                outcome.sent += 1;
                pending.insert(p);
            }
            Err(e) => {
                outcome.error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let deadline = tokio::time::Instant::now() + path_timeout(kind);
    let mut buf = vec![0u8; 65_536];
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => break,
            Ok(Err(e)) => {
                outcome.error.get_or_insert_with(|| format!("{e:#}"));
                break;
            }
            Ok(Ok((from, datagrams))) => {
                if canonical(from) != canonical(dst) {
                    continue;
                }
                // Only an echo of a datagram we sent, and each once, counts.
                for d in datagrams {
                    if pending.remove(&d) {
                        outcome.echoed += 1;
                    }
                }
            }
        }
    }
    outcome
}

async fn tcp_path(
    kind: SocketKind,
    factory: &SocketFactory<LinuxMark>,
    tripwire: &LoopTripwire,
    dst: SocketAddr,
) -> Outcome {
    // The connections run concurrently, so a looping path costs one timeout, not one each.
    let attempts = (0..CONNECTIONS).map(|i| async move {
        let message = payload("tcp", i);
        let exchange = async {
            let mut echo = vec![0u8; message.len()];
            match kind {
                SocketKind::Plain => {
                    // Bound first, so its port is known (and watched) before the SYN leaves.
                    let socket = match dst {
                        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                    };
                    socket.bind(unspecified_for(dst))?;
                    let _watched =
                        tripwire.watch(LoopProtocol::Tcp, socket.local_addr()?, Some(dst));
                    let mut s = socket.connect(dst).await?;
                    s.write_all(&message).await?;
                    s.read_exact(&mut echo).await?;
                }
                SocketKind::Guarded => {
                    let mut s = factory.connect(dst).await?;
                    s.write_all(&message).await?;
                    s.read_exact(&mut echo).await?;
                }
            }
            anyhow::Ok(echo == message)
        };
        match timeout(path_timeout(kind), exchange).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err("the echo differed from the message".to_owned()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            // Dropping the connect future closes the socket: no SYN retransmits later.
            Err(_) => Err(format!(
                "no connection within {} ms",
                path_timeout(kind).as_millis()
            )),
        }
    });
    let results = futures_join_all(attempts).await;
    let mut outcome = Outcome {
        sent: CONNECTIONS,
        echoed: 0,
        error: None,
    };
    for r in results {
        match r {
            Ok(()) => outcome.echoed += 1,
            Err(e) => {
                outcome.error.get_or_insert(e);
            }
        }
    }
    outcome
}

/// Polls a set of futures to completion together on the current task (a tiny `join_all`,
/// so the CLI needs no extra crate for it).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (future, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

fn print_table(lab: &Lab, reports: &[PathReport], success: bool) -> anyhow::Result<()> {
    outln!(
        "loopguard demo: TUN {} in the client namespace captures 0.0.0.0/0 and ::/0 \
         (loopguard TunnelRoutes, mark {:#x})",
        lab.tun(),
        GuardConfig::default().mark()
    );
    outln!(
        "server {} / {}: UDP and TCP echo on port {ECHO_PORT}; {DATAGRAMS} datagrams and \
         {CONNECTIONS} connections per path\n",
        lab.server_v4(),
        lab.server_v6()
    );
    outln!(
        "{:<6} {:<9} {:<7} {:>4} {:>6} {:>11} {:>8}  verdict",
        "family",
        "transport",
        "socket",
        "sent",
        "echoed",
        "TUN packets",
        "tripwire"
    );
    for r in reports {
        let socket = match r.socket {
            SocketKind::Plain => "plain",
            SocketKind::Guarded => "guarded",
        };
        outln!(
            "{:<6} {:<9} {:<7} {:>4} {:>6} {:>11} {:>8}  {}",
            r.family,
            r.transport,
            socket,
            r.sent,
            r.echoed,
            r.tun_packets,
            r.tripwire,
            r.verdict
        );
    }
    outln!();
    if success {
        outln!(
            "OK: every guarded path was delivered with 0 packets in the TUN; every plain path \
             looped, and the loop tripwire caught it."
        );
    } else {
        outln!("FAILED: see the verdicts above.");
        for r in reports.iter().filter(|r| !r.ok) {
            if let Some(e) = &r.error {
                outln!("  {} {} {}: {e}", r.family, r.transport, r.verdict);
            }
        }
    }
    Ok(())
}

/// The guarded factory's counters, under the table.
fn print_counters(c: &CountersReport) -> anyhow::Result<()> {
    outln!(
        "guarded factory counters: UDP datagrams sent {} (in {} sends), received {}; dropped: \
         no route {}, send error {}; queue-full retries {}, GSO fallbacks {}, sources \
         re-resolved {}, protection failures {}; loops detected by its tripwire {} (the plain \
         sockets it watched count here too)",
        c.datagrams_sent,
        c.sends,
        c.datagrams_received,
        c.dropped_no_route,
        c.dropped_send_error,
        c.queue_full_retries,
        c.gso_fallbacks,
        c.sources_re_resolved,
        c.protection_failures,
        c.loops_detected
    );
    Ok(())
}

/// The roaming act: a second uplink, a guarded UDP flow (one datagram every 5 ms), and the
/// preferred uplink's IPv4 default route deleted mid-stream.
fn roaming_act(lab: &Lab, echo: &EchoServers, counter: &TunCounter) -> anyhow::Result<RoamReport> {
    use loopguard::monitor::{MarkedRoute, Monitor, MonitorConfig, Roaming};
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;

    lab.add_second_uplink()
        .context("adding the second uplink")?;
    let server = IpAddr::from(lab.server_v4());
    let destination = echo
        .udp_addr(server)
        .ok_or_else(|| anyhow!("no echo server on {server}"))?;
    let new_source = IpAddr::from(lab.client2_v4());
    let before = counter.count_to(server, Transport::Udp);
    let config = GuardConfig::default();
    let (tun, ns) = (lab.tun(), lab.client().name().to_owned());
    let (sent, echoes, event_at, rebind) = lab
        .client()
        .run(move || -> anyhow::Result<_> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let factory = loopguard::SocketFactory::new(loopguard::LinuxMark::new(config));
                let monitor = Monitor::new(MonitorConfig::default().ignore_interface(tun))?;
                let mut roaming = Roaming::new(monitor, MarkedRoute::new(config));
                roaming.reset_on_change(factory.clone());
                roaming.track_now(server).await;
                let socket = Arc::new(factory.bind(unspecified_for(destination))?);
                let stop = Arc::new(AtomicBool::new(false));
                let sent = Arc::new(AtomicU64::new(0));
                let echoes = Arc::new(Mutex::new(Vec::new()));
                let sender = tokio::spawn({
                    let (socket, stop, sent) = (socket.clone(), stop.clone(), sent.clone());
                    async move {
                        while !stop.load(Ordering::Relaxed) {
                            let n = sent.fetch_add(1, Ordering::Relaxed).to_be_bytes();
                            let datagram = loopguard::DatagramOut::new(destination, &n);
                            // Fails closed (HostUnreachable) while no path exists: keep trying.
                            let _ = socket.send(&datagram).await;
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
                            if let Ok(mut e) = echoes.lock() {
                                e.extend(std::iter::repeat_n((Instant::now(), meta.dst_ip), n));
                            }
                        }
                    }
                });
                // The flow is established before the route goes: an echo came back.
                let flowing = || echoes.lock().is_ok_and(|e| !e.is_empty());
                wait_until(Duration::from_secs(5), flowing).await;
                let event_at = Instant::now();
                let out = tokio::process::Command::new("ip")
                    .args([
                        "-n",
                        &ns,
                        "-4",
                        "route",
                        "del",
                        "default",
                        "via",
                        "192.0.2.1",
                    ])
                    .output()
                    .await?;
                if !out.status.success() {
                    bail!(
                        "deleting the preferred default route: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                let rebind = timeout(Duration::from_secs(3), async {
                    while let Some(e) = roaming.next().await {
                        if let Some(r) = e.rebind.iter().find(|r| r.destination == server) {
                            return Some((Instant::now(), r.to_string()));
                        }
                    }
                    None
                })
                .await
                .ok()
                .flatten();
                // Keep the flow going until it has resumed over the other uplink (bounded: a
                // flow that never resumes is reported as such).
                let resumed = || {
                    echoes.lock().is_ok_and(|e| {
                        e.iter()
                            .any(|(at, ip)| *at > event_at && *ip == Some(new_source))
                    })
                };
                wait_until(Duration::from_secs(5), resumed).await;
                stop.store(true, Ordering::Relaxed);
                let _ = sender.await;
                receiver.abort();
                let echoes = echoes.lock().map(|e| e.clone()).unwrap_or_default();
                Ok((sent.load(Ordering::Relaxed), echoes, event_at, rebind))
            })
        })
        .context("entering the client namespace")??;
    let tun_packets = counter
        .count_to(server, Transport::Udp)
        .saturating_sub(before);
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let recovery = echoes
        .iter()
        .find(|(at, dst)| *at >= event_at && *dst == Some(new_source))
        .map(|(at, _)| ms(*at - event_at));
    let (ok, verdict) = match (recovery, tun_packets) {
        (Some(_), 0) => (true, format!("resumed over {}, no loop", lab.uplink2())),
        (None, 0) => (false, "FAIL: the flow did not resume".to_owned()),
        (_, n) => (false, format!("FAIL: {n} packets entered the TUN")),
    };
    Ok(RoamReport {
        destination,
        removed: lab.uplink(),
        took_over: lab.uplink2(),
        sent,
        echoed: echoes.len() as u64,
        recovery_ms: recovery,
        rebind_ms: rebind.as_ref().map(|(at, _)| ms(*at - event_at)),
        rebind: rebind.map(|(_, r)| r),
        tun_packets,
        ok,
        verdict,
    })
}

/// Waits until `condition` holds or `bound` has passed, checking every few milliseconds.
async fn wait_until(bound: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn print_roaming(r: &RoamReport) -> anyhow::Result<()> {
    let ms = |v: Option<f64>| v.map_or("never".to_owned(), |v| format!("{v:.1} ms"));
    outln!(
        "\nroaming: guarded UDP to {} every 5 ms; the default route of {} (preferred) is \
         deleted mid-stream, {} remains",
        r.destination,
        r.removed,
        r.took_over
    );
    let over = format!("traffic flowed again over {}", r.took_over);
    let rebind = r
        .rebind
        .as_ref()
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    outln!("  {over:<34}{}", ms(r.recovery_ms));
    outln!(
        "  {:<34}{}{rebind}",
        "monitor reported the rebind",
        ms(r.rebind_ms)
    );
    outln!("  {:<34}{}", "TUN packets during the act", r.tun_packets);
    outln!(
        "  {:<34}{} / {}",
        "datagrams sent / echoed",
        r.sent,
        r.echoed
    );
    outln!("  verdict: {}", r.verdict);
    Ok(())
}
