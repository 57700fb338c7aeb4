//! UDP and TCP echo servers for the server namespace: the lab's "relay" and "control plane".
//!
//! Plain `std` sockets on threads: the servers are the fixed point the tests measure against,
//! so they use nothing from loopguard and nothing asynchronous.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::Netns;
use crate::LabError;

/// How often blocked server threads look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// What the servers on one address have received (each counted before its echo is sent, so a
/// client that got the echo reads a count that includes it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// UDP datagrams received.
    pub udp_datagrams: u64,
    /// UDP payload bytes received.
    pub udp_bytes: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
    /// TCP bytes received.
    pub tcp_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    udp_datagrams: AtomicU64,
    udp_bytes: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_bytes: AtomicU64,
}

impl Counters {
    fn stats(&self) -> EchoStats {
        EchoStats {
            udp_datagrams: self.udp_datagrams.load(Ordering::SeqCst),
            udp_bytes: self.udp_bytes.load(Ordering::SeqCst),
            tcp_connections: self.tcp_connections.load(Ordering::SeqCst),
            tcp_bytes: self.tcp_bytes.load(Ordering::SeqCst),
        }
    }
}

/// A UDP echo and a TCP echo on each of a set of addresses, inside one namespace, stopped
/// when dropped.
#[derive(Debug)]
pub struct EchoServers {
    stop: Arc<AtomicBool>,
    counters: HashMap<IpAddr, Arc<Counters>>,
    udp: HashMap<IpAddr, SocketAddr>,
    tcp: HashMap<IpAddr, SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServers {
    /// Binds a UDP and a TCP echo server on `port` (0 picks a free port per socket) of every
    /// address in `addrs`, inside `netns`. Returns once every socket is bound.
    pub fn start(netns: &Netns, addrs: &[IpAddr], port: u16) -> Result<Self, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = EchoServers {
            stop: Arc::clone(&stop),
            counters: HashMap::new(),
            udp: HashMap::new(),
            tcp: HashMap::new(),
            threads: Vec::new(),
        };
        for &ip in addrs {
            let counters = Arc::new(Counters::default());
            servers.counters.insert(ip, Arc::clone(&counters));
            let (tx, rx) = mpsc::channel::<io::Result<(SocketAddr, SocketAddr)>>();
            let (stop, thread_counters) = (Arc::clone(&stop), counters);
            // One thread per address binds both sockets in the namespace, then serves UDP
            // itself and TCP on a second thread.
            let handle = netns.spawn(move || {
                let bound = bind_pair(SocketAddr::new(ip, port));
                let (udp, tcp) = match bound {
                    Ok((udp, tcp, addrs)) => {
                        let _ = tx.send(Ok(addrs));
                        (udp, tcp)
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let tcp_thread = {
                    let (stop, counters) = (Arc::clone(&stop), Arc::clone(&thread_counters));
                    std::thread::spawn(move || serve_tcp(&tcp, &stop, &counters))
                };
                serve_udp(&udp, &stop, &thread_counters);
                let _ = tcp_thread.join();
            })?;
            servers.threads.push(handle);
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok((udp, tcp))) => {
                    servers.udp.insert(ip, udp);
                    servers.tcp.insert(ip, tcp);
                }
                Ok(Err(e)) => {
                    return Err(LabError::Io(io::Error::new(
                        e.kind(),
                        format!("cannot bind echo servers on {ip}: {e}"),
                    )))
                }
                Err(_) => {
                    return Err(LabError::Io(io::Error::other(format!(
                        "echo servers on {ip} did not start"
                    ))))
                }
            }
        }
        Ok(servers)
    }

    /// The UDP echo's address on `ip`, if one was started there.
    pub fn udp_addr(&self, ip: IpAddr) -> Option<SocketAddr> {
        self.udp.get(&ip).copied()
    }

    /// The TCP echo's address on `ip`, if one was started there.
    pub fn tcp_addr(&self, ip: IpAddr) -> Option<SocketAddr> {
        self.tcp.get(&ip).copied()
    }

    /// What the servers on `ip` echoed so far (all zero for an address not served).
    pub fn stats(&self, ip: IpAddr) -> EchoStats {
        self.counters
            .get(&ip)
            .map(|c| c.stats())
            .unwrap_or_default()
    }

    /// Stops every server thread and waits for them.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        self.halt();
    }
}

type Bound = (UdpSocket, TcpListener, (SocketAddr, SocketAddr));

fn bind_pair(addr: SocketAddr) -> io::Result<Bound> {
    let udp = UdpSocket::bind(addr)?;
    udp.set_read_timeout(Some(TICK))?;
    let tcp = TcpListener::bind(addr)?;
    // Non-blocking accept, polled with the stop flag: std has no accept timeout.
    tcp.set_nonblocking(true)?;
    let addrs = (udp.local_addr()?, tcp.local_addr()?);
    Ok((udp, tcp, addrs))
}

fn serve_udp(socket: &UdpSocket, stop: &AtomicBool, counters: &Counters) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                // Counted before the reply: a client that got its echo reads a count that
                // already includes the datagram.
                counters.udp_datagrams.fetch_add(1, Ordering::SeqCst);
                counters.udp_bytes.fetch_add(n as u64, Ordering::SeqCst);
                let _ = socket.send_to(&buf[..n], from);
            }
            // Timeouts (WouldBlock / TimedOut) are the tick; ICMP errors from earlier sends
            // show up here too and are not fatal for an echo server.
            Err(_) => continue,
        }
    }
}

fn serve_tcp(listener: &TcpListener, stop: &Arc<AtomicBool>, counters: &Arc<Counters>) {
    let mut connections = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                counters.tcp_connections.fetch_add(1, Ordering::SeqCst);
                let (stop, counters) = (Arc::clone(stop), Arc::clone(counters));
                connections.push(std::thread::spawn(move || {
                    echo_stream(stream, &stop, &counters)
                }));
            }
            // WouldBlock is the idle case; other accept errors (a peer that reset before we
            // accepted) are not fatal either.
            Err(_) => std::thread::sleep(TICK / 5),
        }
        connections.retain(|c: &JoinHandle<()>| !c.is_finished());
    }
    for c in connections {
        let _ = c.join();
    }
}

fn echo_stream(mut stream: TcpStream, stop: &AtomicBool, counters: &Counters) {
    // Accepted sockets may inherit non-blocking mode; this one blocks with a timeout instead.
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 16_384];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                // Counted before the reply, like UDP.
                counters.tcp_bytes.fetch_add(n as u64, Ordering::SeqCst);
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
    }
}
