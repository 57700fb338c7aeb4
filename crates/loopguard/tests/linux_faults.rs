//! Faults mid-stream, in labs of network namespaces: the uplink goes down and up, the default
//! routes are deleted, the source address the cache points to is removed, the send queue
//! overflows. A guarded UDP flow runs through each fault, the client's TUN owns `0.0.0.0/0`
//! and `::/0` (loopguard's `TunnelRoutes`), and the lab's counter reads the TUN throughout:
//! not one guarded datagram may enter it. Times are printed, never asserted (noisy machines),
//! except generous bounds that prove "no hang".
#![cfg(target_os = "linux")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{block_on, GuardedLab};
use loopguard::os::linux::{RouteResolver, RoutesError};
use loopguard::{
    Counters, DatagramOut, Error, GuardConfig, LinuxMark, Path, ProtectionError, ResolveError,
    SocketFactory, Strategy, UdpSocket,
};

/// Runs `ip ARGS` in the lab's client namespace, panicking with the command on failure.
fn client_ip(g: &GuardedLab, args: &[&str]) -> String {
    g.lab
        .client()
        .ip(args)
        .unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")))
}

/// What one send returned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sent {
    Ok,
    HostUnreachable {
        destination: SocketAddr,
        text: String,
    },
    Io(String),
}

/// How long a step waits for the flow to show what it expects: generous, since the wait ends
/// as soon as the flow shows it; a step that runs out is a failure of the test.
const STEP_BOUND: Duration = Duration::from_secs(15);

/// How many sends each target makes inside a window before a step ends it: enough to see
/// what every send in that state returns.
const SENDS_PER_WINDOW: usize = 20;

/// One step of a fault script, run by the flow while it sends.
enum Step {
    /// Wait until every target has been echoed since the last mark (the flow runs, or runs
    /// again).
    UntilEchoed,
    /// Wait until every target has made [`SENDS_PER_WINDOW`] sends since the last mark.
    UntilSent,
    /// Note the moment (printed and used to split the flow's record).
    Mark(&'static str),
    /// `ip -n CLIENT ARGS`, which must succeed.
    Ip(Vec<String>),
}

fn ip(args: &str) -> Step {
    Step::Ip(args.split_whitespace().map(str::to_owned).collect())
}

/// What a guarded flow saw.
#[derive(Debug, Default)]
struct FlowLog {
    /// (target index, when, what `send` returned).
    sends: Vec<(usize, Instant, Sent)>,
    /// (target index, when, the local address the echo was sent to).
    echoes: Vec<(usize, Instant, Option<IpAddr>)>,
    marks: Vec<(&'static str, Instant)>,
    counters: Counters,
    /// The path the factory held for each target before the flow started.
    paths_before: Vec<Option<Path>>,
}

impl FlowLog {
    fn mark(&self, name: &str) -> Instant {
        self.marks.iter().find(|(n, _)| *n == name).unwrap().1
    }

    fn sends_between(&self, target: usize, from: Instant, to: Instant) -> Vec<&Sent> {
        self.sends
            .iter()
            .filter(|(t, at, _)| *t == target && *at >= from && *at < to)
            .map(|(_, _, s)| s)
            .collect()
    }

    fn echoes_between(&self, target: usize, from: Instant, to: Instant) -> usize {
        self.echoes
            .iter()
            .filter(|(t, at, _)| *t == target && *at >= from && *at < to)
            .count()
    }

    fn first_echo_after(&self, target: usize, from: Instant) -> Option<Duration> {
        self.echoes
            .iter()
            .find(|(t, at, _)| *t == target && *at >= from)
            .map(|(_, at, _)| *at - from)
    }

    fn end(&self) -> Instant {
        self.marks.last().unwrap().1 + Duration::from_secs(3600)
    }

    fn summary(&self, target: usize, from: Instant, to: Instant) -> String {
        let sends = self.sends_between(target, from, to);
        let ok = sends.iter().filter(|s| ***s == Sent::Ok).count();
        let unreachable = sends
            .iter()
            .filter(|s| matches!(s, Sent::HostUnreachable { .. }))
            .count();
        let mut io: Vec<&str> = sends
            .iter()
            .filter_map(|s| match s {
                Sent::Io(e) => Some(e.as_str()),
                _ => None,
            })
            .collect();
        let io_count = io.len();
        io.dedup();
        format!(
            "{} sends: {ok} ok, {unreachable} HostUnreachable, {io_count} I/O errors {io:?}; {} echoes",
            sends.len(),
            self.echoes_between(target, from, to)
        )
    }
}

/// Runs a guarded UDP flow from the client namespace to every target (one socket per target,
/// a datagram to each every 4 ms) while `steps` run, and records every send and echo.
fn flow<S: Strategy>(
    g: &GuardedLab,
    strategy: impl FnOnce() -> S + Send,
    targets: &[SocketAddr],
    steps: Vec<Step>,
) -> FlowLog {
    let ns = g.lab.client().name().to_owned();
    let targets = targets.to_vec();
    g.lab
        .client()
        .run(move || {
            block_on(async move {
                let factory = SocketFactory::new(strategy());
                let mut log = FlowLog {
                    paths_before: targets
                        .iter()
                        .map(|t| factory.path_for(*t).ok().flatten())
                        .collect(),
                    ..FlowLog::default()
                };
                let log_sends = Arc::new(Mutex::new(Vec::new()));
                let log_echoes = Arc::new(Mutex::new(Vec::new()));
                let stop = Arc::new(AtomicBool::new(false));
                let started = Instant::now();
                let mut tasks = Vec::new();
                for (i, dst) in targets.iter().copied().enumerate() {
                    let any: SocketAddr = match dst {
                        SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
                        SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
                    };
                    let socket = Arc::new(factory.bind(any).expect("guarded socket"));
                    tasks.push(tokio::spawn({
                        let (socket, stop, sends) =
                            (socket.clone(), stop.clone(), log_sends.clone());
                        async move {
                            let mut n = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                n += 1;
                                let result =
                                    socket.send(&DatagramOut::new(dst, &n.to_be_bytes())).await;
                                let sent = match result {
                                    Ok(()) => Sent::Ok,
                                    Err(e @ Error::HostUnreachable { .. }) => {
                                        let Error::HostUnreachable { destination } = e else {
                                            unreachable!()
                                        };
                                        Sent::HostUnreachable {
                                            destination,
                                            text: e.to_string(),
                                        }
                                    }
                                    Err(e) => Sent::Io(format!("{e} ({:?})", io_code(&e))),
                                };
                                sends.lock().unwrap().push((i, Instant::now(), sent));
                                tokio::time::sleep(Duration::from_millis(4)).await;
                            }
                        }
                    }));
                    tasks.push(tokio::spawn({
                        let (socket, echoes) = (socket.clone(), log_echoes.clone());
                        async move {
                            let mut buf = vec![0u8; 65_535 * socket.gro_segments()];
                            while let Ok(meta) = socket.recv_from(&mut buf).await {
                                let at = Instant::now();
                                let mut e = echoes.lock().unwrap();
                                for _ in meta.datagrams(&buf) {
                                    e.push((i, at, meta.dst_ip));
                                }
                            }
                        }
                    }));
                }
                for step in steps {
                    let since = log.marks.last().map_or(started, |(_, at)| *at);
                    let reached = |t: usize| match step {
                        Step::UntilEchoed => log_echoes
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|(i, at, _)| *i == t && *at >= since),
                        _ => {
                            log_sends
                                .lock()
                                .unwrap()
                                .iter()
                                .filter(|(i, at, _)| *i == t && *at >= since)
                                .count()
                                >= SENDS_PER_WINDOW
                        }
                    };
                    match step {
                        Step::UntilEchoed | Step::UntilSent => {
                            let deadline = Instant::now() + STEP_BOUND;
                            while !(0..targets.len()).all(reached) {
                                assert!(
                                    Instant::now() < deadline,
                                    "the flow did not get there within {STEP_BOUND:?}"
                                );
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                        }
                        Step::Mark(name) => log.marks.push((name, Instant::now())),
                        Step::Ip(args) => {
                            let out = tokio::process::Command::new("ip")
                                .arg("-n")
                                .arg(&ns)
                                .args(&args)
                                .output()
                                .await
                                .unwrap();
                            assert!(
                                out.status.success(),
                                "ip {}: {}",
                                args.join(" "),
                                String::from_utf8_lossy(&out.stderr)
                            );
                        }
                    }
                }
                log.marks.push(("end", Instant::now()));
                stop.store(true, Ordering::Relaxed);
                for t in tasks {
                    t.abort();
                }
                log.sends = std::mem::take(&mut *log_sends.lock().unwrap());
                log.echoes = std::mem::take(&mut *log_echoes.lock().unwrap());
                log.counters = factory.counters();
                log
            })
        })
        .unwrap()
}

fn io_code(e: &Error) -> Option<i32> {
    match e {
        Error::Io(e) => e.raw_os_error(),
        _ => None,
    }
}

fn family(target: SocketAddr) -> &'static str {
    if target.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The uplink goes down (its routes go with it), comes back up, and what a DHCP client or
/// NetworkManager would do is done by hand: the default routes (and the IPv6 address, which
/// the kernel flushes on down) are put back. While down, marked datagrams find no route:
/// they fail closed, nothing enters the TUN. Once up, the flow resumes.
#[test]
fn uplink_down_then_up_fails_closed_then_resumes_with_nothing_in_the_tun() {
    if loopguard_lab::skip_unprivileged("uplink_down_then_up_fails_closed_then_resumes") {
        return;
    }
    let g = GuardedLab::build("fdown");
    let targets = g.udp_targets();
    let config = g.config;
    let log = flow(
        &g,
        move || LinuxMark::new(config),
        &targets,
        vec![
            Step::UntilEchoed,
            Step::Mark("down"),
            ip("link set lg-up0 down"),
            Step::Mark("down done"),
            Step::UntilSent,
            Step::Mark("up"),
            ip("link set lg-up0 up"),
            ip("-6 addr replace 2001:db8:1::2/64 dev lg-up0 nodad"),
            ip("-4 route replace default via 192.0.2.1 dev lg-up0"),
            ip("-6 route replace default via 2001:db8:1::1 dev lg-up0"),
            Step::Mark("routes back"),
            Step::UntilEchoed,
        ],
    );
    let (down, down_done, up, back, end) = (
        log.mark("down"),
        log.mark("down done"),
        log.mark("up"),
        log.mark("routes back"),
        log.end(),
    );
    println!(
        "link down took {:?}; up and routes back took {:?}",
        down_done - down,
        back - up
    );
    for (i, target) in targets.iter().enumerate() {
        println!(
            "{} {target}: before down: {}",
            family(*target),
            log.summary(i, log.sends[0].1, down)
        );
        println!("  while down:   {}", log.summary(i, down_done, up));
        println!("  after up:     {}", log.summary(i, back, end));
        println!(
            "  first echo {:?} after `link set up`, {:?} after the routes were back",
            log.first_echo_after(i, up),
            log.first_echo_after(i, back)
        );
        assert!(
            log.echoes_between(i, log.sends[0].1, down) > 0,
            "{target}: never ran"
        );
        for s in log.sends_between(i, down_done, up) {
            assert!(
                !matches!(s, Sent::Io(_)),
                "{target}: while down, a send failed with something other than HostUnreachable: {s:?}"
            );
        }
        assert!(
            log.first_echo_after(i, back).is_some(),
            "{target}: the flow did not resume after the uplink came back"
        );
    }
    let (watched, all) = g.tun_packets();
    println!("counters: {:?}", log.counters);
    println!("TUN: {watched} packets to the server, {all} packets in all");
    assert_eq!(watched, 0, "guarded datagrams entered the TUN");
    let attempted = log.sends.len() as u64;
    assert_eq!(
        log.counters.datagrams_sent + log.counters.dropped(),
        attempted
    );
}

/// The default routes vanish mid-stream: guarded sends fail closed with the typed error naming
/// the destination, each one counted as `dropped_no_route`, nothing enters the TUN. When the
/// routes return, the flow resumes.
#[test]
fn default_routes_deleted_mid_stream_fail_closed_with_host_unreachable() {
    if loopguard_lab::skip_unprivileged("default_routes_deleted_mid_stream_fail_closed") {
        return;
    }
    let g = GuardedLab::build("fnoroute");
    let targets = g.udp_targets();
    let config = g.config;
    let log = flow(
        &g,
        move || LinuxMark::new(config),
        &targets,
        vec![
            Step::UntilEchoed,
            Step::Mark("delete"),
            ip("-4 route del default"),
            ip("-6 route del default"),
            Step::Mark("deleted"),
            Step::UntilSent,
            Step::Mark("restore"),
            ip("-4 route add default via 192.0.2.1 dev lg-up0"),
            ip("-6 route add default via 2001:db8:1::1 dev lg-up0"),
            Step::Mark("restored"),
            Step::UntilEchoed,
        ],
    );
    let (delete, deleted, restore, restored, end) = (
        log.mark("delete"),
        log.mark("deleted"),
        log.mark("restore"),
        log.mark("restored"),
        log.end(),
    );
    let unreachable_total = log
        .sends
        .iter()
        .filter(|(_, _, s)| matches!(s, Sent::HostUnreachable { .. }))
        .count() as u64;
    for (i, target) in targets.iter().enumerate() {
        println!(
            "{} {target}: before: {}",
            family(*target),
            log.summary(i, log.sends[0].1, delete)
        );
        println!(
            "  without default route: {}",
            log.summary(i, deleted, restore)
        );
        println!("  after restore: {}", log.summary(i, restored, end));
        println!(
            "  first echo {:?} after the routes were restored",
            log.first_echo_after(i, restored)
        );
        let failed = log.sends_between(i, deleted, restore);
        assert!(!failed.is_empty());
        for s in &failed {
            match s {
                Sent::HostUnreachable { destination, text } => {
                    assert_eq!(destination, target);
                    assert!(text.contains(&target.to_string()), "{text}");
                }
                other => panic!("{target}: without a route a send returned {other:?}"),
            }
        }
        if let Some(Sent::HostUnreachable { text, .. }) = failed.first() {
            println!("  error: {text}");
        }
        assert!(
            log.first_echo_after(i, restored).is_some(),
            "{target}: did not resume"
        );
    }
    let (watched, all) = g.tun_packets();
    println!("counters: {:?}", log.counters);
    println!(
        "HostUnreachable returned {unreachable_total} times; dropped_no_route {}; TUN: {watched} \
         packets to the server, {all} in all",
        log.counters.dropped_no_route
    );
    assert_eq!(log.counters.dropped_no_route, unreachable_total);
    assert_eq!(log.counters.dropped_send_error, 0);
    assert_eq!(
        log.counters.datagrams_sent + log.counters.dropped(),
        log.sends.len() as u64
    );
    assert_eq!(watched, 0, "guarded datagrams entered the TUN");
}

/// Every resolution a strategy made, in order: the destination and the path found.
type Resolutions = Arc<Mutex<Vec<(IpAddr, Option<Path>)>>>;

/// A strategy that pins sources on Linux: the mark protects, and the path is the kernel's own
/// answer for a marked lookup (`ip route get DST mark M`): its `prefsrc` and output device.
/// What an application that wants to know (and stamp) its source would write.
struct KernelPinned {
    mark: LinuxMark,
    resolver: Mutex<RouteResolver>,
    /// Every resolution, in order.
    resolved: Resolutions,
}

impl KernelPinned {
    fn new(config: GuardConfig, resolved: Resolutions) -> Self {
        KernelPinned {
            mark: LinuxMark::new(config),
            resolver: Mutex::new(RouteResolver::new().expect("rtnetlink socket")),
            resolved,
        }
    }
}

impl Strategy for KernelPinned {
    fn protect(&self, socket: &socket2::Socket) -> Result<(), ProtectionError> {
        self.mark.protect(socket)
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        let mark = self.mark.config().mark();
        let answer = self
            .resolver
            .lock()
            .unwrap()
            .lookup(destination, Some(mark));
        let result = match answer {
            Ok(route) => match route.source {
                Some(source) => Ok(Path {
                    source,
                    interface: route.interface_index,
                }),
                None => Err(ResolveError::NoRoute),
            },
            Err(RoutesError::Unreachable { .. }) => Err(ResolveError::NoRoute),
            Err(e) => Err(ResolveError::Io(std::io::Error::other(e.to_string()))),
        };
        self.resolved
            .lock()
            .unwrap()
            .push((destination, result.as_ref().ok().copied()));
        result
    }
}

/// The uplink has a second address; the flow runs pinned to the source the kernel chose;
/// that address is deleted mid-stream. The send path must notice (the kernel's error for a
/// vanished source), resolve once more, and go on from the other address.
#[test]
fn the_cached_source_address_removed_mid_stream_is_re_resolved() {
    if loopguard_lab::skip_unprivileged("the_cached_source_address_removed_mid_stream") {
        return;
    }
    let g = GuardedLab::build("fsrc");
    // Keep the second IPv4 address when the first (primary) one goes: without this the
    // kernel deletes the secondaries of a deleted primary. Set explicitly: a namespace
    // inherits the host's value.
    g.lab
        .client()
        .sysctl("net.ipv4.conf.lg-up0.promote_secondaries", "1")
        .unwrap();
    g.lab
        .client()
        .sysctl("net.ipv4.conf.all.promote_secondaries", "1")
        .unwrap();
    client_ip(&g, &["addr", "add", "192.0.2.3/24", "dev", "lg-up0"]);
    client_ip(
        &g,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::3/64",
            "dev",
            "lg-up0",
            "nodad",
        ],
    );
    let targets = g.udp_targets();
    let config = g.config;

    // Which source does the kernel pick for each family? That is the one to delete.
    let pinned: Vec<Path> = g
        .lab
        .client()
        .run({
            let targets = targets.clone();
            move || {
                let s = KernelPinned::new(config, Arc::default());
                targets
                    .iter()
                    .map(|t| s.resolve(t.ip()).expect("a path"))
                    .collect()
            }
        })
        .unwrap();
    let prefix = |ip: IpAddr| if ip.is_ipv4() { 24 } else { 64 };
    let mut steps = vec![Step::UntilEchoed, Step::Mark("delete")];
    for p in &pinned {
        steps.push(Step::Ip(
            [
                "addr".to_owned(),
                "del".to_owned(),
                format!("{}/{}", p.source, prefix(p.source)),
                "dev".to_owned(),
                "lg-up0".to_owned(),
            ]
            .to_vec(),
        ));
    }
    steps.push(Step::Mark("deleted"));
    // Resumed, and then long enough to see that every later send succeeds.
    steps.push(Step::UntilEchoed);
    steps.push(Step::Mark("resumed"));
    steps.push(Step::UntilSent);
    let resolved = Arc::new(Mutex::new(Vec::new()));
    let log = flow(
        &g,
        {
            let resolved = resolved.clone();
            move || KernelPinned::new(config, resolved)
        },
        &targets,
        steps,
    );
    let (delete, deleted, end) = (log.mark("delete"), log.mark("deleted"), log.end());
    println!("resolutions: {:?}", resolved.lock().unwrap());
    for (i, target) in targets.iter().enumerate() {
        let old = log.paths_before[i].expect("a pinned path").source;
        assert_eq!(old, pinned[i].source);
        let after: Vec<Option<IpAddr>> = log
            .echoes
            .iter()
            .filter(|(t, at, _)| *t == i && *at >= deleted)
            .map(|(_, _, d)| *d)
            .collect();
        let new = after.last().copied().flatten();
        println!(
            "{} {target}: pinned to {old}; before: {}",
            family(*target),
            log.summary(i, log.sends[0].1, delete)
        );
        println!(
            "  after deleting {old}: {}; echoes now to {new:?}, first after {:?}",
            log.summary(i, deleted, end),
            log.first_echo_after(i, deleted)
        );
        assert!(
            log.echoes_between(i, log.sends[0].1, delete) > 0,
            "{target}: never ran"
        );
        assert!(new.is_some(), "{target}: the flow did not resume");
        assert_ne!(
            new,
            Some(old),
            "{target}: still answered on the deleted address"
        );
        for s in log.sends_between(i, deleted, end) {
            assert_eq!(*s, Sent::Ok, "{target}: a send failed after re-resolution");
        }
    }
    // Every resolution after the first per target found the other address.
    let (watched, all) = g.tun_packets();
    println!("counters: {:?}", log.counters);
    println!("TUN: {watched} packets to the server, {all} in all");
    assert!(
        log.counters.sources_re_resolved >= targets.len() as u64,
        "each target re-resolved at least once: {:?}",
        log.counters
    );
    assert_eq!(
        log.counters.datagrams_sent + log.counters.dropped(),
        log.sends.len() as u64
    );
    assert_eq!(watched, 0, "guarded datagrams entered the TUN");

    // What the kernel says to a send from a source that is gone (the error the send path
    // must take for "resolve again"): one raw sendmsg per family, marked, from the deleted
    // address, as quinn-udp sends it (IP_PKTINFO / IPV6_PKTINFO).
    let mark = config.mark();
    let codes: Vec<(IpAddr, Option<i32>)> = g
        .lab
        .client()
        .run({
            let (targets, pinned) = (targets.clone(), pinned.clone());
            move || {
                targets
                    .iter()
                    .zip(&pinned)
                    .map(|(t, p)| (p.source, raw_send_from(p.source, *t, mark)))
                    .collect()
            }
        })
        .unwrap();
    for (src, code) in &codes {
        let text = code.map(|c| std::io::Error::from_raw_os_error(c).to_string());
        println!("raw sendmsg from the deleted {src}: errno {code:?} {text:?}");
        assert!(
            matches!(
                *code,
                Some(libc::EINVAL | libc::EADDRNOTAVAIL | libc::ENETUNREACH)
            ),
            "the send path resolves again on EINVAL, EADDRNOTAVAIL and ENETUNREACH only"
        );
    }
}

/// One `sendmsg` of one byte to `dst` from `src` (stamped with `IP_PKTINFO` or
/// `IPV6_PKTINFO`, as quinn-udp does) on a socket carrying `mark`; the errno if it failed.
fn raw_send_from(src: IpAddr, dst: SocketAddr, mark: u32) -> Option<i32> {
    let domain = socket2::Domain::for_address(dst);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None).unwrap();
    socket.set_mark(mark).unwrap();
    let addr = socket2::SockAddr::from(dst);
    let payload = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // u64s: aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: every pointer in `msg` points into locals that outlive the sendmsg call, the
    // control buffer is aligned and large enough for one pktinfo message, and the data is
    // written within the space CMSG_SPACE reserved for it.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = addr.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = addr.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        match src {
            IpAddr::V4(a) => {
                let size = std::mem::size_of::<libc::in_pktinfo>() as u32;
                msg.msg_controllen = libc::CMSG_SPACE(size) as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
            }
            IpAddr::V6(a) => {
                let size = std::mem::size_of::<libc::in6_pktinfo>() as u32;
                msg.msg_controllen = libc::CMSG_SPACE(size) as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size) as _;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
            }
        }
        if libc::sendmsg(socket.as_raw_fd(), &msg, 0) < 0 {
            return std::io::Error::last_os_error().raw_os_error();
        }
    }
    None
}

/// Sets `IP_RECVERR` (and `IPV6_RECVERR`): without it, Linux reports a datagram dropped by a
/// full queue discipline (`ENOBUFS`) to nobody; `sendmsg` returns success.
fn set_recverr(socket: &UdpSocket, v6: bool) {
    let on: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    };
    // SAFETY: `on` lives across the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

fn recverr_is_set(socket: &UdpSocket) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes and `len` holds the size of `v`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && v != 0
}

/// `Udp: ... SndbufErrors` of the calling thread's namespace.
fn sndbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "SndbufErrors")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// What one blast saw.
#[derive(Debug)]
struct Blast {
    recverr: bool,
    attempted: u64,
    ok: u64,
    errors: Vec<String>,
    slowest_send: Duration,
    elapsed: Duration,
    echoed: u64,
    counters: Counters,
    kernel_sndbuf_errors: u64,
}

/// The uplink's queue holds one packet and drains at 1 Mbit/s (tbf), the socket's send buffer
/// is as small as the kernel allows, and a sender blasts datagrams as fast as `send` returns.
/// Every `send` returns (a generous bound proves no hang), and every datagram is either
/// counted as sent or as dropped. Run twice: as quinn-udp leaves the socket (no `IP_RECVERR`:
/// the kernel hides queue drops from the sender), and with `IP_RECVERR`, where `ENOBUFS`
/// surfaces and the bounded retries show.
#[test]
fn an_exhausted_send_queue_never_hangs_and_every_datagram_is_counted() {
    if loopguard_lab::skip_unprivileged("an_exhausted_send_queue_never_hangs") {
        return;
    }
    let g = GuardedLab::build("fbuf");
    let tc = g.lab.client().exec(
        "tc",
        &[
            "qdisc", "add", "dev", "lg-up0", "root", "tbf", "rate", "1mbit", "burst", "1600",
            "limit", "1600",
        ],
    );
    tc.expect("tc qdisc add tbf (iproute2)");
    println!(
        "qdisc: {}",
        g.lab
            .client()
            .exec("tc", &["qdisc", "show", "dev", "lg-up0"])
            .unwrap()
            .trim()
    );
    let target = g.udp_targets()[0];
    let config = g.config;
    const ATTEMPTS: u64 = 1000;
    let blasts: Vec<Blast> = g
        .lab
        .client()
        .run(move || {
            block_on(async move {
                let mut out = Vec::new();
                for recverr in [false, true] {
                    let factory = SocketFactory::new(LinuxMark::new(config));
                    let socket = factory.bind("0.0.0.0:0".parse().unwrap()).unwrap();
                    let sock = socket2::SockRef::from(&socket);
                    sock.set_send_buffer_size(1).unwrap();
                    let quinn_set_it = recverr_is_set(&socket);
                    if recverr {
                        set_recverr(&socket, false);
                    }
                    println!(
                        "socket: SO_SNDBUF {} bytes, IP_RECVERR as quinn-udp left it: {quinn_set_it}, now: {}",
                        sock.send_buffer_size().unwrap(),
                        recverr_is_set(&socket)
                    );
                    let kernel_before = sndbuf_errors();
                    let payload = vec![0x5a; 1200];
                    let (mut ok, mut errors, mut slowest) = (0, Vec::new(), Duration::ZERO);
                    let start = Instant::now();
                    for _ in 0..ATTEMPTS {
                        let t = Instant::now();
                        let result = tokio::time::timeout(
                            Duration::from_secs(10),
                            socket.send(&DatagramOut::new(target, &payload)),
                        )
                        .await
                        .expect("a send hung for 10 s");
                        slowest = slowest.max(t.elapsed());
                        match result {
                            Ok(()) => ok += 1,
                            Err(e) => errors.push(format!("{e} ({:?})", io_code(&e))),
                        }
                    }
                    let elapsed = start.elapsed();
                    let mut echoed = 0;
                    let mut buf = vec![0u8; 65_535 * socket.gro_segments()];
                    while let Ok(Ok(meta)) =
                        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await
                    {
                        echoed += meta.datagrams(&buf).count() as u64;
                    }
                    out.push(Blast {
                        recverr,
                        attempted: ATTEMPTS,
                        ok,
                        errors,
                        slowest_send: slowest,
                        elapsed,
                        echoed,
                        counters: socket.counters(),
                        kernel_sndbuf_errors: sndbuf_errors() - kernel_before,
                    });
                }
                out
            })
        })
        .unwrap();
    for b in &blasts {
        let mut kinds = b.errors.clone();
        kinds.dedup();
        println!(
            "IP_RECVERR {}: attempted {}, send returned Ok {} and Err {} {kinds:?}; slowest send \
             {:?}, all in {:?}; echoed {}; kernel UDP SndbufErrors +{}",
            b.recverr,
            b.attempted,
            b.ok,
            b.errors.len(),
            b.slowest_send,
            b.elapsed,
            b.echoed,
            b.kernel_sndbuf_errors
        );
        println!(
            "  counters: datagrams_sent {}, sends {}, queue_full_retries {}, dropped_send_error \
             {}, dropped_no_route {}",
            b.counters.datagrams_sent,
            b.counters.sends,
            b.counters.queue_full_retries,
            b.counters.dropped_send_error,
            b.counters.dropped_no_route
        );
        assert_eq!(
            b.counters.datagrams_sent + b.counters.dropped(),
            b.attempted
        );
        assert_eq!(b.counters.datagrams_sent, b.ok);
        assert_eq!(b.counters.dropped_send_error, b.errors.len() as u64);
        assert!(b.echoed <= b.ok);
    }
    let with = blasts.iter().find(|b| b.recverr).unwrap();
    assert!(
        with.counters.queue_full_retries > 0,
        "with IP_RECVERR the full queue must show as retries: {with:?}"
    );
    let (watched, all) = g.tun_packets();
    println!("TUN: {watched} packets to the server, {all} in all");
    assert_eq!(watched, 0, "guarded datagrams entered the TUN");
}
