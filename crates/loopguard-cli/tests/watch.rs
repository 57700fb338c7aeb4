//! `loopguard watch` and `loopguard routes apply --watch` as a user runs them (root, inside a
//! network namespace of their own), stopped with SIGTERM.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use loopguard_lab::{skip_unprivileged, unique_name, Netns};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loopguard");

/// `routes apply --watch --json` of `0.0.0.0/0` on the namespace's TUN.
const APPLY_WATCH_JSON: &[&str] = &[
    "routes",
    "apply",
    "--dev",
    "lg-tun0",
    "--route",
    "0.0.0.0/0",
    "--watch",
    "--json",
];

/// A namespace with a veth uplink (up, 192.0.2.2/24, default via 192.0.2.1) and an up TUN.
fn namespace(tag: &str) -> Netns {
    let ns = Netns::create(&unique_name(tag)).expect("namespace");
    for step in [
        &[
            "link", "add", "lg-up0", "type", "veth", "peer", "name", "lg-up0p",
        ][..],
        &["link", "set", "lg-up0p", "up"],
        &["link", "set", "lg-up0", "up"],
        &["addr", "add", "192.0.2.2/24", "dev", "lg-up0"],
        &["route", "add", "default", "via", "192.0.2.1"],
        &["tuntap", "add", "dev", "lg-tun0", "mode", "tun"],
        &["link", "set", "lg-tun0", "addrgenmode", "none"],
        &["link", "set", "lg-tun0", "up"],
    ] {
        ns.ip(step)
            .unwrap_or_else(|e| panic!("ip {}: {e}", step.join(" ")));
    }
    ns
}

/// Starts `loopguard ARGS` in `ns` with piped standard output and error, without `RUST_LOG`.
fn start(ns: &Netns, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), BIN])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs loopguard")
}

/// Starts `loopguard ARGS` in `ns`; returns the child, its stdout lines and its stderr lines
/// as channels.
fn spawn(ns: &Netns, args: &[&str]) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = start(ns, args);
    let lines = |r: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let out = lines(Box::new(child.stdout.take().unwrap()));
    let err = lines(Box::new(child.stderr.take().unwrap()));
    (child, out, err)
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no line containing {needle:?}");
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // `ip netns exec` execs the program: the child's pid is loopguard's.
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_json_prints_one_object_per_change_and_ignores_the_tunnel() {
    if skip_unprivileged("watch_json_prints_one_object_per_change") {
        return;
    }
    let ns = namespace("wj");
    let (mut child, out, err) = spawn(&ns, &["watch", "--json", "--ignore", "lg-tun0"]);
    wait_for_line(&err, "watching network changes");
    ns.ip(&["addr", "add", "203.0.113.9/32", "dev", "lg-tun0"])
        .unwrap();
    ns.ip(&["addr", "add", "192.0.2.50/24", "dev", "lg-up0"])
        .unwrap();
    ns.ip(&["link", "set", "lg-up0", "down"]).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|v: &Value| v["kind"] == "link_down") && Instant::now() < deadline {
        if let Ok(line) = out.recv_timeout(Duration::from_millis(200)) {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            seen.push(v);
        }
    }
    let status = terminate(&mut child);
    for v in &seen {
        println!("{v}");
        assert!(
            v.get("kind").is_some() && v.get("interface").is_some(),
            "{v}"
        );
        assert_ne!(
            v["interface"], "lg-tun0",
            "the ignored tunnel was reported: {v}"
        );
    }
    assert!(
        seen.iter().any(|v| v["kind"] == "address_added"
            && v["interface"] == "lg-up0"
            && v["subject"] == "192.0.2.50/24"),
        "no address_added for lg-up0"
    );
    assert!(
        seen.iter()
            .any(|v| v["kind"] == "link_down" && v["interface"] == "lg-up0"),
        "no link_down for lg-up0"
    );
    assert!(status.success(), "SIGTERM is a normal end: {status:?}");
}

#[test]
fn routes_apply_watch_restores_deleted_rules_and_removes_everything_on_sigterm() {
    if skip_unprivileged("routes_apply_watch_restores_deleted_rules") {
        return;
    }
    let ns = namespace("rw");
    ns.ip(&[
        "rule",
        "add",
        "from",
        "192.0.2.99",
        "lookup",
        "100",
        "priority",
        "32001",
    ])
    .unwrap();
    let (mut child, out, err) = spawn(&ns, APPLY_WATCH_JSON);
    wait_for_line(&err, "keeping the routes asserted");
    let applied: Value = serde_json::from_str(&wait_for_line(&out, "rules_added")).unwrap();
    assert_eq!(applied["rules_added"], 2, "{applied}");
    let ours = "not from all fwmark 0x3047/0x30ff lookup 19527";
    assert!(ns.ip(&["rule", "show"]).unwrap().contains(ours));
    ns.ip(&[
        "rule",
        "del",
        "priority",
        "32001",
        "not",
        "fwmark",
        "0x3047/0x30ff",
        "lookup",
        "19527",
    ])
    .unwrap();
    let deleted = Instant::now();
    let mut back = None;
    while deleted.elapsed() < Duration::from_secs(10) {
        if ns.ip(&["rule", "show"]).unwrap().contains(ours) {
            back = Some(deleted.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("rule deleted with ip rule del: back after {back:?} (target < 1 s)");
    assert!(back.is_some(), "the deleted rule was not restored");
    let status = terminate(&mut child);
    let stopped: Value = serde_json::from_str(&wait_for_line(&out, "stopped")).unwrap();
    println!("{stopped}");
    assert!(status.success(), "{status:?}");
    assert_eq!(stopped["restores"], 1, "{stopped}");
    let rules = ns.ip(&["rule", "show"]).unwrap();
    assert!(
        !rules.contains("19527"),
        "left behind after SIGTERM:\n{rules}"
    );
    assert!(
        rules.contains("from 192.0.2.99 lookup 100"),
        "the foreign rule was touched:\n{rules}"
    );
}

/// Starts `loopguard ARGS` in `ns` as `loopguard ARGS | head -1` would: the first line of its
/// standard output is read, then the pipe is closed. Returns the child, the first line and
/// the stderr lines.
fn spawn_head1(
    ns: &Netns,
    args: &[&str],
) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = start(ns, args);
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        // The reader (and with it the pipe's read end) is dropped here, like `head -1`.
        let _ = first_tx.send(line);
    });
    let (err_tx, err) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if err_tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, first, err)
}

/// Waits (bounded) for the child to exit.
fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still running after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every stderr line received so far.
fn drain(rx: &mpsc::Receiver<String>) -> Vec<String> {
    rx.try_iter().collect()
}

#[test]
fn routes_apply_watch_prints_each_restore_and_removes_everything_on_sighup() {
    if skip_unprivileged("routes_apply_watch_removes_everything_on_sighup") {
        return;
    }
    let ns = namespace("whup");
    let (mut child, out, err) = spawn(&ns, APPLY_WATCH_JSON);
    wait_for_line(&err, "keeping the routes asserted");
    wait_for_line(&out, "rules_added");
    ns.ip(&["rule", "del", "priority", "32000"]).unwrap();
    let event: Value = serde_json::from_str(&wait_for_line(&out, "\"event\"")).unwrap();
    println!("{event}");
    assert_eq!(event["event"], "restored", "{event}");
    assert_eq!(event["piece"], "rules", "{event}");
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    let status = wait_exit(&mut child, "after SIGHUP");
    let stopped: Value = serde_json::from_str(&wait_for_line(&out, "stopped")).unwrap();
    println!("{stopped}");
    assert!(
        status.success(),
        "SIGHUP is a stop like SIGTERM: {status:?}"
    );
    assert_eq!(stopped["restores"], 1, "{stopped}");
    let rules = ns.ip(&["rule", "show"]).unwrap();
    assert!(
        !rules.contains("19527"),
        "left behind after SIGHUP:\n{rules}"
    );
}

#[test]
fn watch_json_stops_quietly_when_its_reader_goes_away() {
    if skip_unprivileged("watch_json_stops_quietly_when_its_reader_goes_away") {
        return;
    }
    let ns = namespace("wpipe");
    let (mut child, first, err) = spawn_head1(&ns, &["watch", "--json"]);
    wait_for_line(&err, "watching network changes");
    // Changes until the watcher has printed a line and found the pipe closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running with its reader gone"
        );
        n += 1;
        let addr = format!("192.0.2.{}/32", 100 + n % 100);
        let _ = ns.ip(&["addr", "add", &addr, "dev", "lg-up0"]);
        std::thread::sleep(Duration::from_millis(50));
    };
    let line = first.recv_timeout(Duration::from_secs(10)).unwrap();
    let stderr = drain(&err);
    println!("first line: {line}; stderr: {stderr:?}");
    assert!(serde_json::from_str::<Value>(&line).is_ok(), "{line}");
    assert!(
        status.success(),
        "a closed pipe is a normal end: {status:?}"
    );
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
}

#[test]
fn routes_apply_watch_removes_its_state_when_its_reader_goes_away() {
    if skip_unprivileged("routes_apply_watch_removes_its_state_when_its_reader_goes_away") {
        return;
    }
    let ns = namespace("wpipr");
    let (mut child, first, err) = spawn_head1(&ns, APPLY_WATCH_JSON);
    wait_for_line(&err, "keeping the routes asserted");
    let line = first.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(line.contains("rules_added"), "{line}");
    // A restore makes the keeper print: the closed pipe stops it, as SIGTERM would.
    ns.ip(&["rule", "del", "priority", "32000"]).unwrap();
    let status = wait_exit(&mut child, "with its reader gone");
    let stderr = drain(&err);
    println!("stderr: {stderr:?}");
    assert!(
        status.success(),
        "a closed pipe is a normal end: {status:?}"
    );
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
    let rules = ns.ip(&["rule", "show"]).unwrap();
    assert!(
        !rules.contains("19527"),
        "left behind after the pipe closed:\n{rules}"
    );
}

#[test]
fn a_second_routes_apply_watch_of_the_same_configuration_is_refused_naming_the_first() {
    if skip_unprivileged("a_second_routes_apply_watch_is_refused") {
        return;
    }
    let ns = namespace("wtwo");
    let (mut first, out, err) = spawn(&ns, APPLY_WATCH_JSON);
    wait_for_line(&err, "keeping the routes asserted");
    wait_for_line(&out, "rules_added");
    let second = Command::new("ip")
        .args(["netns", "exec", ns.name(), BIN])
        .args(APPLY_WATCH_JSON)
        .env_remove("RUST_LOG")
        .output()
        .expect("runs loopguard");
    let text = String::from_utf8_lossy(&second.stderr);
    println!("second: {text}");
    assert_eq!(second.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("pid {}", first.id())),
        "the refusal does not name the first keeper: {text}"
    );
    // The refused one changed nothing: the first still keeps, and stops cleanly.
    ns.ip(&["rule", "del", "priority", "32000"]).unwrap();
    let event: Value = serde_json::from_str(&wait_for_line(&out, "\"event\"")).unwrap();
    assert_eq!(event["event"], "restored", "{event}");
    let status = terminate(&mut first);
    assert!(status.success(), "{status:?}");
    let rules = ns.ip(&["rule", "show"]).unwrap();
    assert_eq!(rules.matches("32000:").count(), 0, "{rules}");
}
