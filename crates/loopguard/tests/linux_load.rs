//! Load: a million guarded datagrams to 64 destinations over IPv4 and IPv6, at the speed the
//! echo servers keep up with. Every datagram must come back or be counted by loopguard as
//! dropped (with a reason), and none may enter the TUN.
//!
//! Meanwhile plain sockets send into the TUN, as the tunnel's ordinary traffic does, from
//! ports chosen to collide with the guarded sockets' (the same port number over the other
//! family, over TCP): the factory's loop tripwire, fed every packet read from the TUN, must
//! not take any of them for a loop.
#![cfg(target_os = "linux")]

mod common;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::block_on;
use loopguard::os::linux::TunnelRoutes;
use loopguard::{Counters, DatagramOut, GuardConfig, LinuxMark, SocketFactory, UdpSocket};
use loopguard_lab::{EchoServers, Lab, Transport, TunCounter};

const TOTAL: u64 = 1_000_000;
const DESTINATIONS: usize = 64;
/// Datagrams per GSO batch to one destination.
const BATCH: u64 = 64;
const SIZE: usize = 64;
/// How long a round waits for its last echoes before counting the rest as lost.
const ROUND_WAIT: Duration = Duration::from_secs(10);

/// Where the plain sockets send: addresses nobody has, so the TUN's routes take them.
const DECOY_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
const DECOY_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 9));
const DECOY_PORT: u16 = 9999;

/// 32 IPv4 and 32 IPv6 addresses on the server's own subnets.
fn destinations() -> Vec<IpAddr> {
    let v4 = (10..42).map(|i| IpAddr::from(Ipv4Addr::new(198, 51, 100, i)));
    let v6 = (0x10..0x30).map(|i| IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, i)));
    v4.chain(v6).collect()
}

struct Outcome {
    /// Datagrams the plain sockets sent into the TUN.
    decoys_sent: u64,
    /// The guarded sockets' ports.
    guarded_ports: [u16; 2],
    attempted: u64,
    echoed: u64,
    lost: u64,
    counters: Counters,
    elapsed: Duration,
}

/// Sends rounds of one GSO batch to every destination, then waits for the round's echoes.
async fn run_load(
    factory: SocketFactory<LinuxMark>,
    targets: Vec<SocketAddr>,
    ports_out: Arc<Mutex<[u16; 2]>>,
) -> Outcome {
    let v4 = Rc::new(factory.bind("0.0.0.0:0".parse().unwrap()).unwrap());
    let v6 = Rc::new(factory.bind("[::]:0".parse().unwrap()).unwrap());
    let guarded_ports = [
        v4.local_addr().unwrap().port(),
        v6.local_addr().unwrap().port(),
    ];
    *ports_out.lock().unwrap() = guarded_ports;
    let decoys = Decoys::new(guarded_ports);
    // A round's echoes arrive in one burst: room for all of them, so the kernel does not drop
    // any for want of buffer space (a loss no sender-side counter could see).
    for socket in [&v4, &v6] {
        force_receive_buffer(socket, 8 << 20);
    }
    let seen = Rc::new(RefCell::new(vec![false; TOTAL as usize]));
    let echoed = Rc::new(RefCell::new(0u64));
    let local = tokio::task::LocalSet::new();
    for socket in [v4.clone(), v6.clone()] {
        let (seen, echoed) = (seen.clone(), echoed.clone());
        local.spawn_local(async move { receive(&socket, &seen, &echoed).await });
    }
    // Plain TCP connects from the guarded sockets' port numbers (the IPv4 one over IPv4, the
    // dual-stack one over IPv6): their SYNs and retransmissions enter the TUN; they never
    // complete.
    let syns: Vec<_> = guarded_ports
        .into_iter()
        .zip([DECOY_V4, DECOY_V6])
        .map(|(port, ip)| {
            // Bound here, so a failure fails the test (a task's panic would not).
            let socket = if ip.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .unwrap();
            let any = if ip.is_ipv4() { "0.0.0.0" } else { "::" };
            socket
                .bind(SocketAddr::new(any.parse().unwrap(), port))
                .unwrap();
            local.spawn_local(async move {
                let _ = socket.connect(SocketAddr::new(ip, DECOY_PORT)).await;
            })
        })
        .collect();
    local
        .run_until(async move {
            let start = Instant::now();
            let mut decoys_sent = 0;
            let mut attempted = 0u64;
            let mut payload = vec![0u8; (BATCH as usize) * SIZE];
            while attempted < TOTAL {
                for dst in &targets {
                    let n = BATCH.min(TOTAL - attempted);
                    for k in 0..n {
                        let at = (k as usize) * SIZE;
                        payload[at..at + 8].copy_from_slice(&(attempted + k).to_le_bytes());
                    }
                    let batch = &payload[..(n as usize) * SIZE];
                    let socket = if dst.is_ipv4() { &v4 } else { &v6 };
                    // An error is counted by loopguard (checked below), not lost.
                    let _ = socket
                        .send(&DatagramOut::new(*dst, batch).with_segment_size(SIZE))
                        .await;
                    attempted += n;
                    if attempted == TOTAL {
                        break;
                    }
                }
                decoys_sent += decoys.send().await;
                // Wait for this round: everything sent so far echoed or counted as dropped.
                let deadline = Instant::now() + ROUND_WAIT;
                while *echoed.borrow() + factory.counters().dropped() < attempted
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            let elapsed = start.elapsed();
            let echoed = *echoed.borrow();
            let counters = factory.counters();
            let lost = attempted - echoed - counters.dropped().min(attempted - echoed);
            for syn in syns {
                syn.abort();
            }
            Outcome {
                decoys_sent,
                guarded_ports,
                attempted,
                echoed,
                lost,
                counters,
                elapsed,
            }
        })
        .await
}

/// Plain UDP sockets whose datagrams enter the TUN: from an IPv6-only socket on the guarded
/// IPv4 socket's port, and from ports of the kernel's choosing in both families.
struct Decoys {
    sockets: Vec<(tokio::net::UdpSocket, SocketAddr)>,
}

impl Decoys {
    fn new([guarded_v4, _]: [u16; 2]) -> Decoys {
        let same_port = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        same_port.set_only_v6(true).unwrap();
        same_port.set_nonblocking(true).unwrap();
        let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), guarded_v4);
        same_port.bind(&any6.into()).unwrap();
        let same_port = tokio::net::UdpSocket::from_std(same_port.into()).unwrap();
        let plain = |bind: &str| {
            let s = std::net::UdpSocket::bind(bind).unwrap();
            s.set_nonblocking(true).unwrap();
            tokio::net::UdpSocket::from_std(s).unwrap()
        };
        Decoys {
            sockets: vec![
                (same_port, SocketAddr::new(DECOY_V6, DECOY_PORT)),
                (plain("0.0.0.0:0"), SocketAddr::new(DECOY_V4, DECOY_PORT)),
                (plain("[::]:0"), SocketAddr::new(DECOY_V6, DECOY_PORT)),
            ],
        }
    }

    /// One datagram from each; how many were sent.
    async fn send(&self) -> u64 {
        let mut sent = 0;
        for (socket, dst) in &self.sockets {
            if socket
                .send_to(b"ordinary tunnel traffic", dst)
                .await
                .is_ok()
            {
                sent += 1;
            }
        }
        sent
    }
}

/// The UDP or TCP source port of an IPv4 packet or of an IPv6 packet without extension
/// headers (what the decoys send).
fn source_port(p: &[u8]) -> Option<u16> {
    let offset = match p.first()? >> 4 {
        4 => usize::from(p[0] & 0x0f) * 4,
        6 => 40,
        _ => return None,
    };
    let port = p.get(offset..offset + 2)?;
    Some(u16::from_be_bytes([port[0], port[1]]))
}

/// `SO_RCVBUFFORCE`: a receive buffer beyond `net.core.rmem_max` (root only).
fn force_receive_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: `bytes` outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

async fn receive(socket: &UdpSocket, seen: &RefCell<Vec<bool>>, echoed: &RefCell<u64>) {
    let mut buf = vec![0u8; 65535 * socket.gro_segments()];
    loop {
        let Ok(meta) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let mut seen = seen.borrow_mut();
        for datagram in meta.datagrams(&buf) {
            let Some(seq) = datagram.get(..8) else {
                continue;
            };
            let seq = u64::from_le_bytes(seq.try_into().unwrap()) as usize;
            // Count each sequence number once: a duplicate is not an extra delivery.
            if seq < seen.len() && !seen[seq] {
                seen[seq] = true;
                *echoed.borrow_mut() += 1;
            }
        }
    }
}

#[test]
fn a_million_guarded_datagrams_to_64_destinations_are_all_accounted_for() {
    if loopguard_lab::skip_unprivileged(
        "a_million_guarded_datagrams_to_64_destinations_are_all_accounted_for",
    ) {
        return;
    }
    let lab = Lab::build("ld").expect("lab");
    let addrs = destinations();
    for ip in &addrs {
        let cidr = if ip.is_ipv4() {
            format!("{ip}/24")
        } else {
            format!("{ip}/64")
        };
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", lab.server_link()];
        if ip.is_ipv6() {
            args.push("nodad");
        }
        lab.server().ip(&args).unwrap();
    }
    let config = GuardConfig::default();
    let routes = ["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    let tun = lab.tun();
    lab.client()
        .run(|| block_on(TunnelRoutes::new(config).apply(tun, &routes)))
        .unwrap()
        .expect("tunnel routes");
    let echo = EchoServers::start(lab.server(), &addrs, 0).expect("echo servers");
    let targets: Vec<SocketAddr> = addrs.iter().map(|ip| echo.udp_addr(*ip).unwrap()).collect();
    let factory = SocketFactory::new(LinuxMark::new(config));
    // Every packet read from the TUN goes through the factory's tripwire; the packets from the
    // guarded sockets' port numbers are counted, so the test knows the wire was tested.
    let tripwire = factory.tripwire();
    let false_positives = Arc::new(Mutex::new(Vec::new()));
    let guarded_ports = Arc::new(Mutex::new([0u16; 2]));
    let colliding = Arc::new(AtomicU64::new(0));
    let mut watched = addrs.clone();
    watched.extend([DECOY_V4, DECOY_V6]);
    let counter = TunCounter::start_with(lab.client(), lab.tun(), watched, {
        let (false_positives, guarded_ports, colliding) = (
            false_positives.clone(),
            guarded_ports.clone(),
            colliding.clone(),
        );
        move |packet| {
            if let Some(event) = tripwire.check(packet) {
                false_positives.lock().unwrap().push(event);
            }
            let ports = *guarded_ports.lock().unwrap();
            if source_port(packet).is_some_and(|p| p != 0 && ports.contains(&p)) {
                colliding.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .expect("tun counter");

    let outcome = lab
        .client()
        .run({
            let factory = factory.clone();
            let guarded_ports = guarded_ports.clone();
            move || block_on(run_load(factory, targets, guarded_ports))
        })
        .unwrap();
    let tun = counter.stop();
    let in_tun: u64 = addrs
        .iter()
        .map(|ip| tun.count_to(*ip, Transport::Udp))
        .sum();
    let decoys_in_tun: u64 = [DECOY_V4, DECOY_V6]
        .iter()
        .flat_map(|ip| [(*ip, Transport::Udp), (*ip, Transport::Tcp)])
        .map(|(ip, t)| tun.count_to(ip, t))
        .sum();
    let colliding = colliding.load(Ordering::Relaxed);
    let false_positives = false_positives.lock().unwrap().clone();
    let c = &outcome.counters;
    println!(
        "load: {} datagrams to {DESTINATIONS} destinations in {:.1} s ({:.0}/s round trip): \
         echoed {}, dropped no-route {}, dropped send-error {}, lost uncounted {}, \
         entered the TUN {in_tun}; sends {}, queue-full retries {}, GSO fallbacks {}; plain \
         traffic into the TUN: {} datagrams sent, {decoys_in_tun} packets read, {colliding} \
         from the guarded ports {:?}; loops reported {}",
        outcome.attempted,
        outcome.elapsed.as_secs_f64(),
        outcome.attempted as f64 / outcome.elapsed.as_secs_f64(),
        outcome.echoed,
        c.dropped_no_route,
        c.dropped_send_error,
        outcome.lost,
        c.sends,
        c.queue_full_retries,
        c.gso_fallbacks,
        outcome.decoys_sent,
        outcome.guarded_ports,
        false_positives.len(),
    );
    assert_eq!(outcome.attempted, TOTAL);
    assert_eq!(
        c.datagrams_sent + c.dropped(),
        TOTAL,
        "the send counters miss datagrams"
    );
    assert_eq!(
        outcome.lost, 0,
        "datagrams neither echoed nor counted as dropped"
    );
    assert_eq!(in_tun, 0, "guarded datagrams entered the TUN");
    assert_eq!(
        tun.all_packets, decoys_in_tun,
        "something besides the plain traffic entered the TUN"
    );
    // The tripwire saw ordinary traffic, some of it from the guarded port numbers, and took
    // none of it for a loop.
    assert!(
        decoys_in_tun >= outcome.decoys_sent,
        "the plain traffic did not reach the TUN"
    );
    assert!(
        colliding >= outcome.decoys_sent / 3,
        "too few packets from the guarded port numbers reached the tripwire ({colliding})"
    );
    assert_eq!(
        false_positives,
        Vec::new(),
        "ordinary traffic reported as loops"
    );
    assert_eq!(c.loops_detected, 0);
    drop(echo);
}
