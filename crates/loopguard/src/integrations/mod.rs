//! Guarded sockets for other networking crates, each behind a cargo feature of its name.
//!
//! Each integration hands a crate the sockets of a [`SocketFactory`](crate::SocketFactory)
//! through that crate's own extension point, so its traffic takes the same protected path as
//! the application's: the strategy's protection on every socket, its source and interface on
//! every datagram and connection, and fail-closed errors where no path outside the tunnel
//! exists.
//!
//! - feature `hickory`, module `hickory`: a runtime for hickory-resolver, so its stub
//!   resolver asks its servers over guarded UDP and TCP.

#[cfg(feature = "hickory")]
#[cfg_attr(docsrs, doc(cfg(feature = "hickory")))]
pub mod hickory;
