//! The Apple strategies: a route lookup that skips the tunnel and pins the interface
//! ([`BoundInterface`]), a no-op for code running inside a NetworkExtension
//! ([`NetworkExtension`]), and [`AppleGuard`], which picks one by configuration.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::os::fd::AsFd;

use super::interfaces::{self, Interface};
use super::lookup::route_get;
use super::route_message::{next_seq, RouteMessage};
use super::{choose, AppleMode};
use crate::{Path, ProtectionError, ResolveError, Strategy};

/// Outside a NetworkExtension: for each destination, asks the kernel's routing table
/// (`RTM_GET`) for the best route that does not use the tunnel, and holds stream sockets to
/// that route's interface with `IP_BOUND_IF` / `IPV6_BOUND_IF`.
///
/// When the best route leads into the tunnel, every other interface that is up is asked for
/// its own route to the destination (a lookup scoped with `RTF_IFSCOPE`); the longest prefix
/// wins, ties going to the interface listed first. No such route: the destination is
/// unreachable outside the tunnel, and the factory fails closed.
///
/// The tunnel is named by its `utunN`. While no interface has that name every destination is
/// refused ([`ResolveError::TunnelGone`]): a VPN that restarts usually comes back as another
/// `utunN`, which this strategy cannot tell from an ordinary interface. Build a new strategy
/// (and factory) for the new name then.
#[derive(Debug)]
pub struct BoundInterface {
    tunnel: String,
}

impl BoundInterface {
    /// A strategy that never uses interface `tunnel` (for example `utun4`).
    pub fn new(tunnel: impl Into<String>) -> Self {
        BoundInterface {
            tunnel: tunnel.into(),
        }
    }

    /// The tunnel interface this strategy avoids.
    pub fn tunnel(&self) -> &str {
        &self.tunnel
    }

    fn get(&self, destination: IpAddr, scope: Option<u16>) -> Result<RouteMessage, ResolveError> {
        route_get(destination, scope, next_seq())
    }

    fn enters_tunnel(&self, reply: &RouteMessage, tunnel_index: u32) -> bool {
        (tunnel_index != 0 && u32::from(reply.index) == tunnel_index)
            || reply.interface_name() == Some(self.tunnel.as_str())
    }

    /// The best route outside the tunnel, scoped to each candidate interface in turn.
    fn scoped_route(
        &self,
        destination: IpAddr,
        tunnel_index: u32,
        interfaces: &[Interface],
    ) -> Result<RouteMessage, ResolveError> {
        let candidates = interfaces.iter().filter(|iface| {
            iface.usable
                && !iface.loopback
                && iface.index != tunnel_index
                && iface.name != self.tunnel
                && u16::try_from(iface.index).is_ok_and(|scope| scope != 0)
                && iface
                    .addrs
                    .iter()
                    .any(|a| choose::usable_source(destination, *a))
        });
        let mut found = Vec::new();
        let best = choose::scoped_search(candidates.map(|i| i.index), |index| {
            let scope = index as u16; // checked above
            let reply = self.get(destination, Some(scope))?;
            // A scoped lookup can still fall back to an unscoped route: only a route that
            // really stays on this interface counts.
            if reply.index != scope || self.enters_tunnel(&reply, tunnel_index) {
                return Ok(None);
            }
            let prefix = reply.prefix_len().unwrap_or(0);
            found.push(reply);
            Ok(Some(prefix))
        })?;
        found
            .into_iter()
            .find(|r| u32::from(r.index) == best)
            .ok_or(ResolveError::NoRoute)
    }
}

impl Strategy for BoundInterface {
    /// Nothing to do at creation: the interface depends on the destination, so sockets are
    /// pinned when it is known (see the module documentation for UDP).
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        let tunnel_index = choose::tunnel_index(&self.tunnel, interfaces::index_of(&self.tunnel))?;
        let interfaces = interfaces::list()?;
        let mut reply = self.get(destination, None)?;
        if self.enters_tunnel(&reply, tunnel_index) {
            reply = self.scoped_route(destination, tunnel_index, &interfaces)?;
        }
        let index = u32::from(reply.index);
        let addrs = interfaces
            .iter()
            .find(|i| i.index == index)
            .map(|i| i.addrs.as_slice())
            .unwrap_or_default();
        let route_addr = reply.interface_addr.as_ref().and_then(|a| a.ip());
        let source =
            choose::pick_source(destination, route_addr, addrs).ok_or(ResolveError::NoRoute)?;
        Ok(Path {
            source,
            interface: (index != 0).then_some(index),
        })
    }

    fn interface_for_source(&self, source: IpAddr) -> Result<Option<u32>, ResolveError> {
        let tunnel_index = choose::tunnel_index(&self.tunnel, interfaces::index_of(&self.tunnel))?;
        let interfaces = interfaces::list()?;
        choose::owner_of(
            source,
            interfaces.iter().map(|i| {
                let is_tunnel =
                    i.name == self.tunnel || (tunnel_index != 0 && i.index == tunnel_index);
                (i.index, is_tunnel, i.addrs.as_slice())
            }),
        )
    }

    /// The tunnel's index (`if_nametoindex` of its `utunN`); a missing tunnel is
    /// [`ResolveError::TunnelGone`].
    fn is_tunnel_interface(&self, index: u32) -> Result<bool, ResolveError> {
        let tunnel_index = choose::tunnel_index(&self.tunnel, interfaces::index_of(&self.tunnel))?;
        Ok(index == tunnel_index)
    }

    fn pin_stream(&self, socket: &socket2::Socket, path: &Path) -> Result<(), ProtectionError> {
        bind_to_interface(socket, path)
    }
}

/// Holds `socket` to `path`'s interface with `IP_BOUND_IF` (IPv4) or `IPV6_BOUND_IF` (IPv6):
/// every packet it sends leaves by that interface, whatever the routing table says.
///
/// The factory does this for TCP before connecting. For a UDP socket that talks to one peer
/// (or through one uplink) call it yourself with the path from the factory's `path_for`; a
/// UDP socket with many peers relies on the per-datagram source instead (see the module
/// documentation).
pub fn bind_to_interface(socket: impl AsFd, path: &Path) -> Result<(), ProtectionError> {
    let socket = socket2::SockRef::from(&socket);
    let Some(index) = path.interface.and_then(NonZeroU32::new) else {
        return Err(ProtectionError::new(
            "IP_BOUND_IF",
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path names no interface to bind to",
            ),
            None,
        ));
    };
    match path.source {
        IpAddr::V4(_) => socket
            .bind_device_by_index_v4(Some(index))
            .map_err(|e| ProtectionError::new("setsockopt(IP_BOUND_IF)", e, None)),
        IpAddr::V6(_) => socket
            .bind_device_by_index_v6(Some(index))
            .map_err(|e| ProtectionError::new("setsockopt(IPV6_BOUND_IF)", e, None)),
    }
}

/// Inside a NetworkExtension (a packet tunnel provider): the system already keeps the
/// provider's own sockets out of its tunnel, so there is nothing to do. It does not know the
/// provider's `utun`, so destinations with a zone are not checked
/// ([`Strategy::is_tunnel_interface`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct NetworkExtension;

impl Strategy for NetworkExtension {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }
}

/// The Apple strategy chosen by an [`AppleMode`].
#[derive(Debug)]
pub enum AppleGuard {
    /// See [`NetworkExtension`].
    NetworkExtension(NetworkExtension),
    /// See [`BoundInterface`].
    BoundInterface(BoundInterface),
}

impl AppleGuard {
    /// The strategy for `mode`.
    pub fn new(mode: AppleMode) -> Self {
        match mode {
            AppleMode::NetworkExtension => AppleGuard::NetworkExtension(NetworkExtension),
            AppleMode::BoundInterface { tunnel } => {
                AppleGuard::BoundInterface(BoundInterface::new(tunnel))
            }
        }
    }

    fn inner(&self) -> &dyn Strategy {
        match self {
            AppleGuard::NetworkExtension(s) => s,
            AppleGuard::BoundInterface(s) => s,
        }
    }
}

impl Strategy for AppleGuard {
    fn protect(&self, socket: &socket2::Socket) -> Result<(), ProtectionError> {
        self.inner().protect(socket)
    }

    fn pins_source(&self) -> bool {
        self.inner().pins_source()
    }

    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        self.inner().resolve(destination)
    }

    fn interface_for_source(&self, source: IpAddr) -> Result<Option<u32>, ResolveError> {
        self.inner().interface_for_source(source)
    }

    fn is_tunnel_interface(&self, index: u32) -> Result<bool, ResolveError> {
        self.inner().is_tunnel_interface(index)
    }

    fn pin_stream(&self, socket: &socket2::Socket, path: &Path) -> Result<(), ProtectionError> {
        self.inner().pin_stream(socket, path)
    }
}
