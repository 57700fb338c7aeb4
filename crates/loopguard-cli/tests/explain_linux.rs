//! `loopguard route explain` on Linux dumps kept as fixtures: `ip rule` and
//! `ip route show table all`, text and JSON, both families in one file.

use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loopguard");
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../loopguard/tests/fixtures/linux"
);

fn explain(args: &[&str]) -> Output {
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix("@") {
            Some(file) => format!("{FIXTURES}/{file}"),
            None => (*a).to_owned(),
        })
        .collect();
    Command::new(BIN)
        .args(["route", "explain"])
        .args(&args)
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

fn wg_quick(format: &str, mark: &str) -> Vec<Value> {
    json(&explain(&[
        "--linux-rules",
        &format!("@wg-quick-rules.{format}"),
        "--linux-routes",
        &format!("@wg-quick-routes.{format}"),
        "--mark",
        mark,
        "--tunnel",
        "wg0",
        "--json",
        "203.0.113.50",
        "192.0.2.77",
        "2001:db8:abcd::1",
    ]))
}

#[test]
fn wg_quick_marked_sockets_escape_and_others_enter_the_tunnel() {
    for format in ["txt", "json"] {
        let escaped = wg_quick(format, "0xca6c");
        assert_eq!(escaped[0]["interface"], "wlp4s0", "{format}");
        assert_eq!(escaped[0]["next_hop"], "192.0.2.1", "{format}");
        assert_eq!(escaped[0]["enters_tunnel"], false, "{format}");
        assert_eq!(escaped[0]["rule"]["priority"], 32766, "{format}");
        assert_eq!(escaped[0]["table"], "main", "{format}");
        // The main table's default is suppressed by rule 32764 before 32766 takes it.
        let results: Vec<&str> = escaped[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["result"].as_str().unwrap())
            .collect();
        assert_eq!(
            results,
            ["no_route_in_table", "suppressed", "no_match", "decided"],
            "{format}"
        );
        // The LAN is a /24 in main: not suppressed, rule 32764 decides, src from the route.
        assert_eq!(escaped[1]["rule"]["priority"], 32764, "{format}");
        assert_eq!(escaped[1]["source"], "192.0.2.48", "{format}");
        // IPv6 from the second half of the same files.
        assert_eq!(escaped[2]["interface"], "wlp4s0", "{format}");
        assert_eq!(escaped[2]["next_hop"], "fe80::1", "{format}");

        let looped = wg_quick(format, "0x3047");
        assert_eq!(looped[0]["interface"], "wg0", "{format}");
        assert_eq!(looped[0]["enters_tunnel"], true, "{format}");
        assert_eq!(looped[0]["rule"]["priority"], 32765, "{format}");
        assert_eq!(looped[0]["table"], "51820", "{format}");
        assert_eq!(looped[2]["enters_tunnel"], true, "{format}");
    }
}

#[test]
fn text_output_names_the_rule_and_flags_a_loop() {
    let out = explain(&[
        "--linux-rules",
        "@wg-quick-rules.txt",
        "--linux-routes",
        "@wg-quick-routes.txt",
        "--mark",
        "0",
        "--tunnel",
        "wg0",
        "203.0.113.50",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("203.0.113.50 -> interface wg0"), "{text}");
    assert!(text.contains("decided by rule 32765"), "{text}");
    assert!(text.contains("ENTERS THE TUNNEL"), "{text}");
}

#[test]
fn a_table_missing_from_the_paste_is_unknown_at_that_rule() {
    // loopguard's rules look in table 19527, which this paste does not hold.
    let v = json(&explain(&[
        "--linux-rules",
        "@loopguard-and-wg-quick-rules.txt",
        "--linux-routes",
        "@wg-quick-routes.txt",
        "--mark",
        "0",
        "--tunnel",
        "lg0",
        "--json",
        "203.0.113.50",
    ]));
    assert_eq!(v[0]["error"], "unknown");
    assert_eq!(v[0]["rule"]["priority"], 32001);
    assert_eq!(v[0]["table"], "19527");
    assert_eq!(v[0]["interface"], Value::Null);
    assert_eq!(v[0]["enters_tunnel"], Value::Null);
    // The tunnel device is in no route of the dump: said, not an error.
    assert!(v[0]["notes"][0]
        .as_str()
        .unwrap()
        .contains("--tunnel lg0 is the device of no route"));
}

#[test]
fn rules_alone_answer_what_the_rules_decide() {
    let v = json(&explain(&[
        "--linux-rules",
        "@wg-quick-rules.txt",
        "--mark",
        "0xca6c",
        "--tunnel",
        "wg0",
        "--json",
        "203.0.113.50",
    ]));
    assert_eq!(v[0]["error"], "unknown");
    assert_eq!(v[0]["rule"]["priority"], 32764);
    assert_eq!(v[0]["table"], "main");
    assert!(v[0]["notes"][0]
        .as_str()
        .unwrap()
        .contains("table local is not in the dump"));
}

#[test]
fn from_makes_source_rules_match_and_mask_bits_are_checked() {
    let dir = std::env::temp_dir().join(format!("lg-explain-linux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules.txt");
    std::fs::write(
        &rules,
        "0:\tfrom all lookup local\n100:\tfrom 192.0.2.48 lookup 7\n\
         200:\tfrom all fwmark 0x10000/0x10000 lookup 51820\n32766:\tfrom all lookup main\n",
    )
    .unwrap();
    let routes = dir.join("routes.txt");
    std::fs::write(
        &routes,
        "default via 192.0.2.1 dev eth0\ndefault via 192.0.2.254 dev eth1 table 7\n\
         default dev wg0 table 51820\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--linux-rules",
            rules.to_str().unwrap(),
            "--linux-routes",
            routes.to_str().unwrap(),
            "--tunnel",
            "wg0",
            "--json",
        ];
        args.extend_from_slice(extra);
        args.push("203.0.113.50");
        json(&explain(&args))
    };
    let unbound = run(&[]);
    let bound = run(&["--from", "192.0.2.48"]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(unbound[0]["interface"], "eth0");
    assert_eq!(bound[0]["interface"], "eth1");
    assert_eq!(bound[0]["source"], "192.0.2.48");
    // Bit 0x10000 is outside the default mask: software setting it would send the guarded
    // socket into wg0, and the answer says so.
    let note = unbound[0]["notes"][0].as_str().unwrap();
    assert!(
        note.contains("answer differs") && note.contains("wg0"),
        "{note}"
    );
}

#[test]
fn empty_and_wrong_files_say_no_rules_or_routes_found() {
    let windows = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../loopguard/tests/fixtures/windows/route-print-en.txt"
    );
    let out = explain(&["--linux-rules", windows, "--tunnel", "wg0", "192.0.2.9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("(is this the output of `ip rule`?)"),
        "{stderr}"
    );
    // The warnings about the lines it could not read stay short.
    assert!(stderr.lines().count() <= 8, "{stderr}");
    let out = explain(&[
        "--linux-rules",
        "@wg-quick-rules.txt",
        "--linux-routes",
        "@SOURCES.md",
        "--tunnel",
        "wg0",
        "192.0.2.9",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(is this the output of `ip route show table all`?)"),
        "{stderr}"
    );
    let out = explain(&[
        "--linux-rules",
        "@wg-quick-rules.txt",
        "--windows-route-print",
        windows,
        "--tunnel",
        "wg0",
        "192.0.2.9",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ipv6_rules_on_their_own_with_linux_rules6() {
    let dir = std::env::temp_dir().join(format!("lg-explain-rules6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules6 = dir.join("rules6.txt");
    // `ip -6 rule` alone looks exactly like `ip rule`: only the option tells the family.
    std::fs::write(
        &rules6,
        "0:\tfrom all lookup local\n32766:\tfrom all lookup main\n",
    )
    .unwrap();
    let out = explain(&[
        "--linux-rules6",
        rules6.to_str().unwrap(),
        "--linux-routes",
        "@wg-quick-routes.txt",
        "--tunnel",
        "wg0",
        "--json",
        "2001:db8:abcd::1",
        "203.0.113.50",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    let v = json(&out);
    assert_eq!(v[0]["interface"], "wlp4s0");
    assert_eq!(v[0]["rule"]["priority"], 32766);
    // No IPv4 rules were given: unknown, not unreachable.
    assert_eq!(v[1]["error"], "unknown");
}
