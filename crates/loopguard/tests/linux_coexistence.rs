//! Coexistence with another VPN in the same namespace: a wg-quick style tunnel with its own
//! mark, table and rules, and a program that ORs bits of its own into packet marks (as
//! kube-proxy does with 0x4000).
#![cfg(target_os = "linux")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::block_on;
use loopguard::os::linux::TunnelRoutes;
use loopguard::{DatagramOut, GuardConfig, LinuxMark, SocketFactory};
use loopguard_lab::{EchoServers, Lab, Transport, TunCounter};

/// The other VPN: wg-quick's own numbers.
const WG_MARK: u32 = 0xca6c;
const WG_TABLE: &str = "51820";
const WG_TUN: &str = "lg-wg0";
/// The bit kube-proxy ORs into the mark of packets it wants masqueraded.
const KUBE_MASQ_BIT: u32 = 0x4000;

/// How long a socket that should be echoed waits: generous, as the wait ends with the echo.
const ECHO_BOUND: Duration = Duration::from_secs(10);
/// How long a socket that should not be echoed waits before it is judged unanswered (its
/// datagram's arrival in a TUN is checked separately, so a short wait cannot pass by luck).
const SILENCE: Duration = Duration::from_millis(800);

/// Sends one datagram from a UDP socket carrying `mark` and returns whether it was echoed
/// within `wait`.
async fn echoed_with_mark(mark: Option<u32>, dst: SocketAddr, wait: Duration) -> bool {
    let domain = socket2::Domain::for_address(dst);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None).unwrap();
    if let Some(mark) = mark {
        socket.set_mark(mark).unwrap();
    }
    socket.set_nonblocking(true).unwrap();
    let socket = tokio::net::UdpSocket::from_std(socket.into()).unwrap();
    socket.send_to(b"coexist", dst).await.unwrap();
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, socket.recv_from(&mut buf)).await,
        Ok(Ok((7, _)))
    )
}

fn rules(lab: &Lab) -> String {
    let v4 = lab.client().ip(&["-4", "rule", "show"]).unwrap();
    let v6 = lab.client().ip(&["-6", "rule", "show"]).unwrap();
    format!("{v4}{v6}")
}

fn wg_rules(rules: &str) -> Vec<&str> {
    rules.lines().filter(|l| l.contains(WG_TABLE)).collect()
}

#[test]
fn a_wg_quick_tunnel_and_loopguard_keep_their_own_rules_and_sockets() {
    if loopguard_lab::skip_unprivileged(
        "a_wg_quick_tunnel_and_loopguard_keep_their_own_rules_and_sockets",
    ) {
        return;
    }
    let lab = Lab::build("cx").expect("lab");
    let client = lab.client();
    // The other VPN, set up the way wg-quick does it, capturing the server's IPv6 prefix.
    client
        .ip(&["tuntap", "add", "dev", WG_TUN, "mode", "tun"])
        .unwrap();
    client
        .ip(&["link", "set", WG_TUN, "addrgenmode", "none"])
        .unwrap();
    client.ip(&["link", "set", WG_TUN, "up"]).unwrap();
    client
        .ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:2::/64",
            "dev",
            WG_TUN,
            "table",
            WG_TABLE,
        ])
        .unwrap();
    client
        .ip(&[
            "-6", "rule", "add", "not", "fwmark", "0xca6c", "table", WG_TABLE, "priority", "32765",
        ])
        .unwrap();
    client
        .ip(&[
            "-6",
            "rule",
            "add",
            "table",
            "main",
            "suppress_prefixlength",
            "0",
            "priority",
            "32764",
        ])
        .unwrap();
    let wg_before = rules(&lab);

    // loopguard's tunnel captures the server's IPv4 prefix; applied twice, as a restart would.
    let config = GuardConfig::default();
    let ours = ["198.51.100.0/24".parse().unwrap()];
    let tun = lab.tun();
    for _ in 0..2 {
        client
            .run(|| block_on(TunnelRoutes::new(config).apply(tun, &ours)))
            .unwrap()
            .expect("apply");
    }
    assert_eq!(
        wg_rules(&rules(&lab)),
        wg_rules(&wg_before),
        "apply touched wg-quick's rules"
    );

    let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
    let v4 = echo.udp_addr(lab.server_v4().into()).unwrap();
    let v6 = echo.udp_addr(lab.server_v6().into()).unwrap();
    let watched: Vec<IpAddr> = lab.server_addrs().to_vec();
    let ours_tun = TunCounter::start(client, lab.tun(), watched.clone()).unwrap();
    let wg_tun = TunCounter::start(client, WG_TUN, watched).unwrap();

    let results = client
        .run(move || {
            block_on(async move {
                let factory = SocketFactory::new(LinuxMark::new(config));
                let guarded = factory.bind("0.0.0.0:0".parse().unwrap()).unwrap();
                guarded
                    .send(&DatagramOut::new(v4, b"coexist"))
                    .await
                    .unwrap();
                let mut buf = [0u8; 64];
                let loopguard_v4 = tokio::time::timeout(ECHO_BOUND, guarded.recv_from(&mut buf))
                    .await
                    .is_ok_and(|r| r.is_ok());
                let kube = config.mark() | KUBE_MASQ_BIT;
                assert_ne!(
                    kube,
                    config.mark(),
                    "the bit must change the mark to test anything"
                );
                [
                    ("loopguard socket to the IPv4 server", loopguard_v4, true),
                    (
                        "wg socket to the IPv6 server",
                        echoed_with_mark(Some(WG_MARK), v6, ECHO_BOUND).await,
                        true,
                    ),
                    (
                        "loopguard mark with kube-proxy's bit",
                        echoed_with_mark(Some(kube), v4, ECHO_BOUND).await,
                        true,
                    ),
                    (
                        "plain socket to the IPv4 server",
                        echoed_with_mark(None, v4, SILENCE).await,
                        false,
                    ),
                    (
                        "plain socket to the IPv6 server",
                        echoed_with_mark(None, v6, SILENCE).await,
                        false,
                    ),
                ]
            })
        })
        .unwrap();
    let (ours_in, wg_in) = (ours_tun.stop(), wg_tun.stop());
    let v4_ip = IpAddr::from(lab.server_v4());
    let v6_ip = IpAddr::from(lab.server_v6());
    println!(
        "loopguard TUN: {} to the v4 server, {} to v6; wg TUN: {} to v6, {} to v4",
        ours_in.count_to(v4_ip, Transport::Udp),
        ours_in.count_to(v6_ip, Transport::Udp),
        wg_in.count_to(v6_ip, Transport::Udp),
        wg_in.count_to(v4_ip, Transport::Udp),
    );
    for (what, echoed, expected) in results {
        println!("{what}: echoed {echoed} (expected {expected})");
        assert_eq!(echoed, expected, "{what}");
    }
    // Only the plain sockets entered a tunnel, each the one that captures its destination.
    assert_eq!(
        ours_in.count_to(v4_ip, Transport::Udp),
        1,
        "loopguard's TUN"
    );
    assert_eq!(wg_in.count_to(v6_ip, Transport::Udp), 1, "wg's TUN");
    assert_eq!(
        ours_in.count_to(v6_ip, Transport::Udp) + wg_in.count_to(v4_ip, Transport::Udp),
        0
    );

    client
        .run(|| block_on(TunnelRoutes::new(config).remove()))
        .unwrap()
        .expect("remove");
    let after = rules(&lab);
    assert_eq!(
        wg_rules(&after),
        wg_rules(&wg_before),
        "remove touched wg-quick's rules"
    );
    assert!(
        !after.contains("proto 76"),
        "loopguard left rules behind:\n{after}"
    );
    let wg_routes = client
        .ip(&["-6", "route", "show", "table", WG_TABLE])
        .unwrap();
    assert!(
        wg_routes.contains(WG_TUN),
        "remove touched wg-quick's routes: {wg_routes}"
    );
    drop(echo);
}
