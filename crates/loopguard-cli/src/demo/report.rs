//! What the demo prints: the table of paths, the factory's counters and the roaming act, or
//! all of it as one JSON object.

use std::net::SocketAddr;

use loopguard::GuardConfig;
use loopguard_lab::Lab;
use serde::Serialize;

use super::paths::SocketKind;
use super::{CONNECTIONS, DATAGRAMS, ECHO_PORT};

/// One measured path: one socket kind, family and transport.
#[derive(Clone, Debug, Serialize)]
pub(super) struct PathReport {
    pub(super) family: &'static str,
    pub(super) transport: &'static str,
    pub(super) socket: SocketKind,
    pub(super) destination: SocketAddr,
    /// Datagrams sent, or connections attempted.
    pub(super) sent: u32,
    /// Echoes received: datagrams, or connections whose message came back.
    pub(super) echoed: u32,
    /// Packets to the server read from the TUN while this path ran.
    pub(super) tun_packets: u64,
    /// Of those, the packets the loop tripwire recognised as this path's sockets' own.
    pub(super) tripwire: u64,
    /// Whether the path showed what it should.
    pub(super) ok: bool,
    pub(super) verdict: String,
    /// The first error a socket reported, if any (a looping TCP connect times out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

/// What `--json` prints.
#[derive(Serialize)]
pub(super) struct DemoReport<'a> {
    pub(super) success: bool,
    pub(super) tun_device: &'a str,
    pub(super) tunnel_routes: [&'a str; 2],
    pub(super) paths: &'a [PathReport],
    /// What the guarded factory of the table counted (`SocketFactory::counters`).
    pub(super) counters: CountersReport,
    pub(super) roaming: &'a RoamReport,
}

/// A factory's counters, as printed: every guarded UDP datagram sent, received or dropped
/// (with the reason).
#[derive(Clone, Copy, Debug, Serialize)]
pub(super) struct CountersReport {
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
pub(super) struct RoamReport {
    pub(super) destination: SocketAddr,
    /// The uplink whose default route was deleted mid-stream.
    pub(super) removed: &'static str,
    /// The uplink expected to carry the flow afterwards.
    pub(super) took_over: &'static str,
    pub(super) sent: u64,
    pub(super) echoed: u64,
    /// From the deletion to the first echo received over the other uplink.
    pub(super) recovery_ms: Option<f64>,
    /// From the deletion to loopguard's monitor reporting the rebind (debounced).
    pub(super) rebind_ms: Option<f64>,
    pub(super) rebind: Option<String>,
    /// Packets to the server read from the TUN during the act.
    pub(super) tun_packets: u64,
    pub(super) ok: bool,
    pub(super) verdict: String,
}

pub(super) fn print_table(lab: &Lab, reports: &[PathReport], success: bool) -> anyhow::Result<()> {
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
pub(super) fn print_counters(c: &CountersReport) -> anyhow::Result<()> {
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

/// The roaming act, under the counters.
pub(super) fn print_roaming(r: &RoamReport) -> anyhow::Result<()> {
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
