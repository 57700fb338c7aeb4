//! hickory-resolver over `GuardedRuntime` in the namespace lab: the client's TUN owns
//! `0.0.0.0/0` and `::/0` (loopguard's `TunnelRoutes`, `LinuxMark`), a DNS server answers in
//! the server namespace, and no query may enter the TUN.
#![cfg(target_os = "linux")]

mod common;
mod hickory_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{block_on, GuardedLab};
use hickory_resolver::config::ResolverConfig;
use loopguard::integrations::hickory;
use loopguard_lab::Transport;

use hickory_support::{options, DnsServer, BIG, BIG_V4, BIG_V6, PEER, PEER_V4, PEER_V6};

/// hickory's per-query timeout: only a failing test waits it out.
const WAIT: Duration = Duration::from_secs(5);

/// The DNS servers on both of the server's addresses, IPv4 first. Declare them after the
/// lab, so they stop before its namespaces go.
fn dns_servers(g: &GuardedLab) -> Vec<DnsServer> {
    g.lab
        .server_addrs()
        .iter()
        .map(|ip| DnsServer::start_with(*ip, &|job| g.lab.server().spawn(job).unwrap()))
        .collect()
}

/// Looks `name` up in the client namespace through guarded sockets, with `config`.
fn lookup(
    g: &GuardedLab,
    config: ResolverConfig,
    name: &'static str,
) -> Result<BTreeSet<IpAddr>, String> {
    g.in_client(move |factory| async move {
        let resolver = hickory::resolver(factory, config, options(WAIT, 1));
        match resolver.lookup_ip(name).await {
            Ok(found) => Ok(found.iter().collect()),
            Err(e) => Err(e.to_string()),
        }
    })
}

#[test]
fn hickory_resolves_over_guarded_udp_and_tcp_without_entering_the_tunnel() {
    if loopguard_lab::skip_unprivileged(
        "hickory_resolves_over_guarded_udp_and_tcp_without_entering_the_tunnel",
    ) {
        return;
    }
    let g = GuardedLab::build("hk");
    let servers = dns_servers(&g);
    let clients = [
        IpAddr::from(g.lab.client_v4()),
        IpAddr::from(g.lab.client_v6()),
    ];
    let peer: BTreeSet<IpAddr> = [PEER_V4.into(), PEER_V6.into()].into();
    let big: BTreeSet<IpAddr> = [BIG_V4.into(), BIG_V6.into()].into();
    for (server, client) in servers.iter().zip(clients) {
        let ip = server.udp.ip();
        let over_udp = lookup(&g, server.udp_only(), PEER);
        let over_tcp = lookup(&g, server.tcp_only(), PEER);
        let truncated = lookup(&g, server.udp_and_tcp(), BIG);
        let (udp, tcp) = server.counts();
        println!(
            "{ip}: UDP {over_udp:?}, TCP {over_tcp:?}, truncated then TCP {truncated:?}; \
             queries UDP {udp} TCP {tcp}; TUN {}",
            g.tun_packets_to(ip)
        );
        assert_eq!(over_udp.unwrap(), peer, "over UDP to {ip}");
        assert_eq!(over_tcp.unwrap(), peer, "over TCP to {ip}");
        assert_eq!(
            truncated.unwrap(),
            big,
            "truncated over UDP, then TCP, to {ip}"
        );
        // A and AAAA, over UDP twice (PEER, then BIG truncated) and over TCP twice.
        assert!(udp >= 4 && tcp >= 4, "UDP {udp}, TCP {tcp}");
        let sources: BTreeSet<IpAddr> = server.queries().iter().map(|q| q.from.ip()).collect();
        assert_eq!(
            sources,
            [client].into(),
            "queries to {ip} left by the uplink"
        );
        assert_eq!(g.tun_packets_to(ip), 0, "a query to {ip} entered the TUN");
    }
    // The zeros above mean something only if an unguarded query does loop.
    for server in &servers {
        let dst = server.udp;
        g.lab.client().run(|| block_on(plain_queries(dst))).unwrap();
        let looped = g
            .tun
            .wait_for(WAIT, |s| s.count_to(dst.ip(), Transport::Udp) >= 3)
            .count_to(dst.ip(), Transport::Udp);
        println!("{}: unguarded queries in the TUN: {looped}", dst.ip());
        assert!(
            looped >= 3,
            "an unguarded query to {dst} did not enter the TUN"
        );
    }
}

/// Three copies of a query from a plain socket (no mark).
async fn plain_queries(dst: SocketAddr) {
    let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .unwrap();
    let plain = tokio::net::UdpSocket::bind(bind).await.unwrap();
    // A bare DNS header: the TUN counts it whatever it asks.
    for _ in 0..3 {
        let _ = plain
            .send_to(&[0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], dst)
            .await;
    }
}

#[test]
fn without_an_uplink_route_hickory_fails_closed() {
    if loopguard_lab::skip_unprivileged("without_an_uplink_route_hickory_fails_closed") {
        return;
    }
    let g = GuardedLab::build("hf");
    let servers = dns_servers(&g);
    for family in ["-4", "-6"] {
        g.lab
            .client()
            .ip(&[family, "route", "del", "default"])
            .unwrap();
    }
    for server in &servers {
        let ip = server.udp.ip();
        let err = lookup(&g, server.udp_and_tcp(), PEER).unwrap_err();
        println!("{ip}: {err}");
        assert!(
            err.contains("outside the tunnel"),
            "not the guard's refusal: {err}"
        );
        assert!(server.queries().is_empty(), "{:?}", server.queries());
        assert_eq!(g.tun_packets_to(ip), 0, "a query to {ip} entered the TUN");
    }
}
