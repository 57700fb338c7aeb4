//! The `loopguard` binary as a user runs it: help, argument errors, and (as root, inside
//! network namespaces of its own) probes, route look-ups and tunnel routes.
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loopguard_lab::{skip_unprivileged, unique_name, EchoServers, Lab, Netns, TunCounter};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loopguard");

/// Runs `loopguard ARGS`, inside `ns` when given.
fn loopguard(ns: Option<&Netns>, args: &[&str]) -> Output {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns.name(), BIN]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot run loopguard")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(out), stderr(out)))
}

/// Everything in a namespace that a wrong `routes` command could change.
fn state(ns: &Netns) -> String {
    let mut s = String::new();
    for args in [
        &["-4", "rule", "show"][..],
        &["-6", "rule", "show"],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["link", "show"],
    ] {
        s += &ns.ip(args).expect("ip");
    }
    s
}

fn ns(tag: &str) -> Netns {
    Netns::create(&unique_name(tag)).expect("cannot create namespace")
}

/// An up device `name` inside `ns`: one end of a veth pair whose other end (`<name>p`) stays
/// in the namespace too (not every kernel has the dummy driver).
fn link(ns: &Netns, name: &str) {
    let peer = format!("{name}p");
    ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])
        .unwrap();
    ns.ip(&["link", "set", name, "up"]).unwrap();
    ns.ip(&["link", "set", &peer, "up"]).unwrap();
}

#[test]
fn help_works_for_every_command() {
    for cmd in [
        &[][..],
        &["demo"],
        &["probe"],
        &["route"],
        &["route", "get"],
        &["routes"],
        &["routes", "apply"],
        &["routes", "show"],
        &["routes", "remove"],
        &["route", "explain"],
        &["watch"],
        &["bench"],
        &["doctor"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = loopguard(None, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        let usage = format!("Usage: loopguard {}", cmd.join(" "));
        assert!(text.contains(usage.trim_end()), "{args:?}:\n{text}");
    }
    let text = stdout(&loopguard(None, &["probe", "--help"]));
    for option in [
        "--mark",
        "--pin-outside",
        "--count",
        "--size",
        "--timeout-ms",
        "--json",
    ] {
        assert!(
            text.contains(option),
            "probe --help lacks {option}:\n{text}"
        );
    }
    let text = stdout(&loopguard(None, &["route", "get", "--help"]));
    for option in ["--mark", "--mask", "--tunnel", "--pin-outside", "--json"] {
        assert!(
            text.contains(option),
            "route get --help lacks {option}:\n{text}"
        );
    }
    let text = stdout(&loopguard(None, &["routes", "apply", "--help"]));
    for option in [
        "--dev",
        "--route",
        "--mark",
        "--mask",
        "--table",
        "--priority",
    ] {
        assert!(
            text.contains(option),
            "routes apply --help lacks {option}:\n{text}"
        );
    }
}

#[test]
fn bad_arguments_name_the_bad_value_without_privileges() {
    let cases: &[(&[&str], &str)] = &[
        (&["probe", "udp", "192.0.2.1:7", "--mark", "0xzz"], "0xzz"),
        (
            &["probe", "udp", "192.0.2.1:7", "--mark", "4294967296"],
            "4294967296",
        ),
        (&["probe", "udp", "192.0.2.1:7", "--mark", "0"], "mark 0"),
        (&["probe", "udp", "192.0.2.1:0"], "192.0.2.1:0"),
        (&["probe", "udp", "192.0.2.1"], "192.0.2.1"),
        (&["probe", "icmp", "192.0.2.1:7"], "icmp"),
        (&["probe", "tcp", "192.0.2.1:7", "--count", "0"], "0"),
        (&["route", "get", "192.0.2.300"], "192.0.2.300"),
        (&["route", "get", "192.0.2.1", "--mark", "0"], "mark 0"),
        (&["routes", "apply", "--dev", "lo"], "--route"),
        (
            &[
                "routes",
                "apply",
                "--dev",
                "lo",
                "--route",
                "192.0.2.0/24",
                "--restore-sysctls",
            ],
            "--watch",
        ),
        (&["routes", "remove", "--mask", "0x0"], "mask 0"),
        (&["doctor", "--mark", "0"], "mark 0"),
        (&["doctor", "--priority", "32765"], "priority 32765"),
        (&["route", "get", "192.0.2.1", "--mask", "zz"], "zz"),
    ];
    for (args, needle) in cases {
        let out = loopguard(None, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} should be a usage error: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains(needle),
            "{args:?}: stderr does not name {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn bad_cidr_is_rejected_and_changes_nothing() {
    if skip_unprivileged("bad_cidr_is_rejected_and_changes_nothing") {
        return;
    }
    let ns = ns("cc");
    let before = state(&ns);
    for bad in ["300.1.2.3/40", "192.0.2.0/33", "2001:db8::/129", "banana"] {
        let out = loopguard(
            Some(&ns),
            &[
                "routes",
                "apply",
                "--dev",
                "lo",
                "--route",
                "192.0.2.0/24",
                "--route",
                bad,
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains(bad), "{bad}: {}", stderr(&out));
        assert_eq!(state(&ns), before, "{bad} changed the namespace");
    }
}

#[test]
fn mark_zero_is_rejected_and_changes_nothing() {
    if skip_unprivileged("mark_zero_is_rejected_and_changes_nothing") {
        return;
    }
    let ns = ns("cm");
    link(&ns, "lg-tun");
    let before = state(&ns);
    let out = loopguard(
        Some(&ns),
        &[
            "routes",
            "apply",
            "--dev",
            "lg-tun",
            "--route",
            "192.0.2.0/24",
            "--mark",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("mark 0"), "{}", stderr(&out));
    assert_eq!(state(&ns), before);
    // Other impossible numbers are refused the same way.
    for args in [
        &["--table", "254"][..],
        &["--priority", "0"],
        &["--mark", "0x100", "--mask", "0xff"],
    ] {
        let mut full = vec![
            "routes",
            "apply",
            "--dev",
            "lg-tun",
            "--route",
            "192.0.2.0/24",
        ];
        full.extend_from_slice(args);
        let out = loopguard(Some(&ns), &full);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(state(&ns), before, "{args:?} changed the namespace");
    }
}

#[test]
fn unknown_device_is_rejected_and_changes_nothing() {
    if skip_unprivileged("unknown_device_is_rejected_and_changes_nothing") {
        return;
    }
    let ns = ns("cd");
    let before = state(&ns);
    let out = loopguard(
        Some(&ns),
        &[
            "routes",
            "apply",
            "--dev",
            "lg-nosuchdev",
            "--route",
            "192.0.2.0/24",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lg-nosuchdev"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(state(&ns), before);
}

/// A UDP echo server bound inside `ns`; returns its address and a count of bytes echoed.
fn udp_echo(ns: &Netns, addr: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let addr = addr.to_owned();
    let socket = ns.run(move || UdpSocket::bind(addr)).unwrap().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let bytes = Arc::new(AtomicUsize::new(0));
    let counted = bytes.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            counted.fetch_add(n, Ordering::SeqCst);
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    (local, bytes)
}

/// A TCP echo server bound inside `ns`, serving one connection.
fn tcp_echo(ns: &Netns, addr: &str) -> SocketAddr {
    let addr = addr.to_owned();
    let listener = ns.run(move || TcpListener::bind(addr)).unwrap().unwrap();
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
            let mut buf = [0u8; 65_536];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    local
}

#[test]
fn probe_udp_round_trips_over_ipv4_and_ipv6() {
    if skip_unprivileged("probe_udp_round_trips_over_ipv4_and_ipv6") {
        return;
    }
    let ns = ns("pu");
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let (echo, bytes) = udp_echo(&ns, addr);
        let dst = echo.to_string();
        let out = loopguard(
            Some(&ns),
            &[
                "probe",
                "udp",
                &dst,
                "--count",
                "3",
                "--size",
                "100",
                "--timeout-ms",
                "10000",
                "--json",
            ],
        );
        assert!(
            out.status.success(),
            "{dst}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let v = json(&out);
        assert_eq!(v["sent"], 3, "{v}");
        assert_eq!(v["received"], 3, "{v}");
        assert_eq!(v["destination"], dst.as_str());
        let rtts = v["rtt_ms"].as_array().expect("rtt_ms is a list");
        assert_eq!(rtts.len(), 3);
        assert!(
            rtts.iter()
                .all(|r| r.as_f64().is_some_and(|ms| (0.0..1000.0).contains(&ms))),
            "{v}"
        );
        assert_eq!(
            bytes.load(Ordering::SeqCst),
            300,
            "the server saw other traffic than 3 x 100 bytes"
        );
        // The text form prints one line per round trip.
        let out = loopguard(
            Some(&ns),
            &["probe", "udp", &dst, "--count", "2", "--mark", "12359"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains("  1: ") && text.contains("  2: ") && text.contains(" ms"),
            "{text}"
        );
        assert!(text.contains("0x3047"), "{text}");
    }
}

#[test]
fn probe_tcp_json_reports_every_round_trip() {
    if skip_unprivileged("probe_tcp_json_reports_every_round_trip") {
        return;
    }
    let ns = ns("pt");
    let echo = tcp_echo(&ns, "127.0.0.1:0");
    let dst = echo.to_string();
    let out = loopguard(
        Some(&ns),
        &[
            "probe",
            "tcp",
            &dst,
            "--count",
            "4",
            "--timeout-ms",
            "10000",
            "--json",
            "--mark",
            "0x10",
        ],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let v = json(&out);
    assert_eq!(
        (v["sent"].as_u64(), v["received"].as_u64()),
        (Some(4), Some(4)),
        "{v}"
    );
    assert_eq!(v["rtt_ms"].as_array().map(Vec::len), Some(4), "{v}");
    assert_eq!(v["mark"], 0x10);
    assert_eq!(v["transport"], "tcp");
}

#[test]
fn probe_fails_when_nobody_echoes() {
    if skip_unprivileged("probe_fails_when_nobody_echoes") {
        return;
    }
    let ns = ns("pn");
    // A bound socket that never answers.
    let silent = ns.run(|| UdpSocket::bind("127.0.0.1:0")).unwrap().unwrap();
    let dst = silent.local_addr().unwrap().to_string();
    let out = loopguard(
        Some(&ns),
        &[
            "probe",
            "udp",
            &dst,
            "--count",
            "2",
            "--timeout-ms",
            "100",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (v["sent"].as_u64(), v["received"].as_u64()),
        (Some(2), Some(0)),
        "{v}"
    );
    assert_eq!(v["rtt_ms"], serde_json::json!([]));
    // Nothing listens on this TCP port: refused, said so.
    let out = loopguard(Some(&ns), &["probe", "tcp", &dst]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
}

#[test]
fn probe_to_an_unreachable_destination_says_so() {
    if skip_unprivileged("probe_to_an_unreachable_destination_says_so") {
        return;
    }
    // Only loopback: no route to anything else.
    let ns = ns("px");
    for transport in ["udp", "tcp"] {
        let out = loopguard(Some(&ns), &["probe", transport, "192.0.2.1:9", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{transport}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("unreachable") && err.contains("192.0.2.1:9"),
            "{transport}: {err}"
        );
        let v = json(&out);
        assert_eq!(v["sent"], 0, "{v}");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("unreachable")),
            "{v}"
        );
    }
}

#[test]
fn probe_without_cap_net_admin_reports_the_protection_failure() {
    if skip_unprivileged("probe_without_cap_net_admin_reports_the_protection_failure") {
        return;
    }
    let ns = ns("pc");
    for transport in ["udp", "tcp"] {
        // Root without CAP_NET_ADMIN and CAP_NET_RAW (either lets a socket set its mark).
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "setpriv",
                "--bounding-set=-net_admin,-net_raw",
            ])
            .args([BIN, "probe", transport, "127.0.0.1:9", "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{transport}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("protection failed") && err.contains("CAP_NET_ADMIN"),
            "{err}"
        );
        let v = json(&out);
        assert_eq!(v["sent"], 0, "{v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("SO_MARK")),
            "{v}"
        );
    }
}

/// A client namespace whose unmarked traffic goes to an unreachable table (the "tunnel"), so
/// only sockets carrying the default mark 0x3047 reach the server namespace over a veth pair.
struct Guarded {
    client: Netns,
    server: Netns,
}

fn guarded_pair() -> Guarded {
    let (client, server) = link_local_pair();
    client
        .ip(&["route", "add", "unreachable", "default", "table", "100"])
        .unwrap();
    client
        .ip(&[
            "rule",
            "add",
            "not",
            "fwmark",
            "0x3047/0x30ff",
            "lookup",
            "100",
            "pref",
            "100",
        ])
        .unwrap();
    Guarded { client, server }
}

#[test]
fn probe_marks_its_socket_so_policy_rules_let_it_out() {
    if skip_unprivileged("probe_marks_its_socket_so_policy_rules_let_it_out") {
        return;
    }
    let g = guarded_pair();
    let (echo, _) = udp_echo(&g.server, "192.0.2.2:0");
    let dst = echo.to_string();
    let out = loopguard(
        Some(&g.client),
        &["probe", "udp", &dst, "--count", "2", "--json"],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(json(&out)["received"], 2);
    // Another mark does not match the rule: its traffic would go to the "tunnel" table.
    let out = loopguard(
        Some(&g.client),
        &["probe", "udp", &dst, "--mark", "0x10", "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    let tcp = tcp_echo(&g.server, "192.0.2.2:0").to_string();
    let out = loopguard(
        Some(&g.client),
        &["probe", "tcp", &tcp, "--count", "2", "--json"],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(json(&out)["received"], 2);
}

#[test]
fn route_get_reports_the_kernels_answer_for_the_mark() {
    if skip_unprivileged("route_get_reports_the_kernels_answer_for_the_mark") {
        return;
    }
    let ns = ns("rg");
    for (dev, addr) in [("lg-up", "192.0.2.1/24"), ("lg-tun", "198.51.100.1/24")] {
        link(&ns, dev);
        ns.ip(&["addr", "add", addr, "dev", dev]).unwrap();
    }
    ns.ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.254"])
        .unwrap();
    ns.ip(&["route", "add", "default", "dev", "lg-tun", "table", "100"])
        .unwrap();
    ns.ip(&[
        "rule",
        "add",
        "not",
        "fwmark",
        "0x3047/0x30ff",
        "lookup",
        "100",
        "pref",
        "100",
    ])
    .unwrap();

    let out = loopguard(
        Some(&ns),
        &[
            "route",
            "get",
            "203.0.113.7",
            "--tunnel",
            "lg-tun",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "destination",
            "enters_tunnel",
            "gateway",
            "interface",
            "source",
            "table"
        ]
    );
    assert_eq!(v["destination"], "203.0.113.7");
    assert_eq!(v["interface"], "lg-up", "{v}");
    assert_eq!(v["gateway"], "192.0.2.254", "{v}");
    assert_eq!(v["source"], "192.0.2.1", "{v}");
    assert_eq!(v["table"], 254, "{v}");
    assert_eq!(v["enters_tunnel"], false, "{v}");

    // An unmarked socket (any other mark) would enter the tunnel.
    let out = loopguard(
        Some(&ns),
        &[
            "route",
            "get",
            "203.0.113.7",
            "--mark",
            "0x10",
            "--tunnel",
            "lg-tun",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (v["interface"].as_str(), v["table"].as_u64()),
        (Some("lg-tun"), Some(100)),
        "{v}"
    );
    assert_eq!(v["enters_tunnel"], true, "{v}");

    let out = loopguard(Some(&ns), &["route", "get", "203.0.113.7"]);
    let text = stdout(&out);
    assert!(
        out.status.success() && text.contains("lg-up") && text.contains("192.0.2.254"),
        "{text}"
    );

    // No route at all: a clear error naming the destination.
    ns.ip(&["route", "del", "default", "dev", "lg-tun", "table", "100"])
        .unwrap();
    let out = loopguard(
        Some(&ns),
        &["route", "get", "2001:db8::9", "--mark", "0x10"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("2001:db8::9"), "{}", stderr(&out));
}

#[test]
fn routes_apply_show_remove_round_trip() {
    if skip_unprivileged("routes_apply_show_remove_round_trip") {
        return;
    }
    let ns = ns("ra");
    link(&ns, "lg-tun");
    // Somebody else's rule: it must survive apply and remove.
    ns.ip(&[
        "rule",
        "add",
        "from",
        "203.0.113.0/24",
        "lookup",
        "200",
        "pref",
        "1000",
    ])
    .unwrap();
    let before = state(&ns);
    let guard = [
        "--mark",
        "0x1",
        "--mask",
        "0xff",
        "--table",
        "1000",
        "--priority",
        "2000",
    ];
    let apply: Vec<&str> = [
        "routes",
        "apply",
        "--dev",
        "lg-tun",
        "--route",
        "192.0.2.0/24",
        "2001:db8::/32",
    ]
    .into_iter()
    .chain(guard)
    .chain(["--json"])
    .collect();

    let out = loopguard(Some(&ns), &apply);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    // A device route and a last-resort `unreachable` route per prefix.
    assert_eq!(
        (v["rules_added"].as_u64(), v["routes_added"].as_u64()),
        (Some(4), Some(4)),
        "{v}"
    );
    assert_eq!(v["config"]["table"], 1000);
    let rules = ns.ip(&["-4", "rule", "show"]).unwrap();
    assert!(
        rules.contains("2001:\tnot from all fwmark 0x1/0xff lookup 1000"),
        "{rules}"
    );
    assert!(
        rules.contains("2000:\tfrom all lookup main suppress_prefixlength 0"),
        "{rules}"
    );
    assert!(
        rules.contains("1000:\tfrom 203.0.113.0/24 lookup 200"),
        "{rules}"
    );
    assert!(ns
        .ip(&["-6", "route", "show", "table", "1000"])
        .unwrap()
        .contains("2001:db8::/32 dev lg-tun"));

    // Twice is the same as once.
    let out = loopguard(Some(&ns), &apply);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (v["rules_added"].as_u64(), v["routes_added"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );

    let show: Vec<&str> = ["routes", "show"]
        .into_iter()
        .chain(guard)
        .chain(["--json"])
        .collect();
    let out = loopguard(Some(&ns), &show);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["rules"].as_array().map(Vec::len), Some(4), "{v}");
    let routes = v["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 4, "{v}");
    assert_eq!(
        routes.iter().filter(|r| r["terminal"] == true).count(),
        2,
        "{v}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r["prefix"] == "192.0.2.0/24" && r["device"] == "lg-tun"),
        "{v}"
    );
    let out = loopguard(Some(&ns), &show[..show.len() - 1]);
    assert!(
        stdout(&out).contains("192.0.2.0/24 dev lg-tun table 1000"),
        "{}",
        stdout(&out)
    );

    // A guarded socket's lookup avoids the tunnel; another mark enters it.
    let out = loopguard(
        Some(&ns),
        &[
            "route",
            "get",
            "192.0.2.9",
            "--mark",
            "0x2",
            "--tunnel",
            "lg-tun",
            "--json",
        ],
    );
    assert_eq!(json(&out)["enters_tunnel"], true, "{}", stdout(&out));

    let remove: Vec<&str> = ["routes", "remove"]
        .into_iter()
        .chain(guard)
        .chain(["--json"])
        .collect();
    let out = loopguard(Some(&ns), &remove);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (v["rules_removed"].as_u64(), v["routes_removed"].as_u64()),
        (Some(4), Some(4)),
        "{v}"
    );
    assert_eq!(v["conntrack_table_removed"], true, "{v}");
    assert_eq!(
        state(&ns),
        before,
        "remove did not restore the rules and routes"
    );
    let out = loopguard(Some(&ns), &show[..show.len() - 1]);
    assert!(
        stdout(&out).contains("nothing installed"),
        "{}",
        stdout(&out)
    );
}

/// A namespace with an uplink (192.0.2.1/24 and 2001:db8:1::1/64 on `lg-up`, default routes
/// through it) and an up tunnel device `lg-tun`.
fn uplink_and_tunnel(tag: &str) -> Netns {
    let ns = ns(tag);
    link(&ns, "lg-up");
    link(&ns, "lg-tun");
    for step in [
        &["addr", "add", "192.0.2.1/24", "dev", "lg-up"][..],
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "lg-up",
            "nodad",
        ],
        &["route", "add", "default", "via", "192.0.2.254"],
        &["-6", "route", "add", "default", "via", "2001:db8:1::fe"],
    ] {
        ns.ip(step).unwrap();
    }
    ns
}

#[test]
fn an_explicit_mark_without_a_mask_works_on_every_command() {
    if skip_unprivileged("an_explicit_mark_without_a_mask_works_on_every_command") {
        return;
    }
    // wg-quick's own fwmark: compared whole, as `ip rule fwmark 0xca6c` does.
    let g = guarded_pair();
    g.client.ip(&["rule", "del", "pref", "100"]).unwrap();
    g.client
        .ip(&[
            "rule", "add", "not", "fwmark", "0xca6c", "lookup", "100", "pref", "90",
        ])
        .unwrap();
    let (echo, _) = udp_echo(&g.server, "192.0.2.2:0");
    let dst = echo.to_string();
    for mark in ["0xca6c", "0xfd002021"] {
        let out = loopguard(
            Some(&g.client),
            &[
                "probe", "udp", &dst, "--count", "2", "--mark", mark, "--json",
            ],
        );
        // Only 0xca6c passes `not fwmark 0xca6c`; 0xfd002021 goes to the unreachable table.
        if mark == "0xca6c" {
            assert!(
                out.status.success(),
                "{mark}: {}{}",
                stdout(&out),
                stderr(&out)
            );
            assert_eq!(json(&out)["received"], 2, "{mark}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{mark}: {}", stderr(&out));
            assert!(!stderr(&out).contains("outside mask"), "{}", stderr(&out));
        }
        let out = loopguard(
            Some(&g.client),
            &["route", "get", "192.0.2.2", "--mark", mark, "--json"],
        );
        if mark == "0xca6c" {
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(json(&out)["interface"], "lg-c", "{}", stdout(&out));
        } else {
            assert!(!stderr(&out).contains("outside mask"), "{}", stderr(&out));
        }
    }
    // --mask is accepted where --mark is.
    let out = loopguard(
        Some(&g.client),
        &[
            "probe", "udp", &dst, "--mark", "0xca6c", "--mask", "0xffff", "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = loopguard(
        Some(&g.client),
        &[
            "route",
            "get",
            "192.0.2.2",
            "--mark",
            "0xca6c",
            "--mask",
            "0xffff",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let ns = uplink_and_tunnel("cx");
    let out = loopguard(
        Some(&ns),
        &[
            "routes",
            "apply",
            "--dev",
            "lg-tun",
            "--route",
            "0.0.0.0/0",
            "--mark",
            "0xca6c",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (v["config"]["mark"].as_u64(), v["config"]["mask"].as_u64()),
        (Some(0xca6c), Some(0xffff_ffff)),
        "{v}"
    );
    let rules = ns.ip(&["rule", "show"]).unwrap();
    println!("{rules}");
    assert!(
        rules.contains("32001:\tnot from all fwmark 0xca6c lookup 19527 proto 76"),
        "{rules}"
    );
    let paths = v["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 1, "{v}");
    assert_eq!(paths[0]["marked"]["interface"], "lg-up", "{v}");
    assert_eq!(paths[0]["unmarked"]["interface"], "lg-tun", "{v}");
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn impossible_priorities_are_refused_and_change_nothing() {
    if skip_unprivileged("impossible_priorities_are_refused_and_change_nothing") {
        return;
    }
    let ns = uplink_and_tunnel("cp");
    let before = state(&ns);
    let apply = |extra: &[&str]| {
        let mut args = vec!["routes", "apply", "--dev", "lg-tun", "--route", "0.0.0.0/0"];
        args.extend_from_slice(extra);
        loopguard(Some(&ns), &args)
    };
    // 32765 would put the second rule at 32766, after the kernel's `lookup main`.
    let out = apply(&["--priority", "32765"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("priority 32765"), "{}", stderr(&out));
    assert_eq!(state(&ns), before);
    // An unconditional `lookup main` moved before loopguard's priorities.
    ns.ip(&["rule", "add", "lookup", "main", "pref", "100"])
        .unwrap();
    let before = state(&ns);
    let out = apply(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    println!("{err}");
    assert!(
        err.contains("nothing changed") && err.contains("100: from all lookup main"),
        "{err}"
    );
    assert_eq!(state(&ns), before);
}

#[test]
fn routes_remove_without_options_removes_everything_loopguard_installed() {
    if skip_unprivileged("routes_remove_without_options_removes_everything_loopguard_installed") {
        return;
    }
    let ns = uplink_and_tunnel("cr");
    ns.ip(&[
        "rule",
        "add",
        "from",
        "192.0.2.99",
        "lookup",
        "51820",
        "pref",
        "500",
    ])
    .unwrap();
    ns.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "dev",
        "lg-up",
        "table",
        "51820",
    ])
    .unwrap();
    let before = state(&ns);
    let out = loopguard(
        Some(&ns),
        &[
            "routes",
            "apply",
            "--dev",
            "lg-tun",
            "--route",
            "0.0.0.0/0",
            "--route",
            "::/0",
            "--mark",
            "0xfd002021",
            "--mask",
            "0xffffffff",
            "--table",
            "51820",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = loopguard(Some(&ns), &["routes", "remove", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    println!("{v}");
    assert_eq!(
        (v["rules_removed"].as_u64(), v["routes_removed"].as_u64()),
        (Some(4), Some(4)),
        "{v}"
    );
    assert_eq!(v["everything"], true, "{v}");
    assert_eq!(v["conntrack_tables"][0], "loopguard_51820", "{v}");
    assert_eq!(
        state(&ns),
        before,
        "remove left something of loopguard's or took a foreign thing"
    );
    // Nothing left: a second remove removes nothing.
    let v = json(&loopguard(Some(&ns), &["routes", "remove", "--json"]));
    assert_eq!(
        (
            v["rules_removed"].as_u64(),
            v["routes_removed"].as_u64(),
            v["conntrack_table_removed"].as_bool()
        ),
        (Some(0), Some(0), Some(false)),
        "{v}"
    );
}

#[test]
fn route_get_for_a_tunnel_that_does_not_exist_is_an_error() {
    if skip_unprivileged("route_get_for_a_tunnel_that_does_not_exist_is_an_error") {
        return;
    }
    let ns = uplink_and_tunnel("cg");
    let out = loopguard(
        Some(&ns),
        &[
            "route",
            "get",
            "203.0.113.5",
            "--tunnel",
            "lg-nosuch",
            "--json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stderr(&out).contains("lg-nosuch"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let out = loopguard(
        Some(&ns),
        &[
            "route",
            "get",
            "203.0.113.5",
            "--tunnel",
            "lg-tun",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["enters_tunnel"], false);
}

#[test]
fn doctor_reports_what_exists_and_exits_1_on_an_error() {
    if skip_unprivileged("doctor_reports_what_exists_and_exits_1_on_an_error") {
        return;
    }
    let ns = uplink_and_tunnel("cdr");
    let out = loopguard(
        Some(&ns),
        &[
            "routes",
            "apply",
            "--dev",
            "lg-tun",
            "--route",
            "0.0.0.0/0",
            "::/0",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let before = state(&ns);
    let out = loopguard(Some(&ns), &["doctor", "--tunnel", "lg-tun", "--json"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(state(&ns), before, "doctor changed something");
    let v = json(&out);
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["findings", "paths"]);
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(0), "{v}");
    let paths = v["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 2, "{v}");
    for p in paths {
        assert_eq!(p["marked"]["interface"], "lg-up", "{v}");
        assert_eq!(p["unmarked"]["interface"], "lg-tun", "{v}");
    }

    // NetBird's rules, its table pointing into the same device: marked traffic loops.
    ns.ip(&["route", "add", "default", "dev", "lg-tun", "table", "7120"])
        .unwrap();
    ns.ip(&[
        "rule", "add", "not", "fwmark", "0x1bd00", "lookup", "7120", "pref", "110",
    ])
    .unwrap();
    let out = loopguard(Some(&ns), &["doctor", "--tunnel", "lg-tun", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let v = json(&out);
    println!("{v:#}");
    let findings = v["findings"].as_array().unwrap();
    let error = &findings[0];
    assert_eq!(
        (
            &error["severity"],
            &error["code"],
            &error["rule_priority"],
            &error["table"]
        ),
        (
            &Value::from("error"),
            &Value::from("marked_enters_tunnel"),
            &Value::from(110),
            &Value::from(7120)
        ),
        "{v}"
    );
    let codes: Vec<&str> = findings.iter().filter_map(|f| f["code"].as_str()).collect();
    assert_eq!(codes, ["marked_enters_tunnel", "other_owner"], "{v}");
    assert!(
        findings[1]["message"].as_str().unwrap().contains("NetBird"),
        "{v}"
    );
    // The text form says the same; doctor changed nothing.
    let out = loopguard(Some(&ns), &["doctor", "--tunnel", "lg-tun"]);
    assert_eq!(out.status.code(), Some(1));
    println!("{}", stdout(&out));
    assert!(
        stdout(&out).contains("error   marked_enters_tunnel"),
        "{}",
        stdout(&out)
    );
    // `routes show` lists the other program's rule beside loopguard's.
    let v = json(&loopguard(Some(&ns), &["routes", "show", "--json"]));
    let others = v["other_rules"].as_array().unwrap();
    assert!(
        others
            .iter()
            .any(|r| r["priority"] == 110 && r["owner"] == "NetBird" && r["table"] == 7120),
        "{v}"
    );
    let text = stdout(&loopguard(Some(&ns), &["routes", "show"]));
    assert!(
        text.contains("110: IPv4 not from all fwmark 0x1bd00/0xffffffff lookup 7120 (NetBird)"),
        "{text}"
    );
    // apply checks its own work the same way: exit 1, naming the rule and the table.
    let out = loopguard(
        Some(&ns),
        &[
            "routes",
            "apply",
            "--dev",
            "lg-tun",
            "--route",
            "0.0.0.0/0",
            "::/0",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    println!("{err}");
    assert!(
        err.contains("enters the tunnel lg-tun")
            && err.contains("110: not from all fwmark 0x1bd00")
            && err.contains("table 7120"),
        "{err}"
    );
    let out = loopguard(Some(&ns), &["doctor", "--tunnel", "lg-nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("lg-nosuch"), "{}", stderr(&out));
}

#[test]
fn apply_watch_restore_sysctls_puts_them_back_after_sigterm() {
    if skip_unprivileged("apply_watch_restore_sysctls_puts_them_back_after_sigterm") {
        return;
    }
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Instant;

    let ns = uplink_and_tunnel("cw");
    for key in [
        "net.ipv4.fwmark_reflect",
        "net.ipv4.conf.all.src_valid_mark",
    ] {
        ns.sysctl(key, "0").unwrap();
    }
    let read = |key: &str| ns.exec("sysctl", &["-n", key]).unwrap().trim().to_owned();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), BIN])
        .args([
            "routes",
            "apply",
            "--dev",
            "lg-tun",
            "--route",
            "0.0.0.0/0",
            "--watch",
            "--restore-sysctls",
            "--json",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the watcher did not start within 10 s");
        if rx
            .recv_timeout(left)
            .unwrap()
            .contains("keeping the routes asserted")
        {
            break;
        }
    }
    assert_eq!(read("net.ipv4.fwmark_reflect"), "1");
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    println!("{last}");
    assert_eq!(last["stopped"], true, "{last}");
    let keys: Vec<&str> = last["sysctls_restored"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert!(keys.contains(&"net.ipv4.fwmark_reflect"), "{last}");
    assert_eq!(read("net.ipv4.fwmark_reflect"), "0");
    assert_eq!(read("net.ipv4.conf.all.src_valid_mark"), "0");
}

#[test]
fn pin_outside_conflicts_with_the_mark_options() {
    for args in [
        &[
            "probe",
            "udp",
            "192.0.2.1:7",
            "--pin-outside",
            "tun0",
            "--mark",
            "0x10",
        ][..],
        &[
            "probe",
            "tcp",
            "192.0.2.1:7",
            "--pin-outside",
            "tun0",
            "--mask",
            "0xff",
        ],
        &[
            "route",
            "get",
            "192.0.2.1",
            "--pin-outside",
            "tun0",
            "--mark",
            "0x10",
        ],
    ] {
        let out = loopguard(None, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--pin-outside"), "{}", stderr(&out));
    }
}

/// `probe --pin-outside` and `route get --pin-outside` in the lab whose TUN holds the half
/// routes in `main` (no policy rules): the probe's echoes come back, nothing enters the TUN,
/// and route get names the uplink and why the TUN's route lost.
#[test]
fn probe_and_route_get_with_pin_outside_leave_by_the_uplink() {
    if skip_unprivileged("probe_and_route_get_with_pin_outside_leave_by_the_uplink") {
        return;
    }
    let lab = Lab::build("cpin").expect("lab");
    lab.route_all_into_tun_main_table().unwrap();
    let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
    let tun = TunCounter::start(lab.client(), lab.tun(), lab.server_addrs().to_vec())
        .expect("tun counter");
    for server in lab.server_addrs() {
        for (transport, dst) in [
            ("udp", echo.udp_addr(server).unwrap()),
            ("tcp", echo.tcp_addr(server).unwrap()),
        ] {
            let dst = dst.to_string();
            let out = loopguard(
                Some(lab.client()),
                &[
                    "probe",
                    transport,
                    &dst,
                    "--count",
                    "2",
                    "--pin-outside",
                    lab.tun(),
                    "--json",
                ],
            );
            assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
            let v = json(&out);
            assert_eq!(v["received"], 2, "{v}");
            assert_eq!(v["pin_outside"], lab.tun(), "{v}");
            assert_eq!(v["mark"], Value::Null, "{v}");
        }
        let destination = server.to_string();
        let out = loopguard(
            Some(lab.client()),
            &[
                "route",
                "get",
                &destination,
                "--pin-outside",
                lab.tun(),
                "--json",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let v = json(&out);
        assert_eq!(v["interface_alias"], lab.uplink(), "{v}");
        let source = if server.is_ipv4() {
            lab.client_v4().to_string()
        } else {
            lab.client_v6().to_string()
        };
        assert_eq!(v["source"], source.as_str(), "{v}");
        let tunnel_lost = v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["interface_alias"] == lab.tun() && c["reason"]["kind"] == "tunnel");
        assert!(tunnel_lost, "{v}");
        let text = stdout(&loopguard(
            Some(lab.client()),
            &["route", "get", &destination, "--pin-outside", lab.tun()],
        ));
        assert!(
            text.contains(lab.uplink()) && text.contains("tunnel interface"),
            "{text}"
        );
    }
    let snapshot = tun.stop();
    for server in lab.server_addrs() {
        let looped: u64 = [loopguard_lab::Transport::Udp, loopguard_lab::Transport::Tcp]
            .into_iter()
            .map(|t| snapshot.count_to(server, t))
            .sum();
        assert_eq!(looped, 0, "probe traffic to {server} entered the TUN");
    }
    drop(echo);
    // No such device: a usage error.
    let out = loopguard(
        Some(lab.client()),
        &["route", "get", "192.0.2.1", "--pin-outside", "lg-nope0"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Two namespaces over a veth pair `lg-c` / `lg-s`: 192.0.2.1 and 192.0.2.2, link-local
/// fe80::1 and fe80::2.
fn link_local_pair() -> (Netns, Netns) {
    let (client, server) = (ns("llc"), ns("lls"));
    client
        .ip(&[
            "link",
            "add",
            "lg-c",
            "type",
            "veth",
            "peer",
            "name",
            "lg-s",
            "netns",
            server.name(),
        ])
        .unwrap();
    for (ns, dev, v4, v6) in [
        (&client, "lg-c", "192.0.2.1/24", "fe80::1/64"),
        (&server, "lg-s", "192.0.2.2/24", "fe80::2/64"),
    ] {
        ns.ip(&["link", "set", dev, "addrgenmode", "none"]).unwrap();
        ns.ip(&["addr", "add", v4, "dev", dev]).unwrap();
        ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"])
            .unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    (client, server)
}

#[test]
fn probe_reaches_link_local_peers_with_a_zone_by_name_or_index_or_none() {
    if skip_unprivileged("probe_reaches_link_local_peers") {
        return;
    }
    let (client, server) = link_local_pair();
    let (echo, _) = udp_echo(&server, "[::]:0");
    let port = echo.port();
    let index = client
        .exec("cat", &["/sys/class/net/lg-c/ifindex"])
        .unwrap();
    for zone in [
        "%lg-c".to_owned(),
        format!("%{}", index.trim()),
        String::new(),
    ] {
        let dst = format!("[fe80::2{zone}]:{port}");
        let out = loopguard(
            Some(&client),
            &[
                "probe",
                "udp",
                &dst,
                "--count",
                "2",
                "--timeout-ms",
                "10000",
                "--json",
            ],
        );
        println!("{dst}: {}", stdout(&out));
        assert!(
            out.status.success(),
            "{dst}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(json(&out)["received"], 2, "{dst}");
    }
    let dst = format!("[fe80::2%lg-nope]:{port}");
    let out = loopguard(Some(&client), &["probe", "udp", &dst]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("lg-nope"), "{}", stderr(&out));
}

#[test]
fn a_probe_larger_than_the_path_mtu_says_the_socket_does_not_fragment() {
    if skip_unprivileged("a_probe_larger_than_the_path_mtu_says_so") {
        return;
    }
    let (client, server) = link_local_pair();
    let (echo, bytes) = udp_echo(&server, "192.0.2.2:0");
    let dst = echo.to_string();
    let out = loopguard(
        Some(&client),
        &["probe", "udp", &dst, "--size", "3000", "--count", "1"],
    );
    let text = stderr(&out) + &stdout(&out);
    println!("{text}");
    assert!(!out.status.success());
    assert!(text.contains("don't-fragment"), "{text}");
    assert!(
        text.contains(&format!("the path MTU towards {dst} is 1500 bytes")),
        "{text}"
    );
    assert_eq!(bytes.load(Ordering::SeqCst), 0, "something was sent");
}
