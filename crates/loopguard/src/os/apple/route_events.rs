//! Darwin routing-socket notifications (`AF_ROUTE`) turned into the portable
//! [`Change`]s the network monitor debounces. Pure code, compiled and tested on every OS; the macOS
//! and iOS monitor backend reads the socket and calls [`parse_change`] on every message.
//!
//! # Messages (Darwin `<net/route.h>`, `<net/if.h>`; host order, little-endian)
//!
//! Every message starts with `msglen` (u16 at 0), `version` (u8 at 2, `RTM_VERSION` = 5) and
//! `type` (u8 at 3). By type:
//!
//! - `RTM_ADD`, `RTM_DELETE`, `RTM_CHANGE`: `struct rt_msghdr` (92 bytes) and its sockaddrs,
//!   parsed by [`route_message::parse`]. Failed requests echoed to listeners
//!   (`rtm_errno` set), ARP and neighbour entries (`RTF_LLINFO`) and cloned host routes
//!   (`RTF_WASCLONED`) are not routing decisions and give `None`.
//! - `RTM_NEWADDR`, `RTM_DELADDR`: `struct ifa_msghdr`, 20 bytes: `ifam_addrs` (i32 at 4),
//!   `ifam_flags` (i32 at 8), `ifam_index` (u16 at 12), 2 bytes of padding, `ifam_metric`
//!   (i32 at 16); then the sockaddrs of `ifam_addrs` (`RTA_NETMASK`, `RTA_IFP`, `RTA_IFA`,
//!   `RTA_BRD`) laid out as in a route message.
//! - `RTM_IFINFO`: `struct if_msghdr`, 112 bytes: `ifm_addrs` (i32 at 4), `ifm_flags` (i32 at
//!   8, `IFF_*`), `ifm_index` (u16 at 12), 2 bytes of padding, `ifm_data` (`struct if_data`,
//!   96 bytes, not read). Only the first [`IF_MSGHDR_FIELDS`] bytes are required.
//!
//! Every other type (`RTM_GET` replies, `RTM_MISS`, multicast memberships, ...) gives `None`.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::route_message::{
    self, sockaddr_space, ParseError, RouteAddr, RouteMessage, AF_INET, AF_INET6, RTM_VERSION,
};
use crate::change::{Change, ChangeKind};

/// `RTM_ADD`: a route was added.
pub const RTM_ADD: u8 = 0x1;
/// `RTM_DELETE`: a route was deleted.
pub const RTM_DELETE: u8 = 0x2;
/// `RTM_CHANGE`: a route's gateway, interface or metrics changed.
pub const RTM_CHANGE: u8 = 0x3;
/// `RTM_NEWADDR`: an address was added to an interface.
pub const RTM_NEWADDR: u8 = 0xc;
/// `RTM_DELADDR`: an address was removed from an interface.
pub const RTM_DELADDR: u8 = 0xd;
/// `RTM_IFINFO`: an interface's flags or link state changed.
pub const RTM_IFINFO: u8 = 0xe;

/// Size of Darwin's `struct ifa_msghdr`.
pub const IFA_MSGHDR_LEN: usize = 20;
/// The bytes of an `if_msghdr` this parser reads (everything before `ifm_data`).
pub const IF_MSGHDR_FIELDS: usize = 16;

/// `IFF_UP`: the interface is administratively up.
pub const IFF_UP: u32 = 0x1;
/// `IFF_RUNNING`: the interface's resources are allocated (it can carry traffic).
pub const IFF_RUNNING: u32 = 0x40;

/// `RTF_LLINFO`: an ARP or neighbour-discovery entry, not a route.
pub const RTF_LLINFO: u32 = 0x400;
/// `RTF_WASCLONED`: a host route cloned from a network route on use.
pub const RTF_WASCLONED: u32 = 0x20000;

/// `RTA_NETMASK`, `RTA_IFP` and `RTA_IFA` slots (bit numbers of `*_addrs`).
const RTAX_NETMASK: usize = 2;
const RTAX_IFP: usize = 4;
const RTAX_IFA: usize = 5;
const RTAX_MAX: usize = 8;

/// Why a routing-socket notification could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Fewer than the 4 bytes every message starts with.
    #[error("routing notification too short: {len} bytes")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// `msglen` disagrees with the bytes received.
    #[error("routing notification declares {declared} bytes but {available} are available")]
    BadLength {
        /// The declared length.
        declared: usize,
        /// Bytes received.
        available: usize,
    },
    /// Not a version this parser knows.
    #[error("routing notification version {found}, expected {RTM_VERSION}")]
    Version {
        /// The message's version byte.
        found: u8,
    },
    /// The message is shorter than the header of its type.
    #[error("routing notification of type {kind}: {len} bytes, its header takes {header}")]
    ShortHeader {
        /// The message type.
        kind: u8,
        /// The declared length.
        len: usize,
        /// The header's size.
        header: usize,
    },
    /// A route message, or a sockaddr, that does not parse.
    #[error(transparent)]
    Route(#[from] ParseError),
}

/// Turns one routing-socket message into a [`Change`]: `Ok(None)` for message types and
/// entries that are not network changes, an error for malformed input. Bytes after the
/// declared length are ignored. Never panics, whatever the input.
///
/// Interface names are filled in only when the message carries the interface's link
/// address (`RTA_IFP`); `RTM_IFINFO` carries none, so the caller looks the name up.
pub fn parse_change(bytes: &[u8]) -> Result<Option<Change>, EventError> {
    if bytes.len() < 4 {
        return Err(EventError::TooShort { len: bytes.len() });
    }
    let declared = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
    if declared < 4 || declared > bytes.len() {
        return Err(EventError::BadLength {
            declared,
            available: bytes.len(),
        });
    }
    if bytes[2] != RTM_VERSION {
        return Err(EventError::Version { found: bytes[2] });
    }
    let msg = &bytes[..declared];
    let kind = msg[3];
    let need = |header: usize| {
        if declared < header {
            Err(EventError::ShortHeader {
                kind,
                len: declared,
                header,
            })
        } else {
            Ok(())
        }
    };
    match kind {
        RTM_ADD | RTM_DELETE | RTM_CHANGE => Ok(route_change(&route_message::parse(msg)?)),
        RTM_NEWADDR | RTM_DELADDR => {
            need(IFA_MSGHDR_LEN)?;
            address_change(msg).map(Some)
        }
        RTM_IFINFO => {
            need(IF_MSGHDR_FIELDS)?;
            let flags = u32_at(msg, 8);
            let index = u16::from_le_bytes([msg[12], msg[13]]);
            let up = flags & IFF_UP != 0 && flags & IFF_RUNNING != 0;
            let kind = if up {
                ChangeKind::LinkUp
            } else {
                ChangeKind::LinkDown
            };
            Ok(Some(
                Change::new(kind).with_interface(u32::from(index), None),
            ))
        }
        _ => Ok(None),
    }
}

fn u32_at(msg: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]])
}

fn route_change(route: &RouteMessage) -> Option<Change> {
    if route.errno != 0 || route.flags & (RTF_LLINFO | RTF_WASCLONED) != 0 {
        return None;
    }
    let kind = match route.kind {
        RTM_ADD => ChangeKind::RouteAdded,
        RTM_DELETE => ChangeKind::RouteRemoved,
        _ => ChangeKind::RouteChanged,
    };
    let mut change = Change::new(kind);
    let link = route.interface.as_ref().and_then(RouteAddr::link);
    let index = match (route.index, link) {
        (0, Some(l)) => l.index,
        (i, _) => i,
    };
    if index != 0 {
        let name = link.map(|l| l.name.clone()).filter(|n| !n.is_empty());
        change = change.with_interface(u32::from(index), name);
    }
    let destination = route.destination.as_ref().and_then(RouteAddr::ip);
    if let Some(net) = destination.and_then(|ip| net(ip, route.prefix_len()?)) {
        change = change.with_subject(net);
    }
    Some(change)
}

fn address_change(msg: &[u8]) -> Result<Change, EventError> {
    let kind = if msg[3] == RTM_NEWADDR {
        ChangeKind::AddressAdded
    } else {
        ChangeKind::AddressRemoved
    };
    let addrs = u32_at(msg, 4);
    let index = u16::from_le_bytes([msg[12], msg[13]]);
    let raw = sockaddrs(msg, IFA_MSGHDR_LEN, addrs)?;
    let name = match raw[RTAX_IFP] {
        Some(sa) => match route_message::decode(sa, "interface")? {
            RouteAddr::Link(l) if !l.name.is_empty() => Some(l.name),
            _ => None,
        },
        None => None,
    };
    let mut change = Change::new(kind).with_interface(u32::from(index), name);
    let address = match raw[RTAX_IFA] {
        Some(sa) => route_message::decode(sa, "interface address")?.ip(),
        None => None,
    };
    if let Some(ip) = address {
        let family = if ip.is_ipv4() { AF_INET } else { AF_INET6 };
        let full = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match raw[RTAX_NETMASK].map(|sa| route_message::decode_mask(sa, Some(family)))
        {
            Some(RouteAddr::V4(m)) => u32::from(m).leading_ones() as u8,
            Some(RouteAddr::V6 { addr, .. }) => u128::from(addr).leading_ones() as u8,
            Some(RouteAddr::Empty) => 0,
            _ => full,
        };
        // The address itself, with the length of its on-link prefix (as Linux reports it).
        if let Ok(net) = IpNet::new(ip, prefix) {
            change = change.with_subject(net);
        }
    }
    Ok(change)
}

/// The sockaddrs announced in `addrs`, from `offset` on, as in a route message.
fn sockaddrs(
    msg: &[u8],
    mut offset: usize,
    addrs: u32,
) -> Result<[Option<&[u8]>; RTAX_MAX], ParseError> {
    const SLOTS: [&str; RTAX_MAX] = [
        "destination",
        "gateway",
        "netmask",
        "genmask",
        "interface",
        "interface address",
        "author",
        "broadcast",
    ];
    let mut raw: [Option<&[u8]>; RTAX_MAX] = [None; RTAX_MAX];
    for (slot, raw_slot) in raw.iter_mut().enumerate() {
        if addrs & (1 << slot) == 0 {
            continue;
        }
        let truncated = ParseError::Truncated {
            slot: SLOTS[slot],
            offset,
        };
        let sa_len = *msg.get(offset).ok_or(truncated.clone())?;
        let end = offset + usize::from(sa_len);
        if end > msg.len() {
            return Err(truncated);
        }
        *raw_slot = Some(&msg[offset..end]);
        offset += sockaddr_space(sa_len);
    }
    Ok(raw)
}

/// A route's destination as a prefix (host bits cleared).
fn net(ip: IpAddr, prefix_len: u8) -> Option<IpNet> {
    IpNet::new(ip, prefix_len).ok().map(|n| n.trunc())
}

/// Drops `RTM_IFINFO` reports that repeat an interface's known state: Darwin sends one for
/// every flag change (promiscuous mode, for one), not only when a link goes up or down.
#[derive(Clone, Debug, Default)]
pub struct LinkStates {
    up: HashMap<u32, bool>,
}

impl LinkStates {
    /// `change`, unless it is a [`ChangeKind::LinkUp`] or [`ChangeKind::LinkDown`] of an
    /// interface already known to be in that state. Other changes pass unchanged.
    pub fn admit(&mut self, change: Change) -> Option<Change> {
        let up = match change.kind {
            ChangeKind::LinkUp => true,
            ChangeKind::LinkDown => false,
            _ => return Some(change),
        };
        let Some(index) = change.interface_index else {
            return Some(change);
        };
        match self.up.insert(index, up) {
            Some(was) if was == up => None,
            _ => Some(change),
        }
    }
}

/// Consecutive read errors after which the monitor gives up on its routing socket.
pub const MAX_CONSECUTIVE_READ_ERRORS: u32 = 16;

/// What the monitor does after reading its routing socket failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadErrorAction {
    /// Interrupted or not ready: read again.
    Retry,
    /// Messages may have been lost (`ENOBUFS` when the socket's buffer overflowed, or any
    /// other error): report [`ChangeKind::Resync`] and forget the link states, as the Linux
    /// monitor does on a netlink overrun, then keep reading.
    Resync,
    /// The socket keeps failing: stop, with a warning.
    GiveUp,
}

/// The monitor's rule for a failed read, `consecutive` counting this one.
pub fn on_read_error(err: &std::io::Error, consecutive: u32) -> ReadErrorAction {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::Interrupted | ErrorKind::WouldBlock => ReadErrorAction::Retry,
        _ if consecutive >= MAX_CONSECUTIVE_READ_ERRORS => ReadErrorAction::GiveUp,
        _ => ReadErrorAction::Resync,
    }
}
