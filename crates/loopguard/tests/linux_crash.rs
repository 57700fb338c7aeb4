//! A tunnel client built on loopguard that owns a non-persistent TUN (as tun-rs makes it by
//! default) is killed with SIGKILL: the kernel deletes the TUN and every route through it.
//! The last-resort `unreachable default` routes loopguard keeps in the tunnel's table make
//! the surviving rules refuse unmarked traffic instead of sending it out of the uplink.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::block_on;
use loopguard::os::linux::TunnelRoutes;
use loopguard::GuardConfig;
use loopguard_lab::{EchoServers, Lab};

/// This test's name: the child is this same test binary, running only this test.
const TEST: &str = "a_sigkilled_client_that_owned_its_tun_leaves_unmarked_traffic_refused";
/// Set in the child's environment: run the tunnel client instead of the test.
const CHILD: &str = "LOOPGUARD_CRASH_TEST_CHILD";
/// The client's TUN, created by the child and gone with it.
const TUN: &str = "lg-ctun0";

/// Creates TUN `name`, not persistent: it lives as long as the descriptor.
fn open_tun(name: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain open of a device node; the descriptor is owned below.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // struct ifreq: 16 bytes of name, then the flags (short) in the union.
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is large enough for.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// The child: a minimal tunnel client. Owns its TUN, installs the tunnel's routes, says
/// READY and waits to be killed.
fn client() -> ! {
    let _tun = open_tun(TUN).expect("create the TUN");
    for args in [
        &["link", "set", TUN, "addrgenmode", "none"][..],
        &["link", "set", TUN, "up"],
    ] {
        let ok = Command::new("ip")
            .args(args)
            .status()
            .expect("ip")
            .success();
        assert!(ok, "ip {}", args.join(" "));
    }
    let prefixes = ["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    block_on(TunnelRoutes::new(GuardConfig::default()).apply(TUN, &prefixes)).expect("apply");
    println!("READY");
    loop {
        std::thread::park();
    }
}

/// One unmarked (or marked) UDP datagram to `dst`: `Ok(true)` when echoed, `Ok(false)` when
/// sent but not echoed, `Err` with the kernel's refusal when it could not be sent.
async fn udp(dst: SocketAddr, mark: Option<u32>) -> std::io::Result<bool> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::DGRAM,
        None,
    )?;
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket.into())?;
    socket.send_to(b"crash", dst).await?;
    let mut buf = [0u8; 16];
    Ok(matches!(
        tokio::time::timeout(Duration::from_millis(800), socket.recv_from(&mut buf)).await,
        Ok(Ok((5, _)))
    ))
}

/// A TCP connection from an unmarked socket: the error, or `None` when it connected.
async fn tcp_error(dst: SocketAddr) -> Option<std::io::Error> {
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(dst)).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(std::io::Error::new(ErrorKind::TimedOut, "timed out")),
    }
}

#[test]
fn a_sigkilled_client_that_owned_its_tun_leaves_unmarked_traffic_refused() {
    if std::env::var_os(CHILD).is_some() {
        client();
    }
    if loopguard_lab::skip_unprivileged(TEST) {
        return;
    }
    let lab = Lab::build("ck").expect("lab");
    let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
    let ns = lab.client();

    // 1. The client runs in the lab's client namespace (`ip netns exec` execs it).
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the client did not get ready within 20 s");
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("READY") => break,
            Ok(_) => {}
            Err(e) => panic!("the client ended before it was ready: {e}"),
        }
    }
    for dst in ["198.51.100.2", "2001:db8:2::2"] {
        let route = ns.ip(&["route", "get", dst]).unwrap();
        assert!(route.contains(&format!("dev {TUN}")), "before: {route}");
    }

    // 2. SIGKILL: no clean-up runs; the kernel deletes the TUN with its last descriptor.
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    println!("killed: {:?}", child.wait().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns.ip(&["link", "show", TUN]).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{TUN} still exists 10 s after the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rules = format!(
        "{}{}",
        ns.ip(&["-4", "rule", "show"]).unwrap(),
        ns.ip(&["-6", "rule", "show"]).unwrap()
    );
    let table = GuardConfig::DEFAULT_TABLE.to_string();
    let routes = format!(
        "{}{}",
        ns.ip(&["-4", "route", "show", "table", &table]).unwrap(),
        ns.ip(&["-6", "route", "show", "table", &table]).unwrap()
    );
    println!("after the kill:\n{rules}table {table}:\n{routes}");
    assert_eq!(rules.matches("lookup 19527").count(), 2, "{rules}");
    assert_eq!(routes.matches("unreachable default").count(), 2, "{routes}");
    assert!(!routes.contains(TUN), "{routes}");

    // 3. Unmarked traffic is refused, IPv4 and IPv6, UDP and TCP; marked traffic still
    // leaves by the uplink (so the uplink works and the refusal is the table's doing).
    let before: Vec<_> = lab.server_addrs().iter().map(|a| echo.stats(*a)).collect();
    let mark = GuardConfig::default().mark();
    let results = ns
        .run(|| {
            block_on(async {
                let mut out = Vec::new();
                for ip in lab.server_addrs() {
                    let u = echo.udp_addr(ip).unwrap();
                    let t = echo.tcp_addr(ip).unwrap();
                    let unmarked = udp(u, None).await;
                    let tcp = tcp_error(t).await;
                    let marked = udp(u, Some(mark)).await;
                    out.push((ip, unmarked, tcp, marked));
                }
                out
            })
        })
        .unwrap();
    for (ip, unmarked, tcp, marked) in &results {
        println!("{ip}: unmarked UDP {unmarked:?}, unmarked TCP {tcp:?}, marked UDP {marked:?}");
        // An `unreachable` route: sockets see EHOSTUNREACH (`ip route get`: ENETUNREACH).
        let refused = |e: &std::io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::EHOSTUNREACH | libc::ENETUNREACH)
            )
        };
        assert!(
            unmarked.as_ref().is_err_and(refused),
            "{ip}: unmarked UDP must be refused: {unmarked:?}"
        );
        assert!(
            tcp.as_ref().is_some_and(refused),
            "{ip}: unmarked TCP must be refused: {tcp:?}"
        );
        assert!(
            matches!(marked, Ok(true)),
            "{ip}: marked UDP must echo: {marked:?}"
        );
    }
    // The server saw exactly the marked datagram per address and no connection: nothing
    // unmarked left by the uplink.
    for (ip, was) in lab.server_addrs().iter().zip(before) {
        let now = echo.stats(*ip);
        let leaked = (
            now.udp_datagrams - was.udp_datagrams,
            now.tcp_connections - was.tcp_connections,
        );
        println!("{ip}: reached the server: {leaked:?} (UDP datagrams, TCP connections)");
        assert_eq!(leaked, (1, 0), "{ip}");
    }

    // 4. The control: without the IPv4 last-resort route, the same unmarked datagram
    // leaves by the uplink and is echoed (the leak this guards against).
    ns.ip(&[
        "-4",
        "route",
        "del",
        "unreachable",
        "default",
        "table",
        &table,
        "metric",
        "4294967295",
    ])
    .unwrap();
    let v4 = echo.udp_addr(lab.server_v4().into()).unwrap();
    let leaked = ns.run(|| block_on(udp(v4, None))).unwrap();
    println!("unmarked UDP to {v4} without the last-resort route: {leaked:?}");
    assert!(matches!(leaked, Ok(true)), "{leaked:?}");

    // 5. A clean-up that does not know the configuration removes it all.
    let removed = ns
        .run(|| block_on(TunnelRoutes::new(GuardConfig::default()).remove_all()))
        .unwrap()
        .expect("remove_all");
    println!("remove_all: {removed:?}");
    assert_eq!((removed.rules_removed, removed.routes_removed), (4, 1));
    let routes = ns
        .ip(&["-4", "route", "show", "table", &table])
        .unwrap_or_default();
    assert!(routes.trim().is_empty(), "{routes}");
}
