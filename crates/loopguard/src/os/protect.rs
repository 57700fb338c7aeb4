//! The Android protect hook: the host application protects each socket for loopguard.
//!
//! On Android a VPN app cannot mark its sockets; it asks its own `VpnService` to exempt them
//! with `VpnService.protect(fd)`, and may tie them to the underlying network it chose with
//! `Network.bindSocket(fd)`. Both live on the Java side, so loopguard takes them as a
//! [`Protector`] (typically a few lines of JNI) and calls it, through [`ProtectHook`], for
//! every socket the factory creates, before the socket is bound, connected or used.
//!
//! It is just a callback, so it is available on every Unix and tested on Linux with a fake.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use crate::{ProtectionError, Strategy};

/// Why the host application could not protect a socket.
#[derive(Debug, thiserror::Error)]
pub enum ProtectFailure {
    /// The host's protection call answered "no": `VpnService.protect` returned `false`
    /// (the VPN service is not running, or not this app's).
    #[error("the host refused (VpnService.protect returned false)")]
    Refused,
    /// The callback itself failed (a JNI exception, a detached thread, a closed service).
    #[error("the host callback failed: {0}")]
    Failed(#[source] io::Error),
}

/// What the host application does to keep one socket out of its tunnel.
///
/// Implemented for closures `Fn(RawFd) -> Result<(), ProtectFailure>` and for `Arc<P>`;
/// object-safe, so an `Arc<dyn Protector>` works too. Calls come from whichever
/// thread creates the socket (attach it to the JVM as needed) and must not block for long.
pub trait Protector: Send + Sync + 'static {
    /// Exempts socket `fd` from the tunnel: `VpnService.protect(fd)`.
    fn protect(&self, fd: RawFd) -> Result<(), ProtectFailure>;

    /// Ties socket `fd` to the chosen underlying network: `Network.bindSocket(fd)`. Called
    /// after [`protect`](Protector::protect) succeeded. The default does nothing, for hosts
    /// that let the system pick the network.
    fn bind_network(&self, fd: RawFd) -> Result<(), ProtectFailure> {
        let _ = fd;
        Ok(())
    }
}

impl<F> Protector for F
where
    F: Fn(RawFd) -> Result<(), ProtectFailure> + Send + Sync + 'static,
{
    fn protect(&self, fd: RawFd) -> Result<(), ProtectFailure> {
        self(fd)
    }
}

impl<P: Protector + ?Sized> Protector for Arc<P> {
    fn protect(&self, fd: RawFd) -> Result<(), ProtectFailure> {
        (**self).protect(fd)
    }

    fn bind_network(&self, fd: RawFd) -> Result<(), ProtectFailure> {
        (**self).bind_network(fd)
    }
}

/// The strategy that hands every new socket to a [`Protector`].
///
/// A refusal or a failure is the fatal [`ProtectionError`] naming the step
/// (`"VpnService.protect"` or `"Network.bindSocket"`): the factory drops the socket and never
/// uses it. Routing is then the kernel's business (a protected socket follows the
/// underlying network), so this strategy does not resolve paths.
pub struct ProtectHook<P> {
    protector: P,
}

impl<P: Protector> ProtectHook<P> {
    /// A strategy calling `protector` for every socket.
    pub fn new(protector: P) -> Self {
        ProtectHook { protector }
    }

    /// The protector inside.
    pub fn protector(&self) -> &P {
        &self.protector
    }
}

impl<P> fmt::Debug for ProtectHook<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectHook").finish_non_exhaustive()
    }
}

impl<P: Protector> Strategy for ProtectHook<P> {
    fn protect(&self, socket: &socket2::Socket) -> Result<(), ProtectionError> {
        let fd = socket.as_raw_fd();
        self.protector
            .protect(fd)
            .map_err(|e| to_protection_error("VpnService.protect", e))?;
        self.protector
            .bind_network(fd)
            .map_err(|e| to_protection_error("Network.bindSocket", e))
    }
}

fn to_protection_error(step: &'static str, failure: ProtectFailure) -> ProtectionError {
    match failure {
        ProtectFailure::Refused => ProtectionError::new(
            step,
            io::Error::new(io::ErrorKind::PermissionDenied, ProtectFailure::Refused),
            Some("the host's VpnService must be running and prepared (VpnService.prepare)"),
        ),
        ProtectFailure::Failed(e) => ProtectionError::new(step, e, None),
    }
}
