//! The lab itself, in real namespaces (root): echo works through the router, routing
//! everything into the TUN makes plain sockets loop, the counter sees it, and nothing is left.
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use loopguard_lab::{run_cmd, EchoServers, Lab, LabOptions, RpFilter, Transport, TunCounter};

/// The bound on waiting for something that should arrive: generous, as the wait ends as soon
/// as it does.
const WAIT: Duration = Duration::from_secs(10);

/// How long a datagram that should not be echoed waits before it is judged unanswered (where
/// it went instead is checked on the TUN, so a short wait cannot make a test pass by luck).
const SILENCE: Duration = Duration::from_millis(800);

/// Sends one datagram from a plain socket in the client namespace and returns whether the
/// echo came back within `wait`.
fn udp_round_trip(lab: &Lab, dst: SocketAddr, payload: &'static [u8], wait: Duration) -> bool {
    lab.client()
        .run(move || -> std::io::Result<bool> {
            let bind: SocketAddr = match dst {
                SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
                SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
            };
            let socket = UdpSocket::bind(bind)?;
            socket.set_read_timeout(Some(wait))?;
            socket.send_to(payload, dst)?;
            let mut buf = [0u8; 256];
            Ok(match socket.recv_from(&mut buf) {
                Ok((n, from)) => from == dst && &buf[..n] == payload,
                Err(_) => false,
            })
        })
        .expect("runs in the client namespace")
        .unwrap_or(false)
}

/// Connects from the client namespace, sends a message and returns whether it was echoed,
/// each step within `wait`.
fn tcp_round_trip(lab: &Lab, dst: SocketAddr, wait: Duration) -> bool {
    lab.client()
        .run(move || -> std::io::Result<bool> {
            let mut stream = TcpStream::connect_timeout(&dst, wait)?;
            stream.set_read_timeout(Some(wait))?;
            stream.write_all(b"control plane")?;
            let mut buf = [0u8; 13];
            stream.read_exact(&mut buf)?;
            Ok(&buf == b"control plane")
        })
        .expect("runs in the client namespace")
        .unwrap_or(false)
}

fn wait_for_count(counter: &TunCounter, dst: IpAddr, transport: Transport) -> u64 {
    counter
        .wait_for(WAIT, |s| s.count_to(dst, transport) > 0)
        .count_to(dst, transport)
}

/// The names `ip netns list` prints, one per line (followed by ` (id: N)` once a namespace has
/// an id). Compared whole: `lg-lab-7-1` must not match another test's `lg-lab-7-10`.
fn listed_namespaces() -> Vec<String> {
    run_cmd("ip", &["netns", "list"])
        .expect("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn plain_udp_loops_into_the_tun_and_echo_works_without_tun_routes() {
    if loopguard_lab::skip_unprivileged("plain_udp_loops_into_the_tun") {
        return;
    }
    let names: Vec<String>;
    {
        let lab = Lab::build("lab").expect("lab builds");
        names = lab
            .namespace_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let listed = listed_namespaces();
        for name in &names {
            assert!(name.starts_with("lg-"), "{name}");
            assert!(listed.contains(name), "{name} missing from {listed:?}");
        }

        let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 7).expect("echo");
        let counter = TunCounter::start(lab.client(), lab.tun(), lab.server_addrs().to_vec())
            .expect("TUN counter attaches");

        // Without TUN routes: the router forwards, the server echoes, the TUN sees nothing.
        for ip in lab.server_addrs() {
            let udp = echo.udp_addr(ip).expect("udp echo");
            assert!(
                udp_round_trip(&lab, udp, b"relay", WAIT),
                "UDP echo via {ip}"
            );
            let tcp = echo.tcp_addr(ip).expect("tcp echo");
            assert!(tcp_round_trip(&lab, tcp, WAIT), "TCP echo via {ip}");
            assert_eq!(echo.stats(ip).udp_datagrams, 1, "{ip}");
            assert_eq!(echo.stats(ip).tcp_connections, 1, "{ip}");
            assert_eq!(echo.stats(ip).tcp_bytes, 13, "{ip}");
        }
        assert_eq!(counter.snapshot().watched_packets, 0);

        // Everything into the TUN: the same plain sockets now loop and get no echo.
        lab.route_all_into_tun_main_table().expect("routes");
        lab.route_all_into_tun_main_table()
            .expect("routes again: idempotent");
        for ip in lab.server_addrs() {
            let udp = echo.udp_addr(ip).expect("udp echo");
            assert!(
                !udp_round_trip(&lab, udp, b"looped", SILENCE),
                "no echo through the TUN ({ip})"
            );
            assert_eq!(
                wait_for_count(&counter, ip, Transport::Udp),
                1,
                "UDP to {ip} in the TUN"
            );
            assert_eq!(
                echo.stats(ip).udp_datagrams,
                1,
                "the server saw no second datagram"
            );
        }

        // Removing the routes restores the path.
        lab.remove_tun_main_table_routes().expect("remove routes");
        let v4 = echo.udp_addr(lab.server_v4().into()).expect("udp echo");
        assert!(udp_round_trip(&lab, v4, b"back", WAIT));
        let snap = counter.stop();
        assert_eq!(snap.watched_packets, 2, "{snap:?}");
        echo.stop();
    }
    let listed = listed_namespaces();
    for name in &names {
        assert!(!listed.contains(name), "{name} left behind: {listed:?}");
    }
}

#[test]
fn tcp_syn_loops_into_the_tun_and_strict_rp_filter_is_set() {
    if loopguard_lab::skip_unprivileged("tcp_syn_loops_into_the_tun") {
        return;
    }
    let lab = Lab::build_with(
        "lab",
        LabOptions {
            client_rp_filter: RpFilter::Strict,
        },
    )
    .expect("lab builds");
    let strict = lab
        .client()
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter"))
        .expect("runs")
        .expect("reads");
    assert_eq!(strict.trim(), "1");
    let router = lab
        .router()
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))
        .expect("runs")
        .expect("reads");
    assert_eq!(router.trim(), "1");

    let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
    // Strict mode on the client does not disturb unguarded traffic on the uplink.
    let v6 = echo.tcp_addr(lab.server_v6().into()).expect("tcp echo");
    assert!(tcp_round_trip(&lab, v6, WAIT));

    let counter =
        TunCounter::start(lab.client(), lab.tun(), lab.server_addrs().to_vec()).expect("counter");
    lab.route_all_into_tun_main_table().expect("routes");
    for ip in lab.server_addrs() {
        let tcp = echo.tcp_addr(ip).expect("tcp echo");
        assert!(
            !tcp_round_trip(&lab, tcp, SILENCE),
            "no connection through the TUN ({ip})"
        );
        assert!(
            wait_for_count(&counter, ip, Transport::Tcp) >= 1,
            "SYN to {ip} in the TUN"
        );
    }
    assert_eq!(echo.stats(lab.server_v4().into()).tcp_connections, 0);
}
