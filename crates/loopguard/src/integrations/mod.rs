//! Guarded sockets for other crates' clients, each behind its own cargo feature.
//!
//! - `hyper`: `hyper::GuardedConnector`, a tower `Service<Uri>` making guarded TCP streams
//!   for hyper-util's client, TLS connectors that wrap one, and WebSocket clients that take a
//!   connected stream.

#[cfg(feature = "hyper")]
pub mod hyper;
