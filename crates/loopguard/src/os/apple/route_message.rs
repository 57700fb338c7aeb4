//! Darwin routing-socket messages (`AF_ROUTE`): a builder for `RTM_GET` requests and a parser
//! for the replies. Pure code, compiled and tested on every OS.
//!
//! # Layout (Darwin `<net/route.h>`, all fields in host order, little-endian on every Darwin
//! target)
//!
//! `struct rt_msghdr`, 92 bytes:
//!
//! | offset | field | type |
//! |---|---|---|
//! | 0 | `rtm_msglen` | u16: whole message, sockaddrs included |
//! | 2 | `rtm_version` | u8: `RTM_VERSION` = 5 |
//! | 3 | `rtm_type` | u8: `RTM_GET` = 4 |
//! | 4 | `rtm_index` | u16: interface index |
//! | 6 | (padding) | 2 bytes |
//! | 8 | `rtm_flags` | i32: `RTF_*` |
//! | 12 | `rtm_addrs` | i32: which `RTA_*` sockaddrs follow |
//! | 16 | `rtm_pid` | i32 |
//! | 20 | `rtm_seq` | i32 |
//! | 24 | `rtm_errno` | i32: set when the request failed (`ESRCH`: no route) |
//! | 28 | `rtm_use` | i32 |
//! | 32 | `rtm_inits` | u32 |
//! | 36 | `rtm_rmx` | `struct rt_metrics`: 14 × u32 = 56 bytes |
//!
//! Then one sockaddr per bit set in `rtm_addrs`, in bit order (`RTA_DST`, `RTA_GATEWAY`,
//! `RTA_NETMASK`, `RTA_GENMASK`, `RTA_IFP`, `RTA_IFA`, `RTA_AUTHOR`, `RTA_BRD`). Each starts
//! with its own length byte (`sa_len`) and family byte and takes `sa_len` rounded up to a
//! multiple of 4 bytes; a zero `sa_len` still takes 4 (Darwin rounds to `uint32_t` even on
//! 64-bit kernels, unlike FreeBSD's `long`). Netmasks are often shortened (trailing zero
//! bytes dropped, family 0): they are read in the destination's family.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// Size of Darwin's `struct rt_msghdr`.
pub const HEADER_LEN: usize = 92;
/// `RTM_VERSION` on Darwin.
pub const RTM_VERSION: u8 = 5;
/// `RTM_GET`: look up the route for a destination.
pub const RTM_GET: u8 = 4;

/// `RTA_DST`: the destination sockaddr is present.
pub const RTA_DST: u32 = 0x1;
/// `RTA_IFP`: the interface's link sockaddr (`sockaddr_dl`) is present; in a request it
/// asks the kernel to report the interface.
pub const RTA_IFP: u32 = 0x10;
const RTAX_MAX: usize = 8;

/// `RTF_UP`: the route is usable.
pub const RTF_UP: u32 = 0x1;
/// `RTF_GATEWAY`: the destination is reached through a gateway.
pub const RTF_GATEWAY: u32 = 0x2;
/// `RTF_HOST`: a host route (no netmask).
pub const RTF_HOST: u32 = 0x4;
/// `RTF_STATIC`: added by hand (`route(8)` sets it on requests).
pub const RTF_STATIC: u32 = 0x800;
/// `RTF_IFSCOPE`: the lookup (or route) is scoped to the interface in `rtm_index`.
pub const RTF_IFSCOPE: u32 = 0x100_0000;

/// `ESRCH` on Darwin: the reply's `rtm_errno` when no route matches.
pub const ESRCH: i32 = 3;

pub(crate) const AF_INET: u8 = 2;
const AF_LINK: u8 = 18;
pub(crate) const AF_INET6: u8 = 30;
const SOCKADDR_IN_LEN: u8 = 16;
const SOCKADDR_IN6_LEN: u8 = 28;
const SOCKADDR_DL_LEN: u8 = 20;

/// Space a sockaddr of `sa_len` bytes takes in a routing message: Darwin's `ROUNDUP32`.
pub fn sockaddr_space(sa_len: u8) -> usize {
    if sa_len == 0 {
        4
    } else {
        (usize::from(sa_len) + 3) & !3
    }
}

/// A link-level address (`sockaddr_dl`): how the kernel names an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkAddr {
    /// Interface index (`sdl_index`).
    pub index: u16,
    /// Interface name, for example `en0` (`sdl_data[..sdl_nlen]`).
    pub name: String,
    /// Interface type (`sdl_type`, an `IFT_*` value).
    pub kind: u8,
    /// Link-layer address, for example a MAC (`sdl_data[sdl_nlen..][..sdl_alen]`).
    pub address: Vec<u8>,
}

/// One sockaddr of a routing message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAddr {
    /// An IPv4 address (`sockaddr_in`), or an IPv4 netmask.
    V4(Ipv4Addr),
    /// An IPv6 address (`sockaddr_in6`), or an IPv6 netmask. The kernel embeds the scope of
    /// link-local addresses in bytes 2..4 of the address; it is moved to `scope_id`.
    V6 {
        /// The address, embedded scope removed.
        addr: Ipv6Addr,
        /// Interface scope (0 when none).
        scope_id: u32,
    },
    /// An interface (`sockaddr_dl`).
    Link(LinkAddr),
    /// A zero-length sockaddr: "all zeros" (a default route's netmask).
    Empty,
    /// A family this parser does not decode.
    Other {
        /// `sa_family`.
        family: u8,
    },
}

impl RouteAddr {
    /// The IP address, when this is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            RouteAddr::V4(a) => Some(IpAddr::V4(*a)),
            RouteAddr::V6 { addr, .. } => Some(IpAddr::V6(*addr)),
            _ => None,
        }
    }

    /// The interface, when this is a link address.
    pub fn link(&self) -> Option<&LinkAddr> {
        match self {
            RouteAddr::Link(l) => Some(l),
            _ => None,
        }
    }
}

/// A parsed routing message: the header fields a route lookup needs and its sockaddrs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMessage {
    /// `rtm_type` (`RTM_GET` for lookups).
    pub kind: u8,
    /// `rtm_index`: the route's interface.
    pub index: u16,
    /// `rtm_flags` (`RTF_*`).
    pub flags: u32,
    /// `rtm_addrs`: which sockaddrs were present.
    pub addrs: u32,
    /// `rtm_pid`: the process that sent the request.
    pub pid: i32,
    /// `rtm_seq`: the request's sequence number.
    pub seq: i32,
    /// `rtm_errno`: non-zero when the request failed ([`ESRCH`]: no route).
    pub errno: i32,
    /// `RTA_DST`: the route's destination (its key, not the address asked for).
    pub destination: Option<RouteAddr>,
    /// `RTA_GATEWAY`: the next hop, or a link address for a directly connected route.
    pub gateway: Option<RouteAddr>,
    /// `RTA_NETMASK`, in the destination's family.
    pub netmask: Option<RouteAddr>,
    /// `RTA_IFP`: the outgoing interface.
    pub interface: Option<RouteAddr>,
    /// `RTA_IFA`: the interface address the route uses as source.
    pub interface_addr: Option<RouteAddr>,
}

impl RouteMessage {
    /// The outgoing interface's name, when the reply carried `RTA_IFP`.
    pub fn interface_name(&self) -> Option<&str> {
        self.interface
            .as_ref()
            .and_then(RouteAddr::link)
            .map(|l| l.name.as_str())
    }

    /// Whether this reply can be the answer about `address`: the route's destination and
    /// netmask (or host flag) cover it. Every routing socket of the system receives every
    /// reply (xnu bsd/net/rtsock.c `route_output` hands it to `raw_input`, which copies to
    /// each `AF_ROUTE` socket), so pid and sequence number alone can match another lookup of
    /// this process; a reply whose route does not contain the address asked for is not ours.
    /// A reply without a destination, or of another family, covers nothing.
    pub fn covers(&self, address: IpAddr) -> bool {
        let Some(destination) = self.destination.as_ref().and_then(RouteAddr::ip) else {
            return false;
        };
        if destination.is_ipv4() != address.is_ipv4() {
            return false;
        }
        let full = if address.is_ipv4() { 32 } else { 128 };
        // No netmask and no host flag: only the destination itself is certain.
        let len = self.prefix_len().unwrap_or(full);
        ipnet::IpNet::new(destination, len)
            .map(|net| net.trunc().contains(&address))
            .unwrap_or(false)
    }

    /// Prefix length of the matched route: the full length for a host route, the netmask's
    /// leading one bits otherwise, `None` when neither tells.
    pub fn prefix_len(&self) -> Option<u8> {
        let family_bits = match self.destination.as_ref()?.ip()? {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if self.flags & RTF_HOST != 0 {
            return Some(family_bits);
        }
        match self.netmask.as_ref()? {
            RouteAddr::V4(m) => Some(u32::from(*m).leading_ones() as u8),
            RouteAddr::V6 { addr, .. } => Some(u128::from(*addr).leading_ones() as u8),
            RouteAddr::Empty => Some(0),
            _ => None,
        }
    }
}

/// Why a routing message could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than an `rt_msghdr`.
    #[error("routing message too short: {len} bytes, the header alone takes {HEADER_LEN}")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// `rtm_msglen` disagrees with the bytes received.
    #[error("routing message declares {declared} bytes but {available} are available")]
    BadLength {
        /// `rtm_msglen`.
        declared: usize,
        /// Bytes received.
        available: usize,
    },
    /// Not a version this parser knows.
    #[error("routing message version {found}, expected {RTM_VERSION}")]
    Version {
        /// `rtm_version`.
        found: u8,
    },
    /// A sockaddr announced in `rtm_addrs` runs past the end of the message.
    #[error("routing message truncated: the {slot} sockaddr at offset {offset} runs past its end")]
    Truncated {
        /// Which sockaddr (`"destination"`, `"gateway"`, ...).
        slot: &'static str,
        /// Its offset in the message.
        offset: usize,
    },
    /// A `sockaddr_dl` whose name and address do not fit in its own length.
    #[error("malformed interface sockaddr in the {slot} slot")]
    BadLinkAddr {
        /// Which sockaddr.
        slot: &'static str,
    },
}

const SLOT_NAMES: [&str; RTAX_MAX] = [
    "destination",
    "gateway",
    "netmask",
    "genmask",
    "interface",
    "interface address",
    "author",
    "broadcast",
];

/// The next `rtm_seq` for this process. One counter for every lookup of the process (two
/// strategies each counting from 1 would take each other's replies, which reach every
/// routing socket), starting at a random point so another process's pid reuse is unlikely to
/// collide either. The hash keys of `RandomState` are the standard library's per-process
/// random seed.
#[cfg_attr(not(any(target_os = "macos", target_os = "ios")), allow(dead_code))]
pub(crate) fn next_seq() -> i32 {
    static SEQ: OnceLock<AtomicI32> = OnceLock::new();
    SEQ.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        AtomicI32::new(hasher.finish() as i32 & i32::MAX)
    })
    .fetch_add(1, Ordering::Relaxed)
}

/// Builds an `RTM_GET` request for `destination` with sequence number `seq`, asking for the
/// outgoing interface too (`RTA_IFP`). With `scope`, the lookup is limited to routes of that
/// interface index (`RTF_IFSCOPE`), as Darwin's scoped routing allows.
pub fn get_request(destination: IpAddr, seq: i32, scope: Option<u16>) -> Vec<u8> {
    let mut flags = RTF_UP | RTF_GATEWAY | RTF_HOST | RTF_STATIC;
    if scope.is_some() {
        flags |= RTF_IFSCOPE;
    }
    let mut msg = vec![0u8; HEADER_LEN];
    msg[2] = RTM_VERSION;
    msg[3] = RTM_GET;
    msg[4..6].copy_from_slice(&scope.unwrap_or(0).to_le_bytes());
    msg[8..12].copy_from_slice(&flags.to_le_bytes());
    msg[12..16].copy_from_slice(&(RTA_DST | RTA_IFP).to_le_bytes());
    msg[20..24].copy_from_slice(&seq.to_le_bytes());
    push_ip(&mut msg, destination);
    // An empty sockaddr_dl in the RTA_IFP slot: "tell me the interface".
    let mut dl = [0u8; SOCKADDR_DL_LEN as usize];
    dl[0] = SOCKADDR_DL_LEN;
    dl[1] = AF_LINK;
    msg.extend_from_slice(&dl);
    let len = msg.len() as u16; // at most 92 + 28 + 20 bytes
    msg[0..2].copy_from_slice(&len.to_le_bytes());
    msg
}

fn push_ip(msg: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut sa = [0u8; SOCKADDR_IN_LEN as usize];
            sa[0] = SOCKADDR_IN_LEN;
            sa[1] = AF_INET;
            sa[4..8].copy_from_slice(&v4.octets());
            msg.extend_from_slice(&sa);
        }
        IpAddr::V6(v6) => {
            let mut sa = [0u8; SOCKADDR_IN6_LEN as usize];
            sa[0] = SOCKADDR_IN6_LEN;
            sa[1] = AF_INET6;
            sa[8..24].copy_from_slice(&v6.octets());
            msg.extend_from_slice(&sa);
        }
    }
}

/// Parses one routing message (an `RTM_GET` reply, or any `rt_msghdr` message). Bytes after
/// `rtm_msglen` are ignored. Never panics, whatever the input.
pub fn parse(bytes: &[u8]) -> Result<RouteMessage, ParseError> {
    if bytes.len() < HEADER_LEN {
        return Err(ParseError::TooShort { len: bytes.len() });
    }
    let declared = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
    if declared < HEADER_LEN || declared > bytes.len() {
        return Err(ParseError::BadLength {
            declared,
            available: bytes.len(),
        });
    }
    if bytes[2] != RTM_VERSION {
        return Err(ParseError::Version { found: bytes[2] });
    }
    let msg = &bytes[..declared];
    let u32_at = |at: usize| u32::from_le_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
    let addrs = u32_at(12);
    let mut out = RouteMessage {
        kind: msg[3],
        index: u16::from_le_bytes([msg[4], msg[5]]),
        flags: u32_at(8),
        addrs,
        pid: u32_at(16) as i32,
        seq: u32_at(20) as i32,
        errno: u32_at(24) as i32,
        destination: None,
        gateway: None,
        netmask: None,
        interface: None,
        interface_addr: None,
    };

    let mut raw: [Option<&[u8]>; RTAX_MAX] = [None; RTAX_MAX];
    let mut offset = HEADER_LEN;
    for (slot, raw_slot) in raw.iter_mut().enumerate() {
        if addrs & (1 << slot) == 0 {
            continue;
        }
        let truncated = ParseError::Truncated {
            slot: SLOT_NAMES[slot],
            offset,
        };
        let sa_len = *msg.get(offset).ok_or(truncated.clone())?;
        let end = offset + usize::from(sa_len);
        if end > msg.len() {
            return Err(truncated);
        }
        *raw_slot = Some(&msg[offset..end]);
        // A missing padding after the last sockaddr is harmless: the next slot, if any,
        // then finds no bytes and reports the truncation.
        offset += sockaddr_space(sa_len);
    }

    out.destination = raw[0].map(|sa| decode(sa, SLOT_NAMES[0])).transpose()?;
    out.gateway = raw[1].map(|sa| decode(sa, SLOT_NAMES[1])).transpose()?;
    let mask_family = match out.destination.as_ref().and_then(RouteAddr::ip) {
        Some(IpAddr::V4(_)) => Some(AF_INET),
        Some(IpAddr::V6(_)) => Some(AF_INET6),
        None => None,
    };
    out.netmask = raw[2].map(|sa| decode_mask(sa, mask_family));
    out.interface = raw[4].map(|sa| decode(sa, SLOT_NAMES[4])).transpose()?;
    out.interface_addr = raw[5].map(|sa| decode(sa, SLOT_NAMES[5])).transpose()?;
    Ok(out)
}

/// Copies a possibly shortened sockaddr into a zeroed buffer of its full size.
fn padded<const N: usize>(sa: &[u8]) -> [u8; N] {
    let mut full = [0u8; N];
    let n = sa.len().min(N);
    full[..n].copy_from_slice(&sa[..n]);
    full
}

pub(super) fn decode(sa: &[u8], slot: &'static str) -> Result<RouteAddr, ParseError> {
    if sa.is_empty() {
        return Ok(RouteAddr::Empty);
    }
    let Some(&family) = sa.get(1) else {
        return Ok(RouteAddr::Other { family: 0 });
    };
    Ok(match family {
        AF_INET => v4(sa),
        AF_INET6 => v6(sa),
        AF_LINK => RouteAddr::Link(link(sa, slot)?),
        family => RouteAddr::Other { family },
    })
}

/// Netmasks may carry family 0 and drop trailing zero bytes: read them in the family of the
/// destination.
pub(super) fn decode_mask(sa: &[u8], family: Option<u8>) -> RouteAddr {
    if sa.is_empty() {
        return RouteAddr::Empty;
    }
    match family {
        Some(AF_INET) => v4(sa),
        Some(AF_INET6) => v6(sa),
        _ => RouteAddr::Other {
            family: sa.get(1).copied().unwrap_or(0),
        },
    }
}

/// `sockaddr_in`: len, family, port (2), address at offset 4 (4), zero (8).
fn v4(sa: &[u8]) -> RouteAddr {
    let full: [u8; SOCKADDR_IN_LEN as usize] = padded(sa);
    RouteAddr::V4(Ipv4Addr::new(full[4], full[5], full[6], full[7]))
}

/// `sockaddr_in6`: len, family, port (2), flowinfo (4), address at offset 8 (16), scope id
/// at offset 24 (4).
fn v6(sa: &[u8]) -> RouteAddr {
    let full: [u8; SOCKADDR_IN6_LEN as usize] = padded(sa);
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&full[8..24]);
    let mut scope_id = u32::from_le_bytes([full[24], full[25], full[26], full[27]]);
    // KAME: the kernel keeps a link-local (or link/interface-local multicast) address's scope
    // in its second 16-bit word, in network order.
    let link_scoped = (octets[0] == 0xfe && octets[1] & 0xc0 == 0x80)
        || (octets[0] == 0xff && matches!(octets[1] & 0x0f, 0x1 | 0x2));
    if link_scoped {
        let embedded = u16::from_be_bytes([octets[2], octets[3]]);
        if embedded != 0 {
            if scope_id == 0 {
                scope_id = u32::from(embedded);
            }
            octets[2] = 0;
            octets[3] = 0;
        }
    }
    RouteAddr::V6 {
        addr: Ipv6Addr::from(octets),
        scope_id,
    }
}

/// `sockaddr_dl`: len, family, index (u16 at 2), type (4), name length (5), address length
/// (6), selector length (7), then the name and the address from offset 8.
fn link(sa: &[u8], slot: &'static str) -> Result<LinkAddr, ParseError> {
    if sa.len() < 8 {
        return Err(ParseError::BadLinkAddr { slot });
    }
    let nlen = usize::from(sa[5]);
    let alen = usize::from(sa[6]);
    let data = &sa[8..];
    if nlen + alen > data.len() {
        return Err(ParseError::BadLinkAddr { slot });
    }
    Ok(LinkAddr {
        index: u16::from_le_bytes([sa[2], sa[3]]),
        name: String::from_utf8_lossy(&data[..nlen]).into_owned(),
        kind: sa[4],
        address: data[nlen..nlen + alen].to_vec(),
    })
}

impl fmt::Display for RouteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteAddr::V4(a) => write!(f, "{a}"),
            RouteAddr::V6 { addr, scope_id: 0 } => write!(f, "{addr}"),
            RouteAddr::V6 { addr, scope_id } => write!(f, "{addr}%{scope_id}"),
            RouteAddr::Link(l) => write!(f, "{}#{}", l.name, l.index),
            RouteAddr::Empty => f.write_str("(empty)"),
            RouteAddr::Other { family } => write!(f, "(family {family})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `RTA_NETMASK`, which the parser reads by position only.
    const RTA_NETMASK: u32 = 0x4;

    #[test]
    fn sockaddrs_round_up_to_four_bytes_and_empty_ones_take_four() {
        assert_eq!(sockaddr_space(0), 4);
        assert_eq!(sockaddr_space(1), 4);
        assert_eq!(sockaddr_space(4), 4);
        assert_eq!(sockaddr_space(7), 8);
        assert_eq!(sockaddr_space(16), 16);
        assert_eq!(sockaddr_space(20), 20);
        assert_eq!(sockaddr_space(28), 28);
        assert_eq!(sockaddr_space(255), 256);
    }

    fn reply(destination: &str, netmask: Option<RouteAddr>, flags: u32) -> RouteMessage {
        RouteMessage {
            kind: RTM_GET,
            index: 4,
            flags,
            addrs: RTA_DST | RTA_NETMASK,
            pid: 1,
            seq: 9,
            errno: 0,
            destination: Some(match destination.parse::<IpAddr>().unwrap() {
                IpAddr::V4(a) => RouteAddr::V4(a),
                IpAddr::V6(a) => RouteAddr::V6 {
                    addr: a,
                    scope_id: 0,
                },
            }),
            gateway: None,
            netmask,
            interface: None,
            interface_addr: None,
        }
    }

    #[test]
    fn sequence_numbers_are_shared_by_the_process_and_do_not_start_at_one() {
        // Two lookups (two strategies in one process) never get the same number.
        let a = next_seq();
        let b = next_seq();
        assert_ne!(a, b);
        assert!(a >= 0 || b >= 0);
        // Randomly seeded: every instance counting from 1 is what made replies collide
        // (a 1-in-2^31 chance of a false failure here).
        assert_ne!(a, 1);
    }

    #[test]
    fn a_reply_is_ours_only_when_its_route_covers_the_address_asked_for() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lan = reply(
            "192.0.2.0",
            Some(RouteAddr::V4("255.255.255.0".parse().unwrap())),
            RTF_UP,
        );
        assert!(lan.covers(ip("192.0.2.77")));
        // Another lookup of this process with the same pid and sequence number.
        assert!(!lan.covers(ip("203.0.113.9")));
        assert!(!lan.covers(ip("2001:db8::1")));
        let default = reply("0.0.0.0", Some(RouteAddr::Empty), RTF_UP | RTF_GATEWAY);
        assert!(default.covers(ip("203.0.113.9")));
        let host = reply("198.51.100.5", None, RTF_UP | RTF_HOST);
        assert!(host.covers(ip("198.51.100.5")));
        assert!(!host.covers(ip("198.51.100.6")));
        let v6 = reply(
            "2001:db8::",
            Some(RouteAddr::V6 {
                addr: "ffff:ffff::".parse().unwrap(),
                scope_id: 0,
            }),
            RTF_UP,
        );
        assert!(v6.covers(ip("2001:db8:5::1")));
        assert!(!v6.covers(ip("2001:db9::1")));
        let mut none = lan.clone();
        none.destination = None;
        assert!(!none.covers(ip("192.0.2.77")));
    }

    #[test]
    fn embedded_kame_scope_moves_to_scope_id_only_for_link_local() {
        let mut sa = [0u8; 28];
        sa[0] = 28;
        sa[1] = AF_INET6;
        sa[8..24].copy_from_slice(&"fe80:7::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            v6(&sa),
            RouteAddr::V6 {
                addr: "fe80::1".parse().unwrap(),
                scope_id: 7
            }
        );
        sa[8..24].copy_from_slice(&"2001:db8:7::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            v6(&sa),
            RouteAddr::V6 {
                addr: "2001:db8:7::1".parse().unwrap(),
                scope_id: 0
            }
        );
    }
}
