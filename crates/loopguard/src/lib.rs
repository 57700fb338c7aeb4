//! loopguard: sockets for VPN and tunnel clients that never loop into their own tunnel.
//!
//! A tunnel client routes the machine's traffic into its TUN device, yet its own sockets (peer
//! and relay UDP, control-plane TCP, DNS) must go around it: otherwise their packets enter the
//! TUN, get wrapped and sent again through the same socket. Every such socket comes from one
//! [`SocketFactory`], whose [`Strategy`] protects it the way the operating system allows. On
//! Linux that is [`LinuxMark`]: `SO_MARK` on every socket, with [`TunnelRoutes`] installing the
//! policy rules that send everything unmarked into the tunnel; or, where the tunnel's routes
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
//! - [`os`]: the per-OS strategies and, on Linux, [`TunnelRoutes`] and the kernel's route
//!   lookup.
//! - [`monitor`]: network change notifications, debounced, and [`monitor::Roaming`], which
//!   resets factories and reports the sockets to rebuild when the machine roams.
//! - [`LoopTripwire`]: recognises the factory's own packets among those read from the TUN
//!   (a routing loop in progress), per packet, without allocating.
//! - [`resolve`]: host names resolved through guarded sockets, so DNS never enters the
//!   tunnel.
//! - [`route`]: the portable route model and the Windows selection rules (pure, tested on
//!   every OS), with readers for the dumps users paste into bug reports.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
mod counters;
mod error;
mod factory;
pub mod integrations;
pub mod monitor;
pub mod os;
mod raw_socket;
pub mod resolve;
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

#[cfg(any(target_os = "macos", target_os = "ios"))]
pub use os::apple::{AppleGuard, AppleMode};
#[cfg(target_os = "linux")]
pub use os::linux::{GuardConfig, GuardConfigBuilder, LinuxMark, PinOutside, TunnelRoutes};
#[cfg(unix)]
pub use os::protect::{ProtectFailure, ProtectHook, Protector};
#[cfg(windows)]
pub use os::windows::WindowsRoute;
