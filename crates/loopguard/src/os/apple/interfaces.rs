//! The host's interfaces and their addresses, from `getifaddrs`.

use std::ffi::{CStr, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::choose;

/// One interface: what the route lookup needs to consider it.
#[derive(Clone, Debug)]
pub(super) struct Interface {
    pub(super) name: String,
    pub(super) index: u32,
    /// Up and running: an interface that is not does not count.
    pub(super) usable: bool,
    pub(super) loopback: bool,
    /// In source-preference order: unusable IPv6 addresses (tentative, duplicated, detached,
    /// deprecated) left out, temporary ones after stable ones ([`choose::order_sources`]).
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
    let mut flagged: Vec<Vec<(IpAddr, u32)>> = Vec::new();
    let flags_socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None);
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
                flagged.push(Vec::new());
                out.len() - 1
            }
        };
        // SAFETY: a non-null `ifa_addr` points to a sockaddr of the size its family implies.
        if let Some(ip) = unsafe { ip_of(entry.ifa_addr) } {
            let flags = match (&flags_socket, ip) {
                // SAFETY: an AF_INET6 entry's `ifa_addr` is a `sockaddr_in6`; the name is
                // the entry's NUL-terminated name.
                (Ok(socket), IpAddr::V6(_)) => unsafe {
                    in6_flags(socket, entry.ifa_name, entry.ifa_addr)
                },
                _ => 0,
            };
            flagged[position].push((ip, flags));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no reference outlives it.
    unsafe { libc::freeifaddrs(head) };
    for (interface, addrs) in out.iter_mut().zip(flagged) {
        interface.addrs = choose::order_sources(addrs);
    }
    Ok(out)
}

// The pure ordering hard-codes xnu's flag values; check them against the SDK.
#[cfg(target_os = "macos")]
const _: () = {
    use choose::in6_flags as f;
    assert!(f::TENTATIVE == libc::IN6_IFF_TENTATIVE as u32);
    assert!(f::DUPLICATED == libc::IN6_IFF_DUPLICATED as u32);
    assert!(f::DETACHED == libc::IN6_IFF_DETACHED as u32);
    assert!(f::DEPRECATED == libc::IN6_IFF_DEPRECATED as u32);
    assert!(f::TEMPORARY == libc::IN6_IFF_TEMPORARY as u32);
};

/// The `IN6_IFF_*` flags of one IPv6 address (`SIOCGIFAFLAG_IN6`), 0 when unknown.
///
/// # Safety
/// `name` is a NUL-terminated interface name and `sa` points to a `sockaddr_in6`.
#[cfg(target_os = "macos")]
unsafe fn in6_flags(
    socket: &socket2::Socket,
    name: *const libc::c_char,
    sa: *const libc::sockaddr,
) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero in6_ifreq is valid.
    let mut req: libc::in6_ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated (caller); at most IFNAMSIZ - 1 bytes are copied, so
    // the zeroed buffer stays terminated.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.iter().take(libc::IFNAMSIZ - 1))
    {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the caller promises a sockaddr_in6; read unaligned to be safe.
    req.ifr_ifru.ifru_addr = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in6>()) };
    // SAFETY: `req` is a valid in6_ifreq for this ioctl, alive across the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFAFLAG_IN6, &mut req) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: on success the kernel stored the flags in this member.
    unsafe { req.ifr_ifru.ifru_flags6 as u32 }
}

/// iOS: the SDK does not expose `in6_ifreq`; the flags are unknown (0), so addresses keep
/// the kernel's order.
#[cfg(not(target_os = "macos"))]
unsafe fn in6_flags(
    _socket: &socket2::Socket,
    _name: *const libc::c_char,
    _sa: *const libc::sockaddr,
) -> u32 {
    0
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
