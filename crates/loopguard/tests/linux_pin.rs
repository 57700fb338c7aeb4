//! The Linux pin strategy (`PinOutside`) end to end, in a lab of network namespaces: the
//! client's TUN holds `0.0.0.0/1`, `128.0.0.0/1`, `::/1` and `8000::/1` in `main`, there are
//! no policy rules and no marks, and a router leads to a server with UDP and TCP echo.
//! "Entered the TUN" means read from the TUN device by the lab's counter.
#![cfg(target_os = "linux")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::block_on;
use loopguard::monitor::{Monitor, MonitorConfig, ResolveEgress, Roaming};
use loopguard::os::best_route::TunnelRestart;
use loopguard::{DatagramOut, Error, PinOutside, SocketFactory, UdpSocket};
use loopguard_lab::{EchoServers, Lab, Transport, TunCounter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bound on waiting for something that should arrive (an echo); the wait ends as soon
/// as it does.
const WAIT: Duration = Duration::from_secs(10);

/// The lab with the TUN's half routes in `main`, echo servers and the TUN counter.
struct PinLab {
    // Field order is drop order: threads inside the namespaces go first.
    tun: TunCounter,
    echo: EchoServers,
    lab: Lab,
}

impl PinLab {
    fn build(tag: &str) -> PinLab {
        PinLab::build_with(tag, |_| {})
    }

    /// The lab, changed by `prepare` (a second uplink, say) before the half routes go in.
    fn build_with(tag: &str, prepare: impl FnOnce(&Lab)) -> PinLab {
        let lab = Lab::build(tag).expect("lab");
        prepare(&lab);
        lab.route_all_into_tun_main_table().expect("half routes");
        let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
        let tun = TunCounter::start(lab.client(), lab.tun(), lab.server_addrs().to_vec())
            .expect("tun counter");
        PinLab { tun, echo, lab }
    }

    /// Runs `f` with a factory over `PinOutside` for the lab's TUN, in the client namespace.
    fn in_client<T: Send, F: std::future::Future<Output = T>>(
        &self,
        f: impl FnOnce(SocketFactory<PinOutside>) -> F + Send,
    ) -> T {
        let tun = self.lab.tun();
        self.lab
            .client()
            .run(move || {
                let strategy = PinOutside::for_tunnel_named(tun).expect("pin strategy");
                block_on(async move { f(SocketFactory::new(strategy)).await })
            })
            .unwrap()
    }

    /// Packets to `ip` (UDP, TCP or ICMP) read from the TUN so far.
    fn tun_packets_to(&self, ip: IpAddr) -> u64 {
        let s = self.tun.snapshot();
        [Transport::Udp, Transport::Tcp, Transport::Icmp]
            .into_iter()
            .map(|t| s.count_to(ip, t))
            .sum()
    }
}

fn any_of(family_of: IpAddr) -> SocketAddr {
    if family_of.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap()
}

/// Sends `payload` (a batch when `segment` is set) and counts the echoed datagrams equal to
/// one segment of it, waiting at most [`WAIT`] for all `expect` of them.
async fn round_trip(
    socket: &UdpSocket,
    dst: SocketAddr,
    src: Option<IpAddr>,
    payload: &[u8],
    segment: Option<usize>,
    expect: usize,
) -> Result<usize, Error> {
    let mut datagram = DatagramOut::new(dst, payload);
    datagram.src = src;
    if let Some(segment) = segment {
        datagram = datagram.with_segment_size(segment);
    }
    socket.send(&datagram).await?;
    let piece = segment.unwrap_or(payload.len());
    let mut buf = vec![0u8; 65535 * socket.gro_segments()];
    let mut echoed = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while echoed < expect {
        match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Ok(Ok(meta)) => {
                echoed += meta
                    .datagrams(&buf)
                    .filter(|d| payload.chunks(piece).any(|c| c == *d))
                    .count()
            }
            _ => break,
        }
    }
    Ok(echoed)
}

/// Sends a few datagrams from a plain socket: they should loop into the TUN.
async fn plain_udp_sends(dst: SocketAddr) {
    let plain = tokio::net::UdpSocket::bind(any_of(dst.ip())).await.unwrap();
    for _ in 0..3 {
        let _ = plain.send_to(b"plain", dst).await;
    }
}

#[test]
fn pinned_udp_and_tcp_escape_half_routes_in_main_without_marks_or_rules() {
    if loopguard_lab::skip_unprivileged("pinned_udp_and_tcp_escape_half_routes_in_main") {
        return;
    }
    let g = PinLab::build("pin");
    let rules = g.lab.client().ip(&["rule", "show"]).unwrap();
    println!("client rules:\n{rules}");
    let client_addrs = [
        IpAddr::from(g.lab.client_v4()),
        IpAddr::from(g.lab.client_v6()),
    ];
    for (server, client) in g.lab.server_addrs().into_iter().zip(client_addrs) {
        let udp = g.echo.udp_addr(server).unwrap();
        let tcp = g.echo.tcp_addr(server).unwrap();
        let (resolved, explicit, batch, tcp_echo) = g.in_client(|factory| async move {
            let socket = factory.bind(any_of(server)).unwrap();
            let resolved = round_trip(&socket, udp, None, b"resolved", None, 1).await;
            let explicit = round_trip(&socket, udp, Some(client), b"explicit", None, 1).await;
            let batch: Vec<u8> = (0..4u8).flat_map(|i| [i; 100]).collect();
            let batch = round_trip(&socket, udp, None, &batch, Some(100), 4).await;
            let (resolved, batch) = (resolved.unwrap(), batch.unwrap());
            let mut stream = factory.connect(tcp).await.expect("guarded connect");
            stream.write_all(b"control plane").await.unwrap();
            let mut back = [0u8; 13];
            tokio::time::timeout(WAIT, stream.read_exact(&mut back))
                .await
                .unwrap()
                .unwrap();
            (resolved, explicit, batch, &back == b"control plane")
        });
        println!(
            "{server}: UDP resolved {resolved}/1, explicit src {client} {explicit:?}, GSO batch {batch}/4, TCP {tcp_echo}, TUN {}",
            g.tun_packets_to(server)
        );
        assert_eq!(resolved, 1, "UDP with a resolved source to {server}");
        if server.is_ipv4() {
            assert_eq!(
                explicit.unwrap(),
                1,
                "UDP with an explicit source to {server}"
            );
        } else {
            // The kernel binds an IPv6 lookup to the interface only for an unspecified
            // source, so an explicit one fails closed instead of following `::/1`.
            let err = explicit.unwrap_err();
            assert!(
                matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::Unsupported),
                "{err:?}"
            );
        }
        assert_eq!(batch, 4, "GSO batch to {server}");
        assert!(tcp_echo, "TCP to {server}");
        assert_eq!(
            g.tun_packets_to(server),
            0,
            "pinned traffic to {server} entered the TUN"
        );
    }
    // The zero above means something only if unguarded traffic does loop.
    for server in g.lab.server_addrs() {
        let udp = g.echo.udp_addr(server).unwrap();
        g.lab
            .client()
            .run(|| block_on(plain_udp_sends(udp)))
            .unwrap();
        let looped = g
            .tun
            .wait_for(WAIT, |s| s.count_to(server, Transport::Udp) >= 3)
            .count_to(server, Transport::Udp);
        println!("{server}: plain UDP packets in the TUN: {looped}");
        assert!(
            looped >= 3,
            "unguarded UDP to {server} did not enter the TUN: {looped}"
        );
    }
}

#[test]
fn with_the_only_default_in_the_tunnel_pinned_sockets_fail_closed() {
    if loopguard_lab::skip_unprivileged(
        "with_the_only_default_in_the_tunnel_pinned_sockets_fail_closed",
    ) {
        return;
    }
    let g = PinLab::build("pfc");
    let c = g.lab.client();
    c.ip(&["-4", "route", "del", "default"]).unwrap();
    c.ip(&["-6", "route", "del", "default"]).unwrap();
    c.ip(&["-4", "route", "replace", "default", "dev", g.lab.tun()])
        .unwrap();
    c.ip(&["-6", "route", "replace", "default", "dev", g.lab.tun()])
        .unwrap();
    for server in g.lab.server_addrs() {
        let udp = g.echo.udp_addr(server).unwrap();
        let tcp = g.echo.tcp_addr(server).unwrap();
        let (udp_err, tcp_err) = g.in_client(|factory| async move {
            let socket = factory.bind(any_of(server)).unwrap();
            let udp_err = socket
                .send(&DatagramOut::new(udp, b"must not leak"))
                .await
                .unwrap_err();
            let tcp_err = factory.connect(tcp).await.unwrap_err();
            (udp_err, tcp_err)
        });
        println!("{server}: UDP: {udp_err}; TCP: {tcp_err}");
        assert!(
            matches!(udp_err, Error::HostUnreachable { destination } if destination == udp),
            "{udp_err:?}"
        );
        assert!(
            matches!(tcp_err, Error::HostUnreachable { destination } if destination == tcp),
            "{tcp_err:?}"
        );
        let snapshot = g.tun.snapshot();
        assert_eq!(
            g.tun_packets_to(server),
            0,
            "a pinned packet to {server} entered the TUN"
        );
        assert_eq!(g.echo.stats(server).udp_datagrams, 0);
        println!(
            "{server}: TUN packets of any kind: {}",
            snapshot.all_packets
        );
    }
}

/// quinn's usual socket: `[::]` reaches an IPv4 peer as `::ffff:a.b.c.d`, which the factory
/// resolves as the IPv4 address (resolved as IPv6, an IPv6 source went with an IPv4 flow and
/// the send failed with EINVAL), and an IPv6 peer, both outside the tunnel.
#[test]
fn a_dual_stack_socket_reaches_an_ipv4_and_an_ipv6_peer() {
    if loopguard_lab::skip_unprivileged("a_dual_stack_socket_reaches_an_ipv4_and_an_ipv6_peer") {
        return;
    }
    let g = PinLab::build("pds");
    let v4 = g.echo.udp_addr(g.lab.server_v4().into()).unwrap();
    let v6 = g.echo.udp_addr(g.lab.server_v6().into()).unwrap();
    let mapped = SocketAddr::new(IpAddr::V6(g.lab.server_v4().to_ipv6_mapped()), v4.port());
    let (to_v4, to_v6) = g.in_client(|factory| async move {
        let socket = factory.bind("[::]:0".parse().unwrap()).unwrap();
        let to_v4 = round_trip(&socket, mapped, None, b"to v4", None, 1).await;
        let to_v6 = round_trip(&socket, v6, None, b"to v6", None, 1).await;
        (to_v4, to_v6)
    });
    println!("dual stack: mapped {mapped} {to_v4:?}, {v6} {to_v6:?}");
    assert_eq!(to_v6.unwrap(), 1, "IPv6 peer from [::]");
    assert_eq!(to_v4.unwrap(), 1, "IPv4 peer (as {mapped}) from [::]");
    for server in g.lab.server_addrs() {
        assert_eq!(
            g.tun_packets_to(server),
            0,
            "pinned traffic to {server} entered the TUN"
        );
    }
}

/// Roaming without marks: a UDP flow (a datagram every 5 ms) to the IPv4 echo runs over the
/// preferred uplink, its default route is deleted mid-stream, and the flow resumes over the
/// second uplink once the monitor's change resets the factory's cached path.
#[test]
fn the_preferred_uplinks_default_deleted_mid_stream_the_flow_moves_to_the_other() {
    if loopguard_lab::skip_unprivileged("pin_roaming_default_deleted") {
        return;
    }
    let g = PinLab::build_with("prm", |lab| lab.add_second_uplink().expect("second uplink"));
    let server = IpAddr::from(g.lab.server_v4());
    let dst = g.echo.udp_addr(server).unwrap();
    let (old_source, new_source) = (
        IpAddr::from(g.lab.client_v4()),
        IpAddr::from(g.lab.client2_v4()),
    );
    let gateway = g.lab.gateway_v4().to_string();
    let (tun, ns) = (g.lab.tun(), g.lab.client().name().to_owned());
    let (before, after, recovery) = g
        .lab
        .client()
        .run(move || {
            block_on(async move {
                let strategy = Arc::new(PinOutside::for_tunnel_named(tun).unwrap());
                let factory = SocketFactory::new(strategy.clone());
                let monitor = Monitor::new(MonitorConfig::default().ignore_interface(tun)).unwrap();
                let mut roaming = Roaming::new(monitor, ResolveEgress(strategy));
                roaming.reset_on_change(factory.clone());
                let roam = tokio::spawn(async move { while roaming.next().await.is_some() {} });
                let socket = Arc::new(factory.bind("0.0.0.0:0".parse().unwrap()).unwrap());
                let stop = Arc::new(AtomicBool::new(false));
                let echoes = Arc::new(Mutex::new(Vec::<(Instant, Option<IpAddr>)>::new()));
                let sender = tokio::spawn({
                    let (socket, stop) = (socket.clone(), stop.clone());
                    async move {
                        while !stop.load(Ordering::Relaxed) {
                            // Sends fail closed while no path exists; the flow keeps trying.
                            let _ = socket.send(&DatagramOut::new(dst, b"flow")).await;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                });
                let receiver = tokio::spawn({
                    let (socket, echoes) = (socket.clone(), echoes.clone());
                    async move {
                        let mut buf = vec![0u8; 65_535 * socket.gro_segments()];
                        while let Ok(meta) = socket.recv_from(&mut buf).await {
                            echoes.lock().unwrap().push((Instant::now(), meta.dst_ip));
                        }
                    }
                });
                let seen = |from: Instant, via: IpAddr| {
                    echoes
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(at, d)| *at >= from && *d == Some(via))
                        .map(|(at, _)| *at - from)
                };
                let start = Instant::now();
                let deadline = start + WAIT;
                while seen(start, old_source).is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let before = seen(start, old_source).is_some();
                let out = tokio::process::Command::new("ip")
                    .args(["-n", &ns, "-4", "route", "del", "default", "via", &gateway])
                    .output()
                    .await
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                let event = Instant::now();
                let deadline = event + WAIT;
                while seen(event, new_source).is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                stop.store(true, Ordering::Relaxed);
                let _ = sender.await;
                receiver.abort();
                roam.abort();
                (
                    before,
                    seen(event, new_source).is_some(),
                    seen(event, new_source),
                )
            })
        })
        .unwrap();
    println!(
        "roaming: echoes via {old_source} before {before}, via {new_source} after {after} \
         (recovered after {recovery:?}); TUN {}",
        g.tun_packets_to(server)
    );
    assert!(before, "the flow never ran over the first uplink");
    assert!(after, "the flow did not move to the second uplink");
    assert_eq!(
        g.tun_packets_to(server),
        0,
        "pinned packets entered the TUN"
    );
}

/// The tunnel deleted mid-stream and created again under the same name with a new ifindex
/// (a VPN client restarting). Without the identity check the new device is an ordinary
/// interface whose half routes win, and the strategy would pin traffic into it. Here: while
/// the device is gone every datagram fails closed with `TunnelGone`; once it is back, the
/// strategy following the name avoids the new device, and one built with
/// `TunnelRestart::FailClosed` keeps refusing. The new device has a reader before it is up
/// and routed, so nothing can enter it uncounted.
#[test]
fn the_tunnel_deleted_and_recreated_with_a_new_index_fails_closed_then_is_followed_by_name() {
    if loopguard_lab::skip_unprivileged("pin_tunnel_recreated") {
        return;
    }
    let g = PinLab::build("prs");
    let tun = g.lab.tun();
    let server = IpAddr::from(g.lab.server_v4());
    let dst = g.echo.udp_addr(server).unwrap();
    let ns = g.lab.client();
    let index_of = |name: &str| -> String {
        ns.ip(&["-o", "link", "show", name])
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_owned()
    };
    let old_index = index_of(tun);
    let (before, gone, gone_strict, after, after_strict, new_tun) = ns
        .run(|| {
            let following = SocketFactory::new(PinOutside::for_tunnel_named(tun).unwrap());
            let strict = SocketFactory::new(
                PinOutside::for_tunnel_named(tun)
                    .unwrap()
                    .with_restart(TunnelRestart::FailClosed),
            );
            block_on(async {
                let a = following.bind(any_of(server)).unwrap();
                let b = strict.bind(any_of(server)).unwrap();
                let before = (
                    round_trip(&a, dst, None, b"before", None, 1).await.ok(),
                    round_trip(&b, dst, None, b"before", None, 1).await.ok(),
                );

                ns.ip(&["link", "del", tun]).unwrap();
                // What the monitor does on a link change.
                following.reset();
                strict.reset();
                let gone = a.send(&DatagramOut::new(dst, b"gone")).await;
                let gone_strict = b.send(&DatagramOut::new(dst, b"gone")).await;

                ns.ip(&["tuntap", "add", "dev", tun, "mode", "tun"])
                    .unwrap();
                ns.ip(&["link", "set", tun, "addrgenmode", "none"]).unwrap();
                let new_tun =
                    TunCounter::start(ns, tun, g.lab.server_addrs().to_vec()).expect("counter");
                ns.ip(&["addr", "add", "203.0.113.2/32", "dev", tun])
                    .unwrap();
                ns.ip(&["link", "set", tun, "up"]).unwrap();
                g.lab.route_all_into_tun_main_table().unwrap();
                following.reset();
                strict.reset();
                let after = round_trip(&a, dst, None, b"after", None, 1).await;
                let after_strict = b.send(&DatagramOut::new(dst, b"after")).await;
                (before, gone, gone_strict, after, after_strict, new_tun)
            })
        })
        .unwrap();
    let new_index = index_of(tun);
    println!("tunnel index {old_index} -> {new_index}; before {before:?}, gone {gone:?}, after {after:?}");
    assert_ne!(
        old_index, new_index,
        "the device kept its index: nothing tested"
    );
    assert_eq!(before, (Some(1), Some(1)), "echoes before the restart");
    assert!(matches!(gone, Err(Error::TunnelGone { .. })), "{gone:?}");
    assert!(
        matches!(gone_strict, Err(Error::TunnelGone { .. })),
        "{gone_strict:?}"
    );
    assert_eq!(
        after.unwrap(),
        1,
        "the following strategy's echo after the restart"
    );
    assert!(
        matches!(after_strict, Err(Error::TunnelGone { .. })),
        "{after_strict:?}"
    );
    assert_eq!(
        new_tun.count_to(server, Transport::Udp),
        0,
        "sent into the new tunnel"
    );
    assert_eq!(g.tun_packets_to(server), 0, "sent into the old tunnel");
    // Counted before each echo was sent, so the echoes above make this exact.
    let served = g.echo.stats(server).udp_datagrams;
    assert_eq!(served, 3, "the server saw only the three echoed datagrams");
}
