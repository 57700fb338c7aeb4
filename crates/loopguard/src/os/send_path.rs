//! The one datagram send of each OS, chosen here at module level (quinn-udp's shape), so
//! [`UdpSocket`](crate::UdpSocket) asks for the path once per batch and hands the batch to
//! [`send`] without a `cfg` of its own:
//! - Linux with an interface from the strategy and no mark on the socket (a pin strategy):
//!   `sendmsg` with `IP_PKTINFO` / `IPV6_PKTINFO` carrying the interface index,
//!   `UDP_SEGMENT` and ECN ([`linux_control`](super::linux_control)), because quinn-udp
//!   writes index 0;
//! - Linux without one, Android and other Unixes: quinn-udp (GSO, `IP_PKTINFO` with the
//!   source; the mark or the protect hook choose the interface);
//! - macOS, iOS: `sendmsg` with `IP_PKTINFO` / `IPV6_PKTINFO` carrying source *and*
//!   interface ([`darwin_control`](super::darwin_control)), because xnu ignores quinn-udp's
//!   `IP_RECVDSTADDR` on send;
//! - Windows: `WSASendMsg` with PKTINFO carrying the interface index, ECN where the provider
//!   supports it and USO ([`wsa_control`](super::wsa_control)).
//!
//! Errors come back raw; [`send_error`](super::send_error) classifies them.

use std::io;

use quinn_udp::{Transmit, UdpSocketState};

/// What the OS send needs to know about one socket, probed once when it is made.
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) struct Capabilities {
    /// The provider takes ECN control messages on IPv4 (IPv4-mapped) sends.
    pub(crate) ecn_v4: bool,
    /// The provider takes ECN control messages on IPv6 sends.
    pub(crate) ecn_v6: bool,
    /// The socket carries a mark (Linux `SO_MARK`): then the mark and its policy rules keep
    /// it out of the tunnel, and quinn-udp sends even when the strategy names an interface.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) marked: bool,
}

pub(crate) use imp::{capabilities, send};

#[cfg(windows)]
mod imp {
    use super::*;

    /// Probes the ECN support quinn-udp found when it enabled `IP_RECVECN`.
    pub(crate) fn capabilities(socket: &tokio::net::UdpSocket) -> Capabilities {
        crate::os::windows::udp_send::capabilities(socket)
    }

    /// `WSASendMsg` with our control messages.
    pub(crate) fn send(
        socket: &tokio::net::UdpSocket,
        _state: &UdpSocketState,
        caps: Capabilities,
        transmit: &Transmit<'_>,
        interface: Option<u32>,
        resolved: bool,
    ) -> io::Result<()> {
        let _ = resolved;
        crate::os::windows::udp_send::send(socket, transmit, interface, caps)
    }
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
mod imp {
    use super::*;

    /// Nothing to probe: Darwin takes `IP_TOS` / `IPV6_TCLASS` on send.
    pub(crate) fn capabilities(_socket: &tokio::net::UdpSocket) -> Capabilities {
        Capabilities {
            ecn_v4: true,
            ecn_v6: true,
            marked: false,
        }
    }

    /// `sendmsg` with `IP_PKTINFO` / `IPV6_PKTINFO`; one datagram (Darwin has no GSO).
    pub(crate) fn send(
        socket: &tokio::net::UdpSocket,
        _state: &UdpSocketState,
        _caps: Capabilities,
        transmit: &Transmit<'_>,
        interface: Option<u32>,
        resolved: bool,
    ) -> io::Result<()> {
        let _ = resolved;
        crate::os::apple::udp_send::send(socket, transmit, interface)
    }
}

#[cfg(not(any(windows, target_os = "macos", target_os = "ios")))]
mod imp {
    use quinn_udp::UdpSockRef;

    use super::*;

    /// quinn-udp decides on ECN itself; on Linux, whether the socket is marked (read once).
    pub(crate) fn capabilities(socket: &tokio::net::UdpSocket) -> Capabilities {
        #[cfg(target_os = "linux")]
        {
            Capabilities {
                marked: socket2::SockRef::from(socket).mark().is_ok_and(|m| m != 0),
                ..Capabilities::default()
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = socket;
            Capabilities::default()
        }
    }

    /// quinn-udp's send, or on Linux ours when the strategy names the interface of an
    /// unmarked socket: otherwise the mark (Linux) or the protect hook (Android) already keep
    /// the socket out of the tunnel; for an unmarked one, the index in the packet info is
    /// what does.
    pub(crate) fn send(
        socket: &tokio::net::UdpSocket,
        state: &UdpSocketState,
        caps: Capabilities,
        transmit: &Transmit<'_>,
        interface: Option<u32>,
        resolved: bool,
    ) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if interface.is_some() && !caps.marked {
            return crate::os::linux::udp_send::send(socket, transmit, interface, resolved);
        }
        let _ = (interface, resolved, caps);
        state.try_send(UdpSockRef::from(socket), transmit)
    }
}
