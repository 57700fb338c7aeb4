//! What a failed send means, in each platform's error codes.

use std::io;

/// The kinds of send failure the send path reacts to differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendFailure {
    /// The interface queue is full (`ENOBUFS`): retry a bounded number of times.
    QueueFull,
    /// No route (`ENETUNREACH`, `EHOSTUNREACH`): fail closed with the destination.
    Unreachable,
    /// The error a device gives when it refuses segmentation offload (`EIO`, `EINVAL`); the
    /// send path checks whether GSO was in use before treating it so.
    MaybeGsoRefused,
    /// The source address is no longer ours (`EADDRNOTAVAIL`, or `EINVAL` after an IPv6
    /// temporary address rotated away).
    SourceGone,
    /// Anything else.
    Other,
}

impl SendFailure {
    /// Whether this failure can also mean "the source is gone". EINVAL is ambiguous, and so
    /// is "unreachable": Linux answers an IPv4 send from an address no longer on any
    /// interface with `ENETUNREACH` (measured on 6.18; older kernels said `EINVAL`), IPv6
    /// with `EINVAL`. A resolved source is therefore resolved once more on either; if the
    /// destination is really unreachable, the second resolution says so.
    pub(crate) fn may_be_source_gone(self, err: &io::Error) -> bool {
        matches!(self, SendFailure::SourceGone | SendFailure::Unreachable)
            || err.raw_os_error() == Some(EINVAL)
    }
}

#[cfg(unix)]
const EINVAL: i32 = libc::EINVAL;
#[cfg(windows)]
const EINVAL: i32 = windows_sys::Win32::Networking::WinSock::WSAEINVAL;

/// Classifies an OS error returned by a UDP send.
pub(crate) fn classify(err: &io::Error) -> SendFailure {
    let Some(code) = err.raw_os_error() else {
        return SendFailure::Other;
    };
    platform(code)
}

#[cfg(unix)]
fn platform(code: i32) -> SendFailure {
    match code {
        libc::ENOBUFS => SendFailure::QueueFull,
        libc::ENETUNREACH | libc::EHOSTUNREACH => SendFailure::Unreachable,
        libc::EIO | libc::EINVAL => SendFailure::MaybeGsoRefused,
        libc::EADDRNOTAVAIL => SendFailure::SourceGone,
        _ => SendFailure::Other,
    }
}

#[cfg(windows)]
fn platform(code: i32) -> SendFailure {
    use windows_sys::Win32::Networking::WinSock as ws;
    match code {
        ws::WSAENOBUFS => SendFailure::QueueFull,
        ws::WSAENETUNREACH | ws::WSAEHOSTUNREACH => SendFailure::Unreachable,
        ws::WSAEINVAL => SendFailure::MaybeGsoRefused,
        ws::WSAEADDRNOTAVAIL => SendFailure::SourceGone,
        _ => SendFailure::Other,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn unix_codes() {
        let e = |c| io::Error::from_raw_os_error(c);
        assert_eq!(classify(&e(libc::ENOBUFS)), SendFailure::QueueFull);
        assert_eq!(classify(&e(libc::ENETUNREACH)), SendFailure::Unreachable);
        assert_eq!(classify(&e(libc::EHOSTUNREACH)), SendFailure::Unreachable);
        assert_eq!(classify(&e(libc::EIO)), SendFailure::MaybeGsoRefused);
        assert_eq!(classify(&e(libc::EADDRNOTAVAIL)), SendFailure::SourceGone);
        assert_eq!(classify(&e(libc::EPERM)), SendFailure::Other);
        assert_eq!(classify(&io::Error::other("no code")), SendFailure::Other);
        let einval = e(libc::EINVAL);
        assert!(classify(&einval).may_be_source_gone(&einval));
        assert!(!classify(&e(libc::EIO)).may_be_source_gone(&e(libc::EIO)));
        let unreachable = e(libc::ENETUNREACH);
        assert!(classify(&unreachable).may_be_source_gone(&unreachable));
        assert!(!classify(&e(libc::EPERM)).may_be_source_gone(&e(libc::EPERM)));
    }
}
