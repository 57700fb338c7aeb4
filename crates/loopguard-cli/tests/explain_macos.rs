//! `loopguard route explain` on macOS `netstat -rn` dumps kept as fixtures: both table
//! layouts, IPv4 and IPv6, CRLF.

use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loopguard");
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../loopguard/tests/fixtures/macos"
);

fn explain(file: &str, tunnel: &str, destinations: &[&str]) -> Output {
    Command::new(BIN)
        .args(["route", "explain", "--json", "--macos-netstat"])
        .arg(format!("{FIXTURES}/{file}"))
        .args(["--tunnel", tunnel])
        .args(destinations)
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot run loopguard")
}

fn json(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("not JSON");
    v.as_array().expect("not an array").clone()
}

fn reasons(v: &Value) -> Vec<String> {
    v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"]["kind"].as_str().unwrap_or("chosen").to_owned())
        .collect()
}

#[test]
fn openvpn_split_routes_are_skipped_for_the_physical_default() {
    let out = explain(
        "netstat-openvpn-refs.txt",
        "utun3",
        &["203.0.113.50", "192.0.2.77", "203.0.113.200"],
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v[0]["interface"], "en0");
    assert_eq!(v[0]["interface_index"], 4);
    assert_eq!(v[0]["next_hop"], "192.0.2.1");
    assert_eq!(v[0]["route"], "0.0.0.0/0");
    // Only 128.0/1 of the two split routes contains it (documentation addresses are all
    // above 128.0.0.0).
    assert_eq!(reasons(&v[0]), ["chosen", "tunnel"]);
    // On the LAN: the /24, on-link.
    assert_eq!(v[1]["route"], "192.0.2.0/24");
    assert_eq!(v[1]["next_hop"], Value::Null);
    // The host route to the VPN server wins over the default.
    assert_eq!(v[2]["route"], "203.0.113.200/32");
}

#[test]
fn a_vpn_that_took_the_default_leaves_the_scoped_physical_one() {
    let v = json(&explain(
        "netstat-wireguard-11.txt",
        "utun4",
        &["198.51.100.80", "192.0.2.1", "2001:db8:abcd::1"],
    ));
    assert_eq!(v[0]["interface"], "en0");
    assert_eq!(v[0]["next_hop"], "192.0.2.1");
    assert_eq!(reasons(&v[0]), ["chosen", "tunnel"]);
    // The gateway itself: the on-link /32, its cloned ARP entry (W) ignored.
    assert_eq!(v[1]["route"], "192.0.2.1/32");
    assert!(reasons(&v[1]).contains(&"cloned".to_owned()));
    // IPv6: the default scoped to en0, not utun4's.
    assert_eq!(v[2]["interface"], "en0");
    assert_eq!(v[2]["next_hop"], "fe80::1");
    assert_eq!(v[2]["interface_index"], 6);
}

#[test]
fn an_inet6_table_with_crlf_and_a_tunnel_not_in_it() {
    let out = explain(
        "netstat-inet6-crlf.txt",
        "utun9",
        &["2001:db8:abcd::1", "192.0.2.1"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("--tunnel utun9 is the interface of no route"),
        "{stderr}"
    );
    let v = json(&out);
    assert_eq!(v[0]["interface"], "en0");
    assert_eq!(v[0]["next_hop"], "fe80::1");
    assert_eq!(v[1]["error"], "host_unreachable");
}

#[test]
fn a_file_without_routes_says_no_routes_found() {
    let out = explain("SOURCES.md", "utun3", &["192.0.2.1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(is this the output of `netstat -rn`?)"),
        "{stderr}"
    );
}

#[test]
fn a_reject_route_is_an_error_not_a_path() {
    let dir = std::env::temp_dir().join(format!("lg-explain-macos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("netstat.txt");
    std::fs::write(
        &file,
        "Internet:\nDestination Gateway Flags Netif Expire\n\
         default 192.0.2.1 UGScg en0\n203.0.113/24 127.0.0.1 UGSRc lo0\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["route", "explain", "--json", "--macos-netstat"])
        .arg(&file)
        .args(["--tunnel", "utun3", "203.0.113.9"])
        .output()
        .expect("cannot run loopguard");
    std::fs::remove_dir_all(&dir).ok();
    let v = json(&out);
    assert_eq!(v[0]["error"], "reject");
    assert_eq!(v[0]["route"], "203.0.113.0/24");
}
