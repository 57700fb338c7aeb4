//! The control messages the Linux send path attaches to a datagram when the strategy names
//! the interface, laid out in plain bytes so the layout and the kernel's rules are tested on
//! every OS.
//!
//! Why our own: quinn-udp writes `IP_PKTINFO` with `ipi_ifindex = 0` (source only), and the
//! interface is what keeps a pinned datagram out of the tunnel when no mark and no policy
//! rule do. So, as the kernel reads them:
//! - IPv4, and an IPv4-mapped destination on an `AF_INET6` socket: `SOL_IP / IP_PKTINFO` (8)
//!   with `struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr
//!   ipi_addr; }`. net/ipv4/ip_sockglue.c `ip_cmsg_send` requires `cmsg_len ==
//!   CMSG_LEN(sizeof(struct in_pktinfo))`, takes a non-zero `ipi_ifindex` as the output
//!   interface and `ipi_spec_dst` as the source. A mapped destination reaches it through
//!   net/ipv6/udp.c `udpv6_sendmsg` → net/ipv4/udp.c `udp_sendmsg`, which passes
//!   `allow_ipv6`: SOL_IP messages count there, and an `IPV6_PKTINFO` too, but only with a
//!   v4-mapped address (else `EINVAL`); we send the SOL_IP one, with the source unmapped.
//! - With a non-zero index the IPv4 FIB lookup skips next hops on other devices
//!   (net/ipv4/fib_trie.c `fib_lookup_good_nhc`: `flowi4_oif` must equal the next hop's
//!   device), so the tunnel's `0.0.0.0/1` no longer matches and the lookup backtracks to
//!   the uplink's shorter route.
//! - IPv6: `SOL_IPV6 / IPV6_PKTINFO` (50) with `struct in6_pktinfo { struct in6_addr
//!   ipi6_addr; int ipi6_ifindex; }` (net/ipv6/datagram.c `ip6_datagram_send_ctl`, which
//!   sets `flowi6_oif` from a non-zero index and checks the address is local).
//! - A GSO batch: `SOL_UDP / UDP_SEGMENT` (103) with the segment size as a `__u16`
//!   (net/ipv4/udp.c `udp_cmsg_send` requires `cmsg_len == CMSG_LEN(sizeof(__u16))`; it is
//!   read for both families).
//! - ECN bits, when set: `IP_TOS` (1) / `IPV6_TCLASS` (67) as an `int`, as quinn-udp sends
//!   them (`ip_cmsg_send` also takes one byte for `IP_TOS`; `ip6_datagram_send_ctl` only an
//!   `int` for `IPV6_TCLASS`).
//!
//! Layout (include/linux/socket.h): a header `{ size_t cmsg_len; int cmsg_level; int
//! cmsg_type; }`, 16 bytes on 64-bit; data and messages aligned to `sizeof(long)`.

use std::net::{IpAddr, SocketAddr};

use super::cmsg::{Control, Layout};

/// `SOL_IP` (= `IPPROTO_IP`).
pub(crate) const SOL_IP: i32 = 0;
/// `SOL_IPV6` (= `IPPROTO_IPV6`).
pub(crate) const SOL_IPV6: i32 = 41;
/// `SOL_UDP` (= `IPPROTO_UDP`).
pub(crate) const SOL_UDP: i32 = 17;
/// `IP_TOS`.
pub(crate) const IP_TOS: i32 = 1;
/// `IP_PKTINFO` on Linux (Darwin says 26, Windows 19).
pub(crate) const IP_PKTINFO: i32 = 8;
/// `IPV6_PKTINFO` (RFC 3542 numbering on Linux).
pub(crate) const IPV6_PKTINFO: i32 = 50;
/// `IPV6_TCLASS`.
pub(crate) const IPV6_TCLASS: i32 = 67;
/// `UDP_SEGMENT` (GSO).
pub(crate) const UDP_SEGMENT: i32 = 103;

/// Linux's layout: a `size_t` length, everything aligned to `sizeof(long)` (= `size_t` on
/// every Linux ABI Rust supports).
pub(crate) const LAYOUT: Layout = Layout {
    len_size: std::mem::size_of::<usize>(),
    align: std::mem::size_of::<usize>(),
};
/// `sizeof(struct in_pktinfo)`.
pub(crate) const IN_PKTINFO_LEN: usize = 12;
/// `sizeof(struct in6_pktinfo)`.
pub(crate) const IN6_PKTINFO_LEN: usize = 20;

/// The control messages for one send to `destination`: `src` and `interface` as packet info
/// (the interface alone lets the kernel choose the source on it), the ECN bits when set, and
/// the segment size of a GSO batch.
pub(crate) fn for_datagram(
    destination: SocketAddr,
    src: Option<IpAddr>,
    interface: Option<u32>,
    ecn: Option<u8>,
    segment_size: Option<usize>,
) -> Control {
    let mut control = Control::new(LAYOUT);
    let unmapped = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    // The level follows the source when there is one, else the destination: a mapped
    // destination is sent by `udp_sendmsg`, which reads SOL_IP messages.
    let v4 = unmapped(src.unwrap_or(destination.ip())).is_ipv4();
    let index = interface.unwrap_or(0);
    if src.is_some() || index != 0 {
        if v4 {
            let spec_dst = match src.map(unmapped) {
                Some(IpAddr::V4(a)) => a.octets(),
                _ => [0; 4],
            };
            let mut data = [0u8; IN_PKTINFO_LEN];
            data[..4].copy_from_slice(&(index as i32).to_ne_bytes());
            data[4..8].copy_from_slice(&spec_dst);
            // ipi_addr (bytes 8..12) is ignored on send: zero.
            control.push(SOL_IP, IP_PKTINFO, &data);
        } else {
            let addr = match src {
                Some(IpAddr::V6(a)) => a.octets(),
                _ => [0; 16],
            };
            let mut data = [0u8; IN6_PKTINFO_LEN];
            data[..16].copy_from_slice(&addr);
            data[16..].copy_from_slice(&(index as i32).to_ne_bytes());
            control.push(SOL_IPV6, IPV6_PKTINFO, &data);
        }
    }
    if let Some(bits) = ecn {
        let bits = i32::from(bits & 0b11);
        if v4 {
            control.push(SOL_IP, IP_TOS, &bits.to_ne_bytes());
        } else {
            control.push(SOL_IPV6, IPV6_TCLASS, &bits.to_ne_bytes());
        }
    }
    if let Some(size) = segment_size {
        // The batcher keeps segments under 64 KiB; saturate rather than wrap otherwise.
        let size = u16::try_from(size).unwrap_or(u16::MAX);
        control.push(SOL_UDP, UDP_SEGMENT, &size.to_ne_bytes());
    }
    control
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn decode(bytes: &[u8]) -> Vec<(i32, i32, Vec<u8>)> {
        crate::os::cmsg::decode(LAYOUT, bytes)
    }

    fn dst(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// What an IPv4 `udp_sendmsg` makes of a control buffer: `(oif, source, gso_size, tos)`,
    /// following net/ipv4/udp.c `udp_cmsg_send` (SOL_UDP, `UDP_SEGMENT` of exactly
    /// `CMSG_LEN(2)`) and net/ipv4/ip_sockglue.c `ip_cmsg_send` (SOL_IP, `IP_PKTINFO` of
    /// exactly `CMSG_LEN(12)`, a zero index leaving the interface open; `IP_TOS` an `int`
    /// or a byte; on an `AF_INET6` socket also `IPV6_PKTINFO`, whose address must be
    /// v4-mapped). Other levels are skipped.
    #[allow(clippy::type_complexity)]
    fn linux_udp_sendmsg_v4(
        bytes: &[u8],
        inet6_socket: bool,
    ) -> Result<(Option<u32>, Ipv4Addr, Option<u16>, Option<u8>), &'static str> {
        let (mut oif, mut addr, mut gso, mut tos) = (None, Ipv4Addr::UNSPECIFIED, None, None);
        let mut at = 0;
        while at < bytes.len() {
            let len = usize::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
            if len < LAYOUT.header() || at + len > bytes.len() {
                return Err("EINVAL: bad cmsg_len");
            }
            let level = i32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            let ty = i32::from_ne_bytes(bytes[at + 12..at + 16].try_into().unwrap());
            let data = &bytes[at + LAYOUT.data_offset()..at + len];
            match (level, ty) {
                (SOL_UDP, UDP_SEGMENT) => {
                    if len != LAYOUT.len(2) {
                        return Err("EINVAL: UDP_SEGMENT of the wrong size");
                    }
                    gso = Some(u16::from_ne_bytes(data.try_into().unwrap()));
                }
                (SOL_IPV6, IPV6_PKTINFO) if inet6_socket => {
                    if len < LAYOUT.len(IN6_PKTINFO_LEN) {
                        return Err("EINVAL: IPV6_PKTINFO too short");
                    }
                    let a = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&data[..16]).unwrap());
                    let Some(v4) = a.to_ipv4_mapped() else {
                        return Err("EINVAL: IPV6_PKTINFO not v4-mapped");
                    };
                    let index = i32::from_ne_bytes(data[16..20].try_into().unwrap());
                    if index != 0 {
                        oif = Some(index as u32);
                    }
                    addr = v4;
                }
                (SOL_IP, IP_PKTINFO) => {
                    if len != LAYOUT.len(IN_PKTINFO_LEN) {
                        return Err("EINVAL: IP_PKTINFO of the wrong size");
                    }
                    let index = i32::from_ne_bytes(data[..4].try_into().unwrap());
                    if index != 0 {
                        oif = Some(index as u32);
                    }
                    addr = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
                }
                (SOL_IP, IP_TOS) => {
                    let value = match data.len() {
                        4 => i32::from_ne_bytes(data.try_into().unwrap()),
                        1 => i32::from(data[0]),
                        _ => return Err("EINVAL: IP_TOS of the wrong size"),
                    };
                    tos = Some(u8::try_from(value).map_err(|_| "EINVAL: IP_TOS out of range")?);
                }
                _ => {}
            }
            at += LAYOUT.align(len);
        }
        Ok((oif, addr, gso, tos))
    }

    #[test]
    fn ipv4_pktinfo_8_carries_index_and_source_byte_for_byte() {
        let c = for_datagram(
            dst("203.0.113.9:443"),
            Some("192.0.2.10".parse().unwrap()),
            Some(7),
            None,
            None,
        );
        if LAYOUT.len_size != 8 {
            return; // The bytes below are the 64-bit ABI's.
        }
        let mut expected = Vec::new();
        expected.extend_from_slice(&28u64.to_ne_bytes()); // CMSG_LEN(12) = 16 + 12
        expected.extend_from_slice(&0i32.to_ne_bytes()); // SOL_IP
        expected.extend_from_slice(&8i32.to_ne_bytes()); // IP_PKTINFO on Linux
        expected.extend_from_slice(&7i32.to_ne_bytes()); // ipi_ifindex
        expected.extend_from_slice(&[192, 0, 2, 10]); // ipi_spec_dst
        expected.extend_from_slice(&[0, 0, 0, 0]); // ipi_addr
        expected.extend_from_slice(&[0, 0, 0, 0]); // padding to 8: CMSG_SPACE(12) = 32
        assert_eq!(c.bytes(), expected.as_slice());
    }

    #[test]
    fn a_gso_batch_with_ecn_is_pktinfo_tos_and_a_u16_segment_size() {
        let c = for_datagram(
            dst("203.0.113.9:443"),
            Some("192.0.2.10".parse().unwrap()),
            Some(3),
            Some(0b10),
            Some(1200),
        );
        assert_eq!(
            decode(c.bytes()),
            vec![
                (
                    SOL_IP,
                    IP_PKTINFO,
                    [&3i32.to_ne_bytes()[..], &[192, 0, 2, 10, 0, 0, 0, 0]].concat()
                ),
                (SOL_IP, IP_TOS, 2i32.to_ne_bytes().to_vec()),
                (SOL_UDP, UDP_SEGMENT, 1200u16.to_ne_bytes().to_vec()),
            ]
        );
        if LAYOUT.len_size == 8 {
            // 32 (PKTINFO) + 24 (TOS: 16 + 4, padded) + 24 (UDP_SEGMENT: 16 + 2, padded).
            assert_eq!(c.bytes().len(), 80);
            assert_eq!(
                linux_udp_sendmsg_v4(c.bytes(), false),
                Ok((Some(3), Ipv4Addr::new(192, 0, 2, 10), Some(1200), Some(2)))
            );
        }
    }

    #[test]
    fn ipv6_pktinfo_50_and_tclass_67() {
        let c = for_datagram(
            dst("[2001:db8::9]:443"),
            Some("2001:db8:1::10".parse().unwrap()),
            Some(12),
            Some(0b01),
            None,
        );
        let messages = decode(c.bytes());
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!((messages[0].0, messages[0].1), (SOL_IPV6, IPV6_PKTINFO));
        assert_eq!(messages[0].2.len(), IN6_PKTINFO_LEN);
        assert_eq!(&messages[0].2[..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(
            i32::from_ne_bytes(messages[0].2[16..].try_into().unwrap()),
            12
        );
        assert_eq!(
            messages[1],
            (SOL_IPV6, IPV6_TCLASS, 1i32.to_ne_bytes().to_vec())
        );
        if LAYOUT.len_size == 8 {
            // CMSG_SPACE(20) = 16 + 24 and CMSG_SPACE(4) = 24.
            assert_eq!(c.bytes().len(), 64);
        }
    }

    #[test]
    fn a_mapped_destination_takes_sol_ip_messages_that_udp_sendmsg_accepts() {
        let c = for_datagram(
            dst("[::ffff:203.0.113.9]:443"),
            Some("::ffff:192.0.2.10".parse().unwrap()),
            Some(4),
            Some(0b10),
            Some(500),
        );
        let messages = decode(c.bytes());
        assert_eq!((messages[0].0, messages[0].1), (SOL_IP, IP_PKTINFO));
        assert_eq!(&messages[0].2[4..8], &[192, 0, 2, 10]);
        if LAYOUT.len_size == 8 {
            assert_eq!(
                linux_udp_sendmsg_v4(c.bytes(), true),
                Ok((Some(4), Ipv4Addr::new(192, 0, 2, 10), Some(500), Some(2)))
            );
            // The IPv6 form `udp_sendmsg` would also take must carry a mapped address.
            let mut native = Control::new(LAYOUT);
            let mut data = [0u8; IN6_PKTINFO_LEN];
            data[..16].copy_from_slice(
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            native.push(SOL_IPV6, IPV6_PKTINFO, &data);
            assert_eq!(
                linux_udp_sendmsg_v4(native.bytes(), true),
                Err("EINVAL: IPV6_PKTINFO not v4-mapped")
            );
        }
    }

    #[test]
    fn an_interface_alone_leaves_the_source_to_the_kernel_and_nothing_goes_without_cause() {
        let c = for_datagram(dst("203.0.113.9:443"), None, Some(5), None, None);
        if LAYOUT.len_size == 8 {
            assert_eq!(
                linux_udp_sendmsg_v4(c.bytes(), false),
                Ok((Some(5), Ipv4Addr::UNSPECIFIED, None, None))
            );
        }
        let c = for_datagram(dst("[2001:db8::9]:443"), None, Some(5), None, None);
        let messages = decode(c.bytes());
        assert_eq!(&messages[0].2[..16], &[0u8; 16]);
        assert!(for_datagram(dst("203.0.113.9:443"), None, None, None, None)
            .bytes()
            .is_empty());
    }
}
