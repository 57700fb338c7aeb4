//! [`LoopTripwire`]: a guarded socket's own packet read back from the TUN device is a routing
//! loop in progress; the tripwire says so, per packet, before the loop melts the CPU.
//!
//! A tunnel client reads every packet the system routes into its TUN device. A packet sent by
//! one of the client's own guarded sockets must never be among them: if it is, protection
//! failed (a misconfigured mark, a policy rule deleted by another tool, a route that changed
//! under the pin) and the client is about to wrap its own packet and send it again through the
//! same socket. The tripwire recognises such a packet by its transport and source port: every
//! socket of a [`SocketFactory`](crate::SocketFactory) registers its protocol and local port
//! (UDP when bound, TCP before its SYN leaves) and unregisters when dropped.
//!
//! The check is built for every packet of a busy tunnel: it reads the IP header in place
//! (IPv4, or IPv6 with its extension headers walked a bounded number of steps), tests one bit
//! of a 16 KiB port bitmap, and only for a registered port takes a lock to compare the rest
//! (family, bound address, connected peer). It allocates nothing.
//!
//! What it cannot tell: a packet of another program that uses a registered port on another
//! address (or, for a socket bound to the unspecified address, a packet the TUN carries for
//! another host that happens to use the same source port) matches by port; the bound address
//! and family checks narrow that, and a socket bound to its own address is matched exactly.
//! IPv4 and IPv6 fragments after the first carry no ports and are not recognised.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The transport of a watched socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopProtocol {
    /// UDP (IP protocol 17).
    Udp,
    /// TCP (IP protocol 6).
    Tcp,
}

impl LoopProtocol {
    fn from_number(n: u8) -> Option<LoopProtocol> {
        match n {
            17 => Some(LoopProtocol::Udp),
            6 => Some(LoopProtocol::Tcp),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            LoopProtocol::Udp => 0,
            LoopProtocol::Tcp => 1,
        }
    }
}

impl fmt::Display for LoopProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoopProtocol::Udp => "UDP",
            LoopProtocol::Tcp => "TCP",
        })
    }
}

/// A guarded socket's packet found in the TUN: a routing loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopEvent {
    /// The socket's transport.
    pub protocol: LoopProtocol,
    /// The packet's source: the address the kernel gave the socket's packet, and its port.
    pub source: SocketAddr,
    /// Where the socket was sending: the packet's destination address and port.
    pub destination: SocketAddr,
    /// The socket's local address as registered (the unspecified address when it was bound
    /// to all of them).
    pub socket: SocketAddr,
}

impl fmt::Display for LoopEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "routing loop: a guarded {} socket ({}) sent a packet to {} that entered the tunnel \
             (source {})",
            self.protocol, self.socket, self.destination, self.source
        )
    }
}

/// The transport header fields of a packet, as the tripwire reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PacketPorts {
    pub(crate) protocol: LoopProtocol,
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
}

/// Most IPv6 extension headers walked before giving up (real packets carry one or two).
const MAX_EXTENSION_HEADERS: usize = 8;

/// Where the transport header of an IP packet starts, and its protocol number; `None` for
/// anything that is not IPv4 or IPv6, is cut short, or is a fragment after the first.
#[inline]
fn transport_offset(p: &[u8]) -> Option<(u8, usize)> {
    match p.first()? >> 4 {
        4 => {
            let header = p.get(..20)?;
            let ihl = usize::from(header[0] & 0x0f) * 4;
            // Fragment offset (13 bits): only the first fragment carries the ports.
            let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
            if ihl < 20 || fragment_offset != 0 {
                return None;
            }
            Some((header[9], ihl))
        }
        6 => {
            let mut next = *p.get(6)?;
            let mut offset = 40;
            if p.len() < offset {
                return None;
            }
            let mut walked = 0;
            loop {
                let is_extension = matches!(next, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140);
                if !is_extension {
                    return Some((next, offset));
                }
                if walked == MAX_EXTENSION_HEADERS {
                    return None;
                }
                walked += 1;
                match next {
                    // Fragment: 8 bytes; only offset 0 carries the ports.
                    44 => {
                        let ext = p.get(offset..offset + 8)?;
                        if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                            return None;
                        }
                        next = ext[0];
                        offset += 8;
                    }
                    // Authentication header: length in 4-byte units beyond the first 8 bytes.
                    51 => {
                        let ext = p.get(offset..offset + 2)?;
                        next = ext[0];
                        offset += (usize::from(ext[1]) + 2) * 4;
                    }
                    // Hop-by-hop, routing, destination options, mobility, HIP, shim6: length
                    // in 8-byte units beyond the first 8 bytes.
                    _ => {
                        let ext = p.get(offset..offset + 2)?;
                        next = ext[0];
                        offset += (usize::from(ext[1]) + 1) * 8;
                    }
                }
            }
        }
        _ => None,
    }
}

/// The protocol and source port of a UDP or TCP packet: all the fast path needs.
#[inline]
fn source_port(p: &[u8]) -> Option<(LoopProtocol, u16, usize)> {
    let (number, offset) = transport_offset(p)?;
    let protocol = LoopProtocol::from_number(number)?;
    let ports = p.get(offset..offset + 2)?;
    Some((protocol, u16::from_be_bytes([ports[0], ports[1]]), offset))
}

/// The addresses and ports of a UDP or TCP packet (IPv4 or IPv6, no link-layer or
/// packet-information prefix, as a TUN device opened with `IFF_NO_PI` delivers them).
pub(crate) fn parse(p: &[u8]) -> Option<PacketPorts> {
    let (protocol, sport, offset) = source_port(p)?;
    let dport = p.get(offset + 2..offset + 4)?;
    let dport = u16::from_be_bytes([dport[0], dport[1]]);
    let (src, dst): (IpAddr, IpAddr) = if p[0] >> 4 == 4 {
        let a: [u8; 4] = p.get(12..16)?.try_into().ok()?;
        let b: [u8; 4] = p.get(16..20)?.try_into().ok()?;
        (Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into())
    } else {
        let a: [u8; 16] = p.get(8..24)?.try_into().ok()?;
        let b: [u8; 16] = p.get(24..40)?.try_into().ok()?;
        (Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into())
    };
    Some(PacketPorts {
        protocol,
        source: SocketAddr::new(src, sport),
        destination: SocketAddr::new(dst, dport),
    })
}

/// One registered socket.
#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u64,
    protocol: LoopProtocol,
    local: SocketAddr,
    /// The connected peer (TCP), which a looping packet is addressed to.
    peer: Option<SocketAddr>,
}

impl Entry {
    /// Whether `packet` (already known to carry this entry's protocol and port) is this
    /// socket's.
    fn matches(&self, packet: &PacketPorts) -> bool {
        let local = self.local.ip();
        let source = packet.source.ip().to_canonical();
        let same_family = match (local, source) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => true,
            // A dual-stack IPv6 socket sends IPv4 packets too.
            (IpAddr::V6(v6), IpAddr::V4(_)) => v6.is_unspecified() || v6.to_ipv4_mapped().is_some(),
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        };
        let address = local.is_unspecified() || local.to_canonical() == source;
        let peer = self.peer.is_none_or(|peer| {
            peer.port() == packet.destination.port()
                && peer.ip().to_canonical() == packet.destination.ip().to_canonical()
        });
        same_family && address && peer
    }
}

/// The sockets of one factory, by protocol and local port; shared by the factory, its sockets
/// (through their [`Registration`]s) and its tripwires.
pub(crate) struct SocketTable {
    /// One bit per (protocol, port): set while a socket with it is registered.
    bits: Box<[AtomicU64]>,
    entries: Mutex<Vec<Entry>>,
    next_id: AtomicU64,
    loops_detected: AtomicU64,
}

impl fmt::Debug for SocketTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketTable")
            .field("sockets", &self.lock().len())
            .field("loops_detected", &self.loops_detected())
            .finish()
    }
}

impl Default for SocketTable {
    fn default() -> Self {
        SocketTable {
            bits: (0..2 * 65_536 / 64).map(|_| AtomicU64::new(0)).collect(),
            entries: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            loops_detected: AtomicU64::new(0),
        }
    }
}

#[inline]
fn bit(protocol: LoopProtocol, port: u16) -> (usize, u64) {
    let i = protocol.index() << 16 | usize::from(port);
    (i / 64, 1 << (i % 64))
}

impl SocketTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a socket until the returned [`Registration`] is dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        protocol: LoopProtocol,
        local: SocketAddr,
        peer: Option<SocketAddr>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        entries.push(Entry {
            id,
            protocol,
            local,
            peer,
        });
        let (word, mask) = bit(protocol, local.port());
        self.bits[word].fetch_or(mask, Ordering::Release);
        Registration {
            table: Arc::clone(self),
            id,
        }
    }

    fn unregister(&self, id: u64) {
        let mut entries = self.lock();
        let Some(at) = entries.iter().position(|e| e.id == id) else {
            return;
        };
        let gone = entries.swap_remove(at);
        let port = gone.local.port();
        if !entries
            .iter()
            .any(|e| e.protocol == gone.protocol && e.local.port() == port)
        {
            let (word, mask) = bit(gone.protocol, port);
            self.bits[word].fetch_and(!mask, Ordering::Release);
        }
    }

    /// Loops found so far by every tripwire of the factory.
    pub(crate) fn loops_detected(&self) -> u64 {
        self.loops_detected.load(Ordering::Relaxed)
    }

    #[inline]
    fn check(&self, packet: &[u8]) -> Option<LoopEvent> {
        let (protocol, port, _) = source_port(packet)?;
        let (word, mask) = bit(protocol, port);
        if self.bits[word].load(Ordering::Acquire) & mask == 0 {
            return None;
        }
        self.confirm(packet)
    }

    /// The slow path, for a packet whose protocol and port are registered.
    #[cold]
    fn confirm(&self, packet: &[u8]) -> Option<LoopEvent> {
        let ports = parse(packet)?;
        let entries = self.lock();
        let entry = entries.iter().find(|e| {
            e.protocol == ports.protocol
                && e.local.port() == ports.source.port()
                && e.matches(&ports)
        })?;
        self.loops_detected.fetch_add(1, Ordering::Relaxed);
        Some(LoopEvent {
            protocol: ports.protocol,
            source: ports.source,
            destination: ports.destination,
            socket: entry.local,
        })
    }
}

/// A socket's place in its factory's [`SocketTable`]; dropping it unregisters the socket.
pub(crate) struct Registration {
    table: Arc<SocketTable>,
    id: u64,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.table.unregister(self.id);
    }
}

/// Recognises the packets of a factory's own sockets among those read from the TUN device:
/// each is a routing loop in progress. Made by
/// [`SocketFactory::tripwire`](crate::SocketFactory::tripwire); cheap to clone, and every
/// clone counts into the factory's [`Counters::loops_detected`](crate::Counters).
///
/// Feed it every packet the application reads from its TUN (the IP packet itself, without a
/// packet-information or virtio header):
///
/// ```
/// # fn demo<S: loopguard::Strategy>(factory: &loopguard::SocketFactory<S>, packet: &[u8]) {
/// let tripwire = factory.tripwire();
/// if let Some(event) = tripwire.check(packet) {
///     // Drop the packet: wrapping it would send it through the same socket again.
///     eprintln!("{event}");
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LoopTripwire {
    table: Arc<SocketTable>,
}

/// A socket that did not come from the factory, watched by a tripwire until this is dropped
/// (see [`LoopTripwire::watch`]).
#[derive(Debug)]
pub struct Watched {
    _registration: Registration,
}

impl LoopTripwire {
    pub(crate) fn new(table: Arc<SocketTable>) -> Self {
        LoopTripwire { table }
    }

    /// The loop `packet` shows, if it is the packet of one of the factory's sockets (or of a
    /// [`watch`](Self::watch)ed one). Counts it in the factory's `loops_detected`. Garbage,
    /// truncated and non-IP input is `None`, never a panic.
    #[inline]
    pub fn check(&self, packet: &[u8]) -> Option<LoopEvent> {
        self.table.check(packet)
    }

    /// Also watches a socket the factory did not make (a legacy socket, a library's own),
    /// bound to `local` and, for a connected TCP socket, connected to `peer`, until the
    /// returned guard is dropped. Such a socket is not protected by loopguard: the tripwire
    /// only reports when its packets loop.
    pub fn watch(
        &self,
        protocol: LoopProtocol,
        local: SocketAddr,
        peer: Option<SocketAddr>,
    ) -> Watched {
        Watched {
            _registration: self.table.register(protocol, local, peer),
        }
    }

    /// Loops found so far by every tripwire of this factory.
    pub fn loops_detected(&self) -> u64 {
        self.table.loops_detected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_SRC: [u8; 4] = [192, 0, 2, 2];
    const V4_DST: [u8; 4] = [198, 51, 100, 7];

    /// An IPv4 packet with a transport header whose ports are `sport` and `dport`.
    fn v4(protocol: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 8];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&V4_SRC);
        p[16..20].copy_from_slice(&V4_DST);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    fn v6_src() -> Ipv6Addr {
        "2001:db8:1::2".parse().unwrap()
    }

    fn v6_dst() -> Ipv6Addr {
        "2001:db8:2::7".parse().unwrap()
    }

    /// An IPv6 packet: `next`, then the extension headers `ext`, then ports.
    fn v6(next: u8, ext: &[u8], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[6] = next;
        p[7] = 64;
        p[8..24].copy_from_slice(&v6_src().octets());
        p[24..40].copy_from_slice(&v6_dst().octets());
        p.extend_from_slice(ext);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_udp_and_tcp_ports_and_addresses() {
        let udp = parse(&v4(17, 4433, 53)).unwrap();
        assert_eq!(udp.protocol, LoopProtocol::Udp);
        assert_eq!(udp.source, addr("192.0.2.2:4433"));
        assert_eq!(udp.destination, addr("198.51.100.7:53"));
        assert_eq!(parse(&v4(6, 1, 2)).unwrap().protocol, LoopProtocol::Tcp);
        // ICMP, GRE: no ports to compare.
        assert_eq!(parse(&v4(1, 1, 2)), None);
        assert_eq!(parse(&v4(47, 1, 2)), None);
    }

    #[test]
    fn ipv4_options_move_the_transport_header() {
        let mut p = v4(17, 0, 0);
        p[0] = 0x46;
        p.splice(20..20, [1, 1, 1, 1]);
        p[24..26].copy_from_slice(&5000u16.to_be_bytes());
        p[26..28].copy_from_slice(&7u16.to_be_bytes());
        let got = parse(&p).unwrap();
        assert_eq!((got.source.port(), got.destination.port()), (5000, 7));
        // An IHL below five words is not IPv4.
        p[0] = 0x44;
        assert_eq!(parse(&p), None);
    }

    #[test]
    fn ipv4_fragments_after_the_first_carry_no_ports() {
        let mut p = v4(17, 4433, 53);
        // More fragments, offset 0: the first fragment has the UDP header.
        p[6] = 0x20;
        assert!(parse(&p).is_some());
        // Offset 185 (1480 bytes): the payload is not a UDP header.
        p[6..8].copy_from_slice(&(0x2000u16 | 185).to_be_bytes());
        assert_eq!(parse(&p), None);
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let plain = parse(&v6(17, &[], 4433, 443)).unwrap();
        assert_eq!(plain.source, SocketAddr::new(IpAddr::V6(v6_src()), 4433));
        assert_eq!(
            plain.destination,
            SocketAddr::new(IpAddr::V6(v6_dst()), 443)
        );
        // Hop-by-hop (8 bytes), destination options (16 bytes), first fragment, AH (12
        // bytes), then TCP.
        let mut ext = vec![60, 0, 5, 2, 0, 0, 1, 0];
        ext.extend_from_slice(&[44, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[51, 0, 0, 0, 0, 0, 0, 1]);
        ext.extend_from_slice(&[6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let tcp = parse(&v6(0, &ext, 50_000, 22)).unwrap();
        assert_eq!(tcp.protocol, LoopProtocol::Tcp);
        assert_eq!((tcp.source.port(), tcp.destination.port()), (50_000, 22));
        // A later fragment: no ports.
        let later = [17, 0, 0x05, 0xc8, 0, 0, 0, 1];
        assert_eq!(parse(&v6(44, &later, 1, 2)), None);
        // ESP hides the transport; "no next header" has none.
        assert_eq!(parse(&v6(50, &[], 1, 2)), None);
        assert_eq!(parse(&v6(59, &[], 1, 2)), None);
    }

    #[test]
    fn ipv6_extension_header_chains_are_bounded() {
        // Nine destination-options headers in a row: more than any real packet carries.
        let ext: Vec<u8> = (0..9).flat_map(|_| [60, 0, 1, 4, 0, 0, 0, 0]).collect();
        assert_eq!(parse(&v6(60, &ext, 1, 2)), None);
        // Eight are walked.
        let mut ext: Vec<u8> = (0..7).flat_map(|_| [60, 0, 1, 4, 0, 0, 0, 0]).collect();
        ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        assert_eq!(parse(&v6(60, &ext, 1, 2)).unwrap().source.port(), 1);
    }

    /// Every prefix of valid packets, and bytes that claim lengths far past the end: `None`
    /// or a parse, never a panic, and never a read past the slice.
    #[test]
    fn truncated_and_garbage_input_is_rejected_without_panicking() {
        // Hop-by-hop, then a first fragment, then UDP.
        let mut ext = vec![44, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 1]);
        let samples = [
            v4(17, 1, 2),
            v4(6, 1, 2),
            v6(17, &[], 1, 2),
            v6(0, &ext, 1, 2),
        ];
        for p in &samples {
            assert!(parse(p).is_some());
            // Each sample ends with the two ports and four more bytes: the ports need the
            // first four bytes of the transport header, nothing after them.
            for cut in 0..p.len() {
                let got = parse(&p[..cut]);
                assert_eq!(got.is_some(), cut >= p.len() - 4, "{cut} bytes of {p:?}");
            }
        }
        // Extension lengths at their maximum, pointing far past the end.
        assert_eq!(parse(&v6(0, &[17, 255, 0, 0, 0, 0, 0, 0], 1, 2)), None);
        assert_eq!(parse(&v6(51, &[17, 255, 0, 0, 0, 0, 0, 0], 1, 2)), None);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut buf = [0u8; 96];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Make about half of them look like IP.
            buf[0] = (buf[0] & 0x0f) | if x & 1 == 0 { 0x40 } else { 0x60 };
            let len = (x >> 8) as usize % buf.len();
            let _ = parse(&buf[..len]);
        }
    }

    fn table() -> Arc<SocketTable> {
        Arc::new(SocketTable::default())
    }

    #[test]
    fn a_registered_socket_is_recognised_and_counted() {
        let table = table();
        let tripwire = LoopTripwire::new(table.clone());
        assert_eq!(tripwire.check(&v4(17, 4433, 53)), None);
        let _udp = table.register(LoopProtocol::Udp, addr("0.0.0.0:4433"), None);
        let event = tripwire.check(&v4(17, 4433, 53)).unwrap();
        assert_eq!(event.protocol, LoopProtocol::Udp);
        assert_eq!(event.destination, addr("198.51.100.7:53"));
        assert_eq!(event.source, addr("192.0.2.2:4433"));
        assert_eq!(event.socket, addr("0.0.0.0:4433"));
        // The same port over TCP, or another port, is someone else's.
        assert_eq!(tripwire.check(&v4(6, 4433, 53)), None);
        assert_eq!(tripwire.check(&v4(17, 4434, 53)), None);
        // A reply to the socket (its port as destination) is not its packet.
        assert_eq!(tripwire.check(&v4(17, 53, 4433)), None);
        assert_eq!(tripwire.loops_detected(), 1);
    }

    #[test]
    fn family_bound_address_and_peer_narrow_the_match() {
        let table = table();
        let tripwire = LoopTripwire::new(table.clone());
        // An IPv4 socket on 5000: an IPv6 packet from port 5000 is another socket's.
        let v4_only = table.register(LoopProtocol::Udp, addr("0.0.0.0:5000"), None);
        assert_eq!(tripwire.check(&v6(17, &[], 5000, 53)), None);
        assert!(tripwire.check(&v4(17, 5000, 53)).is_some());
        drop(v4_only);
        assert_eq!(tripwire.check(&v4(17, 5000, 53)), None);
        // A dual-stack [::] socket sends both families.
        let _dual = table.register(LoopProtocol::Udp, addr("[::]:5001"), None);
        assert!(tripwire.check(&v4(17, 5001, 53)).is_some());
        assert!(tripwire.check(&v6(17, &[], 5001, 53)).is_some());
        // Bound to an address: only packets from it.
        let _bound = table.register(LoopProtocol::Udp, addr("192.0.2.9:5002"), None);
        assert_eq!(tripwire.check(&v4(17, 5002, 53)), None);
        let _bound2 = table.register(LoopProtocol::Udp, addr("192.0.2.2:5002"), None);
        assert!(tripwire.check(&v4(17, 5002, 53)).is_some());
        // A connected TCP socket: only packets to its peer.
        let _tcp = table.register(
            LoopProtocol::Tcp,
            addr("0.0.0.0:5003"),
            Some(addr("198.51.100.7:443")),
        );
        assert_eq!(tripwire.check(&v4(6, 5003, 80)), None);
        let event = tripwire.check(&v4(6, 5003, 443)).unwrap();
        assert_eq!(event.destination, addr("198.51.100.7:443"));
        assert_eq!(tripwire.loops_detected(), 5);
    }

    #[test]
    fn a_port_stays_watched_until_its_last_socket_goes() {
        let table = table();
        let tripwire = LoopTripwire::new(table.clone());
        let a = table.register(LoopProtocol::Udp, addr("192.0.2.2:6000"), None);
        let b = table.register(LoopProtocol::Udp, addr("[::]:6000"), None);
        drop(a);
        assert!(
            tripwire.check(&v4(17, 6000, 53)).is_some(),
            "b is dual-stack"
        );
        drop(b);
        assert_eq!(tripwire.check(&v4(17, 6000, 53)), None);
        let (word, mask) = bit(LoopProtocol::Udp, 6000);
        assert_eq!(table.bits[word].load(Ordering::Relaxed) & mask, 0);
    }

    #[test]
    fn watched_foreign_sockets_count_too() {
        let table = table();
        let tripwire = LoopTripwire::new(table);
        let watched = tripwire.watch(LoopProtocol::Tcp, addr("0.0.0.0:7000"), None);
        assert!(tripwire.check(&v4(6, 7000, 443)).is_some());
        drop(watched);
        assert_eq!(tripwire.check(&v4(6, 7000, 443)), None);
        assert_eq!(tripwire.loops_detected(), 1);
    }
}
