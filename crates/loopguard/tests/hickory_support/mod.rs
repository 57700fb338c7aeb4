//! Shared by the hickory tests: a small authoritative DNS server over UDP and TCP (plain
//! `std` sockets on threads, nothing from loopguard), and resolver configurations for it.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::xfer::Protocol;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};

/// A name with an A and an AAAA record.
pub const PEER: &str = "peer.lab.test.";
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5);
/// A name whose UDP answers are truncated (TC set, no records): only TCP answers it.
pub const BIG: &str = "big.lab.test.";
pub const BIG_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 6);
pub const BIG_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 6);

/// How often blocked server threads look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// Who asked what, and over which transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    pub from: SocketAddr,
    pub tcp: bool,
    pub kind: RecordType,
}

/// A DNS server on one address: UDP and TCP, each on a port of its own, stopped when
/// dropped.
pub struct DnsServer {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    queries: Arc<Mutex<Vec<Query>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Starts a thread (in whatever namespace the caller wants) running the job.
pub type Spawner<'a> = &'a dyn Fn(Box<dyn FnOnce() + Send>) -> JoinHandle<()>;

impl DnsServer {
    /// A server on `ip` in this thread's namespace.
    pub fn start(ip: IpAddr) -> DnsServer {
        DnsServer::start_with(ip, &|job| std::thread::spawn(job))
    }

    /// A server on `ip`, its threads started by `spawn`. Returns once both sockets are bound.
    pub fn start_with(ip: IpAddr, spawn: Spawner<'_>) -> DnsServer {
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (q, s) = (queries.clone(), stop.clone());
        let main = spawn(Box::new(move || {
            let bound = (|| -> io::Result<_> {
                let udp = UdpSocket::bind((ip, 0))?;
                udp.set_read_timeout(Some(TICK))?;
                let tcp = TcpListener::bind((ip, 0))?;
                // Non-blocking accept, polled with the stop flag: std has no accept timeout.
                tcp.set_nonblocking(true)?;
                Ok((udp, tcp))
            })();
            let (udp, tcp) = match bound {
                Ok(pair) => pair,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok((udp.local_addr().unwrap(), tcp.local_addr().unwrap())));
            let tcp_thread = {
                let (q, s) = (q.clone(), s.clone());
                std::thread::spawn(move || serve_tcp(&tcp, &s, &q))
            };
            serve_udp(&udp, &s, &q);
            let _ = tcp_thread.join();
        }));
        let (udp, tcp) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("DNS server did not start")
            .expect("bind DNS server");
        DnsServer {
            udp,
            tcp,
            queries,
            stop,
            threads: vec![main],
        }
    }

    /// Every query received so far, in order.
    pub fn queries(&self) -> Vec<Query> {
        self.queries.lock().unwrap().clone()
    }

    /// How many queries came over UDP and over TCP.
    pub fn counts(&self) -> (usize, usize) {
        let queries = self.queries();
        let tcp = queries.iter().filter(|q| q.tcp).count();
        (queries.len() - tcp, tcp)
    }

    /// The configuration naming this server over UDP only.
    pub fn udp_only(&self) -> ResolverConfig {
        config([NameServerConfig::new(self.udp, Protocol::Udp)])
    }

    /// The configuration naming this server over TCP only.
    pub fn tcp_only(&self) -> ResolverConfig {
        config([NameServerConfig::new(self.tcp, Protocol::Tcp)])
    }

    /// The configuration naming this server over UDP and, for truncated answers, TCP.
    pub fn udp_and_tcp(&self) -> ResolverConfig {
        config([
            NameServerConfig::new(self.udp, Protocol::Udp),
            NameServerConfig::new(self.tcp, Protocol::Tcp),
        ])
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

/// A configuration with exactly `servers`, no search domains.
pub fn config(servers: impl IntoIterator<Item = NameServerConfig>) -> ResolverConfig {
    let mut config = ResolverConfig::new();
    for server in servers {
        config.add_name_server(server);
    }
    config
}

/// Options for the tests: no hosts file, A and AAAA both asked, `attempts` retries of
/// `timeout` each.
pub fn options(timeout: Duration, attempts: usize) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = timeout;
    opts.attempts = attempts;
    opts
}

fn serve_udp(socket: &UdpSocket, stop: &AtomicBool, queries: &Mutex<Vec<Query>>) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue; // the tick
        };
        if let Some(answer) = answer(&buf[..n], from, false, queries) {
            let _ = socket.send_to(&answer, from);
        }
    }
}

fn serve_tcp(listener: &TcpListener, stop: &Arc<AtomicBool>, queries: &Arc<Mutex<Vec<Query>>>) {
    let mut connections = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, from)) => {
                let (stop, queries) = (stop.clone(), queries.clone());
                connections.push(std::thread::spawn(move || {
                    serve_stream(stream, from, &stop, &queries)
                }));
            }
            Err(_) => std::thread::sleep(TICK / 5),
        }
    }
    for c in connections {
        let _ = c.join();
    }
}

/// Length-prefixed messages on one connection, answered in order until the peer closes.
fn serve_stream(
    mut stream: TcpStream,
    from: SocketAddr,
    stop: &AtomicBool,
    queries: &Mutex<Vec<Query>>,
) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let message: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            if let Some(answer) = answer(&message, from, true, queries) {
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                if stream.write_all(&framed).is_err() {
                    return;
                }
            }
        }
    }
}

/// The answer to one query, recorded before it is made.
fn answer(query: &[u8], from: SocketAddr, tcp: bool, log: &Mutex<Vec<Query>>) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let question = query.queries().first()?.clone();
    log.lock().unwrap().push(Query {
        from,
        tcp,
        kind: question.query_type(),
    });
    let mut response = Message::new();
    response
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired())
        .add_query(question.clone());
    let name = question.name().to_lowercase();
    let rdata = match (name.to_string().as_str(), question.query_type()) {
        (PEER, RecordType::A) => Some(RData::A(A(PEER_V4))),
        (PEER, RecordType::AAAA) => Some(RData::AAAA(AAAA(PEER_V6))),
        (BIG, _) if !tcp => {
            response.set_truncated(true);
            None
        }
        (BIG, RecordType::A) => Some(RData::A(A(BIG_V4))),
        (BIG, RecordType::AAAA) => Some(RData::AAAA(AAAA(BIG_V6))),
        (PEER | BIG, _) => None,
        _ => {
            response.set_response_code(ResponseCode::NXDomain);
            None
        }
    };
    if let Some(rdata) = rdata {
        response.add_answer(Record::from_rdata(question.name().clone(), 60, rdata));
    }
    response.to_vec().ok()
}

/// The name of `s`, for lookups.
pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}
