//! The route keeper (`TunnelRoutes::keep`) against what the kernel and other programs do to a
//! tunnel's set-up over hours: the device going down and up (with and without a reader),
//! `disable_ipv6` toggled, a rename, the device deleted and created again, a firewall reload
//! (`nft flush ruleset`), a sysctl written back, and `apply` moving the tunnel to another
//! device. Throughout, a sender without the mark sends to the server over both families: every
//! datagram of it that reaches the server left through the uplink, and must be 0.
//!
//! Privileged: each test builds its own `lg-` namespaces.
#![cfg(target_os = "linux")]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::block_on;
use ipnet::IpNet;
use loopguard::keeper::{KeepOptions, KeeperEvent, StopReport};
use loopguard::os::linux::{RoutesError, TunnelRoutes};
use loopguard::GuardConfig;
use loopguard_lab::{EchoServers, Lab, Netns, TunCounter};

/// The longest any condition here is waited for; the measured times are printed.
const BOUND: Duration = Duration::from_secs(10);
/// The tunnel's table under the default configuration.
const TABLE: &str = "19527";
/// The UDP port of the server's echo.
const PORT: u16 = 7400;

/// Polls `done` until it holds or [`BOUND`] passes; how long it took.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < BOUND {
        if done() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{what}: not within {BOUND:?}");
}

/// Whether table 19527 has a route of `family` (`-4`/`-6`) through `dev`.
fn routed(ns: &Netns, family: &str, dev: &str) -> bool {
    ns.ip(&[family, "route", "show", "table", TABLE])
        .unwrap_or_default()
        .contains(&format!("dev {dev}"))
}

/// A sender without the mark, one datagram per destination every millisecond: what a
/// tunnel's unmarked traffic does while its set-up is disturbed.
struct Unmarked {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Unmarked {
    fn start(ns: &Netns, targets: Vec<SocketAddr>) -> Unmarked {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let (s, n, r) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&refused));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = ns
            .spawn(move || {
                let v4 = UdpSocket::bind("0.0.0.0:0").unwrap();
                let v6 = UdpSocket::bind("[::]:0").unwrap();
                ready_tx.send(()).unwrap();
                while !s.load(Ordering::Relaxed) {
                    for t in &targets {
                        let socket = if t.is_ipv4() { &v4 } else { &v6 };
                        match socket.send_to(b"unmarked", t) {
                            Ok(_) => n.fetch_add(1, Ordering::Relaxed),
                            Err(_) => r.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    // Pacing, not waiting for a condition: about 1,000 datagrams/s per target.
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap();
        ready_rx.recv_timeout(BOUND).expect("the sender started");
        Unmarked {
            stop,
            sent,
            refused,
            thread: Some(thread),
        }
    }

    /// Stops sending; (sent, refused by the kernel).
    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Unmarked {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How many unmarked datagrams reached the server, counted once everything sent before has
/// arrived: a marked datagram sent last takes the same uplink and router (first in, first
/// out), so once the server has counted it, it has counted every earlier one.
fn leaked(ns: &Netns, echo: &EchoServers, targets: &[SocketAddr]) -> u64 {
    let mark = GuardConfig::default().mark();
    let mut total = 0;
    for t in targets {
        let before = echo.stats(t.ip()).udp_datagrams;
        let target = *t;
        ns.run(move || {
            let socket = UdpSocket::bind(if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })
            .unwrap();
            let value = mark as libc::c_int;
            // SAFETY: the pointer and length describe `value`, alive for the call.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_MARK: {}", std::io::Error::last_os_error());
            socket.send_to(b"marked sentinel", target).unwrap();
        })
        .unwrap();
        wait_until("the marked sentinel reached the server", || {
            echo.stats(t.ip()).udp_datagrams > before
        });
        total += echo.stats(t.ip()).udp_datagrams - 1;
    }
    total
}

/// Stops the sender and asserts that none of its datagrams left through the uplink; (sent,
/// refused by the kernel).
fn assert_none_leaked(
    unmarked: Unmarked,
    ns: &Netns,
    echo: &EchoServers,
    targets: &[SocketAddr],
) -> (u64, u64) {
    let (sent, refused) = unmarked.stop();
    let leaks = leaked(ns, echo, targets);
    println!("unmarked: {sent} sent, {refused} refused by the kernel, {leaks} left by the uplink");
    assert_eq!(leaks, 0, "unmarked datagrams left through the uplink");
    assert!(sent + refused > 0, "the sender sent nothing");
    (sent, refused)
}

/// A keeper running on a thread of the client namespace, its events forwarded as text.
/// One event as the test sees it: its text, and the typed errors a caller can match on.
#[derive(Clone, Debug)]
struct Seen {
    text: String,
    /// The error of a `RepairFailed` event.
    failure: Option<Arc<RoutesError>>,
    /// `RouteKeeper::last_error` right after the event was read.
    last_error: Option<Arc<RoutesError>>,
}

struct RunningKeeper {
    events: mpsc::Receiver<Seen>,
    seen: Vec<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<StopReport>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningKeeper {
    fn start(ns: &Netns, dev: &'static str, prefixes: Vec<IpNet>) -> RunningKeeper {
        let (events_tx, events) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let thread = ns
            .spawn(move || {
                block_on(async move {
                    let routes = TunnelRoutes::new(GuardConfig::default());
                    let (_, mut keeper) = routes
                        .keep(dev, &prefixes, KeepOptions::default())
                        .await
                        .expect("keep");
                    ready_tx.send(()).unwrap();
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            e = keeper.next_event() => match e {
                                Some(e) => {
                                    let failure = match &e {
                                        KeeperEvent::RepairFailed { error, .. } => {
                                            Some(Arc::clone(error))
                                        }
                                        _ => None,
                                    };
                                    let _ = events_tx.send(Seen {
                                        text: e.to_string(),
                                        failure,
                                        last_error: keeper.last_error(),
                                    });
                                }
                                None => break,
                            },
                        }
                    }
                    done_tx.send(keeper.stop().await.expect("stop")).unwrap();
                })
            })
            .unwrap();
        ready_rx.recv_timeout(BOUND).expect("the keeper started");
        RunningKeeper {
            events,
            seen: Vec::new(),
            stop: Some(stop_tx),
            done,
            thread: Some(thread),
        }
    }

    /// Waits for an event whose text contains `needle`.
    fn wait_event(&mut self, needle: &str) -> String {
        self.wait_seen(needle).text
    }

    /// Waits for an event whose text contains `needle`, with its typed errors.
    fn wait_seen(&mut self, needle: &str) -> Seen {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(e) = self.seen.iter().find(|e| e.text.contains(needle)) {
                return e.clone();
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no event {needle:?} within {BOUND:?}: {:?}", self.seen));
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    println!("keeper: {}", e.text);
                    self.seen.push(e);
                }
                Err(_) => panic!("no event {needle:?} within {BOUND:?}: {:?}", self.seen),
            }
        }
    }

    fn stop(mut self) -> StopReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let report = self.done.recv_timeout(BOUND).expect("the keeper stopped");
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        report
    }
}

impl Drop for RunningKeeper {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The lab, the server's echo and the unmarked traffic's targets.
fn lab(tag: &str) -> (Lab, EchoServers, Vec<SocketAddr>) {
    let lab = Lab::build(tag).expect("lab");
    let echo = EchoServers::start(lab.server(), &lab.server_addrs(), PORT).expect("echo");
    let targets = lab
        .server_addrs()
        .iter()
        .map(|ip| echo.udp_addr(*ip).unwrap())
        .collect();
    (lab, echo, targets)
}

fn everything() -> Vec<IpNet> {
    vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
}

/// Takes the TUN down, waits until the kernel has dropped its routes from our table, brings
/// it up, and returns how long the keeper took to put both families back.
fn flap(ns: &Netns, tun: &str) -> Duration {
    ns.ip(&["link", "set", tun, "down"]).unwrap();
    wait_until("the kernel dropped the TUN's routes", || {
        !routed(ns, "-4", tun) && !routed(ns, "-6", tun)
    });
    ns.ip(&["link", "set", tun, "up"]).unwrap();
    wait_until("the keeper put the routes back", || {
        routed(ns, "-4", tun) && routed(ns, "-6", tun)
    })
}

fn device_flap(tag: &str, with_reader: bool) {
    let (lab, echo, targets) = lab(tag);
    let ns = lab.client();
    let tun = lab.tun();
    // A reader gives the TUN a carrier; without one it stays NO-CARRIER, as a client's TUN
    // does between its process opening it and reading from it.
    let reader = with_reader.then(|| TunCounter::start(ns, tun, Vec::new()).expect("reader"));
    let mut keeper = RunningKeeper::start(ns, tun, everything());
    let unmarked = Unmarked::start(ns, targets.clone());
    for round in 0..2 {
        let back = flap(ns, tun);
        println!("round {round}: routes back {back:?} after the TUN came up (target < 1 s)");
        keeper.wait_event("restored IPv4 routes");
    }
    assert_none_leaked(unmarked, ns, &echo, &targets);
    let report = keeper.stop();
    assert!(report.restores >= 2, "{report:?}");
    drop(reader);
    drop(echo);
}

#[test]
fn the_tuns_routes_come_back_after_it_goes_down_and_up_with_a_reader() {
    if loopguard_lab::skip_unprivileged("the_tuns_routes_come_back_after_down_up_reader") {
        return;
    }
    device_flap("kflr", true);
}

#[test]
fn the_tuns_routes_come_back_after_it_goes_down_and_up_without_a_reader() {
    if loopguard_lab::skip_unprivileged("the_tuns_routes_come_back_after_down_up_no_reader") {
        return;
    }
    device_flap("kfln", false);
}

#[test]
fn ipv6_routes_come_back_when_ipv6_is_enabled_again_on_the_tun() {
    if loopguard_lab::skip_unprivileged("ipv6_routes_come_back_when_ipv6_is_enabled_again") {
        return;
    }
    let (lab, echo, targets) = lab("kv6");
    let ns = lab.client();
    let tun = lab.tun();
    let mut keeper = RunningKeeper::start(ns, tun, everything());
    let unmarked = Unmarked::start(ns, targets.clone());
    let key = format!("net.ipv6.conf.{tun}.disable_ipv6");
    ns.sysctl(&key, "1").unwrap();
    wait_until("the kernel dropped the TUN's IPv6 routes", || {
        !routed(ns, "-6", tun)
    });
    let failed = keeper.wait_seen("IPv6 is disabled on network device");
    assert!(
        failed.text.contains("cannot restore IPv6 routes"),
        "{failed:?}"
    );
    // The failure is typed, in the event and in `last_error`: a caller matches on it.
    for error in [&failed.failure, &failed.last_error] {
        assert!(
            matches!(error.as_deref(), Some(RoutesError::Ipv6DisabledOnDevice(d)) if d == tun),
            "{failed:?}"
        );
    }
    assert!(routed(ns, "-4", tun), "IPv4 routes were lost with IPv6");
    // Another repair meanwhile (a rule deleted and restored) fails the same way for IPv6:
    // that failure is not reported again.
    ns.ip(&["-4", "rule", "del", "priority", "32000"]).unwrap();
    keeper.wait_event("restored rules");
    ns.sysctl(&key, "0").unwrap();
    let back = wait_until("the keeper put the IPv6 routes back", || {
        routed(ns, "-6", tun)
    });
    println!("IPv6 routes back {back:?} after disable_ipv6=0 (target < 1 s)");
    let recovered = keeper.wait_seen("every piece is in place again");
    assert!(recovered.last_error.is_none(), "{recovered:?}");
    let reported = keeper
        .seen
        .iter()
        .filter(|e| e.text.contains("IPv6 is disabled"))
        .count();
    assert_eq!(reported, 1, "{:?}", keeper.seen);
    assert_none_leaked(unmarked, ns, &echo, &targets);
    keeper.stop();
}

#[test]
fn a_renamed_tun_is_followed_by_its_index() {
    if loopguard_lab::skip_unprivileged("a_renamed_tun_is_followed_by_its_index") {
        return;
    }
    let (lab, echo, targets) = lab("kren");
    let ns = lab.client();
    let tun = lab.tun();
    let mut keeper = RunningKeeper::start(ns, tun, everything());
    let unmarked = Unmarked::start(ns, targets.clone());
    // The kernel renames only a device that is down.
    ns.ip(&["link", "set", tun, "down"]).unwrap();
    ns.ip(&["link", "set", tun, "name", "lg-tunr"]).unwrap();
    ns.ip(&["link", "set", "lg-tunr", "up"]).unwrap();
    let back = wait_until("the routes on the renamed TUN", || {
        routed(ns, "-4", "lg-tunr") && routed(ns, "-6", "lg-tunr")
    });
    println!("routes back on lg-tunr {back:?} after it came up (target < 1 s)");
    let renamed = keeper.wait_event("was renamed");
    assert!(renamed.contains("\"lg-tunr\""), "{renamed}");
    // A rule deleted after the rename is restored too (repairs do not stop at the device).
    // The `suppress_prefixlength` one: deleting the capturing rule would itself let
    // unmarked traffic out until the repair, which is not what this test counts.
    ns.ip(&["-4", "rule", "del", "priority", "32000"]).unwrap();
    wait_until("the deleted rule restored", || {
        ns.ip(&["-4", "rule", "show"]).unwrap().contains("32000:")
    });
    assert_none_leaked(unmarked, ns, &echo, &targets);
    keeper.stop();
}

#[test]
fn a_tun_deleted_and_created_again_gets_its_routes_and_rules_stay_meanwhile() {
    if loopguard_lab::skip_unprivileged("a_tun_deleted_and_created_again_gets_its_routes") {
        return;
    }
    let (lab, echo, targets) = lab("krec");
    let ns = lab.client();
    let tun = lab.tun();
    let mut keeper = RunningKeeper::start(ns, tun, everything());
    let unmarked = Unmarked::start(ns, targets.clone());
    ns.ip(&["tuntap", "del", "dev", tun, "mode", "tun"])
        .unwrap();
    keeper.wait_event("no network device named");
    // While the device is gone, a deleted rule is still put back: the rules and the
    // last-resort routes are what keep unmarked traffic refused.
    ns.ip(&["-6", "rule", "del", "priority", "32000"]).unwrap();
    wait_until("the deleted rule restored while the TUN is gone", || {
        ns.ip(&["-6", "rule", "show"]).unwrap().contains("32000:")
    });
    ns.ip(&["tuntap", "add", "dev", tun, "mode", "tun"])
        .unwrap();
    ns.ip(&["link", "set", tun, "up"]).unwrap();
    let back = wait_until("the routes on the new TUN", || {
        routed(ns, "-4", tun) && routed(ns, "-6", tun)
    });
    println!("routes back {back:?} after the new TUN came up (target < 1 s)");
    keeper.wait_event("was re-created");
    let (_, refused) = assert_none_leaked(unmarked, ns, &echo, &targets);
    assert!(refused > 0, "nothing was refused while the TUN was gone");
    keeper.stop();
}

#[test]
fn a_firewall_reload_and_a_written_back_sysctl_are_restored() {
    if loopguard_lab::skip_unprivileged("a_firewall_reload_and_a_sysctl_are_restored") {
        return;
    }
    let (lab, _echo, _) = lab("knft");
    let ns = lab.client();
    let mut keeper = RunningKeeper::start(ns, lab.tun(), everything());
    let table = "loopguard_19527";
    let has_table = |ns: &Netns| ns.exec("nft", &["list", "tables"]).unwrap().contains(table);
    assert!(has_table(ns));
    ns.exec("nft", &["flush", "ruleset"]).unwrap();
    let back = wait_until("the nftables table restored", || has_table(ns));
    println!("nftables table back {back:?} after nft flush ruleset");
    keeper.wait_event("restored nftables table");
    ns.sysctl("net.ipv4.fwmark_reflect", "0").unwrap();
    let back = wait_until("fwmark_reflect restored", || {
        ns.exec("sysctl", &["-n", "net.ipv4.fwmark_reflect"])
            .unwrap()
            .trim()
            == "1"
    });
    println!("net.ipv4.fwmark_reflect back {back:?} after it was set to 0");
    keeper.wait_event("restored sysctls");
    keeper.stop();
    assert!(!has_table(ns), "the table outlived the keeper's stop");
}

#[test]
fn moving_the_tunnel_to_another_device_never_leaves_a_gap() {
    if loopguard_lab::skip_unprivileged("moving_the_tunnel_to_another_device_never_leaves_a_gap") {
        return;
    }
    let (lab, echo, targets) = lab("kmov");
    let ns = lab.client();
    ns.ip(&["tuntap", "add", "dev", "lg-tun1", "mode", "tun"])
        .unwrap();
    ns.ip(&["link", "set", "lg-tun1", "up"]).unwrap();
    // The default routes plus 2,000 IPv6 prefixes (a long route list takes a while to
    // move, so a gap would be wide).
    let mut prefixes = everything();
    for i in 0..2000u32 {
        prefixes.push(
            format!("2001:db8:{:x}:{:x}00::/56", 0xf000 + i / 256, i % 256)
                .parse()
                .unwrap(),
        );
    }
    let apply = |dev: &'static str, prefixes: Vec<IpNet>| {
        ns.run(move || {
            block_on(async move {
                let r = TunnelRoutes::new(GuardConfig::default())
                    .apply(dev, &prefixes)
                    .await
                    .expect("apply");
                (r.routes_added, r.routes_removed)
            })
        })
        .unwrap()
    };
    let first = apply("lg-tun0", prefixes.clone());
    assert_eq!(first, (4004, 0), "device and last-resort routes");
    // Only now: before the rules exist, unmarked traffic rightly takes the main table.
    let unmarked = Unmarked::start(ns, targets.clone());
    let moves = [
        apply("lg-tun1", prefixes.clone()),
        apply("lg-tun0", prefixes.clone()),
    ];
    let (sent, refused) = unmarked.stop();
    let leaks = leaked(ns, &echo, &targets);
    ns.run(|| block_on(TunnelRoutes::new(GuardConfig::default()).remove()))
        .unwrap()
        .expect("remove");
    println!(
        "moves (routes added, removed): {moves:?}; unmarked: {sent} sent, {refused} refused \
         (no route), {leaks} left by the uplink"
    );
    assert_eq!(
        moves,
        [(2002, 2002); 2],
        "each apply moved every device route"
    );
    assert_eq!(leaks, 0, "unmarked datagrams left through the uplink");
    assert_eq!(
        refused, 0,
        "the table had a gap: unmarked datagrams were refused"
    );
}

#[test]
fn a_second_keeper_of_the_same_configuration_is_refused_and_changes_nothing() {
    if loopguard_lab::skip_unprivileged("a_second_keeper_of_the_same_configuration_is_refused") {
        return;
    }
    let (lab, _echo, _) = lab("klck");
    let ns = lab.client();
    let tun = lab.tun();
    let keeper = RunningKeeper::start(ns, tun, everything());
    let rules_before = ns.ip(&["rule", "show"]).unwrap();
    let second = ns
        .run(move || {
            block_on(async move {
                TunnelRoutes::new(GuardConfig::default())
                    .keep(tun, &everything(), KeepOptions::default())
                    .await
                    .map(|_| ())
            })
        })
        .unwrap();
    let e = second.expect_err("a second keeper of the same configuration started");
    println!("second keeper: {e}");
    assert!(
        matches!(e, loopguard::os::linux::RoutesError::AlreadyKept { table: 19527, pid: Some(p), .. } if p == std::process::id()),
        "{e:?}"
    );
    assert_eq!(ns.ip(&["rule", "show"]).unwrap(), rules_before);
    // A deleted rule comes back once: one keeper, no duplicate.
    ns.ip(&["-4", "rule", "del", "priority", "32000"]).unwrap();
    wait_until("the deleted rule restored", || {
        ns.ip(&["-4", "rule", "show"]).unwrap().contains("32000:")
    });
    let v4 = ns.ip(&["-4", "rule", "show"]).unwrap();
    assert_eq!(v4.matches("32000:").count(), 1, "{v4}");
    keeper.stop();
    // Stopped: the lock comes free. Not at the same instant: another thread of this test
    // binary forking `ip` meanwhile holds a copy of the lock's descriptor until its child
    // execs (close-on-exec), so wait for it.
    wait_until("the keeper lock free after the stop", || lock_free(ns));
    let again = RunningKeeper::start(ns, tun, everything());
    again.stop();
}

/// Whether the default configuration's keeper lock is free in `ns` (taken for a moment).
fn lock_free(ns: &Netns) -> bool {
    ns.run(|| {
        use std::os::linux::net::SocketAddrExt;
        let name =
            std::os::unix::net::SocketAddr::from_abstract_name(b"loopguard-keeper-table-19527")
                .unwrap();
        std::os::unix::net::UnixListener::bind_addr(&name).is_ok()
    })
    .unwrap()
}

#[test]
fn two_configurations_at_the_same_priority_are_refused_and_remove_takes_only_its_own() {
    if loopguard_lab::skip_unprivileged("two_configurations_at_the_same_priority_are_refused") {
        return;
    }
    let (lab, _echo, _) = lab("kcfg");
    let ns = lab.client();
    let tun = lab.tun();
    let config = |table: u32, priority: u32| {
        GuardConfig::builder()
            .table(table)
            .priority(priority)
            .build()
            .unwrap()
    };
    let apply = move |c: GuardConfig| {
        ns.run(move || {
            block_on(async move { TunnelRoutes::new(c).apply(tun, &everything()).await })
        })
        .unwrap()
    };
    let remove = move |c: GuardConfig| {
        ns.run(move || block_on(async move { TunnelRoutes::new(c).remove().await }))
            .unwrap()
            .expect("remove")
    };
    apply(config(100, 32000)).expect("the first configuration");
    let before = ns.ip(&["rule", "show"]).unwrap();
    let e = apply(config(200, 32000)).expect_err("a second configuration at the same priority");
    println!("table 200 at priority 32000: {e}");
    assert!(e.to_string().contains("table 100"), "{e}");
    assert_eq!(
        ns.ip(&["rule", "show"]).unwrap(),
        before,
        "the refusal changed rules"
    );
    apply(config(200, 31000)).expect("another priority works");
    let removed = remove(config(200, 31000));
    assert_eq!(removed.rules_removed, 4, "{removed:?}");
    assert_eq!(
        ns.ip(&["rule", "show"]).unwrap(),
        before,
        "removing table 200 touched table 100's rules"
    );
    // Two configurations left colliding by an older loopguard: removing one leaves the
    // other's fwmark rule and the suppress rule they share.
    ns.ip(&[
        "-4", "rule", "add", "priority", "32001", "not", "fwmark", "0x1/0x1", "lookup", "300",
        "protocol", "76",
    ])
    .unwrap();
    remove(config(100, 32000));
    let v4 = ns.ip(&["-4", "rule", "show"]).unwrap();
    println!("after removing table 100:\n{v4}");
    assert!(v4.contains("lookup 300"), "{v4}");
    assert!(
        v4.contains("32000:"),
        "the shared suppress rule went:\n{v4}"
    );
    assert!(!v4.contains("lookup 100"), "{v4}");
}
