//! Thin adapters to each operating system's protection mechanism.

use socket2::{Domain, Socket};

pub mod apple;
pub mod best_route;
// Compiled everywhere so its rules are tested on every OS; used by the Windows notifications.
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) mod callback_thread;
// The control-message buffer of the Darwin, Linux and Windows encoders.
#[cfg_attr(
    not(any(target_os = "macos", target_os = "ios", target_os = "linux", windows)),
    allow(dead_code)
)]
pub(crate) mod cmsg;
// Compiled everywhere so its layout tests run on every OS; used on Apple only.
#[cfg_attr(not(any(target_os = "macos", target_os = "ios")), allow(dead_code))]
pub(crate) mod darwin_control;
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub mod linux;
// Compiled everywhere so its layout tests run on every OS; used on Linux only.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) mod linux_control;
pub(crate) mod mib_rows;
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub mod protect;
pub(crate) mod send_error;
pub(crate) mod send_path;
// Compiled everywhere so its codes are tested on every OS; the ioctls run on Windows only.
pub(crate) mod udp_options;
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) mod udp_reset;
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "ios"))]
pub(crate) mod unix_sendmsg;
#[cfg(windows)]
#[cfg_attr(docsrs, doc(cfg(windows)))]
pub mod windows;
#[cfg(any(windows, test))]
pub(crate) mod wsa_control;

/// Asks the kernel to prefer stable ("public") IPv6 source addresses over temporary ones for
/// this socket: a temporary address can rotate away mid-flow. A preference,
/// not protection, so a kernel without the option is fine.
pub(crate) fn prefer_stable_source(socket: &Socket, domain: Domain) {
    if domain != Domain::IPV6 {
        return;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::AsRawFd;
        let value: libc::c_int = libc::IPV6_PREFER_SRC_PUBLIC;
        // SAFETY: `value` lives across the call and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_ADDR_PREFERENCES,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "IPV6_ADDR_PREFERENCES not available; the kernel picks the IPv6 source"
            );
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = socket;
}
