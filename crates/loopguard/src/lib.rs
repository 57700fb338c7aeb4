//! loopguard: sockets for VPN and tunnel clients that never loop into their own tunnel.
//!
//! A tunnel client routes the machine's traffic into its TUN device, yet its own sockets (peer
//! and relay UDP, control-plane TCP, DNS) must go around it: otherwise their packets enter the
//! TUN, get wrapped and sent again through the same socket. Every such socket comes from one
//! [`SocketFactory`], whose [`Strategy`] protects it the way the operating system allows. On
//! Linux that is [`LinuxMark`]: `SO_MARK` on every socket, with [`TunnelRoutes`] (feature
//! `linux-routes`) or the tunnel's own tooling installing the policy rules that send
//! everything unmarked into the tunnel; or, where the tunnel's routes
//! sit in `main` and nothing may mark sockets, [`PinOutside`]: each destination's best route
//! outside the tunnel device, with datagrams and connections pinned to its interface.
//!
//! ```
//! # #[cfg(not(target_os = "linux"))]
//! # fn main() {}
//! # #[cfg(target_os = "linux")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), loopguard::Error> {
//! use loopguard::{DatagramOut, Error, GuardConfig, LinuxMark, SocketFactory};
//!
//! let factory = SocketFactory::new(LinuxMark::new(GuardConfig::default()));
//! let peer = match factory.bind("127.0.0.1:0".parse().unwrap()) {
//!     Ok(socket) => socket,
//!     // Marks need CAP_NET_ADMIN. Without it no socket is handed out: a typed, fatal error.
//!     Err(Error::Protection(e)) => {
//!         eprintln!("cannot guard sockets here: {e}");
//!         return Ok(());
//!     }
//!     Err(e) => return Err(e),
//! };
//! let relay = factory.bind("127.0.0.1:0".parse().unwrap())?;
//!
//! // `src` left empty: the strategy decides, and never lets the datagram into the tunnel.
//! peer.send(&DatagramOut::new(relay.local_addr()?, b"hello")).await?;
//!
//! let mut buf = [0u8; 1500];
//! let meta = relay.recv_from(&mut buf).await?;
//! assert_eq!(&buf[..meta.len], b"hello");
//! assert_eq!(meta.addr, peer.local_addr()?);
//! # Ok(())
//! # }
//! ```
//!
//! # Errors callers act on
//! - [`Error::Protection`]: the socket could not be protected; it is dropped, never used.
//! - [`Error::HostUnreachable`]: no path outside the tunnel; the datagram or SYN was dropped,
//!   not sent "unprotected".
//! - [`Error::TunnelGone`]: a pinning strategy's tunnel is not in the host's tables (deleted,
//!   or restarted under a new identity); dropped the same way until it is found again.
//!
//! # A whole Linux client
//! The TUN device, [`TunnelRoutes`] and its guard, the factory, roaming and the removal of
//! the rules, in one `tokio::select!` loop and no helper task, are in
//! `examples/tunnel_client.rs` (feature `linux-routes`; Linux documentation built with it
//! shows the file at the end of this page).
//!
//! # Choosing the strategy per operating system
//! One factory type serves every OS; only the strategy differs. A client built for several
//! platforms picks it once, at start-up, for its tunnel device:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use loopguard::{SocketFactory, Strategy};
//!
//! # #[cfg(target_os = "android")]
//! # fn host_protector() -> impl loopguard::Protector {
//! #     |_fd: std::os::fd::RawFd| -> Result<(), loopguard::ProtectFailure> { Ok(()) }
//! # }
//! /// The strategy of this build's OS for the tunnel device `tunnel`.
//! fn strategy(tunnel: &str) -> Result<Arc<dyn Strategy>, Box<dyn std::error::Error>> {
//!     // Linux: mark every socket; `TunnelRoutes` installs the rules that send everything
//!     // unmarked into the tunnel (or `PinOutside::for_tunnel_named(tunnel)` where the
//!     // tunnel's routes sit in `main` and nothing may mark sockets).
//!     #[cfg(target_os = "linux")]
//!     return Ok(Arc::new(loopguard::LinuxMark::new(loopguard::GuardConfig::default())));
//!     // Android: the host app's `VpnService.protect`, through JNI.
//!     #[cfg(target_os = "android")]
//!     return Ok(Arc::new(loopguard::ProtectHook::new(host_protector()).with_tunnel(tunnel)));
//!     // Windows: the best route outside the tunnel, pinned with IP_UNICAST_IF.
//!     #[cfg(windows)]
//!     return Ok(Arc::new(loopguard::WindowsRoute::for_tunnel_named(tunnel)?));
//!     // macOS outside a NetworkExtension: the best interface outside the utun, pinned
//!     // with IP_BOUND_IF (inside one, `AppleMode::NetworkExtension`).
//!     #[cfg(any(target_os = "macos", target_os = "ios"))]
//!     return Ok(Arc::new(loopguard::AppleGuard::new(loopguard::AppleMode::BoundInterface {
//!         tunnel: tunnel.into(),
//!     })));
//!     #[allow(unreachable_code)]
//!     Err(format!("no loopguard strategy for this OS (tunnel {tunnel})").into())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let factory = SocketFactory::new(strategy("tun0")?);
//! let peer = factory.bind("0.0.0.0:0".parse()?)?;
//! # let _ = peer;
//! # Ok(())
//! # }
//! ```
//!
//! # TCP
//! A control-plane connection is one call; the stream is tokio's `AsyncRead` /
//! `AsyncWrite`. A pinning strategy binds the path's source and pins the interface before
//! the SYN leaves; with no path outside the tunnel the connect fails with
//! [`Error::HostUnreachable`] and no SYN is sent.
//!
//! ```no_run
//! # #[cfg(target_os = "linux")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use loopguard::{GuardConfig, LinuxMark, SocketFactory};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let factory = SocketFactory::new(LinuxMark::new(GuardConfig::default()));
//! let mut control = factory.connect("198.51.100.7:443".parse()?).await?;
//! control.write_all(b"hello").await?;
//! let mut reply = [0u8; 5];
//! control.read_exact(&mut reply).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Raw sockets
//! [`UdpSocket`], [`TcpSocket`] and [`TcpStream`] lend their operating system socket
//! (`AsFd` / `AsRawFd` on Unix, `AsSocket` / `AsRawSocket` on Windows), for options loopguard
//! does not set itself (buffer sizes, `IP_TOS`, timestamps). The protection lives on that
//! socket, so a borrower must not undo it: do not clear or change `SO_MARK` (Linux),
//! `SO_BINDTODEVICE`, `IP_UNICAST_IF` / `IPV6_UNICAST_IF` (Windows) or `IP_BOUND_IF` /
//! `IPV6_BOUND_IF` (macOS); do not `bind` or `connect` it again (a pinning strategy chose its
//! path for the addresses it has); and do not send on it directly: only the type's own send
//! methods stamp each datagram with the strategy's source and interface, so a datagram
//! written through the raw socket may take the default route, into the tunnel.
//!
//! # Modules
//! - [`SocketFactory`], [`UdpSocket`], [`TcpSocket`] / [`TcpStream`]: portable.
//! - [`os`]: the per-OS strategies and, on Linux, the kernel's route lookup and
//!   [`TunnelRoutes`].
//! - `keeper` (Linux, feature `linux-routes`): `TunnelRoutes::keep` and its `RouteKeeper`,
//!   which put the tunnel's routes and rules back as other programs delete them; it combines
//!   the routes with the monitor, so it sits above both.
//! - [`monitor`]: network change notifications, debounced, and [`monitor::Roaming`], which
//!   resets factories and reports the sockets to rebuild when the machine roams.
//! - [`LoopTripwire`]: recognises the factory's own packets among those read from the TUN
//!   (a routing loop in progress), per packet, without allocating.
//! - [`dns`] (feature `dns`): host names looked up through guarded sockets, so DNS never
//!   enters the tunnel.
//! - [`route`]: the portable route model and the Windows selection rules (pure, tested on
//!   every OS), with readers for the dumps users paste into bug reports (feature
//!   `route-dumps`).
//! - [`integrations`]: guarded sockets for other crates' clients, each behind its feature.
//!
//! # Features
//! None is on by default: guarded sockets, the strategies, the monitor, roaming and the
//! tripwire need none of them.
//! - `dns`: the `dns` module (hickory-proto's message types).
//! - `route-dumps`: `route::dump`, the readers of pasted routing dumps (serde_json).
//! - `linux-routes`: [`TunnelRoutes`] and the rest of the Linux policy-rule installer (the
//!   keeper, the doctor, the nftables conntrack marks, sysctls). No extra dependency; no
//!   effect on other systems.
//! - `hyper`: `integrations::hyper`, a connector for hyper-util's client and WebSocket
//!   clients (hyper, hyper-util, tower-service).
//! - `hickory`: `integrations::hickory`, hickory-resolver's runtime over guarded UDP and TCP
//!   (hickory-resolver).
//! - `quinn`: `integrations::quinn`, quinn's `AsyncUdpSocket` over a guarded socket (quinn,
//!   without a crypto provider).
//!
// The Linux strategies are named in the portable text above; elsewhere those names lead to
// the per-OS module.
#![cfg_attr(
    not(target_os = "linux"),
    doc = "[`LinuxMark`]: crate::os\n[`PinOutside`]: crate::os\n[`TunnelRoutes`]: crate::os"
)]
// Every link is checked where every item exists: Linux with every feature (CI's doc run and
// docs.rs). With a feature off, links to what it adds cannot resolve.
#![cfg_attr(
    not(all(feature = "dns", feature = "route-dumps", feature = "linux-routes")),
    allow(rustdoc::broken_intra_doc_links)
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The whole client, compiled as a doctest where it exists.
#![cfg_attr(
    all(target_os = "linux", feature = "linux-routes"),
    doc = concat!(
        "\n# The whole client (`examples/tunnel_client.rs`)\n\n```no_run\n",
        include_str!("../examples/tunnel_client.rs"),
        "```\n"
    )
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
mod change;
mod counters;
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub mod dns;
mod error;
mod factory;
pub mod integrations;
#[cfg(all(target_os = "linux", feature = "linux-routes"))]
#[cfg_attr(docsrs, doc(cfg(all(target_os = "linux", feature = "linux-routes"))))]
pub mod keeper;
pub mod monitor;
pub mod os;
mod raw_socket;
pub mod route;
mod strategy;
mod tcp;
mod tripwire;
mod udp;

pub use counters::Counters;
pub use error::{Error, ProtectionError};
pub use factory::SocketFactory;
pub use strategy::{Path, ResolveError, Strategy};
pub use tcp::{TcpSocket, TcpStream};
pub use tripwire::{LoopEvent, LoopProtocol, LoopTripwire, Watched};
pub use udp::{DatagramOut, EcnCodepoint, RecvMeta, UdpSocket, MAX_GSO_SEGMENTS};

/// Entry points for the fuzz targets in `fuzz/`, built only under cargo-fuzz (which sets
/// `--cfg fuzzing`): the Darwin routing-socket parsers are internal everywhere else.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::os::apple::route_events::parse_change as parse_route_event;
    pub use crate::os::apple::route_message::parse as parse_route_message;
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
#[cfg_attr(docsrs, doc(cfg(any(target_os = "macos", target_os = "ios"))))]
pub use os::apple::{AppleGuard, AppleMode};
#[cfg(all(target_os = "linux", feature = "linux-routes"))]
#[cfg_attr(docsrs, doc(cfg(all(target_os = "linux", feature = "linux-routes"))))]
pub use os::linux::TunnelRoutes;
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use os::linux::{GuardConfig, GuardConfigBuilder, LinuxMark, PinOutside};
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub use os::protect::{ProtectFailure, ProtectHook, Protector};
#[cfg(windows)]
#[cfg_attr(docsrs, doc(cfg(windows)))]
pub use os::windows::WindowsRoute;
