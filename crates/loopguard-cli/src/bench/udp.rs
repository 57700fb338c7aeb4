//! UDP throughput across a veth pair between two network namespaces made for the run:
//! a plain quinn-udp socket against loopguard sockets, interleaved round after round.
//!
//! ```text
//!  lg-bench-a-* (sender)                    lg-bench-b-* (receiver)
//!  lg-ba0 192.0.2.1/24  ---- veth ----  lg-bb0 192.0.2.2/24
//! ```
//!
//! Documentation addresses only, both ends inside namespaces this run created; the root
//! namespace is never changed. The namespaces (and the veth pair with them) are deleted when
//! the run ends, also when it fails.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use loopguard::{DatagramOut, GuardConfig, LinuxMark, SocketFactory, UdpSocket};
use loopguard_lab::{unique_name, Netns};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use serde_json::{json, Value};
use tokio::io::Interest;

use super::cache::FixedSource;
use super::stats::{median, round, Ratio};

/// Payload of each datagram.
pub const PAYLOAD: usize = 1200;
/// Segments per GSO batch (fewer if the socket allows fewer).
pub const GSO_SEGMENTS: usize = 32;
/// The guard's mark for the mark variant, and a policy rule that matches it.
const MARK: u32 = GuardConfig::DEFAULT_MARK;

/// The tunnel device the pin variant avoids, in the sender's namespace.
const PIN_TUN: &str = "lg-bt0";

const SENDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const RECEIVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Receive buffer of every receiving socket.
const RCVBUF: libc::c_int = 4 << 20;

/// Two namespaces joined by a veth pair; removed when dropped.
pub struct Pair {
    /// The sender's namespace.
    pub a: Netns,
    /// The receiver's namespace.
    pub b: Netns,
}

impl Pair {
    /// Builds the pair. Needs root.
    pub fn build() -> anyhow::Result<Pair> {
        loopguard_lab::remove_leftovers("bench");
        let a = Netns::create(&unique_name("bench-a"))?;
        let b = Netns::create(&unique_name("bench-b"))?;
        a.ip(&[
            "link",
            "add",
            "lg-ba0",
            "type",
            "veth",
            "peer",
            "name",
            "lg-bb0",
            "netns",
            b.name(),
        ])?;
        a.ip(&["addr", "add", "192.0.2.1/24", "dev", "lg-ba0"])?;
        a.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            "lg-ba0",
            "nodad",
        ])?;
        a.ip(&["link", "set", "lg-ba0", "up"])?;
        b.ip(&["addr", "add", "192.0.2.2/24", "dev", "lg-bb0"])?;
        b.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            "lg-bb0",
            "nodad",
        ])?;
        b.ip(&["link", "set", "lg-bb0", "up"])?;
        // The mark's policy rule, as a guard would have it: marked packets look up the main
        // table first. Every variant's packets walk the rule list; only the mark variant's
        // match this rule.
        let mark = format!("{MARK:#x}");
        a.ip(&[
            "rule", "add", "fwmark", &mark, "lookup", "main", "pref", "100",
        ])?;
        // A tunnel device for the pin strategy to avoid (no routes: it costs the lookup one
        // more interface, like a real tunnel that is up).
        a.ip(&["tuntap", "add", "dev", PIN_TUN, "mode", "tun"])?;
        a.ip(&["link", "set", PIN_TUN, "up"])?;
        Ok(Pair { a, b })
    }
}

/// CPU time this thread has used (user and system, which includes the softirq work its
/// system calls do), in seconds. Other processes on the machine do not add to it.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn set_rcvbuf(fd: &impl AsRawFd) {
    // SAFETY: the value pointer and length describe one c_int for the call's duration.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&RCVBUF as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A counting receiver on a blocking quinn-udp socket with GRO: the ground truth of what
/// arrived.
struct Counter {
    datagrams: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Counter {
    fn start(ns: &Netns, bind: SocketAddr) -> anyhow::Result<Counter> {
        let socket = ns.run(move || -> io::Result<std::net::UdpSocket> {
            let s = std::net::UdpSocket::bind(bind)?;
            s.set_read_timeout(Some(Duration::from_millis(20)))?;
            set_rcvbuf(&s);
            Ok(s)
        })??;
        let state = UdpSocketState::new((&socket).into())?;
        let datagrams = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (datagrams.clone(), stop.clone());
        // The socket already belongs to the receiver's namespace; the thread need not enter it.
        let thread = std::thread::spawn(move || {
            let gro = state.gro_segments().max(1);
            let mut storage = vec![vec![0u8; 65_535 * gro.min(2)]; quinn_udp::BATCH_SIZE];
            let mut meta = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
            while !s.load(Ordering::Relaxed) {
                let mut bufs: Vec<IoSliceMut<'_>> =
                    storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                if let Ok(n) = state.recv(UdpSockRef::from(&socket), &mut bufs, &mut meta) {
                    let count: usize = meta[..n]
                        .iter()
                        .map(|m| m.len.div_ceil(m.stride.max(1)))
                        .sum();
                    d.fetch_add(count as u64, Ordering::Relaxed);
                }
            }
        });
        Ok(Counter {
            datagrams,
            stop,
            thread: Some(thread),
        })
    }

    fn count(&self) -> u64 {
        self.datagrams.load(Ordering::Relaxed)
    }

    /// Waits until nothing more arrives (at most 200 ms): the datagrams still in flight at the
    /// end of a window belong to it.
    fn settle(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut last = self.count();
        loop {
            std::thread::sleep(Duration::from_millis(3));
            let now = self.count();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A plain quinn-udp socket driven by tokio, as quinn itself drives one: the baseline.
struct Plain {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

impl Plain {
    fn bind(addr: SocketAddr) -> io::Result<Plain> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std).into())?;
        Ok(Plain {
            io: tokio::net::UdpSocket::from_std(std)?,
            state,
        })
    }

    async fn send(&self, t: &Transmit<'_>) -> io::Result<()> {
        self.io
            .async_io(Interest::WRITABLE, || {
                self.state.try_send(UdpSockRef::from(&self.io), t)
            })
            .await
    }

    async fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.io
            .async_io(Interest::READABLE, || {
                self.state.recv(UdpSockRef::from(&self.io), bufs, meta)
            })
            .await
    }
}

/// Datagrams per second and per CPU-second of the sending thread, per variant and round;
/// (sent, received) per variant; GSO segments per batch.
/// Queue-full retries and dropped datagrams of the loopguard sockets (their counters).
type SendSamples = (
    Vec<Vec<f64>>,
    Vec<Vec<f64>>,
    Vec<(u64, u64)>,
    usize,
    u64,
    u64,
);

/// The send variants, in the order of the report.
/// `pin` is the Linux pin strategy (`PinOutside`): its own `sendmsg` with the interface
/// index, on the path it resolved from the live tables.
/// `try_send` is (c) through the non-blocking API: `try_send`, and `writable()` when told
/// `WouldBlock` (a full socket buffer).
const SEND_VARIANTS: [&str; 6] = [
    "baseline",
    "explicit_src",
    "resolved_src",
    "mark",
    "pin",
    "try_send",
];

/// Sends for `window` per variant per round; returns datagrams/s per variant and round (as
/// counted by the sender) and what the receiver counted.
pub fn send(pair: &Pair, rounds: usize, window: Duration) -> anyhow::Result<Value> {
    let dst = SocketAddr::new(RECEIVER.into(), 9000);
    let counter = Counter::start(&pair.b, dst)?;
    let result = pair.a.run(|| -> anyhow::Result<SendSamples> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let any: SocketAddr = (Ipv4Addr::UNSPECIFIED, 0).into();
            let plain = Plain::bind(any)?;
            let pinning = SocketFactory::new(FixedSource {
                source: SENDER.into(),
                fail: false,
            });
            let explicit = pinning.bind(any)?;
            let resolved = pinning.bind(any)?;
            let mark_factory = SocketFactory::new(LinuxMark::new(GuardConfig::default()));
            let marked = mark_factory
                .bind(any)
                .context("a socket under the mark strategy")?;
            let pin_factory = SocketFactory::new(
                loopguard::PinOutside::for_tunnel_named(PIN_TUN)
                    .context("the pin strategy over the bench's tunnel device")?,
            );
            let pinned = pin_factory
                .bind(any)
                .context("a socket under the pin strategy")?;
            let segments = GSO_SEGMENTS
                .min(plain.state.max_gso_segments())
                .min(explicit.max_gso_segments());
            let payload = vec![0x5au8; PAYLOAD * segments];
            let mut pps = vec![Vec::new(); SEND_VARIANTS.len()];
            let mut per_cpu = vec![Vec::new(); SEND_VARIANTS.len()];
            let mut delivered = vec![(0u64, 0u64); SEND_VARIANTS.len()];
            // One warm-up window each (ARP, page faults, socket buffers), not recorded.
            for round in 0..=rounds {
                for k in 0..SEND_VARIANTS.len() {
                    // Rotate the order, so no variant always follows the same one.
                    let v = (k + round) % SEND_VARIANTS.len();
                    let before = counter.settle();
                    let start = Instant::now();
                    let cpu = thread_cpu();
                    let mut sent = 0u64;
                    while start.elapsed() < window {
                        let ok = match v {
                            0 => {
                                let t = Transmit {
                                    destination: dst,
                                    ecn: None,
                                    contents: &payload,
                                    segment_size: (segments > 1).then_some(PAYLOAD),
                                    src_ip: None,
                                };
                                plain.send(&t).await.is_ok()
                            }
                            _ => {
                                let socket: &UdpSocket = match v {
                                    1 => &explicit,
                                    2 | 5 => &resolved,
                                    3 => &marked,
                                    _ => &pinned,
                                };
                                let mut d =
                                    DatagramOut::new(dst, &payload).with_segment_size(PAYLOAD);
                                if v == 1 {
                                    d = d.with_src(SENDER.into());
                                }
                                if v == 5 {
                                    try_send_when_ready(socket, &d).await.is_ok()
                                } else {
                                    socket.send(&d).await.is_ok()
                                }
                            }
                        };
                        if ok {
                            sent += segments as u64;
                        }
                    }
                    let elapsed = start.elapsed().as_secs_f64();
                    let cpu = thread_cpu() - cpu;
                    let received = counter.settle() - before;
                    if round > 0 {
                        pps[v].push(sent as f64 / elapsed);
                        per_cpu[v].push(sent as f64 / cpu);
                        delivered[v].0 += sent;
                        delivered[v].1 += received;
                    }
                }
            }
            let c = pinning.counters();
            let m = mark_factory.counters();
            let p = pin_factory.counters();
            let retries = c.queue_full_retries + m.queue_full_retries + p.queue_full_retries;
            let dropped = c.dropped() + m.dropped() + p.dropped();
            Ok((pps, per_cpu, delivered, segments, retries, dropped))
        })
    })??;
    drop(counter);
    let (pps, per_cpu, delivered, segments, retries, dropped) = result;
    let base = median(&pps[0]);
    let mut out = json!({
        "baseline_pps": round(base, 0),
        "baseline_gbps": round(base * (PAYLOAD * 8) as f64 / 1e9, 3),
        "baseline_pps_per_cpu_second": round(median(&per_cpu[0]), 0),
        "gso_segments": segments,
        "payload_bytes": PAYLOAD,
    });
    for (v, name) in SEND_VARIANTS.iter().enumerate().skip(1) {
        let r = Ratio::of(&pps[v], &pps[0]);
        out[format!("{name}_ratio")] = round(r.median, 3);
        out[format!("{name}_spread")] = r.spread();
        out[format!("{name}_pps")] = round(median(&pps[v]), 0);
        // The same per CPU-second of the sender: what other processes' load cannot skew.
        let c = Ratio::of(&per_cpu[v], &per_cpu[0]);
        out[format!("{name}_cpu_ratio")] = round(c.median, 3);
        out[format!("{name}_cpu_spread")] = c.spread();
    }
    out["delivered"] = delivered_json(&delivered, &SEND_VARIANTS);
    out["loopguard_queue_full_retries"] = json!(retries);
    out["loopguard_dropped"] = json!(dropped);
    Ok(out)
}

/// `try_send`, waiting on `writable()` while it answers `WouldBlock`, as an event loop does.
async fn try_send_when_ready(
    socket: &UdpSocket,
    datagram: &DatagramOut<'_>,
) -> Result<(), loopguard::Error> {
    loop {
        match socket.try_send(datagram) {
            Err(loopguard::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                socket.writable().await?
            }
            result => return result,
        }
    }
}

fn delivered_json(delivered: &[(u64, u64)], names: &[&str]) -> Value {
    let mut d = json!({});
    for (v, name) in names.iter().enumerate() {
        let (sent, got) = delivered[v];
        d[*name] = round(got as f64 / sent.max(1) as f64, 4);
    }
    d
}

/// Datagrams per second and per CPU-second of the receiving thread, per variant and round;
/// datagrams per filled buffer.
type RecvSamples = (Vec<Vec<f64>>, Vec<Vec<f64>>, f64);

/// The receive variants.
const RECV_VARIANTS: [&str; 3] = ["baseline", "loopguard", "mark"];

/// A plain sender blasts GSO batches at the port of the variant being measured; the variant
/// receives with GRO for `window`. Datagrams/s received per variant and round.
pub fn recv(pair: &Pair, rounds: usize, window: Duration) -> anyhow::Result<Value> {
    let port = Arc::new(AtomicU16::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (port, stop) = (port.clone(), stop.clone());
        let socket = pair.a.run(|| std::net::UdpSocket::bind((SENDER, 0)))??;
        std::thread::spawn(move || {
            let Ok(state) = UdpSocketState::new((&socket).into()) else {
                return;
            };
            let segments = GSO_SEGMENTS.min(state.max_gso_segments());
            let payload = vec![0xa5u8; PAYLOAD * segments];
            while !stop.load(Ordering::Relaxed) {
                let p = port.load(Ordering::Relaxed);
                if p == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let t = Transmit {
                    destination: SocketAddr::new(RECEIVER.into(), p),
                    ecn: None,
                    contents: &payload,
                    segment_size: (segments > 1).then_some(PAYLOAD),
                    src_ip: None,
                };
                let _ = state.try_send(UdpSockRef::from(&socket), &t);
            }
        })
    };
    let result = pair.b.run(|| -> anyhow::Result<RecvSamples> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let at = |p: u16| -> SocketAddr { (RECEIVER, p).into() };
            let plain = Plain::bind(at(9001))?;
            let pinning = SocketFactory::new(FixedSource {
                source: RECEIVER.into(),
                fail: false,
            });
            let guarded = pinning.bind(at(9002))?;
            let marked =
                SocketFactory::new(LinuxMark::new(GuardConfig::default())).bind(at(9003))?;
            set_rcvbuf(&plain.io);
            set_rcvbuf(&guarded);
            set_rcvbuf(&marked);
            // The plain quinn-udp socket coalesces (GRO); loopguard's are asked to, so the
            // comparison is of the same receive path.
            guarded.set_gro(true)?;
            marked.set_gro(true)?;
            let batch = quinn_udp::BATCH_SIZE;
            let mut storage = vec![vec![0u8; 65_535]; batch];
            let mut meta = vec![RecvMeta::default(); batch];
            let mut lg_meta = vec![loopguard::RecvMeta::default(); batch];
            let mut pps = vec![Vec::new(); RECV_VARIANTS.len()];
            let mut per_cpu = vec![Vec::new(); RECV_VARIANTS.len()];
            let (mut reads, mut datagrams) = (0u64, 0u64);
            for round in 0..=rounds {
                for k in 0..RECV_VARIANTS.len() {
                    let v = (k + round) % RECV_VARIANTS.len();
                    port.store(9001 + v as u16, Ordering::Relaxed);
                    // Let the previous variant's datagrams in flight land where they belong.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let start = Instant::now();
                    let cpu = thread_cpu();
                    let mut got = 0u64;
                    let deadline = window + Duration::from_secs(1);
                    while start.elapsed() < window {
                        let mut bufs: Vec<IoSliceMut<'_>> =
                            storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                        let n = match v {
                            0 => tokio::time::timeout(deadline, plain.recv(&mut bufs, &mut meta))
                                .await
                                .context("nothing arrived")??,
                            _ => {
                                let s = if v == 1 { &guarded } else { &marked };
                                let n =
                                    tokio::time::timeout(deadline, s.recv(&mut bufs, &mut lg_meta))
                                        .await
                                        .context("nothing arrived")??;
                                for (m, l) in meta.iter_mut().zip(&lg_meta[..n]) {
                                    m.len = l.len;
                                    m.stride = l.stride;
                                }
                                n
                            }
                        };
                        let count: u64 = meta[..n]
                            .iter()
                            .map(|m| m.len.div_ceil(m.stride.max(1)) as u64)
                            .sum();
                        got += count;
                        if round > 0 {
                            reads += n as u64;
                            datagrams += count;
                        }
                    }
                    if round > 0 {
                        pps[v].push(got as f64 / start.elapsed().as_secs_f64());
                        per_cpu[v].push(got as f64 / (thread_cpu() - cpu));
                    }
                }
            }
            Ok((pps, per_cpu, datagrams as f64 / reads.max(1) as f64))
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let (pps, per_cpu, per_read) = result??;
    let base = median(&pps[0]);
    let mut out = json!({
        "baseline_pps": round(base, 0),
        "baseline_gbps": round(base * (PAYLOAD * 8) as f64 / 1e9, 3),
        "baseline_pps_per_cpu_second": round(median(&per_cpu[0]), 0),
        "datagrams_per_buffer": round(per_read, 2),
    });
    for (v, name) in RECV_VARIANTS.iter().enumerate().skip(1) {
        let r = Ratio::of(&pps[v], &pps[0]);
        out[format!("{name}_ratio")] = round(r.median, 3);
        out[format!("{name}_spread")] = r.spread();
        out[format!("{name}_pps")] = round(median(&pps[v]), 0);
        let c = Ratio::of(&per_cpu[v], &per_cpu[0]);
        out[format!("{name}_cpu_ratio")] = round(c.median, 3);
        out[format!("{name}_cpu_spread")] = c.spread();
    }
    Ok(out)
}

/// Cold resolution, interleaved per round: one `RTM_GETROUTE` with the mark over an open
/// netlink socket (`RouteResolver::lookup`), the same plus the interface's name
/// (`RouteResolver::route_get`, two requests), `route_get` opening a socket per lookup, and
/// `ip route get DST mark M` as a process. Runs in `ns` when given (to the peer's address),
/// else in the current namespace (to 127.0.0.1: a read-only lookup every namespace answers).
pub fn cold_resolution(ns: Option<&Netns>, rounds: usize, quick: bool) -> anyhow::Result<Value> {
    let dst: IpAddr = if ns.is_some() {
        RECEIVER.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    let work = move || -> anyhow::Result<Value> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut resolver = loopguard::os::linux::RouteResolver::new()?;
        let (netlink_n, fresh_n, process_n) = if quick { (500, 50, 4) } else { (2000, 200, 10) };
        let mark = format!("{MARK:#x}");
        let dst_text = dst.to_string();
        let ip_route_get = || -> anyhow::Result<()> {
            let out = std::process::Command::new("ip")
                .args(["route", "get", &dst_text, "mark", &mark])
                .output()
                .context("running `ip route get`")?;
            anyhow::ensure!(out.status.success(), "`ip route get {dst_text}` failed");
            Ok(())
        };
        let per_call = |start: Instant, n: usize| start.elapsed().as_secs_f64() * 1e6 / n as f64;
        let (mut one, mut named, mut fresh, mut process) = (vec![], vec![], vec![], vec![]);
        // Warm-up: the first lookups fault pages in, the first `ip` run loads the binary.
        resolver.route_get(dst, Some(MARK))?;
        ip_route_get()?;
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..netlink_n {
                std::hint::black_box(resolver.lookup(dst, Some(MARK))?);
            }
            one.push(per_call(start, netlink_n));
            let start = Instant::now();
            for _ in 0..netlink_n {
                std::hint::black_box(resolver.route_get(dst, Some(MARK))?);
            }
            named.push(per_call(start, netlink_n));
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..fresh_n {
                    loopguard::os::linux::route_get(dst, Some(MARK)).await?;
                }
                Ok::<_, loopguard::os::linux::RoutesError>(())
            })?;
            fresh.push(per_call(start, fresh_n));
            let start = Instant::now();
            for _ in 0..process_n {
                ip_route_get()?;
            }
            process.push(per_call(start, process_n));
        }
        // The pin strategy's cold resolution: a full snapshot of links, routes and addresses
        // over its netlink socket, then the selection.
        let pin = match ns {
            Some(_) => {
                use loopguard::Strategy;
                let strategy = loopguard::PinOutside::for_tunnel_named(PIN_TUN)?;
                let mut samples = vec![];
                for _ in 0..rounds {
                    let start = Instant::now();
                    for _ in 0..fresh_n {
                        std::hint::black_box(strategy.resolve(dst)?);
                    }
                    samples.push(per_call(start, fresh_n));
                }
                json!(round(median(&samples), 2))
            }
            None => Value::Null,
        };
        let speedup = Ratio::of(&process, &one);
        Ok(json!({
            "pin_snapshot_and_select": pin,
            "netlink": round(median(&one), 2),
            "netlink_with_name": round(median(&named), 2),
            "netlink_new_socket": round(median(&fresh), 2),
            "ip_process": round(median(&process), 1),
            "speedup": round(speedup.median, 1),
            "speedup_spread": [round(speedup.min, 1), round(speedup.max, 1)],
            "destination": dst_text,
            "mark": MARK,
        }))
    };
    match ns {
        Some(ns) => ns.run(work)?,
        None => work(),
    }
}

/// Whether this process may build namespaces (root and `ip`), or why not.
pub fn privileges() -> Result<(), String> {
    loopguard_lab::lab_available()
}
