//! Darwin routing-socket byte fixtures built from the documented structure layouts, shared by
//! the routing-message and routing-event tests.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

/// `RTA_*` bits of `rtm_addrs` the crate only reads by position (`<net/route.h>`).
pub const RTA_GATEWAY: u32 = 0x2;
pub const RTA_NETMASK: u32 = 0x4;
pub const RTA_IFA: u32 = 0x20;
pub const RTA_BRD: u32 = 0x80;
/// `RTF_DONE`: the kernel completed the request.
pub const RTF_DONE: u32 = 0x40;
/// Size of `struct if_msghdr` (16 bytes of fields, then a 96-byte `if_data`).
pub const IF_MSGHDR_LEN: usize = 112;

pub const AF_INET: u8 = 2;
pub const AF_LINK: u8 = 18;
pub const AF_INET6: u8 = 30;
pub const IFT_ETHER: u8 = 0x06;
/// The link-layer address the fixtures give interfaces.
pub const MAC: [u8; 6] = [0x02, 0, 0x5e, 0x10, 0, 1];

/// Appends a sockaddr and its padding to a multiple of 4 bytes (Darwin's ROUNDUP32; an empty
/// sockaddr takes 4).
pub fn push(msg: &mut Vec<u8>, sa: &[u8]) {
    msg.extend_from_slice(sa);
    let space = if sa.is_empty() {
        4
    } else {
        sa.len().div_ceil(4) * 4
    };
    msg.resize(msg.len() + space - sa.len(), 0);
}

pub fn finish(mut msg: Vec<u8>) -> Vec<u8> {
    let len = msg.len() as u16;
    msg[0..2].copy_from_slice(&len.to_le_bytes());
    msg
}

/// `sockaddr_in` (16 bytes): len @0, family @1, port @2, address @4, zero @8.
pub fn sin(addr: Ipv4Addr) -> Vec<u8> {
    let mut sa = vec![0u8; 16];
    sa[0] = 16;
    sa[1] = AF_INET;
    sa[4..8].copy_from_slice(&addr.octets());
    sa
}

/// `sockaddr_in6` (28 bytes): len @0, family @1, port @2, flowinfo @4, address @8, scope id
/// @24. Link-local addresses carry their scope in bytes 2..4 of the address, as the kernel
/// stores them (`embedded_scope`).
pub fn sin6(addr: Ipv6Addr, embedded_scope: u16) -> Vec<u8> {
    let mut sa = vec![0u8; 28];
    sa[0] = 28;
    sa[1] = AF_INET6;
    let mut octets = addr.octets();
    if embedded_scope != 0 {
        octets[2..4].copy_from_slice(&embedded_scope.to_be_bytes());
    }
    sa[8..24].copy_from_slice(&octets);
    sa
}

/// `sockaddr_dl` (20 bytes or more): len @0, family @1, index u16 @2, type @4, nlen @5,
/// alen @6, slen @7, then name and link address from @8.
pub fn sdl(index: u16, name: &str, lladdr: &[u8]) -> Vec<u8> {
    let mut sa = vec![0u8; 8];
    sa[1] = AF_LINK;
    sa[2..4].copy_from_slice(&index.to_le_bytes());
    sa[4] = IFT_ETHER;
    sa[5] = name.len() as u8;
    sa[6] = lladdr.len() as u8;
    sa.extend_from_slice(name.as_bytes());
    sa.extend_from_slice(lladdr);
    sa.resize(sa.len().max(20), 0);
    sa[0] = sa.len() as u8;
    sa
}
