//! Guarded sockets for other networking crates, each behind a cargo feature of its name.
//!
//! Each integration hands a crate the sockets of a [`SocketFactory`](crate::SocketFactory)
//! through that crate's own extension point, so its traffic takes the same protected path as
//! the application's: the strategy's protection on every socket, its source and interface on
//! every datagram and connection, and fail-closed errors where no path outside the tunnel
//! exists.
//!
//! - feature `hyper`, module `hyper`: `GuardedConnector`, a tower `Service<Uri>` making
//!   guarded TCP streams for hyper-util's client, TLS connectors that wrap one, and WebSocket
//!   clients that take a connected stream.
//! - feature `hickory`, module `hickory`: a runtime for hickory-resolver, so its stub
//!   resolver asks its servers over guarded UDP and TCP.
//! - feature `quinn`, module `quinn`: [`quinn::GuardedQuinnSocket`], a `quinn::AsyncUdpSocket`
//!   over a guarded [`UdpSocket`](crate::UdpSocket), so QUIC (MASQUE and other QUIC-based
//!   tunnels) runs outside the tunnel.

#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub mod hyper;

#[cfg(feature = "hickory")]
#[cfg_attr(docsrs, doc(cfg(feature = "hickory")))]
pub mod hickory;

#[cfg(feature = "quinn")]
#[cfg_attr(docsrs, doc(cfg(feature = "quinn")))]
pub mod quinn;
