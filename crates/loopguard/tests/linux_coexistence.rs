//! Coexistence with another VPN in the same namespace: a wg-quick style tunnel with its own
//! mark, table and rules, and a program that ORs bits of its own into packet marks (as
//! kube-proxy does with 0x4000).
#![cfg(target_os = "linux")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::block_on;
use loopguard::os::linux::TunnelRoutes;
use loopguard::{DatagramOut, GuardConfig, LinuxMark, SocketFactory};
use loopguard_lab::{EchoServers, Lab, Transport, TunCounter};

/// The other VPN: wg-quick's own numbers.
const WG_MARK: u32 = 0xca6c;
const WG_TABLE: &str = "51820";
const WG_TUN: &str = "lg-wg0";
/// The bit kube-proxy ORs into the mark of packets it wants masqueraded.
const KUBE_MASQ_BIT: u32 = 0x4000;

/// How long a socket that should be echoed waits: generous, as the wait ends with the echo.
const ECHO_BOUND: Duration = Duration::from_secs(10);
/// How long a socket that should not be echoed waits before it is judged unanswered (its
/// datagram's arrival in a TUN is checked separately, so a short wait cannot pass by luck).
const SILENCE: Duration = Duration::from_millis(800);

/// Sends one datagram from a UDP socket carrying `mark` and returns whether it was echoed
/// within `wait`.
async fn echoed_with_mark(mark: Option<u32>, dst: SocketAddr, wait: Duration) -> bool {
    let domain = socket2::Domain::for_address(dst);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None).unwrap();
    if let Some(mark) = mark {
        socket.set_mark(mark).unwrap();
    }
    socket.set_nonblocking(true).unwrap();
    let socket = tokio::net::UdpSocket::from_std(socket.into()).unwrap();
    socket.send_to(b"coexist", dst).await.unwrap();
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, socket.recv_from(&mut buf)).await,
        Ok(Ok((7, _)))
    )
}

fn rules(lab: &Lab) -> String {
    let v4 = lab.client().ip(&["-4", "rule", "show"]).unwrap();
    let v6 = lab.client().ip(&["-6", "rule", "show"]).unwrap();
    format!("{v4}{v6}")
}

fn wg_rules(rules: &str) -> Vec<&str> {
    rules.lines().filter(|l| l.contains(WG_TABLE)).collect()
}

#[test]
fn a_wg_quick_tunnel_and_loopguard_keep_their_own_rules_and_sockets() {
    if loopguard_lab::skip_unprivileged(
        "a_wg_quick_tunnel_and_loopguard_keep_their_own_rules_and_sockets",
    ) {
        return;
    }
    let lab = Lab::build("cx").expect("lab");
    let client = lab.client();
    // The other VPN, set up the way wg-quick does it, capturing the server's IPv6 prefix.
    client
        .ip(&["tuntap", "add", "dev", WG_TUN, "mode", "tun"])
        .unwrap();
    client
        .ip(&["link", "set", WG_TUN, "addrgenmode", "none"])
        .unwrap();
    client.ip(&["link", "set", WG_TUN, "up"]).unwrap();
    client
        .ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:2::/64",
            "dev",
            WG_TUN,
            "table",
            WG_TABLE,
        ])
        .unwrap();
    client
        .ip(&[
            "-6", "rule", "add", "not", "fwmark", "0xca6c", "table", WG_TABLE, "priority", "32765",
        ])
        .unwrap();
    client
        .ip(&[
            "-6",
            "rule",
            "add",
            "table",
            "main",
            "suppress_prefixlength",
            "0",
            "priority",
            "32764",
        ])
        .unwrap();
    let wg_before = rules(&lab);

    // loopguard's tunnel captures the server's IPv4 prefix; applied twice, as a restart would.
    let config = GuardConfig::default();
    let ours = ["198.51.100.0/24".parse().unwrap()];
    let tun = lab.tun();
    for _ in 0..2 {
        client
            .run(|| block_on(TunnelRoutes::new(config).apply(tun, &ours)))
            .unwrap()
            .expect("apply");
    }
    assert_eq!(
        wg_rules(&rules(&lab)),
        wg_rules(&wg_before),
        "apply touched wg-quick's rules"
    );

    let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
    let v4 = echo.udp_addr(lab.server_v4().into()).unwrap();
    let v6 = echo.udp_addr(lab.server_v6().into()).unwrap();
    let watched: Vec<IpAddr> = lab.server_addrs().to_vec();
    let ours_tun = TunCounter::start(client, lab.tun(), watched.clone()).unwrap();
    let wg_tun = TunCounter::start(client, WG_TUN, watched).unwrap();

    let results = client
        .run(move || {
            block_on(async move {
                let factory = SocketFactory::new(LinuxMark::new(config));
                let guarded = factory.bind("0.0.0.0:0".parse().unwrap()).unwrap();
                guarded
                    .send(&DatagramOut::new(v4, b"coexist"))
                    .await
                    .unwrap();
                let mut buf = [0u8; 64];
                let loopguard_v4 = tokio::time::timeout(ECHO_BOUND, guarded.recv_from(&mut buf))
                    .await
                    .is_ok_and(|r| r.is_ok());
                let kube = config.mark() | KUBE_MASQ_BIT;
                assert_ne!(
                    kube,
                    config.mark(),
                    "the bit must change the mark to test anything"
                );
                [
                    ("loopguard socket to the IPv4 server", loopguard_v4, true),
                    (
                        "wg socket to the IPv6 server",
                        echoed_with_mark(Some(WG_MARK), v6, ECHO_BOUND).await,
                        true,
                    ),
                    (
                        "loopguard mark with kube-proxy's bit",
                        echoed_with_mark(Some(kube), v4, ECHO_BOUND).await,
                        true,
                    ),
                    (
                        "plain socket to the IPv4 server",
                        echoed_with_mark(None, v4, SILENCE).await,
                        false,
                    ),
                    (
                        "plain socket to the IPv6 server",
                        echoed_with_mark(None, v6, SILENCE).await,
                        false,
                    ),
                ]
            })
        })
        .unwrap();
    let (ours_in, wg_in) = (ours_tun.stop(), wg_tun.stop());
    let v4_ip = IpAddr::from(lab.server_v4());
    let v6_ip = IpAddr::from(lab.server_v6());
    println!(
        "loopguard TUN: {} to the v4 server, {} to v6; wg TUN: {} to v6, {} to v4",
        ours_in.count_to(v4_ip, Transport::Udp),
        ours_in.count_to(v6_ip, Transport::Udp),
        wg_in.count_to(v6_ip, Transport::Udp),
        wg_in.count_to(v4_ip, Transport::Udp),
    );
    for (what, echoed, expected) in results {
        println!("{what}: echoed {echoed} (expected {expected})");
        assert_eq!(echoed, expected, "{what}");
    }
    // Only the plain sockets entered a tunnel, each the one that captures its destination.
    assert_eq!(
        ours_in.count_to(v4_ip, Transport::Udp),
        1,
        "loopguard's TUN"
    );
    assert_eq!(wg_in.count_to(v6_ip, Transport::Udp), 1, "wg's TUN");
    assert_eq!(
        ours_in.count_to(v6_ip, Transport::Udp) + wg_in.count_to(v4_ip, Transport::Udp),
        0
    );

    client
        .run(|| block_on(TunnelRoutes::new(config).remove()))
        .unwrap()
        .expect("remove");
    let after = rules(&lab);
    assert_eq!(
        wg_rules(&after),
        wg_rules(&wg_before),
        "remove touched wg-quick's rules"
    );
    assert!(
        !after.contains("proto 76"),
        "loopguard left rules behind:\n{after}"
    );
    let wg_routes = client
        .ip(&["-6", "route", "show", "table", WG_TABLE])
        .unwrap();
    assert!(
        wg_routes.contains(WG_TUN),
        "remove touched wg-quick's routes: {wg_routes}"
    );
    drop(echo);
}

/// Another VPN's rule set, as the program installs it (both families).
struct Program {
    name: &'static str,
    /// `ip rule add` arguments, in the program's order.
    rules: &'static [&'static [&'static str]],
    /// The program's routing table.
    table: &'static str,
    /// The program's bypass mark and mask: what a client built on loopguard next to it uses.
    bypass: (u32, u32),
    /// A loopguard priority before the program's own rules, for the bypass mark.
    priority: u32,
    /// Whether the program's table holds a default (an exit node) even in the default-mark
    /// case, capturing loopguard's marked traffic.
    exit_node: bool,
}

const WG_QUICK: Program = Program {
    name: "wg-quick",
    rules: &[
        &[
            "table",
            "main",
            "suppress_prefixlength",
            "0",
            "pref",
            "32764",
        ],
        &["not", "fwmark", "0xca6c", "table", "51820", "pref", "32765"],
    ],
    table: "51820",
    bypass: (0xca6c, u32::MAX),
    priority: GuardConfig::DEFAULT_PRIORITY,
    exit_node: false,
};

const TAILSCALE: Program = Program {
    name: "Tailscale",
    rules: &[
        &[
            "fwmark",
            "0x80000/0xff0000",
            "table",
            "main",
            "pref",
            "5210",
        ],
        &[
            "fwmark",
            "0x80000/0xff0000",
            "table",
            "default",
            "pref",
            "5230",
        ],
        &["fwmark", "0x80000/0xff0000", "unreachable", "pref", "5250"],
        &["table", "52", "pref", "5270"],
    ],
    table: "52",
    bypass: (0x80000, 0xff0000),
    priority: 5000,
    exit_node: true,
};

const MULLVAD: Program = Program {
    name: "Mullvad",
    rules: &[
        &[
            "table",
            "main",
            "suppress_prefixlength",
            "0",
            "pref",
            "5208",
        ],
        &[
            "not",
            "fwmark",
            "0x6d6f6c65",
            "table",
            "1836018789",
            "pref",
            "5209",
        ],
    ],
    table: "1836018789",
    bypass: (0x6d6f_6c65, u32::MAX),
    priority: 5000,
    exit_node: false,
};

const NETBIRD: Program = Program {
    name: "NetBird",
    rules: &[
        &["table", "main", "suppress_prefixlength", "0", "pref", "100"],
        &["not", "fwmark", "0x1bd00", "table", "7120", "pref", "110"],
    ],
    table: "7120",
    bypass: (0x1bd00, u32::MAX),
    priority: 50,
    exit_node: false,
};

/// The other program's TUN.
const OTHER_TUN: &str = "lg-oth0";

/// The other program's rules and routes, as `ip` prints them (without the `linkdown`
/// flag, which follows the TUN's carrier: up while a reader has the TUN open).
fn other_state(lab: &Lab, p: &Program) -> String {
    let c = lab.client();
    let rules = rules(lab);
    let own: Vec<&str> = rules.lines().filter(|l| !l.contains("proto 76")).collect();
    format!(
        "{}\n{}{}",
        own.join("\n"),
        c.ip(&["-4", "route", "show", "table", p.table]).unwrap(),
        c.ip(&["-6", "route", "show", "table", p.table]).unwrap()
    )
    .replace(" linkdown", "")
}

/// Guarded UDP and TCP round trips to both servers: `[udp4, udp6, tcp4, tcp6]` echoed.
async fn guarded_round_trips(
    config: GuardConfig,
    udp: [SocketAddr; 2],
    tcp: [SocketAddr; 2],
) -> [bool; 4] {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let factory = SocketFactory::new(LinuxMark::new(config));
    let mut out = [false; 4];
    for (i, dst) in udp.into_iter().enumerate() {
        let any: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .unwrap();
        let s = factory.bind(any).unwrap();
        if s.send(&DatagramOut::new(dst, b"coexist")).await.is_err() {
            continue;
        }
        let mut buf = [0u8; 64];
        out[i] = tokio::time::timeout(Duration::from_millis(800), s.recv_from(&mut buf))
            .await
            .is_ok_and(|r| r.is_ok());
    }
    for (i, dst) in tcp.into_iter().enumerate() {
        let attempt = async {
            let mut s = factory.connect(dst).await.ok()?.into_inner();
            s.write_all(b"coexist").await.ok()?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.ok()?;
            Some(&buf == b"coexist")
        };
        out[2 + i] = tokio::time::timeout(Duration::from_secs(2), attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or(false);
    }
    out
}

/// One program beside loopguard, with loopguard's default mark (`explicit: false`) or with
/// the program's own bypass mark.
fn beside(p: &Program, explicit: bool) {
    let lab = Lab::build("co").expect("lab");
    let client = lab.client();
    for step in [
        &["tuntap", "add", "dev", OTHER_TUN, "mode", "tun"][..],
        &["link", "set", OTHER_TUN, "addrgenmode", "none"],
        &["link", "set", OTHER_TUN, "up"],
    ] {
        client.ip(step).unwrap();
    }
    for family in ["-4", "-6"] {
        for rule in p.rules {
            let mut args = vec![family, "rule", "add"];
            args.extend_from_slice(rule);
            client.ip(&args).unwrap();
        }
    }
    // With the bypass mark, or as an exit node, the program captures everything; otherwise
    // only its own network (documentation prefixes away from the lab's server).
    let full = explicit || p.exit_node;
    let (v4, v6) = if full {
        ("default", "default")
    } else {
        ("192.0.2.128/25", "2001:db8:77::/48")
    };
    client
        .ip(&["-4", "route", "add", v4, "dev", OTHER_TUN, "table", p.table])
        .unwrap();
    client
        .ip(&["-6", "route", "add", v6, "dev", OTHER_TUN, "table", p.table])
        .unwrap();
    let before = other_state(&lab, p);

    let config = if explicit {
        GuardConfig::builder()
            .mark(p.bypass.0)
            .mask(p.bypass.1)
            .priority(p.priority)
            .build()
            .unwrap()
    } else {
        GuardConfig::default()
    };
    let tun = lab.tun();
    let prefixes = ["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    let mut reports = Vec::new();
    for _ in 0..2 {
        reports.push(
            client
                .run(|| block_on(TunnelRoutes::new(config).apply(tun, &prefixes)))
                .unwrap()
                .unwrap_or_else(|e| panic!("{} explicit={explicit}: apply: {e}", p.name)),
        );
    }
    assert_eq!(
        other_state(&lab, p),
        before,
        "{}: apply changed its rules or routes",
        p.name
    );

    let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
    let servers = lab.server_addrs();
    let udp = [
        echo.udp_addr(servers[0]).unwrap(),
        echo.udp_addr(servers[1]).unwrap(),
    ];
    let tcp = [
        echo.tcp_addr(servers[0]).unwrap(),
        echo.tcp_addr(servers[1]).unwrap(),
    ];
    let ours = TunCounter::start(client, tun, servers.to_vec()).unwrap();
    let theirs = TunCounter::start(client, OTHER_TUN, servers.to_vec()).unwrap();
    let echoed = client
        .run(|| block_on(guarded_round_trips(config, udp, tcp)))
        .unwrap();
    let doctor = client
        .run(|| block_on(TunnelRoutes::new(config).doctor(Some(tun))))
        .unwrap()
        .expect("doctor");
    let (ours, theirs) = (ours.stop(), theirs.stop());
    let count = |s: &loopguard_lab::TunSnapshot| {
        servers
            .iter()
            .map(|ip| s.count_to(*ip, Transport::Udp) + s.count_to(*ip, Transport::Tcp))
            .sum::<u64>()
    };
    let captured = !explicit && p.exit_node;
    println!(
        "{} ({config}): echoed [udp4, udp6, tcp4, tcp6] = {echoed:?}; packets in loopguard's \
         TUN {}, in {}'s TUN {}",
        p.name,
        count(&ours),
        p.name,
        count(&theirs)
    );
    for f in &doctor.findings {
        println!("  doctor: {} {} {}", f.severity, f.code, f.message);
    }
    for f in &reports[1].findings {
        println!("  apply: {} {} {}", f.severity, f.code, f.message);
    }
    assert_eq!(
        count(&ours),
        0,
        "{}: guarded packets in loopguard's TUN",
        p.name
    );
    if captured {
        // The exit node takes loopguard's marked traffic: nothing echoed, all of it in the
        // other tunnel, and both apply and doctor name the rule.
        assert_eq!(echoed, [false; 4], "{}", p.name);
        assert!(count(&theirs) > 0, "{}", p.name);
    } else {
        assert_eq!(echoed, [true; 4], "{}", p.name);
        assert_eq!(count(&theirs), 0, "{}: guarded packets in its TUN", p.name);
    }

    // doctor reports exactly what exists.
    let mut codes: Vec<(&str, Option<u32>)> = doctor
        .findings
        .iter()
        .filter(|f| f.code != "other_owner")
        .map(|f| (f.code, f.rule_priority))
        .collect();
    codes.sort();
    codes.dedup();
    let mut expected: Vec<(&str, Option<u32>)> = Vec::new();
    if explicit {
        expected.push(("mark_collision", None));
    }
    if captured {
        expected.push(("captured_by_foreign_rule", Some(5270)));
        expected.push(("unmarked_misses_tunnel", Some(5270)));
    }
    expected.sort();
    assert_eq!(
        codes, expected,
        "{} explicit={explicit}: {:#?}",
        p.name, doctor.findings
    );
    assert!(!doctor.has_errors());
    let owners: Vec<&str> = doctor.owners.iter().map(|o| o.name()).collect();
    assert_eq!(owners, [p.name], "{}", p.name);
    let apply_codes: Vec<&str> = reports[1].findings.iter().map(|f| f.code).collect();
    if captured {
        assert_eq!(
            apply_codes,
            ["captured_by_foreign_rule", "unmarked_misses_tunnel"].repeat(2),
            "{}",
            p.name
        );
    } else {
        assert!(apply_codes.is_empty(), "{}: {apply_codes:?}", p.name);
    }

    let removed = client
        .run(|| block_on(TunnelRoutes::new(config).remove()))
        .unwrap()
        .expect("remove");
    assert_eq!(
        (removed.rules_removed, removed.routes_removed),
        (4, 4),
        "{}",
        p.name
    );
    assert_eq!(
        other_state(&lab, p),
        before,
        "{}: remove changed its rules or routes",
        p.name
    );
    assert!(!rules(&lab).contains("proto 76"), "{}", p.name);
    drop(echo);
}

#[test]
fn beside_wg_quick_with_the_default_and_its_own_mark() {
    if loopguard_lab::skip_unprivileged("beside_wg_quick_with_the_default_and_its_own_mark") {
        return;
    }
    beside(&WG_QUICK, false);
    beside(&WG_QUICK, true);
}

#[test]
fn beside_tailscale_with_the_default_and_its_own_mark() {
    if loopguard_lab::skip_unprivileged("beside_tailscale_with_the_default_and_its_own_mark") {
        return;
    }
    beside(&TAILSCALE, false);
    beside(&TAILSCALE, true);
}

#[test]
fn beside_mullvad_with_the_default_and_its_own_mark() {
    if loopguard_lab::skip_unprivileged("beside_mullvad_with_the_default_and_its_own_mark") {
        return;
    }
    beside(&MULLVAD, false);
    beside(&MULLVAD, true);
}

#[test]
fn beside_netbird_with_the_default_and_its_own_mark() {
    if loopguard_lab::skip_unprivileged("beside_netbird_with_the_default_and_its_own_mark") {
        return;
    }
    beside(&NETBIRD, false);
    beside(&NETBIRD, true);
}
