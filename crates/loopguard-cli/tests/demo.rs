//! `loopguard demo` end to end (root): the table and the JSON show guarded paths delivered
//! with zero packets in the TUN and plain paths looping, and the lab is gone afterwards.
#![cfg(target_os = "linux")]

use std::process::Command;

/// The namespaces still listed that the demo process `pid` created (`lg-demo-<role>-<pid>-<n>`).
/// Only its own: another test run on the same machine may be running its demo meanwhile.
fn demo_namespaces(pid: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let own = format!("-{pid}-");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("lg-demo") && n.contains(&own))
        .map(str::to_owned)
        .collect()
}

/// Runs `loopguard ARGS` to completion and returns its output and its pid.
fn run_loopguard(args: &[&str]) -> (std::process::Output, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_loopguard"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("runs loopguard {args:?}: {e}"));
    let pid = child.id();
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waits for loopguard {args:?}: {e}"));
    (out, pid)
}

/// Rows of the printed table: (family, transport, socket, sent, echoed, tun packets).
fn table_rows(stdout: &str) -> Vec<(String, String, String, u64, u64, u64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || !matches!(f[0], "IPv4" | "IPv6") {
                return None;
            }
            Some((
                f[0].to_owned(),
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].parse().ok()?,
                f[4].parse().ok()?,
                f[5].parse().ok()?,
            ))
        })
        .collect()
}

// One test runs both outputs in turn, so the machine is not loaded by two labs at once.
#[test]
fn demo_shows_the_loop_and_the_guard_and_cleans_up() {
    if loopguard_lab::skip_unprivileged("demo_shows_the_loop_and_the_guard") {
        return;
    }
    let (out, pid) = run_loopguard(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let rows = table_rows(&stdout);
    assert_eq!(
        rows.len(),
        8,
        "2 sockets x 2 families x 2 transports:\n{stdout}"
    );
    for family in ["IPv4", "IPv6"] {
        for transport in ["UDP", "TCP"] {
            for socket in ["plain", "guarded"] {
                let n = rows
                    .iter()
                    .filter(|r| r.0 == family && r.1 == transport && r.2 == socket)
                    .count();
                assert_eq!(n, 1, "{family} {transport} {socket}:\n{stdout}");
            }
        }
    }
    for (family, transport, socket, sent, echoed, tun) in &rows {
        let row = format!("{family} {transport} {socket}");
        assert!(*sent > 0, "{row}");
        if socket == "guarded" {
            assert_eq!(*tun, 0, "{row}: no packet may enter the TUN\n{stdout}");
            assert_eq!(echoed, sent, "{row}: all delivered\n{stdout}");
        } else {
            assert!(*tun > 0, "{row}: the loop must show\n{stdout}");
            assert_eq!(
                *echoed, 0,
                "{row}: nothing comes back through the TUN\n{stdout}"
            );
        }
    }
    // The guarded factory's counters, under the table: every guarded UDP datagram sent is
    // counted, none dropped, and at least as many were sent as came back.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("guarded factory counters:"))
        .unwrap_or_else(|| panic!("no counters line:\n{stdout}"));
    println!("{line}");
    let number_after = |label: &str| -> u64 {
        let rest = &line[line
            .find(label)
            .unwrap_or_else(|| panic!("{label}: {line}"))
            + label.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{label}: {line}"))
    };
    let guarded_udp = |i: usize| -> u64 {
        rows.iter()
            .filter(|r| r.1 == "UDP" && r.2 == "guarded")
            .map(|r| if i == 3 { r.3 } else { r.4 })
            .sum()
    };
    let (sent, echoed) = (guarded_udp(3), guarded_udp(4));
    assert_eq!(number_after("UDP datagrams sent"), sent, "{line}");
    assert!(number_after("UDP datagrams sent") >= echoed, "{line}");
    assert!(number_after("received") >= echoed, "{line}");
    assert_eq!(number_after("no route"), 0, "{line}");
    assert_eq!(number_after("send error"), 0, "{line}");
    assert!(
        demo_namespaces(pid).is_empty(),
        "left behind: {:?}",
        demo_namespaces(pid)
    );

    let (out, pid) = run_loopguard(&["demo", "--json"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["success"], true);
    // The roaming act: the flow resumed over the second uplink, nothing entered the TUN.
    let roaming = &v["roaming"];
    println!("roaming act: {roaming}");
    assert_eq!(roaming["ok"], true, "{roaming}");
    assert_eq!(roaming["tun_packets"], 0, "{roaming}");
    assert!(roaming["recovery_ms"].as_f64().is_some(), "{roaming}");
    let paths = v["paths"].as_array().expect("paths array");
    assert_eq!(paths.len(), 8);
    for p in paths {
        let tun = p["tun_packets"].as_u64().expect("tun_packets");
        // Packets read from the TUN that the loop tripwire recognised as the path's own.
        let caught = p["tripwire"].as_u64().expect("tripwire");
        match p["socket"].as_str() {
            Some("guarded") => {
                assert_eq!(tun, 0, "{p}");
                assert_eq!(caught, 0, "{p}");
                assert_eq!(p["echoed"], p["sent"], "{p}");
            }
            Some("plain") => {
                assert!(tun > 0, "{p}");
                assert!(
                    caught > 0 && caught <= tun,
                    "the tripwire missed the loop: {p}"
                );
            }
            other => panic!("unexpected socket kind {other:?}"),
        }
    }
    let counters = &v["counters"];
    println!("counters: {counters}");
    let field = |k: &str| {
        counters[k]
            .as_u64()
            .unwrap_or_else(|| panic!("counters.{k}: {counters}"))
    };
    let guarded_udp = |k: &str| -> u64 {
        paths
            .iter()
            .filter(|p| p["socket"] == "guarded" && p["transport"] == "UDP")
            .map(|p| p[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!(field("datagrams_sent"), guarded_udp("sent"), "{counters}");
    assert!(
        field("datagrams_sent") >= guarded_udp("echoed"),
        "{counters}"
    );
    assert!(
        field("datagrams_received") >= guarded_udp("echoed"),
        "{counters}"
    );
    assert_eq!(field("dropped_no_route") + field("dropped_send_error"), 0);
    let caught: u64 = paths.iter().map(|p| p["tripwire"].as_u64().unwrap()).sum();
    assert!(field("loops_detected") >= caught, "{counters}");
    for k in [
        "sends",
        "queue_full_retries",
        "gso_fallbacks",
        "sources_re_resolved",
        "protection_failures",
    ] {
        field(k);
    }
    assert!(
        demo_namespaces(pid).is_empty(),
        "left behind: {:?}",
        demo_namespaces(pid)
    );
}

#[test]
fn demo_without_root_says_so_and_fails() {
    // Only meaningful as root: drop to `nobody` for the child with setpriv (util-linux).
    if loopguard_lab::skip_unless_root_with_setpriv("demo_without_root") {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_loopguard"))
        .arg("demo")
        .output()
        .expect("runs setpriv");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("root"), "{stderr}");
    assert!(out.stdout.is_empty());
}
