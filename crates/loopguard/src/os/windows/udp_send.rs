//! The Windows UDP send: `WSASendMsg` with our own control messages, so a datagram carries
//! its source *and* interface index (quinn-udp writes `ipi_ifindex = 0`). ECN goes only where
//! the provider supports it, never as CE. Receiving stays with quinn-udp.

use std::io;
use std::net::IpAddr;
use std::os::windows::io::AsRawSocket;

use quinn_udp::Transmit;
use windows_sys::Win32::Networking::WinSock::{
    getsockopt, WSASendMsg, IPPROTO_IP, IPPROTO_IPV6, IPV6_RECVECN, IP_RECVECN, SOCKADDR, WSABUF,
    WSAMSG,
};

use crate::os::send_path::Capabilities;
use crate::os::wsa_control;

/// Whether the provider took `IP_RECVECN` / `IPV6_RECVECN`, which quinn-udp turns on when
/// the socket is made and leaves off (unsupported: Wine, Windows before build 20348) when the
/// provider refuses. Reading the option back reuses that result without a second probe send.
pub(crate) fn capabilities(socket: &impl AsRawSocket) -> Capabilities {
    let enabled = |level: i32, name: i32| {
        let mut value: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as i32;
        // SAFETY: `value` and `len` live across the call; `len` is the buffer's size.
        let rc = unsafe {
            getsockopt(
                socket.as_raw_socket() as usize,
                level,
                name,
                (&mut value as *mut i32).cast(),
                &mut len,
            )
        };
        rc == 0 && value != 0
    };
    Capabilities {
        ecn_v4: enabled(IPPROTO_IP, IP_RECVECN),
        ecn_v6: enabled(IPPROTO_IPV6, IPV6_RECVECN),
        marked: false,
    }
}

/// Sends one datagram or USO batch described by `transmit`: `src_ip` and `interface` go
/// into `IP_PKTINFO` / `IPV6_PKTINFO`, beside an ECN message where the provider has ECN.
pub(crate) fn send(
    socket: &impl AsRawSocket,
    transmit: &Transmit<'_>,
    interface: Option<u32>,
    caps: Capabilities,
) -> io::Result<()> {
    let destination = socket2::SockAddr::from(transmit.destination);
    let src: Option<IpAddr> = transmit.src_ip;
    let v4 = match src {
        Some(src) => src.is_ipv4(),
        None => match transmit.destination.ip() {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
        },
    };
    let mut control = wsa_control::for_datagram(
        transmit.destination,
        src,
        interface.filter(|_| src.is_some()),
        transmit.ecn.map(|e| e as u8),
        transmit.segment_size,
        if v4 { caps.ecn_v4 } else { caps.ecn_v6 },
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
