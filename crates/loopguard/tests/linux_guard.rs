//! The Linux guard end to end, in a lab of network namespaces: a client whose TUN device owns
//! `0.0.0.0/0` and `::/0` (installed by `TunnelRoutes`), a router, and a server with UDP and
//! TCP echo. "Entered the TUN" means read from the TUN device by the lab's counter.
#![cfg(target_os = "linux")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{block_on, GuardedLab};
use loopguard::{DatagramOut, Error, UdpSocket};
use loopguard_lab::{LabOptions, RpFilter, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bound on waiting for something that should arrive (an echo): generous, since the wait
/// ends as soon as it does and a loaded machine must not fail a working path.
const WAIT: Duration = Duration::from_secs(10);

/// Sends `count` datagrams and returns how many echoes came back.
async fn udp_round_trips(
    socket: &UdpSocket,
    dst: SocketAddr,
    src: Option<IpAddr>,
    count: u32,
) -> u32 {
    let mut echoed = 0;
    let mut buf = vec![0u8; 65535 * socket.gro_segments()];
    for i in 0..count {
        let payload = i.to_be_bytes();
        let mut datagram = DatagramOut::new(dst, &payload);
        datagram.src = src;
        socket.send(&datagram).await.expect("guarded send");
        if let Ok(Ok(meta)) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await {
            echoed += meta.datagrams(&buf).filter(|d| *d == payload).count() as u32;
        }
    }
    echoed
}

/// Sends a few datagrams from a plain socket (no mark): they should loop.
async fn plain_udp_sends(dst: SocketAddr) {
    let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .unwrap();
    let plain = tokio::net::UdpSocket::bind(bind).await.unwrap();
    for _ in 0..3 {
        let _ = plain.send_to(b"plain", dst).await;
    }
}

#[test]
fn guarded_udp_and_tcp_escape_the_tunnel_over_ipv4_and_ipv6() {
    if loopguard_lab::skip_unprivileged("guarded_udp_and_tcp_escape_the_tunnel_over_ipv4_and_ipv6")
    {
        return;
    }
    let g = GuardedLab::build("gd");
    let client_addrs = [
        IpAddr::from(g.lab.client_v4()),
        IpAddr::from(g.lab.client_v6()),
    ];
    for (server, client) in g.lab.server_addrs().into_iter().zip(client_addrs) {
        let udp = g.echo.udp_addr(server).unwrap();
        let tcp = g.echo.tcp_addr(server).unwrap();
        let (unpinned, pinned, tcp_echo) = g.in_client(|factory| async move {
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .unwrap();
            let socket = factory.bind(bind).unwrap();
            let unpinned = udp_round_trips(&socket, udp, None, 10).await;
            let pinned = udp_round_trips(&socket, udp, Some(client), 10).await;
            let mut stream = factory.connect(tcp).await.expect("guarded connect");
            stream.write_all(b"control plane").await.unwrap();
            let mut back = [0u8; 13];
            tokio::time::timeout(WAIT, stream.read_exact(&mut back))
                .await
                .unwrap()
                .unwrap();
            (unpinned, pinned, &back == b"control plane")
        });
        println!("{server}: UDP src None {unpinned}/10, UDP src {client} {pinned}/10, TCP echoed {tcp_echo}, TUN {}", g.tun_packets_to(server));
        assert_eq!(unpinned, 10, "UDP with src None to {server}");
        assert_eq!(pinned, 10, "UDP with explicit src to {server}");
        assert!(tcp_echo, "TCP to {server}");
        assert_eq!(
            g.tun_packets_to(server),
            0,
            "guarded traffic to {server} entered the TUN"
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
fn without_an_uplink_route_guarded_sockets_fail_closed() {
    if loopguard_lab::skip_unprivileged("without_an_uplink_route_guarded_sockets_fail_closed") {
        return;
    }
    let g = GuardedLab::build("fc");
    g.lab
        .client()
        .ip(&["-4", "route", "del", "default"])
        .unwrap();
    g.lab
        .client()
        .ip(&["-6", "route", "del", "default"])
        .unwrap();
    for server in g.lab.server_addrs() {
        let udp = g.echo.udp_addr(server).unwrap();
        let tcp = g.echo.tcp_addr(server).unwrap();
        let (udp_err, tcp_err) = g.in_client(|factory| async move {
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .unwrap();
            let socket = factory.bind(bind).unwrap();
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
        assert_eq!(
            g.tun_packets_to(server),
            0,
            "a guarded packet to {server} entered the TUN"
        );
        assert_eq!(g.echo.stats(server).udp_datagrams, 0);
    }
}

#[test]
fn strict_rp_filter_passes_replies_and_kernel_replies_stay_out_of_the_tunnel() {
    if loopguard_lab::skip_unprivileged(
        "strict_rp_filter_passes_replies_and_kernel_replies_stay_out_of_the_tunnel",
    ) {
        return;
    }
    let g = GuardedLab::build_with(
        "rp",
        LabOptions {
            client_rp_filter: RpFilter::Strict,
        },
        |_| {},
    );
    let rp = g
        .lab
        .client()
        .exec("sysctl", &["-n", "net.ipv4.conf.all.rp_filter"])
        .unwrap();
    assert_eq!(
        rp.trim(),
        "1",
        "the client must filter strictly for this test to mean anything"
    );
    let server = IpAddr::from(g.lab.server_v4());
    let udp = g.echo.udp_addr(server).unwrap();
    let echoed = g.in_client(|factory| async move {
        let socket = factory.bind("0.0.0.0:0".parse().unwrap()).unwrap();
        udp_round_trips(&socket, udp, None, 10).await
    });
    println!("strict rp_filter: {echoed}/10 echoes");
    assert_eq!(
        echoed, 10,
        "replies to a marked socket were dropped by rp_filter"
    );

    // A kernel-generated reply of a marked flow: the server writes to a guarded socket that has
    // since closed, the client kernel answers "port unreachable". It must leave by the uplink
    // (the server sees ECONNREFUSED), not enter the TUN.
    let peer = std::sync::Arc::new(
        g.lab
            .server()
            .run(|| std::net::UdpSocket::bind(SocketAddr::new(server, 0)).unwrap())
            .unwrap(),
    );
    let peer_addr = peer.local_addr().unwrap();
    let client_port = g.in_client(|factory| async move {
        let socket = factory.bind("0.0.0.0:0".parse().unwrap()).unwrap();
        socket
            .send(&DatagramOut::new(peer_addr, b"open the flow"))
            .await
            .unwrap();
        socket.local_addr().unwrap().port()
    });
    let client = SocketAddr::new(g.lab.client_v4().into(), client_port);
    let mut buf = [0u8; 64];
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let (_, from) = retry(|| peer.recv_from(&mut buf)).unwrap();
    assert_eq!(from, client);
    peer.connect(client).unwrap();
    // The kernel rate-limits ICMP errors (per peer, about one a second, and by a budget that
    // other tests running at the same time spend too), so one error may be suppressed: a few
    // tries, each waiting longer than the per-peer limit.
    peer.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut refused = Ok(0);
    for _ in 0..5 {
        peer.send(b"late reply").unwrap();
        refused = retry(|| peer.recv(&mut buf)).map_err(|e| e.kind());
        if refused == Err(std::io::ErrorKind::ConnectionRefused) {
            break;
        }
    }
    let icmp_in_tun = g.tun.count_to(server, Transport::Icmp);
    println!("kernel reply: server saw {refused:?}, ICMP packets in the TUN: {icmp_in_tun}");
    assert_eq!(
        refused,
        Err(std::io::ErrorKind::ConnectionRefused),
        "the port-unreachable never reached the server"
    );
    assert_eq!(icmp_in_tun, 0, "the kernel's reply entered the TUN");
}

#[test]
fn a_device_that_refuses_gso_gets_the_same_batch_unsegmented() {
    if loopguard_lab::skip_unprivileged("a_device_that_refuses_gso_gets_the_same_batch_unsegmented")
    {
        return;
    }
    let g = GuardedLab::build("gs");
    // IPv4 only: the setting that makes the kernel refuse GSO on IPv6 (UDP_NO_CHECK6_TX) also
    // makes every IPv6 datagram invalid to the receiver, as RFC 8200 forbids zero checksums.
    let server = IpAddr::from(g.lab.server_v4());
    let udp = g.echo.udp_addr(server).unwrap();
    let (before, after, echoed) = g.in_client(|factory| async move {
        let socket = factory.bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let before = socket.max_gso_segments();
        // A socket that sends without UDP checksums cannot segment: the kernel refuses
        // every GSO send with EINVAL, as a device without offload support would with EIO.
        refuse_gso(&socket);
        let payload: Vec<u8> = (0..10u8).flat_map(|i| [i; 100]).collect();
        socket
            .send(&DatagramOut::new(udp, &payload).with_segment_size(100))
            .await
            .expect("the batch must survive the GSO refusal");
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = vec![0u8; 65535 * socket.gro_segments()];
        while seen.len() < 10 {
            match tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await {
                Ok(Ok(meta)) => seen.extend(meta.datagrams(&buf).map(|d| d[0])),
                _ => break,
            }
        }
        // The same through the non-blocking send: the batch goes one by one at once.
        let quick = factory.bind("0.0.0.0:0".parse().unwrap()).unwrap();
        refuse_gso(&quick);
        let batch = DatagramOut::new(udp, &payload).with_segment_size(100);
        let sent = loop {
            match quick.try_send(&batch) {
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    quick.writable().await.unwrap()
                }
                other => break other,
            }
        };
        sent.expect("try_send: the batch must survive the GSO refusal");
        let mut quick_seen = std::collections::BTreeSet::new();
        while quick_seen.len() < 10 {
            match tokio::time::timeout(WAIT, quick.recv_from(&mut buf)).await {
                Ok(Ok(meta)) => quick_seen.extend(meta.datagrams(&buf).map(|d| d[0])),
                _ => break,
            }
        }
        let quick_counters = quick.counters();
        assert_eq!(
            quick.max_gso_segments(),
            1,
            "GSO still on after try_send's refusal"
        );
        assert_eq!(
            quick_seen.len(),
            10,
            "try_send lost datagrams of the refused batch"
        );
        assert_eq!(
            (quick_counters.gso_fallbacks, quick_counters.dropped()),
            (1, 0)
        );
        (before, socket.max_gso_segments(), seen.len())
    });
    println!(
        "{server}: GSO segments before {before}, after the refusal {after}; {echoed}/10 echoed (send and try_send)"
    );
    assert!(
        before > 1,
        "GSO was not available to begin with, so nothing was tested"
    );
    assert_eq!(after, 1, "GSO still on after the device refused it");
    assert_eq!(echoed, 10, "datagrams of the refused batch were lost");
    assert_eq!(g.tun_packets_to(server), 0);
}

/// Runs a blocking socket call again when a signal interrupted it: calls with a receive
/// timeout are never restarted by the kernel, whatever the handler's flags.
fn retry<T>(mut call: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Makes the kernel refuse GSO on an IPv4 `socket` (`SO_NO_CHECK`).
fn refuse_gso(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let (level, option) = (libc::SOL_SOCKET, libc::SO_NO_CHECK);
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

/// The interface index of `dev` in the lab's client namespace.
fn index_of(lab: &GuardedLab, dev: &str) -> u32 {
    let path = format!("/sys/class/net/{dev}/ifindex");
    lab.lab
        .client()
        .exec("cat", &[&path])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// What a guarded socket does with `fe80::99` zoned to the TUN and to the uplink, over
/// `factory` (UDP send, TCP connect, UDP send with an explicit source).
async fn zoned_sends<S: loopguard::Strategy>(
    factory: loopguard::SocketFactory<S>,
    tun: u32,
    uplink: u32,
) -> (
    Result<(), Error>,
    Result<(), Error>,
    Result<(), Error>,
    Result<(), Error>,
) {
    let zoned = |index| {
        SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::99".parse().unwrap(),
            5000,
            0,
            index,
        ))
    };
    let socket = factory.bind("[::]:0".parse().unwrap()).unwrap();
    let to_tun = socket.send(&DatagramOut::new(zoned(tun), b"zoned")).await;
    let mut with_source = DatagramOut::new(zoned(tun), b"zoned");
    with_source.src = Some("2001:db8:1::2".parse().unwrap());
    let to_tun_with_source = socket.send(&with_source).await;
    let tcp = tokio::time::timeout(WAIT, factory.connect(zoned(tun)))
        .await
        .expect("connect answered")
        .map(drop);
    let to_uplink = socket
        .send(&DatagramOut::new(zoned(uplink), b"zoned"))
        .await;
    (to_tun, to_tun_with_source, tcp, to_uplink)
}

#[test]
fn a_destination_zoned_to_the_tunnel_is_refused_and_never_enters_it() {
    if loopguard_lab::skip_unprivileged("a_destination_zoned_to_the_tunnel_is_refused") {
        return;
    }
    let lab = GuardedLab::build("zone");
    // A link-local address on the TUN, as most TUNs have: `fe80::/64 dev TUN` in `main`,
    // which the marked lookup then finds for a destination zoned to the TUN. Multicast off
    // first, so the kernel sends no MLD report of its own into the TUN while it is counted.
    let client = lab.lab.client();
    client
        .ip(&["link", "set", "dev", lab.lab.tun(), "multicast", "off"])
        .unwrap();
    client
        .ip(&[
            "-6",
            "addr",
            "add",
            "fe80::1/64",
            "dev",
            lab.lab.tun(),
            "nodad",
        ])
        .unwrap();
    let (tun, uplink) = (
        index_of(&lab, lab.lab.tun()),
        index_of(&lab, lab.lab.uplink()),
    );
    let before = lab.tun_packets().1;
    let mark = lab.in_client(|f| zoned_sends(f, tun, uplink));
    let tun_name = lab.lab.tun();
    let pin = lab
        .lab
        .client()
        .run(move || {
            block_on(async move {
                let strategy = loopguard::PinOutside::for_tunnel_named(tun_name).expect("pin");
                zoned_sends(loopguard::SocketFactory::new(strategy), tun, uplink).await
            })
        })
        .unwrap();
    for (name, (to_tun, with_source, tcp, to_uplink)) in [("mark", mark), ("pin", pin)] {
        println!("{name}: {to_tun:?} / {with_source:?} / {tcp:?} / {to_uplink:?}");
        for (what, r) in [
            ("UDP", to_tun),
            ("UDP with a source", with_source),
            ("TCP", tcp),
        ] {
            assert!(
                matches!(r, Err(Error::HostUnreachable { .. })),
                "{name} {what} zoned to the TUN: {r:?}"
            );
        }
        // Another interface's zone is the kernel's business, not refused by loopguard.
        assert!(
            !matches!(to_uplink, Err(Error::HostUnreachable { .. })),
            "{name}: {to_uplink:?}"
        );
    }
    assert_eq!(lab.tun_packets().1, before, "something entered the TUN");
}

#[test]
fn fragmentation_is_refused_by_default_and_allowed_on_request() {
    if loopguard_lab::skip_unprivileged("fragmentation_is_refused_by_default") {
        return;
    }
    let lab = GuardedLab::build("frag");
    for dst in lab.udp_targets() {
        let (refused, echoed) = lab.in_client(move |f| async move {
            let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .unwrap();
            let socket = f.bind(bind).unwrap();
            let big = vec![5u8; 3000];
            let refused = socket.send(&DatagramOut::new(dst, &big)).await;
            socket.set_fragmentation(true).unwrap();
            socket
                .send(&DatagramOut::new(dst, &big))
                .await
                .expect("a fragmented send");
            let mut buf = vec![0u8; 65535];
            let meta = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
                .await
                .expect("the echo came back")
                .unwrap();
            (refused, meta.len)
        });
        println!("{dst}: default {refused:?}; with fragmentation, an echo of {echoed} bytes");
        match refused {
            Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE), "{dst}"),
            other => panic!("{dst}: a 3,000-byte datagram over 1,500-byte links: {other:?}"),
        }
        assert_eq!(echoed, 3000, "{dst}");
    }
    assert_eq!(lab.tun_packets().0, 0, "something entered the TUN");
}
