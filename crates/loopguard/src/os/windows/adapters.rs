//! Adapters from `GetAdaptersAddresses`: LUID, index, friendly name, operational status and
//! the metrics the adapter list carries.

use std::io;

use windows_sys::Win32::Foundation::{ERROR_BUFFER_OVERFLOW, ERROR_NO_DATA, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetAdaptersAddresses, GAA_FLAG_INCLUDE_ALL_INTERFACES, GAA_FLAG_SKIP_ANYCAST,
    GAA_FLAG_SKIP_DNS_SERVER, GAA_FLAG_SKIP_MULTICAST, GAA_FLAG_SKIP_UNICAST,
    IP_ADAPTER_ADDRESSES_LH,
};
use windows_sys::Win32::Networking::WinSock::AF_UNSPEC;

use super::mib::win32;
use crate::route::{Luid, OperStatus};

/// One adapter as the adapter list describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Adapter {
    pub(super) luid: Luid,
    /// `IfIndex` (the IPv4 index; on Vista and later the interface index).
    pub(super) index: u32,
    /// `Ipv6IfIndex`: 0 when IPv6 is not enabled.
    pub(super) ipv6_index: u32,
    pub(super) alias: String,
    pub(super) status: OperStatus,
    pub(super) ipv4_metric: u32,
    pub(super) ipv6_metric: u32,
}

/// Every adapter, including those that are down (selection needs to see them to skip them).
pub(super) fn adapters() -> io::Result<Vec<Adapter>> {
    let flags = GAA_FLAG_SKIP_UNICAST
        | GAA_FLAG_SKIP_ANYCAST
        | GAA_FLAG_SKIP_MULTICAST
        | GAA_FLAG_SKIP_DNS_SERVER
        | GAA_FLAG_INCLUDE_ALL_INTERFACES;
    // u64 words keep the buffer aligned for the structures written into it.
    let mut size: u32 = 16 * 1024;
    for _ in 0..4 {
        let mut buf = vec![0u64; (size as usize).div_ceil(8)];
        // SAFETY: `buf` holds `size` writable bytes, aligned for IP_ADAPTER_ADDRESSES_LH.
        let rc = unsafe {
            GetAdaptersAddresses(
                u32::from(AF_UNSPEC),
                flags,
                std::ptr::null(),
                buf.as_mut_ptr().cast(),
                &mut size,
            )
        };
        match rc {
            NO_ERROR => return Ok(parse(&buf)),
            ERROR_NO_DATA => return Ok(Vec::new()),
            // The list grew between calls: `size` now says how much it needs.
            ERROR_BUFFER_OVERFLOW => continue,
            other => return Err(win32("GetAdaptersAddresses", other)),
        }
    }
    Err(win32("GetAdaptersAddresses", ERROR_BUFFER_OVERFLOW))
}

fn parse(buf: &[u64]) -> Vec<Adapter> {
    let mut out = Vec::new();
    let mut next = buf.as_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>();
    while !next.is_null() {
        // SAFETY: the list lives inside `buf`, which outlives this loop; each `Next` is null
        // or points to the next entry.
        let a = unsafe { &*next };
        out.push(Adapter {
            // SAFETY: both union variants are plain integers.
            luid: Luid(unsafe { a.Luid.Value }),
            // SAFETY: as above.
            index: unsafe { a.Anonymous1.Anonymous.IfIndex },
            ipv6_index: a.Ipv6IfIndex,
            // SAFETY: FriendlyName is null or a NUL-terminated UTF-16 string in `buf`.
            alias: unsafe { wide(a.FriendlyName) },
            status: OperStatus::from_if_oper_status(a.OperStatus as u32),
            ipv4_metric: a.Ipv4Metric,
            ipv6_metric: a.Ipv6Metric,
        });
        next = a.Next;
    }
    out
}

/// # Safety
/// `p` is null or points to a NUL-terminated UTF-16 string.
unsafe fn wide(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: reads up to and excluding the terminating NUL.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` readable u16 before the NUL.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}
