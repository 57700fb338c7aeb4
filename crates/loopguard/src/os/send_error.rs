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
    /// The datagram is larger than the path allows (`EMSGSIZE`): how a path MTU probe
    /// learns the limit; not retried.
    TooLarge,
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

/// Where one failed send attempt stands, for [`next_step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The send carried several segments (GSO / USO).
    pub(crate) segmented: bool,
    /// How many "queue full" retries this batch already made.
    pub(crate) queue_full_retries: u32,
    /// The source came from the strategy (so it may be resolved again).
    pub(crate) resolved: bool,
    /// It was already resolved again once for this batch.
    pub(crate) re_resolved: bool,
}

/// What the send path does after a failed send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NextStep {
    /// Wait a little and send the same thing again.
    RetryQueueFull,
    /// The device refused segmentation: turn it off for this socket (a flag of our own,
    /// since quinn-udp never lowers its count on Windows, and our own `WSASendMsg` bypasses
    /// it anyway) and send the same datagrams one at a time, in order.
    Unsegment,
    /// Forget the cached source, resolve once more, send again.
    ReResolve,
    /// Give up with a typed error.
    Fail,
}

/// The send path's decision after `err` (classified as `failure`). A segmented send that
/// fails with the "GSO refused" codes is always unsegmented first, never taken for "source
/// gone": the single datagrams then show which it was.
pub(crate) fn next_step(
    failure: SendFailure,
    err: &io::Error,
    attempt: Attempt,
    max_queue_full_retries: u32,
) -> NextStep {
    match failure {
        SendFailure::QueueFull if attempt.queue_full_retries < max_queue_full_retries => {
            NextStep::RetryQueueFull
        }
        SendFailure::MaybeGsoRefused if attempt.segmented => NextStep::Unsegment,
        failure if attempt.resolved && !attempt.re_resolved && failure.may_be_source_gone(err) => {
            NextStep::ReResolve
        }
        _ => NextStep::Fail,
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
        libc::EMSGSIZE => SendFailure::TooLarge,
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
        ws::WSAEMSGSIZE => SendFailure::TooLarge,
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
        assert_eq!(classify(&e(libc::EMSGSIZE)), SendFailure::TooLarge);
        assert_eq!(classify(&e(libc::EPERM)), SendFailure::Other);
        assert_eq!(classify(&io::Error::other("no code")), SendFailure::Other);
        let einval = e(libc::EINVAL);
        assert!(classify(&einval).may_be_source_gone(&einval));
        assert!(!classify(&e(libc::EIO)).may_be_source_gone(&e(libc::EIO)));
        let unreachable = e(libc::ENETUNREACH);
        assert!(classify(&unreachable).may_be_source_gone(&unreachable));
        assert!(!classify(&e(libc::EPERM)).may_be_source_gone(&e(libc::EPERM)));
    }

    /// The send path's rule, table-driven. The row that matters for Windows: a USO batch
    /// refused with EINVAL (WSAEINVAL there) is sent again unsegmented, whatever quinn-udp's
    /// own GSO count says (it never lowers it on Windows), and is not "source gone".
    #[test]
    fn a_refused_batch_is_unsegmented_before_anything_else() {
        let e = |c| io::Error::from_raw_os_error(c);
        let attempt = |segmented, retries, resolved, re_resolved| Attempt {
            segmented,
            queue_full_retries: retries,
            resolved,
            re_resolved,
        };
        let rows = [
            // (errno, segmented, queue-full retries, resolved, re-resolved, expected)
            (libc::EINVAL, true, 0, true, false, NextStep::Unsegment),
            (libc::EIO, true, 0, false, false, NextStep::Unsegment),
            (libc::EINVAL, false, 0, true, false, NextStep::ReResolve),
            (libc::EINVAL, false, 0, true, true, NextStep::Fail),
            (libc::EINVAL, false, 0, false, false, NextStep::Fail),
            (libc::EIO, false, 0, true, false, NextStep::Fail),
            (
                libc::ENOBUFS,
                true,
                0,
                true,
                false,
                NextStep::RetryQueueFull,
            ),
            (libc::ENOBUFS, false, 8, true, false, NextStep::Fail),
            (
                libc::EADDRNOTAVAIL,
                true,
                0,
                true,
                false,
                NextStep::ReResolve,
            ),
            (libc::ENETUNREACH, false, 0, false, false, NextStep::Fail),
        ];
        for (code, segmented, retries, resolved, re_resolved, expected) in rows {
            let err = e(code);
            let got = next_step(
                classify(&err),
                &err,
                attempt(segmented, retries, resolved, re_resolved),
                8,
            );
            assert_eq!(got, expected, "errno {code} segmented {segmented}");
        }
    }
}
