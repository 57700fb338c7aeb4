//! Counting the packets that enter a TUN device: the lab's evidence of a routing loop.
//!
//! A TUN device with no reader drops what is routed into it and `tcpdump` on it sees nothing,
//! so the only honest count comes from reading the device. [`TunCounter`] attaches to an
//! existing (persistent) TUN device from a thread inside its namespace and counts every
//! packet it reads, per transport and destination.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::LabError;

/// The transport protocol of a packet, from the IP header's protocol / next-header field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (17).
    Udp,
    /// TCP (6).
    Tcp,
    /// ICMP (1) or ICMPv6 (58).
    Icmp,
    /// Anything else, with its protocol number.
    Other(u8),
}

impl Transport {
    fn from_number(n: u8) -> Transport {
        match n {
            6 => Transport::Tcp,
            17 => Transport::Udp,
            1 | 58 => Transport::Icmp,
            other => Transport::Other(other),
        }
    }
}

/// The fields of an IP header the counter needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol (after IPv6 extension headers).
    pub transport: Transport,
}

/// Parses the IPv4 or IPv6 header at the start of `packet` (no packet-information prefix, as
/// with `IFF_NO_PI`). Returns `None` for anything too short or not IP.
pub fn parse_packet(packet: &[u8]) -> Option<PacketInfo> {
    match packet.first()? >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        _ => None,
    }
}

fn parse_v4(p: &[u8]) -> Option<PacketInfo> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    Some(PacketInfo {
        src: src.into(),
        dst: dst.into(),
        transport: Transport::from_number(p[9]),
    })
}

fn parse_v6(p: &[u8]) -> Option<PacketInfo> {
    let header: &[u8; 40] = p.get(..40)?.try_into().ok()?;
    let src: [u8; 16] = header[8..24].try_into().ok()?;
    let dst: [u8; 16] = header[24..40].try_into().ok()?;
    let mut next = header[6];
    let mut offset = 40usize;
    // Walk the extension headers so a hop-by-hop option (MLD carries one) or a fragment
    // header does not hide the transport. Bounded: each step advances by at least 8 bytes.
    loop {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, excluding
            // the first 8 bytes.
            0 | 43 | 60 => {
                let ext = p.get(offset..offset + 2)?;
                next = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                next = *p.get(offset)?;
                offset += 8;
            }
            _ => break,
        }
    }
    Some(PacketInfo {
        src: Ipv6Addr::from(src).into(),
        dst: Ipv6Addr::from(dst).into(),
        transport: Transport::from_number(next),
    })
}

/// Counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunSnapshot {
    /// Every packet read from the TUN, watched or not.
    pub all_packets: u64,
    /// Packets whose destination is one of the watched addresses.
    pub watched_packets: u64,
    /// Watched packets per (transport, destination).
    pub per_destination: HashMap<(Transport, IpAddr), u64>,
}

impl TunSnapshot {
    /// Watched packets to `dst` over `transport`.
    pub fn count_to(&self, dst: IpAddr, transport: Transport) -> u64 {
        self.per_destination
            .get(&(transport, dst))
            .copied()
            .unwrap_or(0)
    }

    /// Adds one packet to the counts.
    pub fn record(&mut self, info: Option<PacketInfo>, watched: &[IpAddr]) {
        self.all_packets += 1;
        if let Some(info) = info {
            if watched.contains(&info.dst) {
                self.watched_packets += 1;
                *self
                    .per_destination
                    .entry((info.transport, info.dst))
                    .or_insert(0) += 1;
            }
        }
    }
}

/// Reads a TUN device on a thread inside its namespace and counts the packets, until stopped
/// or dropped.
#[derive(Debug)]
pub struct TunCounter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the caller and the reader thread share.
#[derive(Debug, Default)]
struct Shared {
    counts: Mutex<TunSnapshot>,
    stop: AtomicBool,
    /// Barrier requests from [`TunCounter::snapshot`]: a count, raised by each request.
    sync_requested: AtomicU64,
    /// The highest request the reader has answered: it drained the device until it was empty
    /// after seeing that request, so every packet queued before the request is counted.
    sync_done: AtomicU64,
}

/// How long [`TunCounter::snapshot`] waits for the reader to catch up before it gives up and
/// panics: far longer than a drain takes even on a loaded machine.
const SYNC_BOUND: Duration = Duration::from_secs(20);

impl TunCounter {
    /// Attaches to the existing TUN device `tun_name` in namespace `netns` and starts counting
    /// packets addressed to `watched`. Returns once the device is attached and passes packets,
    /// so every packet routed into it from then on is counted: a device that was without a
    /// reader drops what is routed into it until the kernel re-activates its queues, and this
    /// waits (at most 10 s) for the operational state `UP` that comes with that.
    pub fn start(netns: &Netns, tun_name: &str, watched: Vec<IpAddr>) -> Result<Self, LabError> {
        Self::start_with(netns, tun_name, watched, |_| {})
    }

    /// Like [`start`](Self::start), and also hands every packet read to `on_packet` (on the
    /// reader's thread, before it is counted): for a loop tripwire, as an application would
    /// feed the packets it reads from its TUN.
    pub fn start_with(
        netns: &Netns,
        tun_name: &str,
        watched: Vec<IpAddr>,
        mut on_packet: impl FnMut(&[u8]) + Send + 'static,
    ) -> Result<Self, LabError> {
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let name = tun_name.to_owned();
        let thread_shared = Arc::clone(&shared);
        let thread = netns.spawn(move || {
            // The device is looked up in the namespace of the thread that opens
            // /dev/net/tun, hence the open happens here and not in the caller.
            let fd = match open_tun(&name) {
                Ok(fd) => {
                    let _ = ready_tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            read_loop(&fd, &watched, &thread_shared, &mut on_packet);
        })?;
        let counter = TunCounter {
            shared,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {
                wait_until_passing(netns, tun_name)?;
                Ok(counter)
            }
            Ok(Err(e)) => Err(LabError::Io(io::Error::new(
                e.kind(),
                format!("cannot attach to TUN device {tun_name}: {e}"),
            ))),
            // The thread could not enter the namespace (it has exited) or hung.
            Err(_) => Err(LabError::Io(io::Error::other(format!(
                "the TUN reader for {tun_name} did not start"
            )))),
        }
    }

    /// The counts of every packet queued in the device before this call: the reader is asked
    /// to drain the device and this waits (bounded) until it has. So a test that has sent
    /// something reads a count that includes it, however loaded the machine, and a zero means
    /// nothing was routed into the device.
    ///
    /// # Panics
    /// If the reader has not caught up after 20 s (it died or the machine is stuck).
    pub fn snapshot(&self) -> TunSnapshot {
        let shared = &self.shared;
        let request = shared.sync_requested.fetch_add(1, Ordering::SeqCst) + 1;
        let deadline = Instant::now() + SYNC_BOUND;
        while shared.sync_done.load(Ordering::SeqCst) < request {
            let reader_gone = self.thread.as_ref().is_none_or(|t| t.is_finished());
            if reader_gone {
                // `stop` drains before the reader exits; a reader that died early counts too.
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the TUN reader did not catch up within {SYNC_BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        self.counts()
    }

    /// Watched packets to `dst` over `transport` queued so far (see [`TunCounter::snapshot`]).
    pub fn count_to(&self, dst: IpAddr, transport: Transport) -> u64 {
        self.snapshot().count_to(dst, transport)
    }

    /// Waits until the counts satisfy `condition` or `bound` has passed, and returns the last
    /// counts either way: for a test that expects packets to arrive.
    pub fn wait_for(
        &self,
        bound: Duration,
        condition: impl Fn(&TunSnapshot) -> bool,
    ) -> TunSnapshot {
        let deadline = Instant::now() + bound;
        loop {
            let snapshot = self.snapshot();
            if condition(&snapshot) || Instant::now() >= deadline {
                return snapshot;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops reading (after draining what is queued), detaches from the device and returns
    /// the final counts.
    pub fn stop(mut self) -> TunSnapshot {
        self.halt();
        self.counts()
    }

    fn counts(&self) -> TunSnapshot {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // The reader wakes at least every poll timeout, so this join is short.
            let _ = thread.join();
        }
    }
}

impl Drop for TunCounter {
    fn drop(&mut self) {
        self.halt();
    }
}

/// How long [`wait_until_passing`] waits for the kernel to take the carrier into account.
const CARRIER_BOUND: Duration = Duration::from_secs(10);

/// Waits (at most [`CARRIER_BOUND`]) until the TUN device `name`, whose reader has just
/// attached, passes packets to it.
///
/// Attaching turns the carrier on at once, but the device's transmit queues are the dropping
/// `noop` qdisc while it is without a carrier: `dev_activate` defers them "until next
/// carrier-on event" and `dev_deactivate` switches them back to `noop` when the carrier goes
/// (net/sched/sch_generic.c). Only the kernel's link-watch work re-activates them, and it sets
/// the operational state to `UP` just before (`linkwatch_do_dev` in net/core/link_watch.c). It
/// runs on a kernel worker and needs the RTNL lock, which namespace set-up and teardown
/// elsewhere may hold for long. Until then every packet routed into the device is dropped
/// silently: a leak would go uncounted and a packet that should loop would be missed. So this
/// waits for `UP` (a device made by `ip tuntap add` is `UNKNOWN` or `DOWN` until then), then
/// takes the RTNL lock once (an `ip link set up` of the device, which is up already), so that
/// the link-watch run that set `UP` has also finished re-activating the queues. A device that
/// is administratively down needs no wait: bringing it up with the carrier on activates its
/// queues at once (`dev_open` calls `dev_activate`).
fn wait_until_passing(netns: &Netns, name: &str) -> Result<(), LabError> {
    let deadline = Instant::now() + CARRIER_BOUND;
    loop {
        let line = netns.ip(&["-o", "link", "show", "dev", name])?;
        if !link_flags(&line).contains(&"UP") {
            return Ok(());
        }
        match operstate(&line) {
            Some("UP") => break,
            Some(state) if Instant::now() >= deadline => {
                return Err(LabError::Io(io::Error::other(format!(
                    "TUN device {name} still {state} {CARRIER_BOUND:?} after its reader attached"
                ))));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(5)),
            None => {
                return Err(LabError::Io(io::Error::other(format!(
                    "no operational state for {name} in `ip -o link show`: {line:?}"
                ))));
            }
        }
    }
    netns.ip(&["link", "set", "dev", name, "up"]).map(drop)
}

/// The flags (`UP`, `LOWER_UP`, `NO-CARRIER`…) in a line of `ip -o link show`.
fn link_flags(line: &str) -> Vec<&str> {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(flags, _)| flags.split(',').collect())
        .unwrap_or_default()
}

/// The operational state (`UP`, `DOWN`, `UNKNOWN`…) in a line of `ip -o link show`.
fn operstate(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "state")?;
    words.next()
}

/// How long the reader waits in `poll` before checking the stop flag and barrier requests.
const POLL_MS: libc::c_int = 5;

fn read_loop(fd: &OwnedFd, watched: &[IpAddr], shared: &Shared, on_packet: &mut dyn FnMut(&[u8])) {
    let mut buf = vec![0u8; 65_536];
    loop {
        // Read before draining: the drain below then covers every packet queued before the
        // request was made.
        let request = shared.sync_requested.load(Ordering::SeqCst);
        if drain(fd, &mut buf, watched, &shared.counts, on_packet).is_err() {
            return;
        }
        shared.sync_done.store(request, Ordering::SeqCst);
        // Checked after a drain, so packets queued before `stop` are counted too.
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd and the count says so.
        let rc = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Reads, hands on and counts packets until the non-blocking device has none queued.
fn drain(
    fd: &OwnedFd,
    buf: &mut [u8],
    watched: &[IpAddr],
    counts: &Mutex<TunSnapshot>,
    on_packet: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(err),
            }
        }
        if n == 0 {
            return Ok(());
        }
        // `n` is positive here and at most `buf.len()`.
        let packet = &buf[..n as usize];
        on_packet(packet);
        counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(parse_packet(packet), watched);
    }
}

fn open_tun(name: &str) -> io::Result<OwnedFd> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: the path is a NUL-terminated literal; open has no other preconditions.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // IFF_NO_PI: packets start with the IP header, as `ip tuntap add` (without `pi`) made it.
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TUN device idle long enough for the kernel to deactivate its queues, then attached and
    /// sent to at once from the attaching thread: after [`wait_until_passing`] the datagram
    /// reaches the reader. Without that wait it is dropped in most tries (the device's TX
    /// `dropped` count rises instead).
    #[test]
    fn a_datagram_sent_right_after_attaching_to_an_idle_tun_arrives() {
        if crate::skip_unprivileged("a_datagram_sent_right_after_attaching_to_an_idle_tun") {
            return;
        }
        let ns = Netns::create(&crate::unique_name("idle")).expect("namespace");
        let tun = "lg-idle0";
        ns.ip(&["tuntap", "add", "dev", tun, "mode", "tun"])
            .unwrap();
        ns.ip(&["link", "set", tun, "up"]).unwrap();
        ns.ip(&["route", "add", "198.51.100.0/24", "dev", tun])
            .unwrap();
        for round in 0..3 {
            // Without a reader the carrier is off: wait until the kernel has acted on it.
            let deadline = Instant::now() + CARRIER_BOUND;
            while operstate(&ns.ip(&["-o", "link", "show", "dev", tun]).unwrap()) != Some("DOWN") {
                assert!(Instant::now() < deadline, "{tun} never went down");
                std::thread::sleep(Duration::from_millis(20));
            }
            let arrived = ns
                .run(|| {
                    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
                    let fd = open_tun(tun).expect("attach");
                    wait_until_passing(&ns, tun).expect("passes packets");
                    socket.send_to(b"first", "198.51.100.9:9").expect("send");
                    // Read as the counter does; other packets may come first (IPv6
                    // autoconfiguration on the device) and are not counted as ours.
                    let dst = IpAddr::from([198, 51, 100, 9]);
                    let counts = Mutex::new(TunSnapshot::default());
                    let mut buf = vec![0u8; 65_536];
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline {
                        let mut pfd = libc::pollfd {
                            fd: fd.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd, and the count says so.
                        unsafe { libc::poll(&mut pfd, 1, 50) };
                        drain(&fd, &mut buf, &[dst], &counts, &mut |_| {}).expect("read");
                        if counts.lock().unwrap().count_to(dst, Transport::Udp) > 0 {
                            return true;
                        }
                    }
                    false
                })
                .unwrap();
            assert!(
                arrived,
                "round {round}: the datagram never reached the reader"
            );
        }
    }

    #[test]
    fn operstate_and_flags_are_read_from_ip_link_output() {
        let down = "2: lg-tun: <NO-CARRIER,POINTOPOINT,MULTICAST,NOARP,UP> mtu 1500 qdisc \
                    pfifo_fast state DOWN mode DEFAULT group default qlen 500\\    link/none ";
        assert_eq!(operstate(down), Some("DOWN"));
        assert!(link_flags(down).contains(&"UP"));
        let admin_down = "2: lg-tun: <POINTOPOINT,MULTICAST,NOARP> mtu 1500 qdisc noop state DOWN";
        assert!(!link_flags(admin_down).contains(&"UP"));
        let up = "2: lg-tun: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1500 qdisc \
                  pfifo_fast state UNKNOWN mode DEFAULT group default qlen 500";
        assert_eq!(operstate(up), Some("UNKNOWN"));
        assert_eq!(operstate("2: lg-tun: <UP> mtu 1500"), None);
    }

    fn v4_packet(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45; // version 4, IHL 5
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn v6_packet(next: u8, src: Ipv6Addr, dst: Ipv6Addr, ext: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[6] = next;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p.extend_from_slice(ext);
        p.extend_from_slice(&[0u8; 8]); // a transport header's worth
        p
    }

    #[test]
    fn parses_ipv4_udp_and_tcp() {
        let udp = parse_packet(&v4_packet(17, [203, 0, 113, 2], [198, 51, 100, 2])).unwrap();
        assert_eq!(udp.src, IpAddr::from([203, 0, 113, 2]));
        assert_eq!(udp.dst, IpAddr::from([198, 51, 100, 2]));
        assert_eq!(udp.transport, Transport::Udp);
        let tcp = parse_packet(&v4_packet(6, [192, 0, 2, 2], [198, 51, 100, 2])).unwrap();
        assert_eq!(tcp.transport, Transport::Tcp);
        assert_eq!(
            parse_packet(&v4_packet(1, [0; 4], [0; 4]))
                .unwrap()
                .transport,
            Transport::Icmp
        );
        assert_eq!(
            parse_packet(&v4_packet(47, [0; 4], [0; 4]))
                .unwrap()
                .transport,
            Transport::Other(47)
        );
    }

    #[test]
    fn ipv4_with_options_uses_the_fixed_header_addresses() {
        let mut p = v4_packet(17, [192, 0, 2, 2], [198, 51, 100, 2]);
        p[0] = 0x46; // IHL 6: four bytes of options
        assert_eq!(
            parse_packet(&p).unwrap().dst,
            IpAddr::from([198, 51, 100, 2])
        );
        // An IHL pointing past the end, or below the minimum, is rejected.
        p[0] = 0x4f;
        assert_eq!(parse_packet(&p), None);
        p[0] = 0x44;
        assert_eq!(parse_packet(&p), None);
    }

    #[test]
    fn parses_ipv6_and_walks_extension_headers() {
        let src: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:2::2".parse().unwrap();
        let plain = parse_packet(&v6_packet(17, src, dst, &[])).unwrap();
        assert_eq!((plain.src, plain.dst), (IpAddr::V6(src), IpAddr::V6(dst)));
        assert_eq!(plain.transport, Transport::Udp);

        // Hop-by-hop (8 bytes) then a fragment header, then TCP.
        let mut ext = vec![44, 0, 5, 2, 0, 0, 1, 0]; // hop-by-hop: next = fragment, len 0
        ext.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 1]); // fragment: next = TCP
        let tcp = parse_packet(&v6_packet(0, src, dst, &ext)).unwrap();
        assert_eq!(tcp.transport, Transport::Tcp);
        assert_eq!(tcp.dst, IpAddr::V6(dst));

        // An extension header cut short leaves no transport to name.
        let cut = v6_packet(0, src, dst, &[]);
        assert_eq!(parse_packet(&cut[..41]), None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_packet(&[]), None);
        assert_eq!(parse_packet(&[0x45, 0, 0]), None);
        assert_eq!(parse_packet(&[0x60; 39]), None);
        assert_eq!(parse_packet(&[0x10; 64]), None);
    }

    #[test]
    fn snapshot_counts_only_watched_destinations() {
        let server: IpAddr = "198.51.100.2".parse().unwrap();
        let watched = [server];
        let mut snap = TunSnapshot::default();
        snap.record(
            parse_packet(&v4_packet(17, [203, 0, 113, 2], [198, 51, 100, 2])),
            &watched,
        );
        snap.record(
            parse_packet(&v4_packet(17, [203, 0, 113, 2], [198, 51, 100, 2])),
            &watched,
        );
        snap.record(
            parse_packet(&v4_packet(6, [203, 0, 113, 2], [198, 51, 100, 2])),
            &watched,
        );
        snap.record(
            parse_packet(&v4_packet(17, [203, 0, 113, 2], [198, 51, 100, 9])),
            &watched,
        );
        snap.record(None, &watched);
        assert_eq!(snap.all_packets, 5);
        assert_eq!(snap.watched_packets, 3);
        assert_eq!(snap.count_to(server, Transport::Udp), 2);
        assert_eq!(snap.count_to(server, Transport::Tcp), 1);
        assert_eq!(
            snap.count_to("198.51.100.9".parse().unwrap(), Transport::Udp),
            0
        );
    }
}
