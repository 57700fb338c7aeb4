//! `loopguard probe HOST:PORT --resolver ADDR`: the host name is resolved through a guarded
//! socket against the named server, never through the system resolver.
#![cfg(target_os = "linux")]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use loopguard_lab::{skip_unprivileged, unique_name, Netns};

/// Answers `echo.lg.example` with 127.0.0.1 (A only) and every other name with NXDOMAIN.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries().first()?.clone();
    let mut reply = q.clone();
    reply.set_message_type(MessageType::Response);
    if question.name() != &Name::from_ascii("echo.lg.example.").ok()? {
        reply.set_response_code(ResponseCode::NXDomain);
    } else if question.query_type() == RecordType::A {
        let a = RData::A(A("127.0.0.1".parse().ok()?));
        reply.add_answer(Record::from_rdata(question.name().clone(), 60, a));
    }
    reply.to_vec().ok()
}

/// A UDP server on loopback inside `ns` that answers each datagram with `reply(datagram)`,
/// counting what it received; it runs until the test process ends.
fn serve(ns: &Netns, reply: fn(&[u8]) -> Option<Vec<u8>>) -> (SocketAddr, Arc<AtomicU64>) {
    let socket = ns.run(|| UdpSocket::bind("127.0.0.1:0")).unwrap().unwrap();
    let addr = socket.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            seen.fetch_add(1, Ordering::SeqCst);
            if let Some(out) = reply(&buf[..n]) {
                let _ = socket.send_to(&out, from);
            }
        }
    });
    (addr, count)
}

fn probe(ns: &Netns, args: &[&str]) -> Output {
    let mut all = vec![
        "netns",
        "exec",
        ns.name(),
        env!("CARGO_BIN_EXE_loopguard"),
        "probe",
    ];
    all.extend_from_slice(args);
    Command::new("ip")
        .args(&all)
        .output()
        .expect("runs loopguard")
}

#[test]
fn a_host_name_is_resolved_through_the_named_resolver_and_probed() {
    if skip_unprivileged("a_host_name_is_resolved_through_the_named_resolver_and_probed") {
        return;
    }
    let ns = Netns::create(&unique_name("pr")).expect("namespace");
    let (dns, queries) = serve(&ns, answer);
    let (echo, echoed) = serve(&ns, |d| Some(d.to_vec()));
    let target = format!("echo.lg.example:{}", echo.port());

    let out = probe(
        &ns,
        &[
            "udp",
            &target,
            "--resolver",
            &dns.to_string(),
            "--count",
            "3",
            "--timeout-ms",
            "10000",
            "--json",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(out.status.success(), "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(v["received"], 3, "{v}");
    assert_eq!(v["destination"], echo.to_string(), "{v}");
    assert!(
        queries.load(Ordering::SeqCst) >= 1,
        "the named resolver was never asked"
    );
    assert_eq!(echoed.load(Ordering::SeqCst), 3);

    // An unknown name is a clear error, not a lookup through the system resolver.
    let out = probe(
        &ns,
        &[
            "udp",
            "missing.lg.example:7",
            "--resolver",
            &dns.to_string(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(!out.status.success());
    assert!(stderr.contains("missing.lg.example"), "{stderr}");

    // A host name without --resolver is refused before anything is sent.
    let before = queries.load(Ordering::SeqCst);
    let out = probe(&ns, &["udp", &target]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--resolver"), "{stderr}");
    // A barrier instead of a wait: the server reads its queue in order, so once it has
    // counted a sentinel sent after the probe exited, anything the probe sent is counted too.
    ns.run(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"sentinel", dns).unwrap();
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while queries.load(Ordering::SeqCst) < before + 1 {
        assert!(
            Instant::now() < deadline,
            "the sentinel never reached the server"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        queries.load(Ordering::SeqCst),
        before + 1,
        "the probe sent a query without --resolver"
    );
}
