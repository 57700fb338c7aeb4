//! The Linux strategy: every socket carries the guard's mark.

use std::io;

use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::RouteResolver;
use crate::{GuardConfig, ProtectionError, ResolveError, Strategy};

/// Protects sockets with `SO_MARK`, so the policy rules installed by
/// [`TunnelRoutes`](super::TunnelRoutes) (or wg-quick style rules of your own) route them by
/// the main table instead of the tunnel's.
///
/// The tunnel's interfaces are those its table (`config.table()`) routes through: a
/// destination whose zone names one of them (`fe80::1%tun0`) is refused, since the kernel
/// sends a zoned destination out of the named interface whatever the mark says.
///
/// Setting a mark needs `CAP_NET_ADMIN` (or `CAP_NET_RAW` since Linux 5.17); without it every
/// socket fails with a [`ProtectionError`] that says so.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxMark {
    config: GuardConfig,
}

impl LinuxMark {
    /// A strategy marking sockets with `config.mark()`.
    pub fn new(config: GuardConfig) -> Self {
        LinuxMark { config }
    }

    /// The configuration whose mark the sockets carry.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }
}

impl Strategy for LinuxMark {
    fn protect(&self, socket: &socket2::Socket) -> Result<(), ProtectionError> {
        socket.set_mark(self.config.mark()).map_err(|e| {
            let hint = (e.raw_os_error() == Some(libc::EPERM)).then_some(
                "setting a socket mark needs CAP_NET_ADMIN, or CAP_NET_RAW on Linux 5.17 and later",
            );
            ProtectionError::new("setsockopt(SO_MARK)", e, hint)
        })?;
        // Read it back: a kernel that silently ignored the option would leave the socket
        // unprotected, and an unprotected socket must never be handed out.
        let actual =
            get_mark(socket).map_err(|e| ProtectionError::new("getsockopt(SO_MARK)", e, None))?;
        if actual != self.config.mark() {
            return Err(ProtectionError::new(
                "setsockopt(SO_MARK)",
                io::Error::other(format!(
                    "the socket reports mark {actual:#x} instead of {:#x}",
                    self.config.mark()
                )),
                None,
            ));
        }
        Ok(())
    }

    /// Whether the tunnel's table routes through interface `index` (one dump of the routes
    /// of both families, per new zone; the factory caches the answer).
    fn is_tunnel_interface(&self, index: u32) -> Result<bool, ResolveError> {
        let mut nl = RouteResolver::new().map_err(|e| ResolveError::Io(io::Error::other(e)))?;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            let routes = nl
                .dump(RouteNetlinkMessage::GetRoute(m), "listing routes")
                .map_err(|e| ResolveError::Io(io::Error::other(e)))?;
            let routes: Vec<RouteMessage> = routes
                .into_iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewRoute(r) => Some(r),
                    _ => None,
                })
                .collect();
            if table_routes_through(&routes, self.config.table(), index) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Whether a route of `table` among `routes` (as dumped) leaves through interface `index`,
/// directly or as one hop of a multipath route.
fn table_routes_through(routes: &[RouteMessage], table: u32, index: u32) -> bool {
    routes.iter().any(|r| {
        let mut in_table = u32::from(r.header.table) == table;
        let mut through = false;
        for a in &r.attributes {
            match a {
                // Tables above 255 only fit the attribute.
                RouteAttribute::Table(t) => in_table = *t == table,
                RouteAttribute::Oif(i) => through |= *i == index,
                RouteAttribute::MultiPath(hops) => {
                    through |= hops.iter().any(|h| h.interface_index == index)
                }
                _ => {}
            }
        }
        in_table && through
    })
}

fn get_mark(socket: &socket2::Socket) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value as u32)
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::route::{RouteHeader, RouteNextHop};

    use super::*;

    fn route(table: u32, oif: Option<u32>, hops: &[u32]) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.attributes.push(RouteAttribute::Table(table));
        if let Some(i) = oif {
            m.attributes.push(RouteAttribute::Oif(i));
        }
        if !hops.is_empty() {
            let hops = hops
                .iter()
                .map(|&i| {
                    let mut h = RouteNextHop::default();
                    h.interface_index = i;
                    h
                })
                .collect();
            m.attributes.push(RouteAttribute::MultiPath(hops));
        }
        m
    }

    #[test]
    fn the_tunnels_interfaces_are_those_its_table_routes_through() {
        let routes = [
            route(19527, Some(7), &[]),
            route(19527, None, &[]), // the last-resort `unreachable`: no interface
            route(254, Some(2), &[]),
            route(19527, None, &[8, 9]),
        ];
        for (index, tunnel) in [(7, true), (8, true), (9, true), (2, false), (3, false)] {
            assert_eq!(
                table_routes_through(&routes, 19527, index),
                tunnel,
                "{index}"
            );
        }
        // The header's table is used when there is no attribute.
        let mut small = RouteMessage::default();
        small.header.table = 100;
        small.attributes.push(RouteAttribute::Oif(4));
        assert!(table_routes_through(&[small.clone()], 100, 4));
        assert!(!table_routes_through(&[small], 19527, 4));
    }
}
