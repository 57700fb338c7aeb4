//! Helpers shared by the IP Helper readers: tables freed with `FreeMibTable`, address
//! conversions.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use windows_sys::Win32::Foundation::WIN32_ERROR;
use windows_sys::Win32::NetworkManagement::IpHelper::FreeMibTable;
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6, SOCKADDR_INET};

/// A table the IP Helper API allocated; freed with `FreeMibTable` on drop, also when the
/// reader returns early with an error.
pub(super) struct MibTable<T>(pub(super) *mut T);

impl<T> Drop for MibTable<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a Get*Table2 call and is freed once, here.
            unsafe { FreeMibTable(self.0.cast()) };
        }
    }
}

/// A Win32 error code as an `io::Error` that keeps the raw code (callers match on it, e.g.
/// `ERROR_NOT_SUPPORTED` from Wine); the failed call is logged at debug level.
pub(super) fn win32(call: &str, code: WIN32_ERROR) -> io::Error {
    let error = io::Error::from_raw_os_error(code as i32);
    tracing::debug!(%error, "{call} failed");
    error
}

/// The address in a `SOCKADDR_INET`, `None` for another family.
pub(super) fn from_sockaddr_inet(addr: &SOCKADDR_INET) -> Option<IpAddr> {
    // SAFETY: `si_family` overlays the family field of both variants; the variant read
    // matches the family.
    unsafe {
        match addr.si_family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
                addr.Ipv4.sin_addr.S_un.S_addr.to_ne_bytes(),
            ))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(addr.Ipv6.sin6_addr.u.Byte))),
            _ => None,
        }
    }
}

/// A `SOCKADDR_INET` holding `ip` (port 0, scope 0).
pub(super) fn to_sockaddr_inet(ip: IpAddr) -> SOCKADDR_INET {
    let mut out = SOCKADDR_INET::default();
    match ip {
        IpAddr::V4(a) => {
            out.Ipv4.sin_family = AF_INET;
            out.Ipv4.sin_addr.S_un.S_addr = u32::from_ne_bytes(a.octets());
        }
        IpAddr::V6(a) => {
            out.Ipv6.sin6_family = AF_INET6;
            out.Ipv6.sin6_addr.u.Byte = a.octets();
        }
    }
    out
}
