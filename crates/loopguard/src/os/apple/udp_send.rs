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
    let destination = socket2::SockAddr::from(transmit.destination);
    let mut control = darwin_control::for_datagram(
        transmit.destination,
        transmit.src_ip,
        interface,
        transmit.ecn.map(|e| e as u8),
    );
    let control_len = control.bytes().len();
    let mut iov = libc::iovec {
        // The kernel does not write to the buffers of a send.
        iov_base: transmit.contents.as_ptr().cast_mut().cast(),
        iov_len: transmit.contents.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = destination.as_ptr().cast_mut().cast();
    hdr.msg_namelen = destination.len();
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if control_len != 0 {
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = control_len as libc::socklen_t;
    }
    loop {
        // SAFETY: `hdr` points to the destination, one data buffer and the control buffer,
        // all alive across this call.
        let rc = unsafe { libc::sendmsg(socket.as_raw_fd(), &hdr, 0) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
