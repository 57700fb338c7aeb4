//! Per-socket UDP options quinn-udp decides for every socket, which loopguard lets a caller
//! choose: receive coalescing (GRO) and fragmentation.
//!
//! quinn-udp turns `UDP_GRO` on for every Linux socket: the kernel then hands one receive
//! buffer up to 64 datagrams back to back, and what does not fit a small buffer is cut off
//! and lost without a word (`MSG_TRUNC`, which quinn-udp does not report). loopguard turns it
//! off on each new socket and lets the caller opt in with buffers sized for it.
//!
//! quinn-udp also sets `IP_MTU_DISCOVER` / `IPV6_MTU_DISCOVER` to `*_PMTUDISC_PROBE` and
//! `IPV6_DONTFRAG`: the don't-fragment bit on every datagram and no fragmentation by the
//! kernel, so a datagram
//! larger than the path MTU is refused (`EMSGSIZE`). Tunnels carried over UDP that rely on
//! fragmentation (WireGuard and OpenVPN with a large inner MTU) can ask for `*_PMTUDISC_DONT`.

use std::io;

/// Turns receive coalescing on or off (Linux and Android `UDP_GRO`). Elsewhere there is
/// none to turn on (on Windows quinn-udp leaves URO off): off is a no-op, on is
/// `Unsupported`.
pub(crate) fn set_gro(socket: &tokio::net::UdpSocket, on: bool) -> io::Result<()> {
    imp::set_gro(socket, on)
}

/// Lets the kernel fragment datagrams larger than the path MTU (`allow`), or sets
/// don't-fragment and refuses them (quinn-udp's default). Linux and Android; elsewhere
/// `Unsupported`.
pub(crate) fn set_fragmentation(socket: &tokio::net::UdpSocket, allow: bool) -> io::Result<()> {
    imp::set_fragmentation(socket, allow)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::io;
    use std::os::fd::AsRawFd;

    fn set(socket: &tokio::net::UdpSocket, level: i32, name: i32, value: i32) -> io::Result<()> {
        // SAFETY: `value` lives across the call and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub(super) fn set_gro(socket: &tokio::net::UdpSocket, on: bool) -> io::Result<()> {
        set(socket, libc::SOL_UDP, libc::UDP_GRO, i32::from(on))
    }

    pub(super) fn set_fragmentation(socket: &tokio::net::UdpSocket, allow: bool) -> io::Result<()> {
        // The IPv4 option also governs IPv4-mapped peers of a dual-stack socket.
        let v4 = if allow {
            libc::IP_PMTUDISC_DONT
        } else {
            libc::IP_PMTUDISC_PROBE
        };
        set(socket, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, v4)?;
        if socket.local_addr()?.is_ipv6() {
            let v6 = if allow {
                libc::IPV6_PMTUDISC_DONT
            } else {
                libc::IPV6_PMTUDISC_PROBE
            };
            set(socket, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, v6)?;
            // Without this the IPv6 path refuses anyway (`__ip6_append_data` in
            // net/ipv6/ip6_output.c checks it beside the PMTU mode).
            set(
                socket,
                libc::IPPROTO_IPV6,
                libc::IPV6_DONTFRAG,
                i32::from(!allow),
            )?;
        }
        Ok(())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use std::io;

    fn unsupported(what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{what} is only available on Linux and Android"),
        )
    }

    pub(super) fn set_gro(_socket: &tokio::net::UdpSocket, on: bool) -> io::Result<()> {
        if on {
            Err(unsupported("receive coalescing (UDP_GRO)"))
        } else {
            Ok(())
        }
    }

    pub(super) fn set_fragmentation(
        _socket: &tokio::net::UdpSocket,
        _allow: bool,
    ) -> io::Result<()> {
        Err(unsupported("choosing fragmentation"))
    }
}
