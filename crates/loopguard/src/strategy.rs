//! How a factory keeps its sockets out of the tunnel: the [`Strategy`] trait.

use std::io;
use std::net::IpAddr;

use crate::ProtectionError;

/// The path a datagram or connection takes outside the tunnel: the source address to use and,
/// where the platform can pin it, the interface index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    /// Source address on the chosen interface.
    pub source: IpAddr,
    /// Index of the chosen interface, when the strategy knows it.
    pub interface: Option<u32>,
}

/// Why a strategy could not find a path for a destination.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No route outside the tunnel leads there (an IPv4-only host asked for IPv6, the only
    /// default route belongs to the tunnel). A normal state: callers drop the datagram.
    #[error("no route outside the tunnel")]
    NoRoute,
    /// The tunnel the strategy avoids is not in the host's current tables: it was deleted,
    /// or restarted under a new identity (a new LUID or interface index), which would make
    /// it look like an ordinary interface. Nothing can be pinned safely until it is found
    /// again, so callers drop the datagram (fail closed).
    #[error("the tunnel {tunnel} is not in the host's current tables (deleted, or restarted under a new identity)")]
    TunnelGone {
        /// How the tunnel was named or identified.
        tunnel: String,
    },
    /// The lookup itself failed.
    #[error("route lookup failed")]
    Io(#[from] io::Error),
}

/// A way of keeping sockets out of the tunnel, one per operating system mechanism.
///
/// A strategy does two things: it protects every socket a factory creates, once, before
/// first use ([`protect`](Strategy::protect)); and, when the mechanism needs it, it names the
/// path for a destination ([`resolve`](Strategy::resolve)), which the factory caches and
/// stamps on each datagram or binds before each connection.
///
/// The Linux mark strategy (`LinuxMark`, in [`os`](crate::os)) protects with `SO_MARK` and
/// leaves the path to the kernel's policy rules, so it does not resolve.
pub trait Strategy: Send + Sync + 'static {
    /// Protects a newly created socket. An error is fatal: the factory drops the socket and
    /// returns [`Error::Protection`](crate::Error::Protection).
    fn protect(&self, socket: &socket2::Socket) -> Result<(), ProtectionError>;

    /// Whether datagrams without an explicit source need one from [`resolve`](Strategy::resolve).
    /// `false` (the default) leaves the choice to the kernel.
    fn pins_source(&self) -> bool {
        false
    }

    /// The path outside the tunnel for `destination`. Called only when
    /// [`pins_source`](Strategy::pins_source) is `true`, and then only on a cache miss.
    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        let _ = destination;
        Err(ResolveError::NoRoute)
    }

    /// The index of the interface that owns `source`, for datagrams sent with an explicit
    /// source on platforms that stamp the interface beside it (Windows, macOS): without it
    /// they would carry index 0 and the OS could choose the tunnel. `Ok(None)` when no
    /// interface owns it (the OS then refuses the source itself);
    /// [`ResolveError::NoRoute`] when the tunnel owns it (the datagram is dropped). Called
    /// only when [`pins_source`](Strategy::pins_source) is `true`; the factory caches the
    /// answer until [`reset`](crate::SocketFactory::reset). The default knows none.
    fn interface_for_source(&self, source: IpAddr) -> Result<Option<u32>, ResolveError> {
        let _ = source;
        Ok(None)
    }

    /// Whether the interface with this index is the tunnel's. Asked for destinations that
    /// name their interface themselves, an IPv6 address with a zone (`fe80::1%7`): the OS
    /// sends those out of the named interface whatever the socket's protection says, so the
    /// factory refuses a zone naming the tunnel ([`Error::HostUnreachable`](crate::Error::HostUnreachable)),
    /// and caches the answer per index until [`reset`](crate::SocketFactory::reset).
    /// [`ResolveError::TunnelGone`] refuses too. The default knows no tunnel (`Ok(false)`):
    /// a strategy that cannot tell lets zones through, and says so in its docs.
    fn is_tunnel_interface(&self, index: u32) -> Result<bool, ResolveError> {
        let _ = index;
        Ok(false)
    }

    /// Holds a stream socket, before it connects, to `path`: for example to its interface
    /// with `IP_UNICAST_IF` (Windows) or `IP_BOUND_IF` (macOS). Called only for strategies
    /// that pin sources, after the factory bound the socket to `path.source` (unless the
    /// caller bound it). The default does nothing more.
    fn pin_stream(&self, socket: &socket2::Socket, path: &Path) -> Result<(), ProtectionError> {
        let _ = (socket, path);
        Ok(())
    }
}

/// A shared strategy protects as the strategy inside, so one strategy object (holding, say, a
/// host callback) can serve several factories or be inspected by the application.
impl<S: Strategy + ?Sized> Strategy for std::sync::Arc<S> {
    fn protect(&self, socket: &socket2::Socket) -> Result<(), ProtectionError> {
        (**self).protect(socket)
    }

    fn pins_source(&self) -> bool {
        (**self).pins_source()
    }

    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        (**self).resolve(destination)
    }

    fn interface_for_source(&self, source: IpAddr) -> Result<Option<u32>, ResolveError> {
        (**self).interface_for_source(source)
    }

    fn is_tunnel_interface(&self, index: u32) -> Result<bool, ResolveError> {
        (**self).is_tunnel_interface(index)
    }

    fn pin_stream(&self, socket: &socket2::Socket, path: &Path) -> Result<(), ProtectionError> {
        (**self).pin_stream(socket, path)
    }
}
