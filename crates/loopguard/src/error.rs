//! Typed errors that tell a protection failure and an unreachable destination apart from
//! ordinary I/O errors.

use std::io;
use std::net::SocketAddr;

/// What went wrong when making, protecting or using a guarded socket.
///
/// Match on the variants: [`Error::Protection`] is fatal for that socket (drop it),
/// [`Error::HostUnreachable`] means the datagram or connection was refused because no path
/// outside the tunnel exists (fail closed: nothing was sent), and [`Error::Io`] is everything
/// the operating system reported otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be protected from the tunnel. It was never used and must be
    /// dropped.
    #[error(transparent)]
    Protection(#[from] ProtectionError),
    /// No route outside the tunnel leads to `destination`; the datagram or connection attempt
    /// was dropped rather than sent unprotected.
    #[error("no route to {destination} outside the tunnel: dropped, not sent")]
    HostUnreachable {
        /// Where the datagram or connection was going.
        destination: SocketAddr,
    },
    /// The tunnel the strategy avoids is not in the host's current tables (deleted, or
    /// restarted under a new identity), so no path can be trusted to stay out of it: the
    /// datagram or connection to `destination` was dropped, not sent. The path is resolved
    /// again once the tunnel is back (a strategy that follows the tunnel by name finds the
    /// new one itself; otherwise build the strategy again for the new tunnel).
    #[error("the tunnel is not in the host's current tables (deleted, or restarted under a new identity): {destination} dropped, not sent")]
    TunnelGone {
        /// Where the datagram or connection was going.
        destination: SocketAddr,
    },
    /// A socket operation that registers with tokio's reactor (`bind`, `connect`) was called
    /// outside a tokio runtime; nothing was created or sent.
    #[error("{operation} must be called from inside a tokio runtime (with I/O enabled)")]
    NoRuntime {
        /// What was called, e.g. `SocketFactory::bind`.
        operation: &'static str,
    },
    /// The operating system reported an error that is not about protection.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// [`Error::NoRuntime`] unless the caller runs inside a tokio runtime.
    pub(crate) fn require_runtime(operation: &'static str) -> Result<(), Error> {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::NoRuntime { operation }),
        }
    }
}

impl Error {
    /// Whether the socket that returned this error can no longer be used.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Protection(_))
    }
}

impl From<Error> for io::Error {
    /// Keeps the typed error inside, so `io::Error::get_ref` and `downcast` recover it.
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::HostUnreachable { .. } | Error::TunnelGone { .. } => {
                io::Error::new(io::ErrorKind::HostUnreachable, e)
            }
            Error::Protection(_) => io::Error::new(io::ErrorKind::PermissionDenied, e),
            Error::NoRuntime { .. } => io::Error::other(e),
        }
    }
}

/// A socket could not be protected: the step that failed, the OS error, and what would fix it.
#[derive(Debug, thiserror::Error)]
#[error("cannot protect socket from the tunnel: {step} failed{}", hint_suffix(.hint))]
pub struct ProtectionError {
    step: &'static str,
    #[source]
    source: io::Error,
    hint: Option<&'static str>,
}

fn hint_suffix(hint: &Option<&'static str>) -> String {
    hint.map(|h| format!(" ({h})")).unwrap_or_default()
}

impl ProtectionError {
    /// A failed protection `step` (for example `"setsockopt(SO_MARK)"`) with the OS error and
    /// an optional hint naming what is missing (for example a capability).
    pub fn new(step: &'static str, source: io::Error, hint: Option<&'static str>) -> Self {
        ProtectionError { step, source, hint }
    }

    /// The protection step that failed.
    pub fn step(&self) -> &'static str {
        self.step
    }

    /// The operating system's error.
    pub fn os_error(&self) -> &io::Error {
        &self.source
    }

    /// What would make protection work, when known (for example `"needs CAP_NET_ADMIN"`).
    pub fn hint(&self) -> Option<&'static str> {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_error_names_the_step_and_the_fix() {
        let e = Error::from(ProtectionError::new(
            "setsockopt(SO_MARK)",
            io::Error::from_raw_os_error(libc::EPERM),
            Some("needs CAP_NET_ADMIN"),
        ));
        assert!(e.is_fatal());
        let text = e.to_string();
        assert!(
            text.contains("SO_MARK") && text.contains("CAP_NET_ADMIN"),
            "{text}"
        );
        // The OS error is the source, once: a chain printer shows it after the message.
        let source = std::error::Error::source(&e).expect("the OS error");
        assert_eq!(
            source.to_string(),
            io::Error::from_raw_os_error(libc::EPERM).to_string()
        );
        assert!(!text.contains(&source.to_string()), "{text}");
    }

    #[test]
    fn binding_outside_a_runtime_is_an_error_not_a_panic() {
        struct NoProtection;
        impl crate::Strategy for NoProtection {
            fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
                Ok(())
            }
        }
        let factory = crate::SocketFactory::new(NoProtection);
        let e = factory.bind("127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::NoRuntime {
                    operation: "SocketFactory::bind"
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }

    #[test]
    fn host_unreachable_names_the_destination_and_survives_io_conversion() {
        let dst: SocketAddr = "192.0.2.7:53".parse().unwrap();
        let e = Error::HostUnreachable { destination: dst };
        assert!(!e.is_fatal());
        assert!(e.to_string().contains("192.0.2.7:53"));
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::HostUnreachable);
        let inner = io.into_inner().unwrap().downcast::<Error>().unwrap();
        assert!(matches!(*inner, Error::HostUnreachable { destination } if destination == dst));
    }
}
