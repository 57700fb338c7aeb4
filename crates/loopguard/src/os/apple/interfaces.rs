//! The host's interfaces and their addresses, from `getifaddrs`.

use std::ffi::{CStr, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One interface: what the route lookup needs to consider it.
#[derive(Clone, Debug)]
pub(super) struct Interface {
    pub(super) name: String,
    pub(super) index: u32,
    /// Up and running: an interface that is not does not count (DESIGN §3.4).
    pub(super) usable: bool,
    pub(super) loopback: bool,
    pub(super) addrs: Vec<IpAddr>,
}

/// The index of interface `name`, 0 when there is none.
pub(super) fn index_of(name: &str) -> u32 {
    let Ok(name) = CString::new(name) else {
        return 0;
    };
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// All interfaces with at least one entry in `getifaddrs`, in the kernel's order.
pub(super) fn list() -> io::Result<Vec<Interface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is valid for writes; on success it owns a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out: Vec<Interface> = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: getifaddrs gives NUL-terminated names that live as long as the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let position = match out.iter().position(|i| i.name == name) {
            Some(p) => p,
            None => {
                let flags = entry.ifa_flags;
                let up = libc::IFF_UP as u32 | libc::IFF_RUNNING as u32;
                out.push(Interface {
                    index: index_of(&name),
                    name,
                    usable: flags & up == up,
                    loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
                    addrs: Vec::new(),
                });
                out.len() - 1
            }
        };
        // SAFETY: a non-null `ifa_addr` points to a sockaddr of the size its family implies.
        if let Some(ip) = unsafe { ip_of(entry.ifa_addr) } {
            out[position].addrs.push(ip);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no reference outlives it.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// # Safety
/// `sa` is null or points to a sockaddr whose family tells its size.
unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null and at least a `sockaddr` per the caller's promise.
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: AF_INET entries are `sockaddr_in`; read unaligned to be safe.
            let sin = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in>()) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: AF_INET6 entries are `sockaddr_in6`; read unaligned to be safe.
            let sin6 = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in6>()) };
            let mut octets = sin6.sin6_addr.s6_addr;
            // Link-local addresses may carry their scope embedded (KAME): drop it.
            if octets[0] == 0xfe && octets[1] & 0xc0 == 0x80 {
                octets[2] = 0;
                octets[3] = 0;
            }
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}
