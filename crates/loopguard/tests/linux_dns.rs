//! Guarded DNS on Linux, in a lab of network namespaces: the client's TUN owns `0.0.0.0/0`
//! and `::/0` (loopguard's `TunnelRoutes`), so plain DNS queries enter it; the guarded
//! resolver's must not. "Entered the TUN" means read from the TUN device by the lab's counter.
#![cfg(target_os = "linux")]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{block_on, GuardedLab};
use loopguard::dns::{DnsError, GuardedResolver};
use loopguard::{LinuxMark, SocketFactory};
use loopguard_lab::{Netns, Transport};

/// How long the TUN's counter may take to see the unguarded queries.
const BOUND: Duration = Duration::from_secs(10);

/// A one-name DNS server in the server namespace, on port 53 of the server's addresses:
/// `control.lg.example` has A 198.51.100.2 and AAAA 2001:db8:2::2; `big.lg.example` answers
/// over UDP with the truncation bit only, so clients must ask again over TCP.
struct DnsServer {
    stop: Arc<AtomicBool>,
    udp_queries: Arc<AtomicU64>,
    tcp_queries: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn dns_answer(query: &[u8], over_tcp: bool) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let q = Message::from_vec(query).ok()?;
    let question = q.queries().first()?.clone();
    let mut reply = q.clone();
    reply
        .set_message_type(MessageType::Response)
        .set_recursion_available(true);
    let control = Name::from_ascii("control.lg.example.").ok()?;
    let big = Name::from_ascii("big.lg.example.").ok()?;
    let name = question.name().clone();
    if name == big && !over_tcp {
        reply.set_truncated(true);
        return reply.to_vec().ok();
    }
    if name != control && name != big {
        reply.set_response_code(ResponseCode::NXDomain);
        return reply.to_vec().ok();
    }
    let data = match question.query_type() {
        RecordType::A => RData::A(A(Ipv4Addr::new(198, 51, 100, 2))),
        RecordType::AAAA => RData::AAAA(AAAA("2001:db8:2::2".parse().ok()?)),
        _ => return reply.to_vec().ok(),
    };
    reply.add_answer(Record::from_rdata(name, 60, data));
    reply.to_vec().ok()
}

impl DnsServer {
    fn start(ns: &Netns) -> DnsServer {
        let stop = Arc::new(AtomicBool::new(false));
        let udp_queries = Arc::new(AtomicU64::new(0));
        let tcp_queries = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for ip in ["198.51.100.2", "2001:db8:2::2"] {
            let addr = SocketAddr::new(ip.parse().unwrap(), 53);
            let (stop, count) = (stop.clone(), udp_queries.clone());
            let socket = ns
                .run(move || std::net::UdpSocket::bind(addr))
                .unwrap()
                .unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        count.fetch_add(1, Ordering::SeqCst);
                        if let Some(reply) = dns_answer(&buf[..n], false) {
                            let _ = socket.send_to(&reply, from);
                        }
                    }
                }
            }));
        }
        let addr: SocketAddr = "198.51.100.2:53".parse().unwrap();
        let listener = ns
            .run(move || std::net::TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop2, count) = (stop.clone(), tcp_queries.clone());
        threads.push(std::thread::spawn(move || {
            use std::io::{Read, Write};
            while !stop2.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                if s.read_exact(&mut q).is_err() {
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = dns_answer(&q, true) {
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend(reply);
                    let _ = s.write_all(&framed);
                }
            }
        }));
        DnsServer {
            stop,
            udp_queries,
            tcp_queries,
            threads,
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn names_resolve_through_guarded_sockets_while_the_tunnel_captures_dns() {
    if loopguard_lab::skip_unprivileged("names_resolve_through_guarded_sockets") {
        return;
    }
    let g = GuardedLab::build("dns");
    let dns = DnsServer::start(g.lab.server());
    let config = g.config;
    let server_v4 = IpAddr::from(g.lab.server_v4());
    let server_v6 = IpAddr::from(g.lab.server_v6());
    let (control, big, over_v6, missing) = g
        .lab
        .client()
        .run(move || {
            block_on(async move {
                let factory = SocketFactory::new(LinuxMark::new(config));
                let resolver =
                    GuardedResolver::new(factory.clone(), [SocketAddr::new(server_v4, 53)])
                        .unwrap();
                let control = resolver.lookup_ip("control.lg.example").await;
                let big = resolver.lookup_ip("big.lg.example").await;
                let v6 = GuardedResolver::new(factory, [SocketAddr::new(server_v6, 53)]).unwrap();
                let over_v6 = v6.lookup_ip("control.lg.example").await;
                let missing = resolver.lookup_ip("missing.lg.example").await;
                // Cached now; a reset (what Roaming calls on a change) makes it ask again.
                resolver.lookup_ip("control.lg.example").await.unwrap();
                resolver.reset();
                resolver.lookup_ip("control.lg.example").await.unwrap();
                (control, big, over_v6, missing)
            })
        })
        .unwrap();
    let (udp, tcp) = (
        dns.udp_queries.load(Ordering::SeqCst),
        dns.tcp_queries.load(Ordering::SeqCst),
    );
    let in_tun = g.tun_packets_to(server_v4) + g.tun_packets_to(server_v6);
    println!(
        "control.lg.example: {control:?}; big.lg.example (truncated, then TCP): {big:?}; over \
         IPv6: {over_v6:?}; missing: {missing:?}; server saw {udp} UDP and {tcp} TCP queries; \
         DNS packets in the TUN: {in_tun}"
    );
    let expected: Vec<IpAddr> = vec![server_v4, server_v6];
    assert_eq!(control.unwrap(), expected);
    assert_eq!(big.unwrap(), expected);
    assert_eq!(over_v6.unwrap(), expected);
    assert!(
        matches!(missing, Err(DnsError::NotFound { .. })),
        "{missing:?}"
    );
    // control (2) + big (2, then 2 over TCP) + over IPv6 (2) + missing (2) + after reset (2).
    assert_eq!(
        (udp, tcp),
        (10, 2),
        "the reset did not make the resolver ask again"
    );
    assert_eq!(in_tun, 0, "DNS queries or answers entered the TUN");
    // The zero means something only if unguarded DNS does loop.
    let looped = g
        .lab
        .client()
        .run(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07control\x02lg\x07example\x00\x00\x01\x00\x01";
            for _ in 0..3 {
                let _ = s.send_to(q, (server_v4, 53));
            }
        })
        .map(|_| {
            g.tun
                .wait_for(BOUND, |s| s.count_to(server_v4, Transport::Udp) >= 3)
                .count_to(server_v4, Transport::Udp)
        });
    println!("plain DNS queries in the TUN: {looped:?}");
    assert!(looped.unwrap() >= 3, "unguarded DNS did not enter the TUN");
}
