//! The plain-vs-guarded runs: every socket kind, family and transport in turn, each path
//! measured (echoes, packets in the TUN, loops the tripwire caught) and judged.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;
use loopguard::{LinuxMark, LoopEvent, LoopProtocol, LoopTripwire, SocketFactory};
use loopguard_lab::{EchoServers, Lab, Transport, TunCounter};
use serde::Serialize;

use super::exchange::{canonical, tcp_path, udp_path};
use super::report::{CountersReport, PathReport};
use super::signal::check;

/// How long a path may wait for its echoes or connections. A plain path loops and always waits
/// this long; a guarded one returns as soon as everything is echoed, so its bound is generous
/// (a loaded machine must not turn a working path into a failure).
pub(super) fn path_timeout(kind: SocketKind) -> Duration {
    match kind {
        SocketKind::Plain => Duration::from_millis(1200),
        SocketKind::Guarded => Duration::from_secs(10),
    }
}

/// Plain sockets or sockets from loopguard's factory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum SocketKind {
    Plain,
    Guarded,
}

/// The loop tripwire fed by the TUN reader, and the loops it found so far.
pub(super) struct Tripwire<'a> {
    pub(super) tripwire: &'a LoopTripwire,
    pub(super) loops: &'a Mutex<Vec<LoopEvent>>,
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
pub(super) fn drive_traffic(
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
pub(super) struct Outcome {
    pub(super) sent: u32,
    pub(super) echoed: u32,
    pub(super) error: Option<String>,
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
