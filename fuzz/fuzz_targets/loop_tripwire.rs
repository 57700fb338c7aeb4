//! Packets read from a TUN device, as `LoopTripwire::check` sees them: any bytes must be
//! judged (a loop or not) without a panic or a read past the slice. Watched sockets on the
//! ports the first bytes name make the slow path (full header parse, entry match) reachable.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use loopguard::{
    LoopProtocol, Path, ProtectionError, ResolveError, SocketFactory, Strategy,
};

/// A strategy that protects nothing: the fuzz target only needs a factory's tripwire.
struct Nothing;

impl Strategy for Nothing {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn resolve(&self, _destination: IpAddr) -> Result<Path, ResolveError> {
        Err(ResolveError::NoRoute)
    }
}

fuzz_target!(|data: &[u8]| {
    let tripwire = SocketFactory::new(Nothing).tripwire();
    // Watch the source port of a transport header at the most common offsets, over both
    // protocols and with several bound addresses, so the slow path runs too.
    let port = |at: usize| {
        data.get(at..at + 2)
            .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]))
    };
    let mut watched = Vec::new();
    for port in [port(20), port(40), port(48)] {
        for local in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        ] {
            for protocol in [LoopProtocol::Udp, LoopProtocol::Tcp] {
                watched.push(tripwire.watch(protocol, SocketAddr::new(local, port), None));
            }
        }
    }
    if let Some(event) = tripwire.check(data) {
        assert_eq!(tripwire.loops_detected(), 1);
        let _ = event.to_string();
    }
});
