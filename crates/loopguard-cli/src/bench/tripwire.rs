//! The loop tripwire's cost per packet read from the TUN: for packets that are not loops (the
//! tunnel's ordinary traffic, every packet pays this) and for loop packets (the rare case).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use loopguard::{LoopProtocol, SocketFactory};
use serde_json::{json, Value};

use super::cache::FixedSource;
use super::stats::{median, round};

/// Packets in the mix, walked in order.
const PACKETS: usize = 1024;
/// Sockets registered with the tripwire (half UDP, half TCP).
const SOCKETS: u16 = 16;
/// The first registered port.
const FIRST_PORT: u16 = 40_000;

/// An IPv4 or IPv6 packet from `sport` to port 443 over `protocol` (6 or 17), with a
/// hop-by-hop extension header when `hop_by_hop` (IPv6 only).
fn packet(v6: bool, protocol: u8, sport: u16, hop_by_hop: bool) -> Vec<u8> {
    let mut p = if v6 {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[6] = if hop_by_hop { 0 } else { protocol };
        p[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        if hop_by_hop {
            p.extend_from_slice(&[protocol, 0, 5, 2, 0, 0, 1, 0]);
        }
        p
    } else {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[9] = protocol;
        p[12..16].copy_from_slice(&[192, 0, 2, 2]);
        p[16..20].copy_from_slice(&[198, 51, 100, 7]);
        p
    };
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&443u16.to_be_bytes());
    // The rest of a transport header and some payload.
    p.resize(p.len() + 1200, 0);
    p
}

/// A mix of IPv4 and IPv6, UDP and TCP, some IPv6 with a hop-by-hop header; source ports
/// from `ports`.
fn mix(ports: impl Fn(usize) -> u16) -> Vec<Vec<u8>> {
    (0..PACKETS)
        .map(|i| {
            let protocol = if i % 3 == 0 { 6 } else { 17 };
            packet(i % 2 == 1, protocol, ports(i), i % 8 == 5)
        })
        .collect()
}

/// Nanoseconds per packet for the tripwire of a factory with [`SOCKETS`] watched sockets:
/// `not_loop` over packets of other ports, `loop` over packets of the watched ones.
pub fn run(rounds: usize, packets_per_round: usize) -> Value {
    let factory = SocketFactory::new(FixedSource {
        source: "192.0.2.2".parse().expect("an address"),
        fail: false,
    });
    let tripwire = factory.tripwire();
    let _watched: Vec<_> = (0..SOCKETS)
        .map(|i| {
            let protocol = if i % 2 == 0 {
                LoopProtocol::Udp
            } else {
                LoopProtocol::Tcp
            };
            let local = SocketAddr::from(([0u16; 8], FIRST_PORT + i));
            tripwire.watch(protocol, local, None)
        })
        .collect();
    // Ephemeral-looking ports, none of them watched.
    let others = mix(|i| 50_000 + (i as u16).wrapping_mul(7919) % 10_000);
    // Watched ports with the matching protocol: every packet is a loop.
    let loops = mix(|i| FIRST_PORT + if i % 3 == 0 { 1 } else { 0 } + 2 * (i as u16 % 8));
    let measure = |packets: &[Vec<u8>]| {
        let start = Instant::now();
        let mut found = 0u64;
        for k in 0..packets_per_round {
            if tripwire.check(black_box(&packets[k % PACKETS])).is_some() {
                found += 1;
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / packets_per_round as f64;
        (ns, found)
    };
    let (mut not_loop, mut looped) = (Vec::new(), Vec::new());
    let (mut false_positives, mut missed) = (0, 0);
    measure(&others);
    for _ in 0..rounds {
        let (ns, found) = measure(&others);
        not_loop.push(ns);
        false_positives += found;
        let loop_packets = packets_per_round / 10;
        let start = Instant::now();
        let mut found = 0u64;
        for k in 0..loop_packets {
            if tripwire.check(black_box(&loops[k % PACKETS])).is_some() {
                found += 1;
            }
        }
        looped.push(start.elapsed().as_nanos() as f64 / loop_packets as f64);
        missed += loop_packets as u64 - found;
    }
    json!({
        "not_loop": round(median(&not_loop), 2),
        "loop": round(median(&looped), 2),
        "watched_sockets": SOCKETS,
        "false_positives": false_positives,
        "loops_missed": missed,
        "note": "LoopTripwire::check per packet read from the TUN; IPv4/IPv6, UDP/TCP, 1 in 8 IPv6 with a hop-by-hop header",
    })
}
