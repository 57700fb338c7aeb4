//! Load: a million guarded datagrams to 64 destinations over IPv4 and IPv6, at the speed the
//! echo servers keep up with. Every datagram must come back or be counted by loopguard as
//! dropped (with a reason), and none may enter the TUN.
#![cfg(target_os = "linux")]

mod common;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
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

/// 32 IPv4 and 32 IPv6 addresses on the server's own subnets.
fn destinations() -> Vec<IpAddr> {
    let v4 = (10..42).map(|i| IpAddr::from(Ipv4Addr::new(198, 51, 100, i)));
    let v6 = (0x10..0x30).map(|i| IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, i)));
    v4.chain(v6).collect()
}

struct Outcome {
    attempted: u64,
    echoed: u64,
    lost: u64,
    counters: Counters,
    elapsed: Duration,
}

/// Sends rounds of one GSO batch to every destination, then waits for the round's echoes.
async fn run_load(factory: SocketFactory<LinuxMark>, targets: Vec<SocketAddr>) -> Outcome {
    let v4 = Rc::new(factory.bind("0.0.0.0:0".parse().unwrap()).unwrap());
    let v6 = Rc::new(factory.bind("[::]:0".parse().unwrap()).unwrap());
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
    local
        .run_until(async move {
            let start = Instant::now();
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
            Outcome {
                attempted,
                echoed,
                lost,
                counters,
                elapsed,
            }
        })
        .await
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
    let counter = TunCounter::start(lab.client(), lab.tun(), addrs.clone()).expect("tun counter");

    let outcome = lab
        .client()
        .run(move || {
            block_on(run_load(
                SocketFactory::new(LinuxMark::new(config)),
                targets,
            ))
        })
        .unwrap();
    let tun = counter.stop();
    let in_tun: u64 = addrs
        .iter()
        .map(|ip| tun.count_to(*ip, Transport::Udp))
        .sum();
    let c = &outcome.counters;
    println!(
        "load: {} datagrams to {DESTINATIONS} destinations in {:.1} s ({:.0}/s round trip): \
         echoed {}, dropped no-route {}, dropped send-error {}, lost uncounted {}, \
         entered the TUN {in_tun}; sends {}, queue-full retries {}, GSO fallbacks {}",
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
    assert_eq!(tun.all_packets, 0, "something entered the TUN");
    drop(echo);
}
