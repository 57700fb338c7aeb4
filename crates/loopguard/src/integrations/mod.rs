//! Adapters that hand guarded sockets to other networking crates, each behind a cargo
//! feature of the same name (none is on by default).
//!
//! - `quinn`: [`quinn::GuardedQuinnSocket`], a `quinn::AsyncUdpSocket` over a guarded
//!   [`UdpSocket`](crate::UdpSocket), so QUIC (MASQUE and other QUIC-based tunnels) runs
//!   outside the tunnel.

#[cfg(feature = "quinn")]
#[cfg_attr(docsrs, doc(cfg(feature = "quinn")))]
pub mod quinn;
