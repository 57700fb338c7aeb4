//! The Windows UDP send: `WSASendMsg` with our own control messages, so a datagram carries
//! its source *and* interface index (quinn-udp writes `ipi_ifindex = 0` and sends
//! `IP_PKTINFO` alone where ECN is not supported). Receiving stays with quinn-udp.

use std::io;
use std::net::IpAddr;
use std::os::windows::io::AsRawSocket;

use quinn_udp::Transmit;
use windows_sys::Win32::Networking::WinSock::{WSASendMsg, SOCKADDR, WSABUF, WSAMSG};

use crate::os::wsa_control;

/// Sends one datagram or USO batch described by `transmit`: `src_ip` and `interface` go
/// into `IP_PKTINFO` / `IPV6_PKTINFO`, always beside an ECN message (DESIGN §3.8).
pub(crate) fn send(
    socket: &impl AsRawSocket,
    transmit: &Transmit<'_>,
    interface: Option<u32>,
) -> io::Result<()> {
    let destination = socket2::SockAddr::from(transmit.destination);
    let src: Option<IpAddr> = transmit.src_ip;
    let mut control = wsa_control::for_datagram(
        transmit.destination,
        src,
        interface.filter(|_| src.is_some()),
        transmit.ecn.map(|e| e as u8),
        transmit.segment_size,
    );
    let control_len = control.bytes().len() as u32;
    let mut data = WSABUF {
        len: transmit.contents.len() as u32,
        // Windows does not write to the buffers of a send.
        buf: transmit.contents.as_ptr().cast_mut(),
    };
    let message = WSAMSG {
        name: destination.as_ptr().cast::<SOCKADDR>().cast_mut(),
        namelen: destination.len(),
        lpBuffers: &mut data,
        dwBufferCount: 1,
        Control: WSABUF {
            len: control_len,
            buf: if control_len == 0 {
                std::ptr::null_mut()
            } else {
                control.as_mut_ptr()
            },
        },
        dwFlags: 0,
    };
    let mut sent = 0u32;
    // SAFETY: `message` points to the destination, one data buffer and the control buffer,
    // all alive across this synchronous (non-overlapped) call.
    let rc = unsafe {
        WSASendMsg(
            socket.as_raw_socket() as usize,
            &message,
            0,
            &mut sent,
            std::ptr::null_mut(),
            None,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
