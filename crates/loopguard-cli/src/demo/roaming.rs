//! The roaming act: a guarded UDP flow keeps going when the preferred uplink's default route
//! is deleted mid-stream, and loopguard's monitor reports the rebind.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use loopguard::monitor::{MarkedRoute, Monitor, MonitorConfig, Roaming};
use loopguard::GuardConfig;
use loopguard_lab::{EchoServers, Lab, Transport, TunCounter};
use tokio::time::timeout;

use super::exchange::unspecified_for;
use super::report::RoamReport;

/// The roaming act: a second uplink, a guarded UDP flow (one datagram every 5 ms), and the
/// preferred uplink's IPv4 default route deleted mid-stream.
pub(super) fn roaming_act(
    lab: &Lab,
    echo: &EchoServers,
    counter: &TunCounter,
) -> anyhow::Result<RoamReport> {
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
