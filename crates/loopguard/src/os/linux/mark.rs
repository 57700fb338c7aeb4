//! The Linux strategy: every socket carries the guard's mark.

use std::io;

use crate::{GuardConfig, ProtectionError, Strategy};

/// Protects sockets with `SO_MARK`, so the policy rules installed by
/// [`TunnelRoutes`](super::TunnelRoutes) (or wg-quick style rules of your own) route them by
/// the main table instead of the tunnel's.
///
/// Setting a mark needs `CAP_NET_ADMIN` (or `CAP_NET_RAW` since Linux 5.17); without it every
/// socket fails with a [`ProtectionError`] that says so.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxMark {
    config: GuardConfig,
}

impl LinuxMark {
    /// A strategy marking sockets with `config.mark()`.
    pub fn new(config: GuardConfig) -> Self {
        LinuxMark { config }
    }

    /// The configuration whose mark the sockets carry.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }
}

impl Strategy for LinuxMark {
    fn protect(&self, socket: &socket2::Socket) -> Result<(), ProtectionError> {
        socket.set_mark(self.config.mark()).map_err(|e| {
            let hint = (e.raw_os_error() == Some(libc::EPERM)).then_some(
                "setting a socket mark needs CAP_NET_ADMIN, or CAP_NET_RAW on Linux 5.17 and later",
            );
            ProtectionError::new("setsockopt(SO_MARK)", e, hint)
        })?;
        // Read it back: a kernel that silently ignored the option would leave the socket
        // unprotected, and an unprotected socket must never be handed out.
        let actual =
            get_mark(socket).map_err(|e| ProtectionError::new("getsockopt(SO_MARK)", e, None))?;
        if actual != self.config.mark() {
            return Err(ProtectionError::new(
                "setsockopt(SO_MARK)",
                io::Error::other(format!(
                    "the socket reports mark {actual:#x} instead of {:#x}",
                    self.config.mark()
                )),
                None,
            ));
        }
        Ok(())
    }
}

fn get_mark(socket: &socket2::Socket) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value as u32)
}
