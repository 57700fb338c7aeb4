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

use crate::{ProtectionError, ResolveError, Strategy};

/// Why the host application could not protect a socket.
#[derive(Debug, thiserror::Error)]
pub enum ProtectFailure {
    /// The host's protection call answered "no": `VpnService.protect` returned `false`
    /// (the VPN service is not running, or not this app's).
    #[error("the host refused (VpnService.protect returned false)")]
    Refused,
    /// The callback itself failed (a JNI exception, a detached thread, a closed service).
    #[error("the host callback failed")]
    Failed(#[source] io::Error),
}

/// What the host application does to keep one socket out of its tunnel.
///
/// Implemented for closures `Fn(RawFd) -> Result<(), ProtectFailure>` and for `Arc<P>`;
/// object-safe, so an `Arc<dyn Protector>` works too. Calls come from whichever
/// thread creates the socket (attach it to the JVM as needed) and must not block for long.
///
/// # Ownership of the descriptor
/// The fd is **borrowed** for the call: loopguard owns the socket before, during and after
/// it, and closes it when its socket is dropped. The host must neither close it nor take
/// ownership of it: `VpnService.protect(int)` and `Network.bindSocket(FileDescriptor)` only
/// borrow, but `ParcelFileDescriptor.adoptFd(fd)` takes ownership and closes the socket when
/// the parcel is closed or collected, behind loopguard's back (and a later socket may then
/// reuse the number). Where the Java side needs a `ParcelFileDescriptor` or
/// `FileDescriptor`, use `ParcelFileDescriptor.fromFd(fd)` (which duplicates) and close that
/// copy. [`ProtectHook`] checks after each call that `fd` is still open and still the same
/// socket; if not, the socket is refused with a [`ProtectionError`].
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
    tunnel: Option<String>,
}

impl<P: Protector> ProtectHook<P> {
    /// A strategy calling `protector` for every socket.
    pub fn new(protector: P) -> Self {
        ProtectHook {
            protector,
            tunnel: None,
        }
    }

    /// Names the VPN's TUN interface (for example `tun0`, as `TUNGETIFF` on the descriptor
    /// from `VpnService.Builder.establish()` reports it), so a destination whose zone names
    /// it (`fe80::1%tun0`) is refused: a protected socket still sends a zoned destination out
    /// of the named interface. Without it, zones are not checked.
    pub fn with_tunnel(mut self, name: impl Into<String>) -> Self {
        self.tunnel = Some(name.into());
        self
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
        let ours = identity(fd).map_err(|e| ProtectionError::new("fstat", e, None))?;
        self.protector
            .protect(fd)
            .map_err(|e| to_protection_error("VpnService.protect", e))?;
        still_ours(fd, ours, "VpnService.protect")?;
        self.protector
            .bind_network(fd)
            .map_err(|e| to_protection_error("Network.bindSocket", e))?;
        still_ours(fd, ours, "Network.bindSocket")
    }

    /// Whether interface `index` is named as [`with_tunnel`](ProtectHook::with_tunnel) says.
    fn is_tunnel_interface(&self, index: u32) -> Result<bool, ResolveError> {
        let Some(tunnel) = &self.tunnel else {
            return Ok(false);
        };
        Ok(interface_name(index).is_some_and(|name| name == *tunnel))
    }
}

/// The name of the interface with this index (`if_indextoname`), if there is one.
fn interface_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes the call may write.
    let name = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The (device, inode) pair that names the open file behind `fd`.
fn identity(fd: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero `stat` is valid; fstat only writes it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes for the duration of the call.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between Unixes
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Fails when the host closed `fd` or put another file under its number during `step`.
fn still_ours(fd: RawFd, ours: (u64, u64), step: &'static str) -> Result<(), ProtectionError> {
    match identity(fd) {
        Ok(now) if now == ours => Ok(()),
        Ok(_) | Err(_) => Err(ProtectionError::new(
            step,
            io::Error::other("the host closed or replaced the socket's descriptor"),
            Some("borrow the fd, never adopt it: no ParcelFileDescriptor.adoptFd (use fromFd, which duplicates)"),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_tunnel_is_recognised_by_index_and_without_a_name_nothing_is() {
        let allow = |_: RawFd| -> Result<(), ProtectFailure> { Ok(()) };
        // Every network namespace has `lo`, and the kernel gives it index 1.
        let hook = ProtectHook::new(allow).with_tunnel("lo");
        assert!(hook.is_tunnel_interface(1).unwrap());
        assert!(
            !hook.is_tunnel_interface(u32::MAX).unwrap(),
            "no such interface"
        );
        assert!(!ProtectHook::new(allow).is_tunnel_interface(1).unwrap());
    }
}
