//! `TunnelRoutes` and `route_get` against a real kernel, each test in network namespaces of
//! its own. The library runs inside the namespace; `ip` checks what it did from outside.
#![cfg(target_os = "linux")]

mod common;

use common::block_on;
use std::net::IpAddr;

use ipnet::IpNet;
use loopguard::os::linux::{route_get, RoutesError, TunnelRoutes, LOOPGUARD_PROTOCOL};
use loopguard::GuardConfig;
use loopguard_lab::{unique_name, Netns};

const TUN: &str = "lg-tun0";
const UPLINK: &str = "lg-up0";

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// A namespace with an uplink (a veth) (192.0.2.2/24 and 2001:db8:1::2/64, default routes via .1 and
/// ::1) and a TUN device that is up but has no addresses.
fn client() -> Netns {
    let ns = Netns::create(&unique_name("rt")).expect("namespace");
    let steps: &[&[&str]] = &[
        // No dummy driver on every kernel: a veth pair whose peer stays in the namespace.
        &[
            "link", "add", UPLINK, "type", "veth", "peer", "name", "lg-up0p",
        ],
        &["link", "set", "lg-up0p", "up"],
        &["link", "set", UPLINK, "up"],
        &["addr", "add", "192.0.2.2/24", "dev", UPLINK],
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            UPLINK,
            "nodad",
        ],
        &["route", "add", "default", "via", "192.0.2.1"],
        &["-6", "route", "add", "default", "via", "2001:db8:1::1"],
        &["tuntap", "add", "dev", TUN, "mode", "tun"],
        &["link", "set", TUN, "addrgenmode", "none"],
        &["link", "set", TUN, "up"],
    ];
    for step in steps {
        ns.ip(step)
            .unwrap_or_else(|e| panic!("ip {}: {e}", step.join(" ")));
    }
    ns
}

/// Rules of both families and the routes of `table`, as `ip` prints them.
fn snapshot(ns: &Netns, table: u32) -> String {
    let t = table.to_string();
    [
        ns.ip(&["-4", "rule", "show"]).unwrap(),
        ns.ip(&["-6", "rule", "show"]).unwrap(),
        table_routes(ns, "-4", &t),
        table_routes(ns, "-6", &t),
    ]
    .join("---\n")
}

/// The routes of a table; a table that never held a route does not exist, and is empty.
fn table_routes(ns: &Netns, family: &str, table: &str) -> String {
    match ns.ip(&[family, "route", "show", "table", table]) {
        Ok(text) => text,
        Err(e) if e.to_string().contains("FIB table does not exist") => String::new(),
        Err(e) => panic!("ip {family} route show table {table}: {e}"),
    }
}

fn read_sysctl(ns: &Netns, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(move || std::fs::read_to_string(path).unwrap().trim().to_owned())
        .unwrap()
}

fn count_tagged(text: &str) -> usize {
    let tag = format!("proto {LOOPGUARD_PROTOCOL}");
    text.lines().filter(|l| l.contains(&tag)).count()
}

#[test]
fn apply_installs_rules_routes_sysctls_and_conntrack_table() {
    if loopguard_lab::skip_unprivileged("apply_installs_rules_routes_sysctls_and_conntrack_table") {
        return;
    }
    let ns = client();
    let config = GuardConfig::new(0x4c47, 0xffff, 1000, 32000).unwrap();
    for key in [
        "net.ipv4.conf.all.src_valid_mark",
        "net.ipv4.fwmark_reflect",
    ] {
        ns.sysctl(key, "0").unwrap();
    }
    let prefixes = nets(&["0.0.0.0/0", "198.51.100.0/24", "::/0", "2001:db8:99::/48"]);
    let (report, state) = ns
        .run(|| {
            block_on(async {
                let routes = TunnelRoutes::new(config);
                let report = routes.apply(TUN, &prefixes).await.expect("apply");
                (report, routes.show().await.expect("show"))
            })
        })
        .unwrap();
    // Four device routes and a last-resort `unreachable` route for each.
    assert_eq!((report.rules_added, report.routes_added), (4, 8));
    assert_eq!((report.rules_removed, report.routes_removed), (0, 0));
    // apply checked its work: unmarked into the tunnel, marked out of the uplink.
    assert_eq!(report.paths.len(), 2, "{:?}", report.paths);
    for p in &report.paths {
        assert_eq!(p.unmarked.interface.as_deref(), Some(TUN), "{p:?}");
        assert_eq!(p.unmarked.table, Some(1000), "{p:?}");
        assert_eq!(p.marked.interface.as_deref(), Some(UPLINK), "{p:?}");
        assert_eq!(p.marked.table, Some(254), "{p:?}");
    }
    assert!(report.findings.is_empty(), "{:?}", report.findings);

    for family in ["-4", "-6"] {
        let rules = ns.ip(&[family, "rule", "show"]).unwrap();
        assert!(
            rules.contains("32000:\tfrom all lookup main suppress_prefixlength 0 proto 76"),
            "{rules}"
        );
        assert!(
            rules.contains("32001:\tnot from all fwmark 0x4c47/0xffff lookup 1000 proto 76"),
            "{rules}"
        );
    }
    let v4 = ns.ip(&["-4", "route", "show", "table", "1000"]).unwrap();
    assert!(
        v4.contains("default dev lg-tun0 proto 76 scope link"),
        "{v4}"
    );
    assert!(
        v4.contains("198.51.100.0/24 dev lg-tun0 proto 76 scope link"),
        "{v4}"
    );
    let v6 = ns.ip(&["-6", "route", "show", "table", "1000"]).unwrap();
    assert!(v6.contains("default dev lg-tun0 proto 76"), "{v6}");
    assert!(v6.contains("2001:db8:99::/48 dev lg-tun0 proto 76"), "{v6}");
    for (family, routes) in [("IPv4", &v4), ("IPv6", &v6)] {
        let terminal: Vec<&str> = routes
            .lines()
            .filter(|l| l.starts_with("unreachable default"))
            .collect();
        assert_eq!(terminal.len(), 1, "{family}: {routes}");
        assert!(
            terminal[0].contains("proto 76") && terminal[0].contains("metric 4294967295"),
            "{family}: {routes}"
        );
    }

    for key in [
        "net.ipv4.conf.all.src_valid_mark",
        "net.ipv4.fwmark_reflect",
        "net.ipv6.fwmark_reflect",
    ] {
        assert_eq!(read_sysctl(&ns, key), "1", "{key}");
    }
    let changed = report
        .sysctls
        .iter()
        .find(|c| c.key == "net.ipv4.fwmark_reflect")
        .unwrap();
    assert_eq!(
        (changed.previous.as_str(), changed.value.as_str()),
        ("0", "1")
    );

    // What `show` reports matches what `ip` sees.
    assert_eq!(state.rules.len(), 4);
    assert_eq!(state.routes.len(), 8);
    assert_eq!(state.routes.iter().filter(|r| r.terminal).count(), 4);
    assert!(state
        .routes
        .iter()
        .all(|r| r.table == 1000 && (r.terminal || r.device.as_deref() == Some(TUN))));
    assert!(state
        .rules
        .iter()
        .any(|r| r.priority == 32001
            && r.selector == "not from all fwmark 0x4c47/0xffff lookup 1000"));
    assert_eq!(state.conntrack_table.as_deref(), Some("loopguard_1000"));
    if let Ok(ruleset) = ns.exec("nft", &["list", "ruleset"]) {
        assert!(ruleset.contains("table inet loopguard_1000"), "{ruleset}");
        // Only the mask's bits are written; nft prints `(x & 0xffff0000) ^ 0x4c47` in this
        // equivalent form.
        let (keep, set) = ("& 0xffff4c47 | 0x00004c47", "0x0000ffff == 0x00004c47");
        assert!(
            ruleset.contains(&format!("meta mark & {set} ct mark set ct mark {keep}")),
            "{ruleset}"
        );
        assert!(
            ruleset.contains(&format!("ct mark & {set} meta mark set meta mark {keep}")),
            "{ruleset}"
        );
    }
}

#[test]
fn apply_twice_is_idempotent() {
    if loopguard_lab::skip_unprivileged("apply_twice_is_idempotent") {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    let prefixes = nets(&["0.0.0.0/0", "::/0"]);
    let apply = || {
        ns.run(|| block_on(TunnelRoutes::new(config).apply(TUN, &prefixes)))
            .unwrap()
            .expect("apply")
    };
    apply();
    let first = snapshot(&ns, config.table());
    let again = apply();
    assert_eq!(snapshot(&ns, config.table()), first);
    assert_eq!(
        (
            again.rules_added,
            again.rules_removed,
            again.routes_added,
            again.routes_removed
        ),
        (0, 0, 0, 0)
    );
    // 4 rules, a default route per family and a last-resort route per family.
    assert_eq!(count_tagged(&first), 4 + 2 + 2, "{first}");
}

#[test]
fn foreign_rules_and_routes_survive_apply_and_remove() {
    if loopguard_lab::skip_unprivileged("foreign_rules_and_routes_survive_apply_and_remove") {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    let (p, p1, t) = (
        config.priority().to_string(),
        (config.priority() + 1).to_string(),
        config.table().to_string(),
    );
    let mark = format!("{:#x}", config.mark());
    ns.ip(&[
        "rule",
        "add",
        "from",
        "198.51.100.7",
        "lookup",
        "main",
        "priority",
        &p,
    ])
    .unwrap();
    ns.ip(&[
        "rule", "add", "not", "fwmark", &mark, "lookup", &t, "priority", &p1,
    ])
    .unwrap();
    ns.ip(&[
        "-6",
        "rule",
        "add",
        "lookup",
        "main",
        "suppress_prefixlength",
        "0",
        "priority",
        &p,
    ])
    .unwrap();
    ns.ip(&["route", "add", "198.51.100.0/24", "dev", TUN, "table", &t])
        .unwrap();
    let foreign = snapshot(&ns, config.table());

    let prefixes = nets(&["0.0.0.0/0", "::/0"]);
    ns.run(|| block_on(TunnelRoutes::new(config).apply(TUN, &prefixes)))
        .unwrap()
        .expect("apply");
    let applied = snapshot(&ns, config.table());
    for line in foreign.lines() {
        assert!(
            applied.contains(line),
            "foreign `{line}` lost by apply:\n{applied}"
        );
    }
    assert_eq!(count_tagged(&applied), 8, "{applied}");

    let removed = ns
        .run(|| block_on(TunnelRoutes::new(config).remove()))
        .unwrap()
        .expect("remove");
    assert_eq!((removed.rules_removed, removed.routes_removed), (4, 4));
    assert!(removed.conntrack_table_removed);
    assert_eq!(
        snapshot(&ns, config.table()),
        foreign,
        "remove left exactly the foreign state"
    );

    // Removing again, with nothing of ours left, is fine and changes nothing.
    let again = ns
        .run(|| block_on(TunnelRoutes::new(config).remove()))
        .unwrap()
        .expect("remove");
    assert_eq!(
        (
            again.rules_removed,
            again.routes_removed,
            again.conntrack_table_removed
        ),
        (0, 0, false)
    );
    assert_eq!(snapshot(&ns, config.table()), foreign);
}

#[test]
fn apply_cleans_what_a_killed_run_left() {
    if loopguard_lab::skip_unprivileged("apply_cleans_what_a_killed_run_left") {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    let (p, p1, t) = (
        config.priority().to_string(),
        (config.priority() + 1).to_string(),
        config.table().to_string(),
    );
    let proto = LOOPGUARD_PROTOCOL.to_string();
    // An old run's fwmark rule with another mark, an IPv6 rule although only IPv4 is wanted
    // now, and a route no longer wanted. (A rule of ours at our priority for another table
    // is another configuration, which `apply` refuses: tested in linux_keeper.rs.)
    ns.ip(&[
        "rule", "add", "not", "fwmark", "0x99", "lookup", &t, "priority", &p1, "protocol", &proto,
    ])
    .unwrap();
    ns.ip(&[
        "-6",
        "rule",
        "add",
        "lookup",
        "main",
        "suppress_prefixlength",
        "0",
        "priority",
        &p,
        "protocol",
        &proto,
    ])
    .unwrap();
    ns.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "dev",
        TUN,
        "table",
        &t,
        "proto",
        &proto,
    ])
    .unwrap();

    let report = ns
        .run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0"]))))
        .unwrap()
        .expect("apply");
    assert_eq!((report.rules_removed, report.routes_removed), (2, 1));
    // The default route and the last-resort `unreachable default`.
    assert_eq!((report.rules_added, report.routes_added), (2, 2));
    let state = snapshot(&ns, config.table());
    assert!(!state.contains("fwmark 0x99"), "{state}");
    assert!(!state.contains("203.0.113.0/24"), "{state}");
    let v6 = ns.ip(&["-6", "rule", "show"]).unwrap();
    assert_eq!(count_tagged(&v6), 0, "{v6}");
    assert_eq!(count_tagged(&state), 4, "{state}");
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    if loopguard_lab::skip_unprivileged("bad_input_is_a_clear_error_and_changes_nothing") {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    ns.sysctl("net.ipv4.fwmark_reflect", "0").unwrap();
    let before = snapshot(&ns, config.table());
    let (missing, empty, host_bits, state) = ns
        .run(|| {
            block_on(async {
                let routes = TunnelRoutes::new(config);
                (
                    routes.apply("lg-nope", &nets(&["0.0.0.0/0"])).await,
                    routes.apply(TUN, &[]).await,
                    routes.apply(TUN, &nets(&["192.0.2.1/24"])).await,
                    routes.show().await.expect("show"),
                )
            })
        })
        .unwrap();
    match missing {
        Err(RoutesError::NoSuchDevice(name)) => assert_eq!(name, "lg-nope"),
        other => panic!("expected NoSuchDevice, got {other:?}"),
    }
    assert!(matches!(empty, Err(RoutesError::NoPrefixes)), "{empty:?}");
    assert!(
        matches!(host_bits, Err(RoutesError::HostBitsSet { .. })),
        "{host_bits:?}"
    );
    assert_eq!(snapshot(&ns, config.table()), before);
    assert_eq!(read_sysctl(&ns, "net.ipv4.fwmark_reflect"), "0");
    assert!(state.rules.is_empty() && state.routes.is_empty() && state.conntrack_table.is_none());
}

#[test]
fn a_down_device_or_a_foreign_route_in_our_place_changes_nothing() {
    if loopguard_lab::skip_unprivileged(
        "a_down_device_or_a_foreign_route_in_our_place_changes_nothing",
    ) {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    let t = config.table().to_string();
    ns.ip(&["tuntap", "add", "dev", "lg-tun1", "mode", "tun"])
        .unwrap();
    ns.ip(&["-6", "route", "add", "::/0", "dev", TUN, "table", &t])
        .unwrap();
    ns.sysctl("net.ipv4.fwmark_reflect", "0").unwrap();
    let before = snapshot(&ns, config.table());
    let (down, foreign) = ns
        .run(|| {
            block_on(async {
                let routes = TunnelRoutes::new(config);
                (
                    routes.apply("lg-tun1", &nets(&["0.0.0.0/0"])).await,
                    routes.apply(TUN, &nets(&["0.0.0.0/0", "::/0"])).await,
                )
            })
        })
        .unwrap();
    match down {
        Err(RoutesError::DeviceDown(name)) => assert_eq!(name, "lg-tun1"),
        other => panic!("expected DeviceDown, got {other:?}"),
    }
    match foreign {
        Err(e @ RoutesError::ForeignRoute { .. }) => {
            assert!(e.to_string().contains("::/0"), "{e}")
        }
        other => panic!("expected ForeignRoute, got {other:?}"),
    }
    assert_eq!(snapshot(&ns, config.table()), before);
    assert_eq!(read_sysctl(&ns, "net.ipv4.fwmark_reflect"), "0");
}

#[test]
fn route_get_sends_unmarked_into_the_tunnel_and_marked_to_the_uplink() {
    if loopguard_lab::skip_unprivileged(
        "route_get_sends_unmarked_into_the_tunnel_and_marked_to_the_uplink",
    ) {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    let v4: IpAddr = "203.0.113.9".parse().unwrap();
    let v6: IpAddr = "2001:db8:2::9".parse().unwrap();
    let (before, results) = ns
        .run(|| {
            block_on(async {
                // Before apply, everything follows the main table's default routes.
                let before = route_get(v4, None).await.expect("route get before apply");
                TunnelRoutes::new(config)
                    .apply(TUN, &nets(&["0.0.0.0/0", "::/0"]))
                    .await
                    .expect("apply");
                let mut results = Vec::new();
                for dst in [v4, v6] {
                    results.push((
                        route_get(dst, None).await.expect("unmarked"),
                        route_get(dst, Some(config.mark())).await.expect("marked"),
                    ));
                }
                (before, results)
            })
        })
        .unwrap();
    assert_eq!(before.interface.as_deref(), Some(UPLINK));

    let (tun4, up4) = &results[0];
    assert_eq!(tun4.interface.as_deref(), Some(TUN));
    assert_eq!(tun4.table, Some(config.table()));
    assert_eq!(tun4.gateway, None);
    assert_eq!(up4.interface.as_deref(), Some(UPLINK));
    assert_eq!(up4.table, Some(254));
    assert_eq!(up4.gateway, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(up4.source, Some("192.0.2.2".parse().unwrap()));
    assert!(up4.interface_index.is_some());

    let (tun6, up6) = &results[1];
    assert_eq!(tun6.interface.as_deref(), Some(TUN));
    assert_eq!(tun6.table, Some(config.table()));
    assert_eq!(up6.interface.as_deref(), Some(UPLINK));
    assert_eq!(up6.table, Some(254));
    assert_eq!(up6.gateway, Some("2001:db8:1::1".parse().unwrap()));
}

#[test]
fn route_get_without_a_route_names_the_destination() {
    if loopguard_lab::skip_unprivileged("route_get_without_a_route_names_the_destination") {
        return;
    }
    let ns = Netns::create(&unique_name("rt")).expect("namespace");
    let results = ns
        .run(|| {
            block_on(async {
                let mut out = Vec::new();
                for dst in ["192.0.2.77", "2001:db8::77"] {
                    out.push(route_get(dst.parse().unwrap(), Some(0x4c47)).await);
                }
                out
            })
        })
        .unwrap();
    for r in results {
        match r {
            Err(e @ RoutesError::Unreachable { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("192.0.2.77") || text.contains("2001:db8::77"),
                    "{text}"
                );
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}

/// Runs a blocking socket call again when a signal to the test process interrupted it.
fn retry<T>(mut call: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// An address as `/proc/net/nf_conntrack` prints it (IPv6 fully expanded).
fn proc_form(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a.segments().map(|s| format!("{s:04x}")).join(":"),
    }
}

/// A client (uplink veth, TUN owning every route through `TunnelRoutes`) and a server at
/// 198.51.100.2 and 2001:db8:2::2, reachable from the client only through its default routes,
/// so the reverse-path check of a reply really depends on the mark.
fn client_and_server(config: GuardConfig) -> (Netns, Netns) {
    let c = Netns::create(&unique_name("rt")).expect("client namespace");
    let s = Netns::create(&unique_name("rt")).expect("server namespace");
    c.ip(&[
        "link",
        "add",
        UPLINK,
        "type",
        "veth",
        "peer",
        "name",
        "lg-srv0",
        "netns",
        s.name(),
    ])
    .unwrap();
    let client_steps: &[&[&str]] = &[
        &["addr", "add", "192.0.2.2/24", "dev", UPLINK],
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            UPLINK,
            "nodad",
        ],
        &["link", "set", UPLINK, "up"],
        &["route", "add", "default", "via", "192.0.2.1"],
        &["-6", "route", "add", "default", "via", "2001:db8:1::1"],
        &["tuntap", "add", "dev", TUN, "mode", "tun"],
        &["link", "set", TUN, "addrgenmode", "none"],
        &["link", "set", TUN, "up"],
    ];
    let server_steps: &[&[&str]] = &[
        &["addr", "add", "192.0.2.1/24", "dev", "lg-srv0"],
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "lg-srv0",
            "nodad",
        ],
        &["addr", "add", "198.51.100.2/32", "dev", "lo"],
        &["-6", "addr", "add", "2001:db8:2::2/128", "dev", "lo"],
        &["link", "set", "lg-srv0", "up"],
    ];
    for (ns, steps) in [(&c, client_steps), (&s, server_steps)] {
        for step in steps {
            ns.ip(step)
                .unwrap_or_else(|e| panic!("ip {}: {e}", step.join(" ")));
        }
    }
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ] {
        c.sysctl(key, "1").unwrap();
    }
    c.sysctl(&format!("net.ipv4.conf.{UPLINK}.rp_filter"), "1")
        .unwrap();
    for key in [
        "net.ipv4.conf.all.src_valid_mark",
        "net.ipv4.fwmark_reflect",
        "net.ipv6.fwmark_reflect",
    ] {
        c.sysctl(key, "0").unwrap();
    }
    c.run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0", "::/0"]))))
        .unwrap()
        .expect("apply");
    (c, s)
}

#[test]
fn marked_flows_pass_strict_rp_filter_and_kernel_replies_leave_by_the_uplink() {
    if loopguard_lab::skip_unprivileged(
        "marked_flows_pass_strict_rp_filter_and_kernel_replies_leave_by_the_uplink",
    ) {
        return;
    }
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    let config = GuardConfig::default();
    let (client, server) = client_and_server(config);
    for (server_ip, any) in [("198.51.100.2", "0.0.0.0:0"), ("2001:db8:2::2", "[::]:0")] {
        let ip: IpAddr = server_ip.parse().unwrap();
        let srv = server
            .run(|| UdpSocket::bind(SocketAddr::new(ip, 0)))
            .unwrap()
            .unwrap();
        srv.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let cli = client
            .run(|| {
                let s = UdpSocket::bind(any).unwrap();
                socket2::SockRef::from(&s).set_mark(config.mark()).unwrap();
                s
            })
            .unwrap();
        cli.set_read_timeout(Some(Duration::from_secs(2))).unwrap();

        // A reply to a marked socket passes strict rp_filter (IPv4): its mark is restored
        // from conntrack before the reverse-path check.
        cli.send_to(b"ping", srv.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let (_, from) =
            retry(|| srv.recv_from(&mut buf)).expect("the marked datagram left by the uplink");
        srv.send_to(b"pong", from).unwrap();
        let got = retry(|| cli.recv(&mut buf)).map(|n| buf[..n].to_vec());
        assert_eq!(
            got.ok().as_deref(),
            Some(&b"pong"[..]),
            "reply to {from} was dropped"
        );

        // The flow's conntrack entry remembers the mark (`/proc/net` would be the process's
        // namespace, not this thread's).
        let table = client
            .run(|| {
                std::fs::read_to_string("/proc/thread-self/net/nf_conntrack").unwrap_or_default()
            })
            .unwrap();
        let saved = format!("mark={}", config.mark());
        assert!(
            table
                .lines()
                .any(|l| l.contains(&proc_form(ip)) && l.contains(&saved)),
            "no conntrack entry to {server_ip} with {saved}:\n{table}"
        );

        // The kernel's own reply to a closed port of the marked flow (ICMP port unreachable)
        // carries the restored mark, leaves by the uplink and reaches the server.
        drop(cli);
        srv.connect(from).unwrap();
        // The kernel rate-limits ICMP errors (per peer, and by a global budget that tests
        // running in parallel also spend), so one error may be suppressed: a few tries, each
        // waiting longer than the per-peer limit of one second. Seen once in ~10 runs.
        srv.set_read_timeout(Some(Duration::from_millis(1200)))
            .unwrap();
        let mut answers = Vec::new();
        for _ in 0..3 {
            srv.send(b"late").unwrap();
            let answer = retry(|| srv.recv(&mut buf)).map_err(|e| e.kind());
            answers.push(answer);
            if answer == Err(std::io::ErrorKind::ConnectionRefused) {
                break;
            }
        }
        assert_eq!(
            answers.last().and_then(|a| a.err()),
            Some(std::io::ErrorKind::ConnectionRefused),
            "the port-unreachable for {from} never came back by the uplink: {answers:?}"
        );
    }
}

#[test]
fn remove_all_deletes_every_configuration_and_nothing_foreign() {
    if loopguard_lab::skip_unprivileged(
        "remove_all_deletes_every_configuration_and_nothing_foreign",
    ) {
        return;
    }
    let ns = client();
    // A foreign rule and route, in a table loopguard also uses.
    ns.ip(&[
        "rule",
        "add",
        "from",
        "192.0.2.99",
        "lookup",
        "51820",
        "priority",
        "500",
    ])
    .unwrap();
    ns.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "dev",
        TUN,
        "table",
        "51820",
    ])
    .unwrap();
    let foreign = snapshot(&ns, 51_820);
    // Two configurations on two tunnels: the default one, and wg-quick-like numbers with an
    // explicit mark. (On one tunnel, each one's marked traffic would enter it through the
    // other's rule, and apply refuses that.)
    for step in [
        &["tuntap", "add", "dev", "lg-tun1", "mode", "tun"][..],
        &["link", "set", "lg-tun1", "addrgenmode", "none"],
        &["link", "set", "lg-tun1", "up"],
    ] {
        ns.ip(step).unwrap();
    }
    let explicit = GuardConfig::builder()
        .mark(0xfd00_2021)
        .table(51_820)
        .priority(1000)
        .build()
        .unwrap();
    let (default_config, removed) = ns
        .run(|| {
            block_on(async {
                let d = GuardConfig::default();
                TunnelRoutes::new(d)
                    .apply(TUN, &nets(&["0.0.0.0/0"]))
                    .await
                    .expect("apply default");
                TunnelRoutes::new(explicit)
                    .apply("lg-tun1", &nets(&["0.0.0.0/0", "::/0"]))
                    .await
                    .expect("apply explicit");
                // Any configuration's value removes everything tagged.
                (
                    d,
                    TunnelRoutes::new(d).remove_all().await.expect("remove_all"),
                )
            })
        })
        .unwrap();
    println!("remove_all: {removed:?}");
    // 2 + 4 rules; 2 + 4 routes (a default and a last-resort route per family and config).
    assert_eq!((removed.rules_removed, removed.routes_removed), (6, 6));
    assert_eq!(
        removed.conntrack_tables,
        ["loopguard_19527", "loopguard_51820"]
    );
    assert_eq!(snapshot(&ns, 51_820), foreign);
    assert_eq!(count_tagged(&snapshot(&ns, default_config.table())), 0);
    let all = format!(
        "{}{}",
        ns.ip(&["-4", "route", "show", "table", "all"]).unwrap(),
        ns.ip(&["-6", "route", "show", "table", "all"]).unwrap()
    );
    assert_eq!(count_tagged(&all), 0, "{all}");
}

#[test]
fn a_priority_after_a_moved_main_rule_is_refused_before_anything_changes() {
    if loopguard_lab::skip_unprivileged(
        "a_priority_after_a_moved_main_rule_is_refused_before_anything_changes",
    ) {
        return;
    }
    let ns = client();
    // VRF-style: an unconditional `lookup main` moved up to 1000.
    ns.ip(&[
        "rule", "add", "from", "all", "lookup", "main", "priority", "1000",
    ])
    .unwrap();
    let config = GuardConfig::default();
    ns.sysctl("net.ipv4.fwmark_reflect", "0").unwrap();
    let before = snapshot(&ns, config.table());
    let refused = ns
        .run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0"]))))
        .unwrap();
    assert_eq!(
        snapshot(&ns, config.table()),
        before,
        "the refusal changed something"
    );
    assert_eq!(read_sysctl(&ns, "net.ipv4.fwmark_reflect"), "0");
    let below = GuardConfig::builder().priority(900).build().unwrap();
    let accepted = ns
        .run(|| block_on(TunnelRoutes::new(below).apply(TUN, &nets(&["0.0.0.0/0"]))))
        .unwrap();
    match refused {
        Err(e @ RoutesError::PriorityCannotWork(_)) => {
            let m = e.to_string();
            println!("{m}");
            assert!(
                m.contains("1000: from all lookup main") && m.contains("below 999"),
                "{m}"
            );
        }
        other => panic!("expected PriorityCannotWork, got {other:?}"),
    }
    let report = accepted.expect("priority 900 works");
    assert_eq!(report.paths[0].unmarked.interface.as_deref(), Some(TUN));
}

#[test]
fn a_foreign_rule_that_sends_marked_traffic_into_the_tunnel_fails_apply_naming_it() {
    if loopguard_lab::skip_unprivileged(
        "a_foreign_rule_that_sends_marked_traffic_into_the_tunnel_fails_apply_naming_it",
    ) {
        return;
    }
    let ns = client();
    // NetBird's rule set, its table pointing at the same TUN loopguard is given.
    ns.ip(&["route", "add", "default", "dev", TUN, "table", "7120"])
        .unwrap();
    ns.ip(&[
        "rule", "add", "not", "fwmark", "0x1bd00", "lookup", "7120", "priority", "110",
    ])
    .unwrap();
    let config = GuardConfig::default();
    let err = ns
        .run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0"]))))
        .unwrap()
        .expect_err("marked traffic enters the tunnel");
    let m = err.to_string();
    println!("{m}");
    assert!(matches!(err, RoutesError::MarkedEntersTunnel(_)), "{err:?}");
    assert!(
        m.contains("110: not from all fwmark 0x1bd00/0xffffffff lookup 7120")
            && m.contains("table 7120")
            && m.contains(TUN),
        "{m}"
    );
}

#[test]
fn a_foreign_table_taking_marked_traffic_elsewhere_is_a_warning_naming_the_rule() {
    if loopguard_lab::skip_unprivileged(
        "a_foreign_table_taking_marked_traffic_elsewhere_is_a_warning_naming_the_rule",
    ) {
        return;
    }
    let ns = client();
    // Tailscale with an exit node: `5270: from all lookup 52`, table 52's default through
    // its own device.
    ns.ip(&["tuntap", "add", "dev", "lg-ts0", "mode", "tun"])
        .unwrap();
    ns.ip(&["link", "set", "lg-ts0", "up"]).unwrap();
    ns.ip(&["route", "add", "default", "dev", "lg-ts0", "table", "52"])
        .unwrap();
    ns.ip(&[
        "rule", "add", "from", "all", "lookup", "52", "priority", "5270",
    ])
    .unwrap();
    let report = ns
        .run(|| {
            block_on(TunnelRoutes::new(GuardConfig::default()).apply(TUN, &nets(&["0.0.0.0/0"])))
        })
        .unwrap()
        .expect("apply");
    let codes: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.code, f.rule_priority, f.table))
        .collect();
    println!("{:#?}", report.findings);
    assert_eq!(
        codes,
        [
            ("captured_by_foreign_rule", Some(5270), Some(52)),
            ("unmarked_misses_tunnel", Some(5270), Some(52)),
        ]
    );
    assert!(report.findings[0].message.contains("lg-ts0"));
}

#[test]
fn the_guard_removes_on_drop_on_any_thread_and_on_explicit_remove() {
    if loopguard_lab::skip_unprivileged(
        "the_guard_removes_on_drop_on_any_thread_and_on_explicit_remove",
    ) {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    let empty = snapshot(&ns, config.table());
    let prefixes = nets(&["0.0.0.0/0", "::/0"]);

    // Installed in the namespace, dropped on this test's thread (another namespace): the
    // removal happens where the routes are.
    let (report, guard) = ns
        .run(|| block_on(TunnelRoutes::new(config).install(TUN, &prefixes)))
        .unwrap()
        .expect("install");
    assert_eq!((report.rules_added, report.routes_added), (4, 4));
    assert_eq!(count_tagged(&snapshot(&ns, config.table())), 8);
    drop(guard);
    assert_eq!(
        snapshot(&ns, config.table()),
        empty,
        "drop removed everything"
    );

    // A panic while the guard is held unwinds through its destructor.
    let panicked = ns
        .run(|| {
            std::panic::catch_unwind(|| {
                block_on(async {
                    let (_report, _guard) = TunnelRoutes::new(config)
                        .install(TUN, &prefixes)
                        .await
                        .expect("install");
                    panic!("the client's main loop failed");
                })
            })
            .is_err()
        })
        .unwrap();
    assert!(panicked);
    assert_eq!(
        snapshot(&ns, config.table()),
        empty,
        "unwinding removed everything"
    );

    // The explicit path reports what it removed.
    let removed = ns
        .run(|| {
            block_on(async {
                let (_, guard) = TunnelRoutes::new(config)
                    .install(TUN, &prefixes)
                    .await
                    .expect("install");
                guard.remove().await.expect("remove")
            })
        })
        .unwrap();
    assert_eq!((removed.rules_removed, removed.routes_removed), (4, 4));
    assert_eq!(snapshot(&ns, config.table()), empty);
}

#[test]
fn sysctls_are_put_back_only_when_asked_and_only_if_unchanged_since() {
    if loopguard_lab::skip_unprivileged(
        "sysctls_are_put_back_only_when_asked_and_only_if_unchanged_since",
    ) {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    let prefixes = nets(&["0.0.0.0/0"]);
    for key in [
        "net.ipv4.fwmark_reflect",
        "net.ipv4.conf.all.src_valid_mark",
    ] {
        ns.sysctl(key, "0").unwrap();
    }
    // Asked: both go back to 0.
    ns.run(|| {
        block_on(async {
            let (report, guard) = TunnelRoutes::new(config)
                .install(TUN, &prefixes)
                .await
                .expect("install");
            guard
                .restore_sysctls_on_remove(&report.sysctls)
                .remove()
                .await
                .expect("remove")
        })
    })
    .unwrap();
    assert_eq!(read_sysctl(&ns, "net.ipv4.fwmark_reflect"), "0");
    assert_eq!(read_sysctl(&ns, "net.ipv4.conf.all.src_valid_mark"), "0");
    // Not asked: they stay as apply set them.
    ns.run(|| {
        block_on(async {
            let (_, guard) = TunnelRoutes::new(config)
                .install(TUN, &prefixes)
                .await
                .expect("install");
            guard.remove().await.expect("remove")
        })
    })
    .unwrap();
    assert_eq!(read_sysctl(&ns, "net.ipv4.fwmark_reflect"), "1");
    // Changed by another program since apply: its value stays (not written back).
    for key in [
        "net.ipv4.fwmark_reflect",
        "net.ipv4.conf.all.src_valid_mark",
    ] {
        ns.sysctl(key, "0").unwrap();
    }
    let report = ns
        .run(|| block_on(TunnelRoutes::new(config).apply(TUN, &prefixes)))
        .unwrap()
        .expect("apply");
    ns.sysctl("net.ipv4.conf.all.src_valid_mark", "0").unwrap();
    let restored = ns
        .run(|| loopguard::os::linux::restore_sysctls(&report.sysctls))
        .unwrap()
        .expect("restore");
    // Only the one still at apply's value; src_valid_mark (now the other program's) is not
    // in the list.
    let keys: Vec<&str> = restored.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["net.ipv4.fwmark_reflect"]);
    assert_eq!(read_sysctl(&ns, "net.ipv4.fwmark_reflect"), "0");
    assert_eq!(read_sysctl(&ns, "net.ipv4.conf.all.src_valid_mark"), "0");
}

/// Loads an nftables ruleset (another program's tables) into `ns` with `nft -f`.
fn nft_load(ns: &Netns, ruleset: &str) {
    let file = std::env::temp_dir().join(format!("lg-nft-{}.conf", std::process::id()));
    std::fs::write(&file, ruleset).unwrap();
    let loaded = ns.exec("nft", &["-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    loaded.unwrap();
}

/// `nft` reads one rule's `counter packets N`.
fn counter(listing: &str, needle: &str) -> u64 {
    let line = listing
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule {needle:?} in:\n{listing}"));
    let after = line.split("counter packets ").nth(1).expect("a counter");
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn the_conntrack_mark_keeps_other_programs_bits() {
    if loopguard_lab::skip_unprivileged("the_conntrack_mark_keeps_other_programs_bits") {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    ns.run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0"]))))
        .unwrap()
        .expect("apply");
    // Another program sets bit 16 of the conntrack mark before loopguard's output chain
    // (-150) runs and after conntrack (-200), and counts after it what is left of the test
    // datagram's (port 9: the namespace's own ND and MLD packets are not counted).
    let other = "table inet lg_other {
        chain before {
            type filter hook output priority -180;
            ct mark set ct mark | 0x10000
        }
        chain after {
            type filter hook output priority -100;
            udp dport 9 ct mark & 0x10000 == 0x10000 counter comment \"theirs\"
            udp dport 9 ct mark & 0x30ff == 0x3047 counter comment \"ours\"
        }
    }";
    nft_load(&ns, other);
    let mark = config.mark();
    ns.run(move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let value = mark as libc::c_int;
        // SAFETY: the pointer and length describe `value`, alive for the call.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        socket.send_to(b"marked", "192.0.2.1:9").unwrap();
    })
    .unwrap();
    let listing = ns
        .exec("nft", &["list", "chain", "inet", "lg_other", "after"])
        .unwrap();
    println!("{listing}");
    assert_eq!(
        counter(&listing, "\"ours\""),
        1,
        "loopguard's mark was not saved"
    );
    assert_eq!(
        counter(&listing, "\"theirs\""),
        1,
        "loopguard's save overwrote another program's conntrack mark bit"
    );
    let ours = ns
        .exec("nft", &["list", "table", "inet", "loopguard_19527"])
        .unwrap();
    println!("{ours}");
}

#[test]
fn ipv6_disabled_on_the_tun_or_everywhere_is_named_and_changes_nothing() {
    if loopguard_lab::skip_unprivileged("ipv6_disabled_on_the_tun_or_everywhere_is_named") {
        return;
    }
    for key in [
        "net.ipv6.conf.lg-tun0.disable_ipv6",
        "net.ipv6.conf.all.disable_ipv6",
    ] {
        let ns = client();
        let config = GuardConfig::default();
        ns.sysctl("net.ipv4.fwmark_reflect", "0").unwrap();
        ns.sysctl(key, "1").unwrap();
        let before = snapshot(&ns, config.table());
        let tables_before = ns.exec("nft", &["list", "tables"]).unwrap();
        let outcome = ns
            .run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0", "::/0"]))))
            .unwrap();
        let e = outcome.expect_err("apply with IPv6 disabled");
        println!("{key}=1: {e}");
        assert!(
            matches!(&e, RoutesError::Ipv6DisabledOnDevice(d) if d == TUN),
            "{key}: {e:?}"
        );
        assert!(!e.to_string().contains("permission"), "{e}");
        assert_eq!(
            snapshot(&ns, config.table()),
            before,
            "{key}: something changed"
        );
        assert_eq!(read_sysctl(&ns, "net.ipv4.fwmark_reflect"), "0", "{key}");
        assert_eq!(ns.exec("nft", &["list", "tables"]).unwrap(), tables_before);
        // IPv4 alone still works.
        ns.run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0"]))))
            .unwrap()
            .expect("IPv4 only");
    }
}

#[test]
fn another_programs_nftables_table_of_our_name_is_refused_and_never_touched() {
    if loopguard_lab::skip_unprivileged("another_programs_nftables_table_of_our_name") {
        return;
    }
    let config = GuardConfig::default();
    let name = format!("loopguard_{}", config.table());
    for (what, table) in [
        (
            "with a comment",
            format!("table inet {name} {{\n comment \"fw\"\n chain c {{\n counter\n }}\n}}\n"),
        ),
        (
            "without one",
            format!("table inet {name} {{\n chain c {{\n counter\n }}\n}}\n"),
        ),
    ] {
        let ns = client();
        nft_load(&ns, &table);
        let theirs = ns.exec("nft", &["list", "table", "inet", &name]).unwrap();
        let before = snapshot(&ns, config.table());
        let e = ns
            .run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0"]))))
            .unwrap()
            .expect_err("apply over another program's table");
        println!("{what}: {e}");
        assert!(
            matches!(&e, RoutesError::ForeignConntrackTable { table, .. } if *table == name),
            "{what}: {e:?}"
        );
        assert_eq!(
            snapshot(&ns, config.table()),
            before,
            "{what}: something changed"
        );
        ns.run(|| block_on(TunnelRoutes::new(config).remove()))
            .unwrap()
            .expect("remove");
        ns.run(|| block_on(TunnelRoutes::new(config).remove_all()))
            .unwrap()
            .expect("remove all");
        assert_eq!(
            ns.exec("nft", &["list", "table", "inet", &name]).unwrap(),
            theirs,
            "{what}: their table was touched"
        );
    }
    // Ours carries the comment that tells it apart.
    let ns = client();
    ns.run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0"]))))
        .unwrap()
        .expect("apply");
    let ours = ns.exec("nft", &["list", "table", "inet", &name]).unwrap();
    assert!(ours.contains("comment \"loopguard\""), "{ours}");
    ns.run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0"]))))
        .unwrap()
        .expect("apply again over our own table");
}

#[test]
fn an_apply_that_fails_halfway_removes_what_it_added() {
    if loopguard_lab::skip_unprivileged("an_apply_that_fails_halfway_removes_what_it_added") {
        return;
    }
    let ns = client();
    let config = GuardConfig::default();
    let t = config.table().to_string();
    // Another program's `unreachable ::/0` exactly where loopguard's last-resort IPv6 route
    // goes: the kernel refuses ours (EEXIST) after the IPv4 routes, the sysctls and the
    // nftables table are in.
    ns.ip(&[
        "-6",
        "route",
        "add",
        "unreachable",
        "default",
        "metric",
        "4294967295",
        "table",
        &t,
        "proto",
        "static",
    ])
    .unwrap();
    ns.sysctl("net.ipv4.fwmark_reflect", "0").unwrap();
    let before = snapshot(&ns, config.table());
    let tables_before = ns.exec("nft", &["list", "tables"]).unwrap();
    let e = ns
        .run(|| block_on(TunnelRoutes::new(config).apply(TUN, &nets(&["0.0.0.0/0", "::/0"]))))
        .unwrap()
        .expect_err("apply over a conflicting route");
    println!("{e}");
    assert!(e.to_string().contains("unreachable ::/0"), "{e}");
    assert_eq!(snapshot(&ns, config.table()), before, "not rolled back");
    assert_eq!(ns.exec("nft", &["list", "tables"]).unwrap(), tables_before);
    assert_eq!(read_sysctl(&ns, "net.ipv4.fwmark_reflect"), "0");
    assert!(
        table_routes(&ns, "-6", &t).contains("unreachable default"),
        "the other program's route went"
    );
}
