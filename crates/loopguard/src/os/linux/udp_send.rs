//! The Linux UDP send for a datagram whose interface the strategy names: `sendmsg` with the
//! control messages of [`linux_control`](crate::os::linux_control), so `ipi_ifindex` /
//! `ipi6_ifindex` reach the kernel (quinn-udp always writes 0 there). GSO batches carry
//! `UDP_SEGMENT`. Everything else (no interface: the mark chooses) stays with quinn-udp.
//!
//! IPv6 differs from IPv4 in one rule that decides whether the index pins at all:
//! net/ipv6/route.c `ip6_route_output_flags` makes the lookup strict about the output
//! interface (`RT6_LOOKUP_F_IFACE`) only when the socket is bound to a device or the flow's
//! source is unspecified. With a source, `::/1` through the tunnel still wins over `::/0` on
//! the named interface, and the datagram enters the tunnel (seen in the lab). So an IPv6
//! datagram whose source the strategy resolved goes with `ipi6_addr = ::` and the index (the
//! kernel then picks the source on that interface); one with a source the caller chose,
//! or from a socket bound to a specific IPv6 address, cannot be pinned this way and fails
//! closed, unsent.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use quinn_udp::Transmit;

use crate::os::linux_control as ctl;

// The pure encoder hard-codes Linux's numbers and layout; check them against libc.
const _: () = {
    assert!(ctl::SOL_IP == libc::SOL_IP);
    assert!(ctl::SOL_IPV6 == libc::SOL_IPV6);
    assert!(ctl::SOL_UDP == libc::SOL_UDP);
    assert!(ctl::IP_TOS == libc::IP_TOS);
    assert!(ctl::IP_PKTINFO == libc::IP_PKTINFO);
    assert!(ctl::IPV6_PKTINFO == libc::IPV6_PKTINFO);
    assert!(ctl::IPV6_TCLASS == libc::IPV6_TCLASS);
    assert!(ctl::UDP_SEGMENT == libc::UDP_SEGMENT);
    assert!(ctl::LAYOUT.header() == std::mem::size_of::<libc::cmsghdr>());
    assert!(ctl::IN_PKTINFO_LEN == std::mem::size_of::<libc::in_pktinfo>());
    assert!(ctl::IN6_PKTINFO_LEN == std::mem::size_of::<libc::in6_pktinfo>());
};

/// Sends the datagram or GSO batch `transmit` describes, its source and `interface` as
/// packet info. `resolved`: the source is the strategy's, so the kernel may choose it again
/// on the same interface (what IPv6 needs, see the module's documentation).
pub(crate) fn send(
    socket: &(impl AsRawFd + AsFd),
    transmit: &Transmit<'_>,
    interface: Option<u32>,
    resolved: bool,
) -> io::Result<()> {
    let mut src = transmit.src_ip;
    let native_v6 =
        matches!(transmit.destination.ip(), IpAddr::V6(a) if a.to_ipv4_mapped().is_none());
    if native_v6 && interface.is_some() {
        if !resolved {
            return Err(unpinnable("an explicit IPv6 source"));
        }
        if bound_to_an_address(socket)? {
            return Err(unpinnable("a socket bound to a specific IPv6 address"));
        }
        src = None;
    }
    let mut control = ctl::for_datagram(
        transmit.destination,
        src,
        interface,
        transmit.ecn.map(|e| e as u8),
        transmit.segment_size,
    );
    crate::os::unix_sendmsg::send(
        socket,
        transmit.destination,
        transmit.contents,
        &mut control,
    )
}

/// The error of a datagram that could only be sent by a lookup that ignores the interface.
fn unpinnable(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{what} cannot be pinned to an interface by packet info on Linux (the kernel \
             binds the IPv6 lookup to the interface only for an unspecified source): not sent"
        ),
    )
}

/// Whether the socket's local address is a specific one (not `::` / `0.0.0.0`).
fn bound_to_an_address(socket: &impl AsFd) -> io::Result<bool> {
    let local = socket2::SockRef::from(socket).local_addr()?;
    Ok(local
        .as_socket()
        .is_some_and(|a: SocketAddr| !a.ip().is_unspecified()))
}
