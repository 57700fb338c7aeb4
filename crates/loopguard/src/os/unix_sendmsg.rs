//! The one `sendmsg` of the Darwin and Linux send paths: a single datagram with the control
//! messages an OS encoder laid out ([`darwin_control`](super::darwin_control),
//! [`linux_control`](super::linux_control)). Kept apart so the unsafe part is written once.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use super::cmsg::Control;

/// Sends `payload` to `destination` with `control` attached (nothing when it is empty),
/// retrying on `EINTR`.
pub(crate) fn send(
    socket: &impl AsRawFd,
    destination: SocketAddr,
    payload: &[u8],
    control: &mut Control,
) -> io::Result<()> {
    let destination = socket2::SockAddr::from(destination);
    let control_len = control.bytes().len();
    let mut iov = libc::iovec {
        // The kernel does not write to the buffers of a send.
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = destination.as_ptr().cast_mut().cast();
    hdr.msg_namelen = destination.len();
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if control_len != 0 {
        hdr.msg_control = control.as_mut_ptr().cast();
        // `socklen_t` on Darwin, `size_t` on Linux.
        hdr.msg_controllen = control_len as _;
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
