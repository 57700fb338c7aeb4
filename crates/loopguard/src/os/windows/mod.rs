//! Windows: no socket marks, so every datagram and connection is pinned to the best route
//! outside the tunnel. This module holds the thin OS calls; the decisions are
//! the portable [`route`](crate::route) rules, run by
//! [`BestRouteOutsideTunnel`].
//!
//! - [`IpHelper`]: reads adapters, routes, interface metrics and addresses (IP Helper API);
//! - [`UnicastIf`]: pins a stream socket with `IP_UNICAST_IF` / `IPV6_UNICAST_IF`;
//! - [`WindowsRoute`]: the strategy made of both;
//! - [`notify::ChangeNotifications`]: route, interface and address change callbacks that
//!   reset a factory's cache;
//! - [`wine`]: detects Wine, which lacks some of these calls.
//!
//! Nothing here changes the system routing table.

mod adapters;
mod mib;
pub mod notify;
mod snapshot;
pub(crate) mod udp_send;
mod unicast_if;
pub mod wine;

pub use snapshot::IpHelper;
pub use unicast_if::UnicastIf;

use std::io;

use crate::os::best_route::{BestRouteOutsideTunnel, HostSnapshot};
use crate::route::{Tunnel, TunnelNotFound};

/// The Windows strategy: the best route outside the tunnel, read from the live IP Helper
/// tables, with streams pinned by `IP_UNICAST_IF`.
pub type WindowsRoute = BestRouteOutsideTunnel<IpHelper, UnicastIf>;

impl WindowsRoute {
    /// The strategy that never uses the adapter with this LUID.
    pub fn for_tunnel(tunnel: crate::route::Luid) -> Self {
        BestRouteOutsideTunnel::new(IpHelper::new(), UnicastIf, Tunnel::new(tunnel))
    }

    /// Finds the tunnel by alias, index or address now and keeps its LUID, so a later rename
    /// does not matter.
    pub fn for_tunnel_named(name: &str) -> io::Result<Self> {
        let host = IpHelper::new().snapshot()?;
        let tunnel = Tunnel::find(&host, name)
            .map_err(|e: TunnelNotFound| io::Error::new(io::ErrorKind::NotFound, e))?;
        Ok(BestRouteOutsideTunnel::new(
            IpHelper::new(),
            UnicastIf,
            tunnel,
        ))
    }
}
