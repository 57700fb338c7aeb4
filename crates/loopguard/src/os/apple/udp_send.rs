//! The Darwin UDP send: `sendmsg` with the control messages of
//! [`darwin_control`](crate::os::darwin_control), so an IPv4 datagram's source and interface
//! reach xnu as `IP_PKTINFO` (quinn-udp's `IP_RECVDSTADDR` is ignored on send). Receiving
//! stays with quinn-udp. Darwin has no GSO: one datagram per call.

use std::io;
use std::os::fd::AsRawFd;

use quinn_udp::Transmit;

use crate::os::darwin_control;

// The pure encoder hard-codes Darwin's numbers and layout; check them against the SDK.
const _: () = {
    assert!(darwin_control::IP_PKTINFO == libc::IP_PKTINFO);
    assert!(darwin_control::IPV6_PKTINFO == libc::IPV6_PKTINFO);
    assert!(darwin_control::IP_TOS == libc::IP_TOS);
    assert!(darwin_control::IPV6_TCLASS == libc::IPV6_TCLASS);
    assert!(darwin_control::IP_RECVDSTADDR == libc::IP_RECVDSTADDR);
    assert!(darwin_control::IPPROTO_IPV6 == libc::IPPROTO_IPV6);
    assert!(darwin_control::HEADER == std::mem::size_of::<libc::cmsghdr>());
    assert!(darwin_control::IN_PKTINFO_LEN == std::mem::size_of::<libc::in_pktinfo>());
    assert!(darwin_control::IN6_PKTINFO_LEN == std::mem::size_of::<libc::in6_pktinfo>());
};

/// Sends the one datagram `transmit` describes, its source and `interface` as packet info.
pub(crate) fn send(
    socket: &impl AsRawFd,
    transmit: &Transmit<'_>,
    interface: Option<u32>,
) -> io::Result<()> {
    let mut control = darwin_control::for_datagram(
        transmit.destination,
        transmit.src_ip,
        interface,
        transmit.ecn.map(|e| e as u8),
    );
    crate::os::unix_sendmsg::send(
        socket,
        transmit.destination,
        transmit.contents,
        &mut control,
    )
}
