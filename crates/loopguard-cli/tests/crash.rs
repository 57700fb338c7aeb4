//! A `loopguard routes apply --watch` killed with SIGKILL (no chance to clean up), inside a
//! network namespace of its own: what it leaves keeps failing closed, and the next start
//! cleans up after it without touching a rule that is not loopguard's.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use loopguard_lab::{skip_unprivileged, unique_name, Netns};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loopguard");
/// The default guard numbers (see `GuardConfig`).
const TABLE: &str = "19527";
const MARK: &str = "0x3047";
/// Rules another program installed, IPv4 and IPv6.
const FOREIGN4: &str = "from 192.0.2.99 lookup 100";
const FOREIGN6: &str = "from 2001:db8:1::99 lookup 100";

/// A namespace with a veth uplink (192.0.2.2/24, 2001:db8:1::2/64, default routes) and an up
/// TUN.
fn namespace(tag: &str) -> Netns {
    let ns = Netns::create(&unique_name(tag)).expect("namespace");
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0").unwrap();
    for step in [
        &[
            "link", "add", "lg-up0", "type", "veth", "peer", "name", "lg-up0p",
        ][..],
        &["link", "set", "lg-up0p", "up"],
        &["link", "set", "lg-up0", "up"],
        &["addr", "add", "192.0.2.2/24", "dev", "lg-up0"],
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            "lg-up0",
            "nodad",
        ],
        &["route", "add", "default", "via", "192.0.2.1"],
        &["-6", "route", "add", "default", "via", "2001:db8:1::1"],
        &["tuntap", "add", "dev", "lg-tun0", "mode", "tun"],
        &["link", "set", "lg-tun0", "addrgenmode", "none"],
        &["link", "set", "lg-tun0", "up"],
    ] {
        ns.ip(step)
            .unwrap_or_else(|e| panic!("ip {}: {e}", step.join(" ")));
    }
    ns
}

/// Rules, the guard table's routes, and two route lookups, per family, as `ip` prints them.
struct Snapshot {
    rules4: String,
    rules6: String,
    table4: String,
    table6: String,
}

impl Snapshot {
    fn take(ns: &Netns) -> Snapshot {
        Snapshot {
            rules4: ns.ip(&["-4", "rule", "show"]).unwrap(),
            rules6: ns.ip(&["-6", "rule", "show"]).unwrap(),
            table4: ns
                .ip(&["-4", "route", "show", "table", TABLE])
                .unwrap_or_default(),
            table6: ns
                .ip(&["-6", "route", "show", "table", TABLE])
                .unwrap_or_default(),
        }
    }

    fn print(&self, ns: &Netns, when: &str) {
        println!("--- {when}");
        // Printed, not asserted: the nftables table (strict rp_filter support, seen through
        // loopguard: this machine has no `nft`) and the sysctls loopguard sets.
        let shown = Command::new("ip")
            .args(["netns", "exec", ns.name(), BIN, "routes", "show", "--json"])
            .output()
            .expect("runs loopguard routes show");
        let shown: Value = serde_json::from_slice(&shown.stdout).unwrap_or_default();
        println!(
            "nftables table (loopguard routes show): {}",
            shown["conntrack_table"]
        );
        let sysctls = ns
            .exec(
                "sysctl",
                &[
                    "net.ipv4.conf.all.src_valid_mark",
                    "net.ipv4.fwmark_reflect",
                    "net.ipv6.fwmark_reflect",
                ],
            )
            .unwrap_or_default();
        println!("sysctl: {}", sysctls.trim().replace('\n', "; "));
        for (what, text) in [
            ("ip -4 rule", &self.rules4),
            ("ip -6 rule", &self.rules6),
            ("ip -4 route table 19527", &self.table4),
            ("ip -6 route table 19527", &self.table6),
        ] {
            println!("{what}:");
            for line in text.lines() {
                println!("    {line}");
            }
        }
    }
}

/// Where the kernel sends a packet to `dst`, with and without the guard's mark: the device.
fn route_get(ns: &Netns, dst: &str, marked: bool) -> String {
    let mut args = vec!["route", "get", dst];
    if marked {
        args.extend(["mark", MARK]);
    }
    let out = ns.ip(&args).unwrap_or_else(|e| format!("error: {e}"));
    let line = out.lines().next().unwrap_or("").trim().to_owned();
    println!("ip route get {}: {line}", args[2..].join(" "));
    line
}

/// Lines of `ip rule show` that are not the kernel's own three (local, main, default).
fn non_default_rules(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter(|l| !(l.starts_with("0:") || l.starts_with("32766:") || l.starts_with("32767:")))
        .map(|l| l.trim().to_owned())
        .collect()
}

fn run(ns: &Netns, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), BIN])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("runs loopguard");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loopguard {}: {:?}\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("loopguard {}:\n    {}", args.join(" "), stdout.trim());
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn after_sigkill_the_rules_stay_fail_closed_and_the_next_start_removes_the_stale_ones() {
    if skip_unprivileged("after_sigkill_the_rules_stay_fail_closed") {
        return;
    }
    let ns = namespace("crash");
    // Rules of another program, at the priority of loopguard's fwmark rule.
    for (family, from) in [("-4", "192.0.2.99"), ("-6", "2001:db8:1::99")] {
        ns.ip(&[
            family, "rule", "add", "from", from, "lookup", "100", "priority", "32001",
        ])
        .unwrap();
    }

    // 1. The watcher runs, for both families.
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), BIN])
        .args([
            "routes",
            "apply",
            "--dev",
            "lg-tun0",
            "--route",
            "0.0.0.0/0",
            "--route",
            "::/0",
            "--watch",
            "--json",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs loopguard");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
    Snapshot::take(&ns).print(&ns, "while `routes apply --watch` runs");

    // 2. SIGKILL: no handler runs, nothing is removed. `ip netns exec` execs the program, so
    // the child's pid is loopguard's.
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let status = child.wait().unwrap();
    println!("killed: {status:?}");
    let after_kill = Snapshot::take(&ns);
    after_kill.print(&ns, "after SIGKILL, no loopguard process running");
    let ours4 = format!("not from all fwmark {MARK}/0x30ff lookup {TABLE}");
    let suppress = "from all lookup main suppress_prefixlength 0";
    for (family, rules, table, foreign) in [
        ("IPv4", &after_kill.rules4, &after_kill.table4, FOREIGN4),
        ("IPv6", &after_kill.rules6, &after_kill.table6, FOREIGN6),
    ] {
        assert!(
            rules.contains(&ours4),
            "{family}: fwmark rule gone:\n{rules}"
        );
        assert!(
            rules.contains(suppress),
            "{family}: suppress rule gone:\n{rules}"
        );
        assert!(
            table.contains("default dev lg-tun0"),
            "{family}: tunnel route gone:\n{table}"
        );
        assert!(rules.contains(foreign), "{family}: foreign rule touched");
    }
    // What the kernel does with those rules while nobody runs: marked packets take the
    // uplink, unmarked ones the tunnel (fail closed: nothing leaves around it unmarked).
    for dst in ["198.51.100.2", "2001:db8:2::2"] {
        assert!(
            route_get(&ns, dst, true).contains("dev lg-up0"),
            "{dst} marked"
        );
        assert!(
            route_get(&ns, dst, false).contains("dev lg-tun0"),
            "{dst} unmarked"
        );
    }

    // 3. The next start, with IPv4 only: the killed run's IPv6 rules and route are stale.
    let applied = run(
        &ns,
        &[
            "routes",
            "apply",
            "--dev",
            "lg-tun0",
            "--route",
            "0.0.0.0/0",
            "--json",
        ],
    );
    let restarted = Snapshot::take(&ns);
    restarted.print(&ns, "after `routes apply --route 0.0.0.0/0`");
    assert!(
        applied["rules_removed"].as_u64().unwrap() >= 2,
        "the stale IPv6 rules: {applied}"
    );
    assert!(
        applied["routes_removed"].as_u64().unwrap() >= 1,
        "the stale IPv6 route: {applied}"
    );
    assert!(!restarted.rules6.contains(TABLE), "{}", restarted.rules6);
    assert!(!restarted.rules6.contains(suppress), "{}", restarted.rules6);
    assert!(restarted.table6.trim().is_empty(), "{}", restarted.table6);
    assert!(restarted.rules4.contains(&ours4), "{}", restarted.rules4);
    assert!(restarted.rules4.contains(suppress), "{}", restarted.rules4);
    assert!(restarted.table4.contains("default dev lg-tun0"));
    assert!(restarted.rules4.contains(FOREIGN4), "{}", restarted.rules4);
    assert!(restarted.rules6.contains(FOREIGN6), "{}", restarted.rules6);
    // IPv6 is no longer captured; IPv4 still is, and marked IPv4 still escapes.
    assert!(route_get(&ns, "2001:db8:2::2", false).contains("dev lg-up0"));
    assert!(route_get(&ns, "198.51.100.2", false).contains("dev lg-tun0"));
    assert!(route_get(&ns, "198.51.100.2", true).contains("dev lg-up0"));

    // 4. `routes remove`: only the foreign rule is left.
    let removed = run(&ns, &["routes", "remove", "--json"]);
    assert!(removed["rules_removed"].as_u64().unwrap() >= 2, "{removed}");
    let gone = Snapshot::take(&ns);
    gone.print(&ns, "after `routes remove`");
    for (family, rules, foreign) in [
        ("IPv4", &gone.rules4, FOREIGN4),
        ("IPv6", &gone.rules6, FOREIGN6),
    ] {
        let left = non_default_rules(rules);
        assert_eq!(
            left.len(),
            1,
            "{family}: only the foreign rule may remain: {left:?}"
        );
        assert!(left[0].ends_with(foreign), "{family}: {left:?}");
    }
    assert!(gone.table4.trim().is_empty() && gone.table6.trim().is_empty());
}
