//! The kernel's own answer to "where would a packet to DST with mark M go?"
//! (`ip route get DST mark M`), as one `RTM_GETROUTE` lookup.

use std::net::IpAddr;

use netlink_packet_core::NLM_F_REQUEST;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{RoutesError, Rtnl};

/// The route the kernel chose for one destination (and mark).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRoute {
    /// The destination looked up.
    pub destination: IpAddr,
    /// The output device's name.
    pub interface: Option<String>,
    /// The output device's index.
    pub interface_index: Option<u32>,
    /// The source address the kernel would use (`prefsrc`).
    pub source: Option<IpAddr>,
    /// The next hop, when the destination is not on-link.
    pub gateway: Option<IpAddr>,
    /// The routing table the route came from.
    pub table: Option<u32>,
}

/// Asks the kernel (of the calling thread's network namespace) how it would route a packet
/// to `destination` carrying firewall mark `mark` (`None`: unmarked).
///
/// A single lookup, not a dump: policy rules apply, so with the guard's mark this is the
/// path a guarded socket takes. No route is [`RoutesError::Unreachable`] naming the
/// destination. Must run inside a tokio runtime.
///
/// Opens a netlink socket for this one lookup; to look up many destinations (or from
/// synchronous code, such as [`Strategy::resolve`](crate::Strategy::resolve)), keep a
/// [`RouteResolver`](super::RouteResolver) instead.
pub async fn route_get(destination: IpAddr, mark: Option<u32>) -> Result<KernelRoute, RoutesError> {
    lookup(&mut Rtnl::connect()?, destination, mark).await
}

/// [`route_get`] over an open connection.
pub(crate) async fn lookup(
    nl: &mut Rtnl,
    destination: IpAddr,
    mark: Option<u32>,
) -> Result<KernelRoute, RoutesError> {
    let answers = nl
        .request(
            RouteNetlinkMessage::GetRoute(request(destination, mark)),
            NLM_F_REQUEST,
            &operation(destination, mark),
        )
        .await;
    let mut out = answer(destination, answers)?;
    if let Some(i) = out.interface_index {
        // The device may vanish between the two calls; the index still says where.
        out.interface = nl.link_name(i).await.ok();
    }
    Ok(out)
}

/// The `RTM_GETROUTE` request for `destination` and `mark`.
pub(crate) fn request(destination: IpAddr, mark: Option<u32>) -> RouteMessage {
    let mut m = RouteMessage::default();
    let (family, len) = match destination {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    m.header.address_family = family;
    m.header.destination_prefix_length = len;
    // Report the table of the matching route, as `ip route get` does.
    m.header.flags = RouteFlags::LookupTable;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(destination)));
    if let Some(mark) = mark {
        m.attributes.push(RouteAttribute::Mark(mark));
    }
    m
}

/// What the lookup is, for error messages.
pub(crate) fn operation(destination: IpAddr, mark: Option<u32>) -> String {
    match mark {
        Some(mark) => format!("looking up the route to {destination} with mark {mark:#x}"),
        None => format!("looking up the route to {destination}"),
    }
}

/// The route in the kernel's answer to [`request`] (without the interface's name).
pub(crate) fn answer(
    destination: IpAddr,
    answers: Result<Vec<RouteNetlinkMessage>, RoutesError>,
) -> Result<KernelRoute, RoutesError> {
    let answers = match answers {
        Ok(a) => a,
        Err(RoutesError::Netlink { source, .. }) if is_unreachable(source.raw_os_error()) => {
            return Err(RoutesError::Unreachable {
                destination,
                reason: source.to_string(),
            })
        }
        Err(e) => return Err(e),
    };
    let route = answers
        .into_iter()
        .find_map(|a| match a {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        })
        .ok_or_else(|| RoutesError::Unreachable {
            destination,
            reason: "the kernel returned no route".into(),
        })?;
    let kind_reason = match route.header.kind {
        RouteType::Unreachable => Some("unreachable route"),
        RouteType::Prohibit => Some("prohibit route"),
        RouteType::BlackHole => Some("blackhole route"),
        RouteType::Throw => Some("throw route"),
        _ => None,
    };
    if let Some(reason) = kind_reason {
        return Err(RoutesError::Unreachable {
            destination,
            reason: reason.into(),
        });
    }
    let mut out = KernelRoute {
        destination,
        interface: None,
        interface_index: None,
        source: None,
        gateway: None,
        table: None,
    };
    for a in route.attributes {
        match a {
            RouteAttribute::Oif(i) => out.interface_index = Some(i),
            RouteAttribute::PrefSource(a) => out.source = address(a),
            RouteAttribute::Gateway(a) => out.gateway = address(a),
            RouteAttribute::Table(t) => out.table = Some(t),
            _ => {}
        }
    }
    if out.table.is_none() && route.header.table != 0 {
        out.table = Some(u32::from(route.header.table));
    }
    Ok(out)
}

/// Errors meaning "no usable route" (`EACCES`: a prohibit route); others are real failures.
fn is_unreachable(code: Option<i32>) -> bool {
    matches!(
        code,
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES)
    )
}

fn address(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(a)),
        _ => None,
    }
}
