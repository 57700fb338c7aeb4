//! `loopguard route explain` on the Windows dumps kept as fixtures: both PowerShell versions,
//! `route print` in English and German, and the `Get-NetRoute` table.

use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loopguard");
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../loopguard/tests/fixtures/windows"
);

fn explain(args: &[&str]) -> Output {
    let fixtures: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix("@") {
            Some(file) => format!("{FIXTURES}/{file}"),
            None => (*a).to_owned(),
        })
        .collect();
    Command::new(BIN)
        .args(["route", "explain"])
        .args(&fixtures)
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

fn ps(version: &str, tunnel: &str) -> Vec<Value> {
    json(&explain(&[
        "--windows-routes",
        &format!("@{version}-routes.json"),
        "--windows-interfaces",
        &format!("@{version}-interfaces.json"),
        "--windows-addresses",
        &format!("@{version}-addresses.json"),
        "--tunnel",
        tunnel,
        "--json",
        "203.0.113.50",
        "198.51.100.200",
        "2001:db8:abcd::1",
    ]))
}

#[test]
fn powershell_51_and_7_dumps_give_the_same_decisions() {
    let old = ps("ps51", "loopguard");
    let new = ps("ps7", "24");
    assert_eq!(old, new);
    assert_eq!(old.len(), 3);
    // Around the tunnel's /1 routes, out through Ethernet (25) rather than Wi-Fi (50).
    assert_eq!(old[0]["destination"], "203.0.113.50");
    assert_eq!(old[0]["interface_index"], 12);
    assert_eq!(old[0]["interface_alias"], "Ethernet");
    assert_eq!(old[0]["source"], "192.0.2.10");
    let reasons: Vec<&str> = old[0]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"]["kind"].as_str().unwrap_or("chosen"))
        .collect();
    assert_eq!(reasons, ["chosen", "tunnel", "tunnel", "higher_metric"]);
    // Wi-Fi's LAN: the longer prefix beats Ethernet's cheaper default route.
    assert_eq!(old[1]["interface_alias"], "Wi-Fi");
    assert_eq!(old[1]["source"], "198.51.100.23");
    // IPv6: the stable address, not the temporary one next to it.
    assert_eq!(old[2]["interface_index"], 12);
    assert_eq!(old[2]["source"], "2001:db8:12:0:f4d1:22ff:fe33:4455");
}

#[test]
fn a_single_route_object_is_read_like_an_array() {
    let out = explain(&[
        "--windows-routes",
        "@ps7-single-route.json",
        "--windows-interfaces",
        "@ps7-interfaces.json",
        "--windows-addresses",
        "@ps7-addresses.json",
        "--tunnel",
        "loopguard",
        "--json",
        "192.0.2.99",
    ]);
    let v = json(&out);
    assert_eq!(v[0]["interface_index"], 12);
    assert_eq!(v[0]["candidates"].as_array().unwrap().len(), 1);
}

#[test]
fn route_print_in_english() {
    let out = explain(&[
        "--windows-route-print",
        "@route-print-en.txt",
        "--tunnel",
        "203.0.113.2",
        "--tunnel",
        "24",
        "--json",
        "203.0.113.50",
        "2001:db8:abcd::1",
    ]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    // The IPv4 table names interfaces by address; its metric is already the sum.
    assert_eq!(v[0]["interface_index"], Value::Null);
    assert_eq!(v[0]["interface"], "192.0.2.10");
    assert_eq!(v[0]["source"], "192.0.2.10");
    assert_eq!(v[0]["effective_metric"], 25);
    assert_eq!(v[1]["interface_index"], 12);
    assert_eq!(
        v[1]["interface_alias"],
        "Intel(R) Ethernet Connection (7) I219-LM"
    );
    assert_eq!(v[1]["next_hop"], "fe80::1");
    // Read from the wrapped /128 host routes; stable vs temporary is not in route print, so
    // the longest common prefix with the destination and then the lower address decide.
    assert_eq!(v[1]["source"], "2001:db8:12:0:7c2e:91ff:a1b3:4d5e");
}

#[test]
fn route_print_in_german_with_an_ipv4_only_uplink() {
    let out = explain(&[
        "--windows-route-print",
        "@route-print-de.txt",
        "--tunnel",
        "203.0.113.9",
        "--tunnel",
        "31",
        "--json",
        "198.51.100.7",
        "2001:db8::5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // The one damaged line of the paste is named, not silently dropped.
    assert!(
        stderr.contains("route-print-de.txt: line 43: could not read"),
        "{stderr}"
    );
    let v = json(&out);
    assert_eq!(v[0]["source"], "192.0.2.77");
    assert_eq!(v[0]["next_hop"], "192.0.2.1");
    assert_eq!(v[1]["error"], "host_unreachable");
    assert_eq!(v[1]["interface_index"], Value::Null);
    assert_eq!(v[1]["source"], Value::Null);
    assert_eq!(v[1]["candidates"][0]["reason"]["kind"], "tunnel");
}

#[test]
fn netroute_tables_with_and_without_addresses() {
    for file in ["@netroute-table-ps7.txt", "@netroute-table-ps51.txt"] {
        let v = json(&explain(&[
            "--windows-netroute-table",
            file,
            "--windows-addresses",
            "@ps51-addresses.json",
            "--tunnel",
            "24",
            "--json",
            "203.0.113.50",
        ]));
        assert_eq!(v[0]["interface_index"], 12, "{file}");
        assert_eq!(v[0]["source"], "192.0.2.10", "{file}");
    }
    // 5.1's narrow table cut two IPv6 prefixes short: reported.
    let out = explain(&[
        "--windows-netroute-table",
        "@netroute-table-ps51.txt",
        "--tunnel",
        "24",
        "192.0.2.9",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("could not read").count(), 2, "{stderr}");
    let out = explain(&[
        "--windows-netroute-table",
        "@netroute-table-de.txt",
        "--tunnel",
        "31",
        "--json",
        "198.51.100.7",
    ]);
    let v = json(&out);
    assert_eq!(v[0]["interface_index"], 9);
    assert_eq!(v[0]["source"], Value::Null);
}

#[test]
fn text_output_is_a_decision_table() {
    let out = explain(&[
        "--windows-route-print",
        "@route-print-en.txt",
        "--tunnel",
        "203.0.113.2",
        "198.51.100.200",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // Interfaces the IPv4 table knows only by address are shown by it, not as index 0.
    assert!(
        text.contains("198.51.100.200 -> interface 198.51.100.23 (IPv4 198.51.100.23)"),
        "{text}"
    );
    assert!(text.contains("shorter prefix (/0 < /24)"), "{text}");
    assert!(text.contains("tunnel interface"), "{text}");
}

#[test]
fn a_malformed_dump_names_the_file_and_the_field() {
    let dir = std::env::temp_dir().join(format!("lg-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad-routes.json");
    std::fs::write(
        &bad,
        r#"[{"ifIndex": 12, "DestinationPrefix": "0.0.0.0/0", "NextHop": "192.0.2.1", "RouteMetric": "lots"}]"#,
    )
    .unwrap();
    let out = explain(&[
        "--windows-routes",
        bad.to_str().unwrap(),
        "--windows-interfaces",
        "@ps7-interfaces.json",
        "--windows-addresses",
        "@ps7-addresses.json",
        "--tunnel",
        "loopguard",
        "192.0.2.9",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad-routes.json: record 1: field `RouteMetric`"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_tunnel_and_missing_dumps_are_usage_errors() {
    let out = explain(&[
        "--windows-route-print",
        "@route-print-en.txt",
        "--tunnel",
        "wg0",
        "192.0.2.9",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wg0"));
    let out = explain(&[
        "--windows-routes",
        "@ps7-routes.json",
        "--tunnel",
        "24",
        "192.0.2.9",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_documents_the_powershell_one_liner() {
    let out = explain(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Get-NetRoute | ConvertTo-Json | Out-File -Encoding utf8 routes.json"),
        "{help}"
    );
}

/// A scratch directory for one test, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("lg-explain-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[test]
fn an_idle_tunnel_in_the_interface_list_is_an_answer_with_a_note() {
    // French, UTF-16LE with CRLF, IPv4 only; adapter 27 has no route at all.
    let out = explain(&[
        "--windows-route-print",
        "@route-print-fr-ipv4-only.txt",
        "--tunnel",
        "27",
        "--tunnel",
        "203.0.113.6",
        "--json",
        "198.51.100.7",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("--tunnel 27 (TAP-Windows Adapter V9) matches no route"),
        "{stderr}"
    );
    let v = json(&out);
    assert_eq!(v[0]["interface"], "192.0.2.77");
    assert_eq!(v[0]["next_hop"], "192.0.2.1");
    let notes = v[0]["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].as_str().unwrap().contains("nothing to exclude"));
}

#[test]
fn a_tunnel_index_in_an_ipv4_only_route_print_warns_that_it_matches_no_route() {
    let out = explain(&[
        "--windows-route-print",
        "@route-print-fr-ipv4-only.txt",
        "--tunnel",
        "24",
        "--json",
        "198.51.100.7",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("--tunnel 24 (OpenVPN Wintun) matches no route"),
        "{stderr}"
    );
    assert!(stderr.contains("name its IPv4 address too"), "{stderr}");
    // The answer is still printed (the tunnel's /1 wins, as the warning says it may).
    let v = json(&out);
    assert_eq!(v[0]["interface"], "203.0.113.6");
    assert!(v[0]["notes"][0]
        .as_str()
        .unwrap()
        .contains("IPv4 answers may go through it"));
}

#[test]
fn a_trimmed_ipv6_paste_answers_the_interface_with_the_source_unknown() {
    let v = json(&explain(&[
        "--windows-route-print",
        "@route-print-en-trimmed-v6.txt",
        "--tunnel",
        "24",
        "--json",
        "2001:db8:abcd::1",
    ]));
    assert_eq!(v[0]["error"], Value::Null);
    assert_eq!(v[0]["interface_index"], 12);
    assert_eq!(v[0]["next_hop"], "fe80::1");
    assert_eq!(v[0]["source"], Value::Null);
    assert!(
        v[0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("no IPv6 address on interface 12: source unknown"),
        "{}",
        v[0]["notes"]
    );
}

#[test]
fn empty_wrong_format_and_routeless_dumps_say_no_routes_found() {
    let dir = Scratch::new("noroutes");
    let empty = dir.file("empty.txt", b"");
    let json_file = format!("{FIXTURES}/ps7-routes.json");
    let header_only = dir.file(
        "header.txt",
        b"===========================================================================\r\nInterface List\r\n 12...00 11 22 33 44 55 ......Ethernet\r\n",
    );
    for (file, command) in [
        (&empty, "route print"),
        (&json_file, "route print"),
        (&header_only, "route print"),
    ] {
        let out = explain(&["--windows-route-print", file, "--tunnel", "12", "192.0.2.9"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "no routes found in {file} (is this the output of `{command}`?)"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("--tunnel"), "{stderr}");
    }
    let out = explain(&[
        "--windows-netroute-table",
        &empty,
        "--tunnel",
        "12",
        "192.0.2.9",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`Get-NetRoute`?"));
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be replayed.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn random_bytes_give_a_short_stderr_and_no_routes_found() {
    let dir = Scratch::new("noise");
    // Random bytes with plenty of newlines and digits, so many lines look like data.
    let mut bytes = noise(2_000_000, 0x9e37_79b9_7f4a_7c15);
    for (n, b) in bytes.iter_mut().enumerate() {
        match n % 61 {
            0 => *b = b'\n',
            7 | 9 => *b = b'1',
            8 => *b = b'.',
            _ => {}
        }
    }
    let file = dir.file("noise.bin", &bytes);
    for reader in ["--windows-route-print", "--windows-netroute-table"] {
        let out = explain(&[reader, &file, "--tunnel", "12", "192.0.2.9"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{reader}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(lines.len() <= 8, "{reader}: {} lines", lines.len());
        assert!(stderr.len() < 4096, "{reader}: {} bytes", stderr.len());
        assert!(
            lines
                .iter()
                .any(|l| l.contains("more lines could not be read")),
            "{reader}: {stderr}"
        );
        // Nothing unescaped from the input reaches the terminal.
        assert!(
            !stderr.chars().any(|c| c.is_control() && c != '\n'),
            "{reader}: control characters in {stderr:?}"
        );
    }
}

#[test]
fn netsh_tables_in_english_and_german_give_the_same_decisions() {
    let run = |file: &str| {
        json(&explain(&[
            "--windows-netsh",
            file,
            "--tunnel",
            "loopguard",
            "--json",
            "203.0.113.50",
            "198.51.100.200",
            "2001:db8:abcd::1",
        ]))
    };
    let en = run("@netsh-en.txt");
    let de = run("@netsh-de.txt");
    // The same host: only the Wi-Fi alias differs between the two languages.
    assert_eq!(en.len(), 3);
    for (e, d) in en.iter().zip(&de) {
        assert_eq!(e["interface_index"], d["interface_index"]);
        assert_eq!(e["next_hop"], d["next_hop"]);
        assert_eq!(e["effective_metric"], d["effective_metric"]);
    }
    // Route metric 0 + interface metric 25 beats 0 + 50 (Wi-Fi); the tunnel's /1 is out.
    assert_eq!(en[0]["interface_index"], 12);
    assert_eq!(en[0]["effective_metric"], 25);
    assert_eq!(en[0]["source"], Value::Null);
    let reasons: Vec<&str> = en[0]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"]["kind"].as_str().unwrap_or("chosen"))
        .collect();
    assert_eq!(reasons, ["chosen", "higher_metric", "tunnel", "tunnel"]);
    // The /24 on Wi-Fi beats the cheaper default.
    assert_eq!(en[1]["interface_alias"], "Wi-Fi");
    assert_eq!(de[1]["interface_alias"], "WLAN");
    // IPv6 uses the IPv6 interface metric (45): 256 + 45.
    assert_eq!(en[2]["effective_metric"], 301);
    assert_eq!(en[2]["next_hop"], "fe80::1");
}

#[test]
fn every_os_answers_with_the_same_keys() {
    let linux = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../loopguard/tests/fixtures/linux"
    );
    let macos = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../loopguard/tests/fixtures/macos"
    );
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.retain(|k| !["rule", "table", "rules"].contains(&k.as_str()));
        k
    };
    let candidate_keys = |v: &Value| -> Vec<String> {
        v["candidates"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let windows = json(&explain(&[
        "--windows-netsh",
        "@netsh-en.txt",
        "--tunnel",
        "24",
        "--json",
        "203.0.113.50",
    ]));
    let linux = json(&explain(&[
        "--linux-rules",
        &format!("{linux}/wg-quick-rules.txt"),
        "--linux-routes",
        &format!("{linux}/wg-quick-routes.txt"),
        "--tunnel",
        "wg0",
        "--json",
        "203.0.113.50",
    ]));
    let macos = json(&explain(&[
        "--macos-netstat",
        &format!("{macos}/netstat-openvpn-refs.txt"),
        "--tunnel",
        "utun3",
        "--json",
        "203.0.113.50",
    ]));
    assert_eq!(keys(&windows[0]), keys(&linux[0]));
    assert_eq!(keys(&windows[0]), keys(&macos[0]));
    assert_eq!(candidate_keys(&windows[0]), candidate_keys(&linux[0]));
    assert_eq!(candidate_keys(&windows[0]), candidate_keys(&macos[0]));
    assert!(linux[0].get("rule").is_some() && linux[0].get("table").is_some());
}

#[test]
fn netsh_with_powershell_addresses_gives_sources() {
    let v = json(&explain(&[
        "--windows-netsh",
        "@netsh-en.txt",
        "--windows-addresses",
        "@ps51-addresses.json",
        "--tunnel",
        "24",
        "--json",
        "203.0.113.50",
    ]));
    assert_eq!(v[0]["interface_index"], 12);
    assert_eq!(v[0]["source"], "192.0.2.10");
}

#[test]
fn netsh_with_its_own_show_addresses_gives_sources() {
    let v = json(&explain(&[
        "--windows-netsh",
        "@netsh-en-with-addresses.txt",
        "--tunnel",
        "24",
        "--json",
        "203.0.113.50",
        "2001:db8:abcd::1",
    ]));
    assert_eq!(v[0]["interface_index"], 12);
    assert_eq!(v[0]["source"], "192.0.2.10");
    // The stable address, not the temporary one listed first.
    assert_eq!(v[1]["interface_index"], 12);
    assert_eq!(v[1]["source"], "2001:db8:12::10");
}
