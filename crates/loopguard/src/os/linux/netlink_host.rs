//! [`NetlinkHost`]: the host's links, `main` routes and addresses read over rtnetlink, in the
//! portable [`route`](crate::route) model, for
//! [`BestRouteOutsideTunnel`](crate::os::best_route::BestRouteOutsideTunnel).
//!
//! The model was written for the Windows tables; on Linux:
//! - a link's ifindex is its [`Luid`] (`Luid(index as u64)`): the kernel never reuses an index
//!   while the device exists, and a rename keeps it, which is all the tunnel's identity
//!   needs;
//! - a link is [`OperStatus::Up`] when it is administratively up (`IFF_UP`) and its
//!   operational state is up or unknown (TUN devices and many virtual links report
//!   unknown); loopback is left out (its routes are in `local`, never a way out);
//! - Linux has no interface metric: both families get 0, so the route metric
//!   (`RTA_PRIORITY`) alone orders routes of one prefix length;
//! - only unicast routes of the `main` table count (no policy rules are read: this strategy
//!   is for hosts where the tunnel's routes sit in `main`); a multipath route counts by its
//!   first next hop;
//! - an address flagged tentative, deprecated or DAD-failed is not preferred, so it is never
//!   a source; an IPv6 temporary address (`IFA_F_TEMPORARY`) is marked temporary.

use std::io;
use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::RouteResolver;
use super::RoutesError;
use crate::os::best_route::HostSnapshot;
use crate::route::{
    AddressState, HostTables, Interface, Luid, OperStatus, PrefixOrigin, Route, SuffixOrigin,
    UnicastAddress,
};

/// Reads the host's tables over one rtnetlink socket kept open (three dumps per snapshot:
/// links, routes, addresses), from synchronous code. The socket belongs to the network
/// namespace of the thread that called [`new`](Self::new).
#[derive(Debug)]
pub struct NetlinkHost {
    socket: Mutex<RouteResolver>,
}

impl NetlinkHost {
    /// Opens the netlink socket.
    pub fn new() -> Result<Self, RoutesError> {
        Ok(NetlinkHost {
            socket: Mutex::new(RouteResolver::new()?),
        })
    }
}

impl HostSnapshot for NetlinkHost {
    fn snapshot(&self) -> io::Result<HostTables> {
        let mut nl = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let links = nl
            .dump(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                "listing links",
            )
            .map_err(io::Error::other)?;
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            routes.extend(
                nl.dump(RouteNetlinkMessage::GetRoute(m), "listing routes")
                    .map_err(io::Error::other)?,
            );
        }
        let addresses = nl
            .dump(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                "listing addresses",
            )
            .map_err(io::Error::other)?;
        Ok(HostTables {
            interfaces: links.into_iter().filter_map(interface).collect(),
            routes: routes.into_iter().filter_map(route).collect(),
            addresses: Some(addresses.into_iter().filter_map(address).collect()),
        })
    }
}

/// A link as an [`Interface`]; `None` for loopback and other messages.
fn interface(message: RouteNetlinkMessage) -> Option<Interface> {
    let RouteNetlinkMessage::NewLink(link) = message else {
        return None;
    };
    if link.header.flags.contains(LinkFlags::Loopback) {
        return None;
    }
    let mut name = String::new();
    let mut oper = State::Unknown;
    for a in link.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n,
            LinkAttribute::OperState(s) => oper = s,
            _ => {}
        }
    }
    Some(Interface {
        luid: Luid(u64::from(link.header.index)),
        index: link.header.index,
        alias: name,
        status: status(link.header.flags.contains(LinkFlags::Up), oper),
        ipv4_metric: Some(0),
        ipv6_metric: Some(0),
    })
}

/// Up only when administratively up and operationally up or unknown.
fn status(admin_up: bool, oper: State) -> OperStatus {
    if !admin_up {
        return OperStatus::Down;
    }
    match oper {
        State::Up | State::Unknown => OperStatus::Up,
        State::Down => OperStatus::Down,
        State::LowerLayerDown => OperStatus::LowerLayerDown,
        State::Testing => OperStatus::Testing,
        State::Dormant => OperStatus::Dormant,
        State::NotPresent => OperStatus::NotPresent,
        _ => OperStatus::Unknown,
    }
}

/// A unicast route of `main` as a [`Route`]; `None` for anything else.
fn route(message: RouteNetlinkMessage) -> Option<Route> {
    let RouteNetlinkMessage::NewRoute(r) = message else {
        return None;
    };
    if r.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(r.header.table);
    let (mut destination, mut gateway, mut oif, mut metric) = (None, None, None, 0);
    for a in r.attributes {
        match a {
            RouteAttribute::Table(t) => table = t,
            RouteAttribute::Destination(d) => destination = ip(d),
            RouteAttribute::Gateway(g) => gateway = ip(g),
            RouteAttribute::Oif(i) => oif = Some(i),
            RouteAttribute::Priority(p) => metric = p,
            RouteAttribute::MultiPath(hops) => {
                if let Some(first) = hops.into_iter().next() {
                    oif = oif.or(Some(first.interface_index));
                    gateway = gateway.or(first.attributes.into_iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => ip(g),
                        _ => None,
                    }));
                }
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let len = r.header.destination_prefix_length;
    let destination = match (destination, r.header.address_family) {
        (Some(d), _) => d,
        (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
        (None, AddressFamily::Inet6) => IpAddr::from([0u16; 8]),
        _ => return None,
    };
    Some(Route {
        destination: IpNet::new(destination, len).ok()?.trunc(),
        next_hop: gateway,
        interface: Luid(u64::from(oif?)),
        metric,
    })
}

/// An address as a [`UnicastAddress`]; `None` for anything else.
fn address(message: RouteNetlinkMessage) -> Option<UnicastAddress> {
    let RouteNetlinkMessage::NewAddress(a) = message else {
        return None;
    };
    let (mut local, mut addr) = (None, None);
    // The header holds the low 8 bits; IFA_FLAGS, when present, all 32.
    let mut flags = AddressFlags::from_bits_retain(u32::from(a.header.flags.bits()));
    for attr in a.attributes {
        match attr {
            AddressAttribute::Local(l) => local = Some(l),
            AddressAttribute::Address(x) => addr = Some(x),
            AddressAttribute::Flags(f) => flags = f,
            _ => {}
        }
    }
    // IFA_LOCAL is the host's own address; IFA_ADDRESS is the peer on point-to-point links.
    let address = local.or(addr)?;
    let unusable = AddressFlags::Tentative | AddressFlags::Deprecated | AddressFlags::Dadfailed;
    let state = if flags.contains(AddressFlags::Dadfailed) {
        AddressState::Duplicate
    } else if flags.contains(AddressFlags::Tentative) {
        AddressState::Tentative
    } else if flags.intersects(unusable) {
        AddressState::Deprecated
    } else {
        AddressState::Preferred
    };
    // IFA_F_TEMPORARY shares its bit with IFA_F_SECONDARY (an IPv4 notion).
    let temporary = address.is_ipv6() && flags.contains(AddressFlags::Secondary);
    Some(UnicastAddress {
        address,
        prefix_length: a.header.prefix_len,
        interface: Luid(u64::from(a.header.index)),
        state,
        skip_as_source: false,
        prefix_origin: PrefixOrigin::Other,
        suffix_origin: if temporary {
            SuffixOrigin::Random
        } else {
            SuffixOrigin::Other
        },
    })
}

fn ip(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(a)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback is always there and never listed; the snapshot works without privileges.
    #[test]
    fn a_snapshot_of_this_namespace_leaves_loopback_out() {
        let host = NetlinkHost::new().unwrap();
        let tables = host.snapshot().unwrap();
        assert!(tables.interfaces.iter().all(|i| i.alias != "lo"));
        let lo_addresses = tables
            .addresses
            .as_deref()
            .unwrap()
            .iter()
            .filter(|a| a.address.is_loopback())
            .count();
        assert!(lo_addresses >= 1, "{tables:?}");
        // A second snapshot over the same socket answers too.
        host.snapshot().unwrap();
    }

    fn route_message(
        family: AddressFamily,
        table: u8,
        kind: RouteType,
        attributes: Vec<RouteAttribute>,
    ) -> RouteNetlinkMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.table = table;
        m.header.kind = kind;
        m.attributes = attributes;
        if let Some(RouteAttribute::Destination(RouteAddress::Inet6(_))) = m.attributes.first() {
            m.header.destination_prefix_length = 1;
        }
        RouteNetlinkMessage::NewRoute(m)
    }

    #[test]
    fn main_unicast_routes_keep_prefix_next_hop_device_and_priority() {
        use netlink_packet_route::route::RouteNextHop;
        let gw = RouteAttribute::Gateway(RouteAddress::Inet("192.0.2.1".parse().unwrap()));
        // A default route (no RTA_DST) of `main`, metric 100.
        let r = route(route_message(
            AddressFamily::Inet,
            254,
            RouteType::Unicast,
            vec![
                gw.clone(),
                RouteAttribute::Oif(3),
                RouteAttribute::Priority(100),
            ],
        ))
        .unwrap();
        assert_eq!(r.destination, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert_eq!(
            (r.next_hop, r.interface, r.metric),
            (Some("192.0.2.1".parse().unwrap()), Luid(3), 100)
        );
        // `::/1` on the tunnel, on-link.
        let r = route(route_message(
            AddressFamily::Inet6,
            254,
            RouteType::Unicast,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet6("::".parse().unwrap())),
                RouteAttribute::Oif(9),
            ],
        ))
        .unwrap();
        assert_eq!(r.destination, "::/1".parse::<IpNet>().unwrap());
        assert_eq!((r.next_hop, r.interface, r.metric), (None, Luid(9), 0));
        // A multipath route counts by its first hop.
        let hop = |index, g: &str| {
            let mut h = RouteNextHop::default();
            h.interface_index = index;
            h.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(
                g.parse().unwrap(),
            ))];
            h
        };
        let r = route(route_message(
            AddressFamily::Inet,
            254,
            RouteType::Unicast,
            vec![RouteAttribute::MultiPath(vec![
                hop(4, "192.0.2.9"),
                hop(5, "198.51.100.9"),
            ])],
        ))
        .unwrap();
        assert_eq!(
            (r.interface, r.next_hop),
            (Luid(4), Some("192.0.2.9".parse().unwrap()))
        );
        // Another table (also as RTA_TABLE past 255), or not unicast: not ours.
        for (table, kind, extra) in [
            (255, RouteType::Unicast, None),
            (252, RouteType::Unicast, Some(RouteAttribute::Table(51820))),
            (254, RouteType::Unreachable, None),
            (254, RouteType::Local, None),
        ] {
            let mut attributes = vec![RouteAttribute::Oif(3)];
            attributes.extend(extra);
            let m = route_message(AddressFamily::Inet, table, kind, attributes);
            assert_eq!(route(m), None, "table {table} {kind:?}");
        }
    }

    #[test]
    fn address_flags_decide_preferred_and_temporary() {
        let of = |text: &str, flags: AddressFlags| {
            let mut m = AddressMessage::default();
            m.header.index = 2;
            m.header.prefix_len = 64;
            let ip: IpAddr = text.parse().unwrap();
            m.attributes.push(AddressAttribute::Address(ip));
            m.attributes.push(AddressAttribute::Flags(flags));
            address(RouteNetlinkMessage::NewAddress(m)).unwrap()
        };
        let a = of("2001:db8:1::2", AddressFlags::Permanent);
        assert_eq!(
            (a.state, a.interface, a.is_temporary()),
            (AddressState::Preferred, Luid(2), false)
        );
        assert_eq!(
            of("2001:db8:1::3", AddressFlags::Tentative).state,
            AddressState::Tentative
        );
        assert_eq!(
            of("2001:db8:1::4", AddressFlags::Deprecated).state,
            AddressState::Deprecated
        );
        assert_eq!(
            of(
                "2001:db8:1::5",
                AddressFlags::Dadfailed | AddressFlags::Tentative
            )
            .state,
            AddressState::Duplicate
        );
        assert!(of("2001:db8:1::6", AddressFlags::Secondary).is_temporary());
        // On IPv4 the same bit means "secondary", not temporary.
        assert!(!of("192.0.2.7", AddressFlags::Secondary).is_temporary());
        // IFA_LOCAL wins over IFA_ADDRESS (the peer on a point-to-point link).
        let mut m = AddressMessage::default();
        m.attributes
            .push(AddressAttribute::Address("192.0.2.254".parse().unwrap()));
        m.attributes
            .push(AddressAttribute::Local("192.0.2.8".parse().unwrap()));
        let a = address(RouteNetlinkMessage::NewAddress(m)).unwrap();
        assert_eq!(a.address, "192.0.2.8".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn admin_and_operational_state_together_decide_up() {
        assert_eq!(status(true, State::Up), OperStatus::Up);
        assert_eq!(status(true, State::Unknown), OperStatus::Up);
        assert_eq!(status(false, State::Up), OperStatus::Down);
        assert_eq!(
            status(true, State::LowerLayerDown),
            OperStatus::LowerLayerDown
        );
    }
}
