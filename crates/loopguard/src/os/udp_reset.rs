//! Windows UDP "connection reset" reporting, which every UDP socket of a factory turns off.
//!
//! By default Windows turns an ICMP port-unreachable for a datagram this socket sent into a
//! `WSAECONNRESET` on the socket's next `recv` (and, on an unconnected socket, the next
//! `send`), whoever the peer: one dead peer breaks the socket for all of them. An ICMP
//! TTL-expired does the same with `WSAENETRESET`. Both are switched off per socket with
//! `WSAIoctl` and a `BOOL` FALSE input ("SIO_UDP_CONNRESET control code" and
//! "SIO_UDP_NETRESET control code", Win32 docs; quinn-udp and wireguard-windows do the same
//! for CONNRESET). The codes are `_WSAIOW(IOC_VENDOR, 12)` and `_WSAIOW(IOC_VENDOR, 15)`
//! (`mstcpip.h`), computed here so the rule is checked on every OS.

/// `IOC_IN` (`winsock2.h`): the ioctl takes input.
pub(crate) const IOC_IN: u32 = 0x8000_0000;
/// `IOC_VENDOR` (`ws2def.h`).
pub(crate) const IOC_VENDOR: u32 = 0x1800_0000;

/// `_WSAIOW(x, y)`: an input-only Winsock ioctl.
pub(crate) const fn wsaiow(x: u32, y: u32) -> u32 {
    IOC_IN | x | y
}

/// `SIO_UDP_CONNRESET`.
pub(crate) const SIO_UDP_CONNRESET: u32 = wsaiow(IOC_VENDOR, 12);
/// `SIO_UDP_NETRESET`.
pub(crate) const SIO_UDP_NETRESET: u32 = wsaiow(IOC_VENDOR, 15);

#[cfg(windows)]
const _: () = {
    use windows_sys::Win32::Networking::WinSock as ws;
    assert!(SIO_UDP_CONNRESET == ws::SIO_UDP_CONNRESET);
    assert!(SIO_UDP_NETRESET == ws::SIO_UDP_NETRESET);
    assert!(IOC_IN == ws::IOC_IN && IOC_VENDOR == ws::IOC_VENDOR);
};

/// The ioctls a factory applies to every UDP socket, each with its `BOOL` input: both
/// reports off.
pub(crate) const UDP_SOCKET_IOCTLS: [(&str, u32, i32); 2] = [
    ("SIO_UDP_CONNRESET", SIO_UDP_CONNRESET, 0),
    ("SIO_UDP_NETRESET", SIO_UDP_NETRESET, 0),
];

/// Turns both reports off on `socket`. A provider that does not know an ioctl leaves that
/// report as it is: logged, not fatal, since the socket is still protected.
#[cfg(windows)]
pub(crate) fn disable(socket: &socket2::Socket) {
    for (name, result) in apply(socket) {
        if let Err(error) = result {
            tracing::debug!(ioctl = name, %error, "UDP reset report left on");
        }
    }
}

/// Runs each ioctl of [`UDP_SOCKET_IOCTLS`] on `socket`, with its result.
#[cfg(windows)]
pub(crate) fn apply(socket: &socket2::Socket) -> Vec<(&'static str, std::io::Result<()>)> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::WSAIoctl;

    UDP_SOCKET_IOCTLS
        .iter()
        .map(|&(name, code, value)| {
            let mut returned = 0u32;
            // SAFETY: `value` (a BOOL) lives across this synchronous call and its size is
            // passed with it; no output buffer, no overlapped structure.
            let rc = unsafe {
                WSAIoctl(
                    socket.as_raw_socket() as usize,
                    code,
                    (&value as *const i32).cast(),
                    std::mem::size_of::<i32>() as u32,
                    std::ptr::null_mut(),
                    0,
                    &mut returned,
                    std::ptr::null_mut(),
                    None,
                )
            };
            let result = if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            };
            (name, result)
        })
        .collect()
}

/// Nothing to do off Windows: ICMP errors are reported only to connected sockets there.
#[cfg(not(windows))]
pub(crate) fn disable(socket: &socket2::Socket) {
    let _ = socket;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_documented_wsaiow_values_and_both_turn_reports_off() {
        // mstcpip.h: SIO_UDP_CONNRESET _WSAIOW(IOC_VENDOR,12), SIO_UDP_NETRESET
        // _WSAIOW(IOC_VENDOR,15).
        assert_eq!(SIO_UDP_CONNRESET, 0x9800_000C);
        assert_eq!(SIO_UDP_NETRESET, 0x9800_000F);
        let names: Vec<_> = UDP_SOCKET_IOCTLS.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names, ["SIO_UDP_CONNRESET", "SIO_UDP_NETRESET"]);
        assert!(UDP_SOCKET_IOCTLS.iter().all(|(_, _, value)| *value == 0));
    }

    /// Under Wine (scripts/windows-tests) or on Windows: the ioctl the factory relies on is
    /// accepted on a UDP socket.
    #[cfg(windows)]
    #[test]
    fn sio_udp_connreset_is_accepted_on_a_udp_socket() {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let results = apply(&socket);
        for (name, result) in &results {
            println!("{name}: {result:?}");
        }
        assert_eq!(results[0].0, "SIO_UDP_CONNRESET");
        assert!(results[0].1.is_ok(), "{:?}", results[0].1);
    }
}
