//! macOS and iOS.
//!
//! # Two situations, chosen by `AppleMode`
//!
//! (The strategies and `AppleMode` exist on macOS and iOS only, so their names are not links
//! in documentation built elsewhere.)
//! - **Inside a NetworkExtension** (the packet tunnel provider itself): the system already
//!   exempts the provider's sockets from its own tunnel. `AppleMode::NetworkExtension`
//!   selects a strategy that does nothing.
//! - **Outside** (a tunnel driven through a `utun` device by a normal process):
//!   `AppleMode::BoundInterface` looks up, per destination, the best route that does not
//!   use the tunnel (`RTM_GET` on an `AF_ROUTE` socket; if the best route is the tunnel's,
//!   one lookup scoped with `RTF_IFSCOPE` per other interface that is up), and returns its
//!   source address and interface index. No such route: [`Error::HostUnreachable`], nothing
//!   sent.
//!
//! # How the path applies
//! - **TCP**: per socket. Before connecting, the factory binds the resolved source and sets
//!   `IP_BOUND_IF` / `IPV6_BOUND_IF` to the resolved interface, so the SYN and everything
//!   after it leave by that interface whatever the routing table says.
//! - **UDP**: per destination, through the factory's shared path cache. A datagram sent with
//!   `src: None` carries the resolved source *and* interface index in `IP_PKTINFO` /
//!   `IPV6_PKTINFO` (our own `sendmsg`, `udp_send`; quinn-udp's `IP_RECVDSTADDR` is ignored
//!   by xnu on send). xnu gives the index precedence (bsd/netinet/udp_usrreq.c
//!   `udp_check_pktinfo`): the datagram is scoped to that interface, whatever the routing
//!   table says. A datagram with an explicit source is stamped with the index of the
//!   interface owning it; a source on the tunnel is dropped with `HostUnreachable`. The
//!   layout is tested byte by byte on every OS ([`crate::os`]'s `darwin_control`), not yet on
//!   a device.
//!
//! # Routing messages
//! The crate's own `route_message` builds `RTM_GET` requests and parses replies. It is pure
//! code, compiled and tested on every OS; the strategies that use it exist on macOS and iOS
//! only. `route_events` turns the socket's change notifications into [`crate::monitor`]
//! changes, pure and tested everywhere too.
//!
//! [`Error::HostUnreachable`]: crate::Error::HostUnreachable

#[cfg(any(target_os = "macos", target_os = "ios", test))]
mod choose;
#[cfg(any(target_os = "macos", target_os = "ios"))]
mod interfaces;
#[cfg(any(target_os = "macos", target_os = "ios"))]
mod lookup;
// Pure, compiled on every OS so their tests run everywhere; used on macOS and iOS only.
#[cfg_attr(not(any(target_os = "macos", target_os = "ios")), allow(dead_code))]
pub(crate) mod route_events;
#[cfg_attr(not(any(target_os = "macos", target_os = "ios")), allow(dead_code))]
pub(crate) mod route_message;
#[cfg(any(target_os = "macos", target_os = "ios"))]
mod strategy;
#[cfg(test)]
mod tests;
#[cfg(any(target_os = "macos", target_os = "ios"))]
pub(crate) mod udp_send;

#[cfg(any(target_os = "macos", target_os = "ios"))]
#[cfg_attr(docsrs, doc(cfg(any(target_os = "macos", target_os = "ios"))))]
pub use strategy::{bind_to_interface, AppleGuard, BoundInterface, NetworkExtension};

/// Which Apple strategy protects a factory's sockets.
#[cfg(any(target_os = "macos", target_os = "ios"))]
#[cfg_attr(docsrs, doc(cfg(any(target_os = "macos", target_os = "ios"))))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppleMode {
    /// The code runs inside the NetworkExtension that owns the tunnel: the system exempts
    /// its sockets already, so nothing is done.
    NetworkExtension,
    /// The code runs outside: route per destination around the interface named `tunnel`
    /// (for example `utun4`) and pin stream sockets to the chosen interface.
    BoundInterface {
        /// Name of the tunnel's interface.
        tunnel: String,
    },
}
