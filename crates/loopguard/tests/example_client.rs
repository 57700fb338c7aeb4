//! `examples/tunnel_client.rs`, the whole Linux client, run as a user would run it: in the
//! lab's client namespace, with its own TUN device owning `0.0.0.0/0` and `::/0`, a peer in
//! the server namespace. A packet the client's namespace sends anywhere enters that TUN, the
//! example frames it and sends it to the peer over its guarded socket; the peer's answer
//! comes back through the TUN to the namespace's socket; Ctrl-C (SIGINT) removes the rules.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use loopguard_lab::Lab;

/// The bound on each wait; each ends as soon as what it waits for happens.
const WAIT: Duration = Duration::from_secs(20);
/// The example's TUN device (the lab's own TUN is another, unrouted one).
const TUN: &str = "lg-ex0";
/// Where the namespace's plain datagram goes: nowhere but the tunnel.
const FAR_AWAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 9);

/// The example's binary, built by `cargo test` beside the test binaries.
fn example_binary() -> std::path::PathBuf {
    let test = std::env::current_exe().unwrap();
    let dir = test.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join("examples").join("tunnel_client");
    assert!(path.exists(), "{} is not built", path.display());
    path
}

/// An IPv4/UDP packet (UDP checksum 0, allowed over IPv4).
fn ipv4_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = (20 + 8 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    let sum = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// The example's process, killed if the test ends before it does.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The example's standard output, line by line, from a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("example: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("the example never printed {prefix:?}: {e}"),
        }
    }
}

#[test]
fn the_whole_client_example_carries_packets_around_its_own_tunnel_and_removes_its_rules() {
    if loopguard_lab::skip_unprivileged(
        "the_whole_client_example_carries_packets_around_its_own_tunnel_and_removes_its_rules",
    ) {
        return;
    }
    let exe = example_binary();
    let lab = Lab::build("exc").expect("lab");
    let rules_before = lab.client().ip(&["rule", "show"]).unwrap();
    let peer = lab
        .server()
        .run(|| UdpSocket::bind((lab.server_v4(), 0)).unwrap())
        .unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    // The client namespace's own socket, for the answer the tunnel delivers.
    let local = lab
        .client()
        .run(|| UdpSocket::bind((lab.client_v4(), 0)).unwrap())
        .unwrap();
    local.set_read_timeout(Some(WAIT)).unwrap();

    let mut child = Running(
        Command::new("ip")
            .args(["netns", "exec", lab.client().name()])
            .arg(&exe)
            .args([TUN, &peer_addr.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the example"),
    );
    let lines = lines_of(&mut child.0);
    wait_for_line(&lines, "routes installed");

    // Everything unmarked goes into the example's TUN now: this datagram too.
    local.send_to(b"ping", FAR_AWAY).unwrap();
    // The kernel's own IPv6 packets on the new device (router solicitations, MLD) come
    // through the tunnel too; the datagram is the IPv4 one to FAR_AWAY.
    let mut buf = [0u8; 2048];
    let from = loop {
        let (len, from) = peer
            .recv_from(&mut buf)
            .expect("the sealed packet at the peer");
        let sealed = &buf[..len];
        println!("peer: {len} bytes from {from}");
        assert_eq!(
            from.ip(),
            std::net::IpAddr::from(lab.client_v4()),
            "left by the uplink"
        );
        let inner = sealed.strip_prefix(b"LG").expect("framed by the example");
        if inner[0] >> 4 == 4 && inner[16..20] == FAR_AWAY.ip().octets() {
            assert!(inner.ends_with(b"ping"), "the datagram sent into the TUN");
            break from;
        }
    };

    // The peer answers through the tunnel, to the namespace's socket.
    let SocketAddr::V4(local_addr) = local.local_addr().unwrap() else {
        unreachable!()
    };
    let mut answer = b"LG".to_vec();
    answer.extend(ipv4_udp(FAR_AWAY, local_addr, b"pong"));
    peer.send_to(&answer, from).unwrap();
    let (len, from) = local
        .recv_from(&mut buf)
        .expect("the answer out of the TUN");
    assert_eq!(
        (&buf[..len], from),
        (&b"pong"[..], SocketAddr::V4(FAR_AWAY))
    );

    // Ctrl-C: the loop ends and the rules go.
    assert!(Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    wait_for_line(&lines, "routes removed");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "the example exited with {status}");
    assert_eq!(
        lab.client().ip(&["rule", "show"]).unwrap(),
        rules_before,
        "rules left behind"
    );
}
