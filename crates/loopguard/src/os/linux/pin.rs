//! [`PinOutside`]: the best route outside the tunnel, decided from the `main` table read over
//! netlink, with no socket mark and no policy rule. Datagrams carry the chosen interface in
//! `IP_PKTINFO` / `IPV6_PKTINFO` (see [`linux_control`](crate::os::linux_control)); streams
//! are bound to it with `SO_BINDTOIFINDEX` ([`BindToDevice`]).

use std::io;
use std::net::IpAddr;
use std::num::NonZeroU32;

use super::netlink_host::NetlinkHost;
use super::RoutesError;
use crate::os::best_route::{BestRouteOutsideTunnel, HostSnapshot, StreamPin};
use crate::route::{Tunnel, TunnelNotFound};

/// Holds a stream socket to one interface with `SO_BINDTOIFINDEX` (`SO_BINDTODEVICE` by
/// index): the kernel's route lookups for the socket then only consider that device, so a
/// tunnel route that covers the destination cannot take the connection. Since Linux 5.7 no
/// capability is needed to bind a socket that is not yet bound to a device.
#[derive(Clone, Copy, Debug, Default)]
pub struct BindToDevice;

impl StreamPin for BindToDevice {
    fn pin(&self, socket: &socket2::Socket, family_of: IpAddr, interface: u32) -> io::Result<()> {
        let index = NonZeroU32::new(interface)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "interface index 0"))?;
        // Both set SO_BINDTOIFINDEX on Linux; the family only picks socket2's name.
        match family_of {
            IpAddr::V4(_) => socket.bind_device_by_index_v4(Some(index)),
            IpAddr::V6(_) => socket.bind_device_by_index_v6(Some(index)),
        }
    }

    fn step(&self, _family_of: IpAddr) -> &'static str {
        "setsockopt(SO_BINDTOIFINDEX)"
    }
}

/// The Linux pin strategy: [`BestRouteOutsideTunnel`] over the live netlink tables
/// ([`NetlinkHost`]) and [`BindToDevice`]. For hosts where the tunnel's routes sit in `main`
/// (for example `0.0.0.0/1` and `128.0.0.0/1` through `tun0`) and nothing marks sockets.
///
/// IPv6 datagrams leave with the interface index and an unspecified source, the kernel
/// choosing the source on that interface: it binds an IPv6 lookup to the interface only
/// then. So an IPv6 datagram with a source of the caller's (or from a socket bound to a
/// specific IPv6 address) fails closed with an `Unsupported` I/O error, unsent; IPv4 takes
/// explicit sources. Streams are pinned for both families.
///
/// The tunnel is identified by ifindex (see [`NetlinkHost`]), found once by name with
/// [`PinOutside::for_tunnel_named`] (`BestRouteOutsideTunnel::new` takes the parts).
pub type PinOutside = BestRouteOutsideTunnel<NetlinkHost, BindToDevice>;

/// Why a [`PinOutside`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PinOutsideError {
    /// The netlink socket could not be opened.
    #[error(transparent)]
    Netlink(#[from] RoutesError),
    /// The host's tables could not be read.
    #[error("reading the host's links, routes and addresses")]
    Snapshot(#[source] io::Error),
    /// No device has that name, index or address.
    #[error(transparent)]
    NoSuchTunnel(#[from] TunnelNotFound),
}

impl PinOutside {
    /// The strategy that never uses the device `tunnel` (a name such as `tun0`, an ifindex
    /// or one of its addresses), found now in the calling thread's network namespace and
    /// kept by index, so a later rename does not matter.
    ///
    /// A device deleted (or deleted and created again, with a new index) fails closed:
    /// every destination is [`Error::TunnelGone`](crate::Error::TunnelGone) until a device
    /// answers to `tunnel` again, which is then avoided in turn
    /// ([`TunnelRestart::FollowName`](crate::os::best_route::TunnelRestart)). Reset the
    /// factory on network changes (the network monitor's `Roaming` does) so cached paths are
    /// resolved again.
    pub fn for_tunnel_named(tunnel: &str) -> Result<Self, PinOutsideError> {
        let host = NetlinkHost::new()?;
        let tables = host.snapshot().map_err(PinOutsideError::Snapshot)?;
        let tunnel = Tunnel::find(&tables, tunnel)?;
        Ok(BestRouteOutsideTunnel::new(host, BindToDevice, tunnel))
    }
}
