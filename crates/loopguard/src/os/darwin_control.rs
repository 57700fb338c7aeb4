//! The control messages the Darwin (macOS, iOS) send path attaches to a datagram, laid out in
//! plain bytes so the layout and the kernel's rule are tested on every OS.
//!
//! Why our own: quinn-udp encodes an IPv4 source on Apple as `IPPROTO_IP / IP_RECVDSTADDR`,
//! which xnu's `udp_output` never reads on send (bsd/netinet/udp_usrreq.c: `udp_output` calls
//! `udp_check_pktinfo`, which looks only at `IPPROTO_IP / IP_PKTINFO`). The source is then
//! dropped and the kernel's ordinary lookup picks the tunnel. So:
//! - IPv4: `IP_PKTINFO` (26) with `struct in_pktinfo { u_int ipi_ifindex; struct in_addr
//!   ipi_spec_dst; struct in_addr ipi_addr; }` (netinet/in.h): `ipi_ifindex` = the chosen
//!   interface, `ipi_spec_dst` = the source, `ipi_addr` = 0. xnu gives a non-zero
//!   `ipi_ifindex` precedence: the datagram is scoped to that interface (`ipoa_boundif`) and
//!   the source is chosen on it; with index 0, `ipi_spec_dst` is the source.
//! - IPv6: `IPV6_PKTINFO` (46) with `struct in6_pktinfo { struct in6_addr ipi6_addr; u_int
//!   ipi6_ifindex; }` (netinet6/in6.h, RFC 3542).
//! - ECN bits, when set: `IP_TOS` (3) / `IPV6_TCLASS` (36) as an `int`, as quinn-udp sends them.
//!
//! Layout (sys/socket.h): a header `{ socklen_t cmsg_len; int cmsg_level; int cmsg_type; }`
//! (12 bytes), the data at `__DARWIN_ALIGN32(12)` = 12, each message padded to 4 bytes
//! (`__DARWIN_ALIGN32`, also on 64-bit); `cmsg_len` = `CMSG_LEN(data)` = 12 + data, which
//! `udp_check_pktinfo` requires to equal `CMSG_LEN(sizeof(struct in_pktinfo))` exactly.

use std::net::{IpAddr, SocketAddr};

use super::cmsg::{Control, Layout};

/// `IPPROTO_IP`.
pub(crate) const IPPROTO_IP: i32 = 0;
/// `IPPROTO_IPV6`.
pub(crate) const IPPROTO_IPV6: i32 = 41;
/// `IP_TOS`.
pub(crate) const IP_TOS: i32 = 3;
/// `IP_RECVDSTADDR`: what quinn-udp sends on Apple, and what xnu ignores on send.
pub(crate) const IP_RECVDSTADDR: i32 = 7;
/// `IP_PKTINFO` on Darwin (Linux says 8, Windows 19).
pub(crate) const IP_PKTINFO: i32 = 26;
/// `IPV6_TCLASS`.
pub(crate) const IPV6_TCLASS: i32 = 36;
/// `IPV6_PKTINFO` (RFC 3542 numbering, what the SDK uses).
pub(crate) const IPV6_PKTINFO: i32 = 46;

/// Darwin's layout: a 4-byte `cmsg_len`, everything aligned to 4 (`__DARWIN_ALIGN32`).
pub(crate) const LAYOUT: Layout = Layout {
    len_size: 4,
    align: 4,
};
/// `sizeof(struct cmsghdr)`, already a multiple of 4.
pub(crate) const HEADER: usize = LAYOUT.header();
/// `sizeof(struct in_pktinfo)`.
pub(crate) const IN_PKTINFO_LEN: usize = 12;
/// `sizeof(struct in6_pktinfo)`.
pub(crate) const IN6_PKTINFO_LEN: usize = 20;

/// `__DARWIN_ALIGN32`.
#[cfg(test)]
const fn align(n: usize) -> usize {
    LAYOUT.align(n)
}

/// The control messages for one datagram to `destination`: the source and interface as
/// packet info (the interface alone lets the kernel choose the source on it), and the ECN
/// bits when set.
pub(crate) fn for_datagram(
    destination: SocketAddr,
    src: Option<IpAddr>,
    interface: Option<u32>,
    ecn: Option<u8>,
) -> Control {
    let mut control = Control::new(LAYOUT);
    // An IPv4-mapped destination on a dual-stack socket goes through xnu's `udp6_output`
    // into `udp_output`, which reads IPv4-level messages.
    let mapped = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let v4 = match src {
        Some(src) => mapped(src).is_ipv4(),
        None => mapped(destination.ip()).is_ipv4(),
    };
    let index = interface.unwrap_or(0);
    if src.is_some() || index != 0 {
        if v4 {
            let spec_dst = match src.map(mapped) {
                Some(IpAddr::V4(a)) => a.octets(),
                _ => [0; 4],
            };
            let mut data = [0u8; IN_PKTINFO_LEN];
            data[..4].copy_from_slice(&index.to_ne_bytes());
            data[4..8].copy_from_slice(&spec_dst);
            // ipi_addr (bytes 8..12) is only meaningful on receive: zero.
            control.push(IPPROTO_IP, IP_PKTINFO, &data);
        } else {
            let addr = match src {
                Some(IpAddr::V6(a)) => a.octets(),
                _ => [0; 16],
            };
            let mut data = [0u8; IN6_PKTINFO_LEN];
            data[..16].copy_from_slice(&addr);
            data[16..].copy_from_slice(&index.to_ne_bytes());
            control.push(IPPROTO_IPV6, IPV6_PKTINFO, &data);
        }
    }
    if let Some(bits) = ecn {
        let bits = i32::from(bits & 0b11);
        if v4 {
            control.push(IPPROTO_IP, IP_TOS, &bits.to_ne_bytes());
        } else {
            control.push(IPPROTO_IPV6, IPV6_TCLASS, &bits.to_ne_bytes());
        }
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

    /// What xnu's `udp_check_pktinfo` (bsd/netinet/udp_usrreq.c) makes of a control buffer
    /// for an IPv4 send: `(outif, laddr)`. It walks the messages, skips every one that is
    /// not `IPPROTO_IP / IP_PKTINFO`, rejects a PKTINFO whose `cmsg_len` is not exactly
    /// `CMSG_LEN(sizeof(struct in_pktinfo))` (EINVAL), and lets a non-zero `ipi_ifindex`
    /// take precedence over `ipi_spec_dst` (source then `INADDR_ANY`: chosen on that
    /// interface). No PKTINFO: no interface, no source, the ordinary route lookup.
    fn xnu_udp_check_pktinfo(bytes: &[u8]) -> Result<(Option<u32>, Ipv4Addr), &'static str> {
        let mut at = 0;
        while at + HEADER <= bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len < HEADER || at + len > bytes.len() {
                return Err("EINVAL: bad cmsg_len");
            }
            let level = i32::from_ne_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            let ty = i32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            if level == IPPROTO_IP && ty == IP_PKTINFO {
                if len != HEADER + IN_PKTINFO_LEN {
                    return Err("EINVAL: PKTINFO of the wrong size");
                }
                let data = &bytes[at + HEADER..at + len];
                let index = u32::from_ne_bytes(data[..4].try_into().unwrap());
                if index != 0 {
                    return Ok((Some(index), Ipv4Addr::UNSPECIFIED));
                }
                let spec_dst = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
                return Ok((None, spec_dst));
            }
            at += align(len);
        }
        Ok((None, Ipv4Addr::UNSPECIFIED))
    }

    fn dst(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_source_and_interface_go_in_ip_pktinfo_26_byte_for_byte() {
        let c = for_datagram(
            dst("203.0.113.9:443"),
            Some("192.0.2.10".parse().unwrap()),
            Some(7),
            None,
        );
        let mut expected = Vec::new();
        expected.extend_from_slice(&24u32.to_ne_bytes()); // CMSG_LEN(12)
        expected.extend_from_slice(&0i32.to_ne_bytes()); // IPPROTO_IP
        expected.extend_from_slice(&26i32.to_ne_bytes()); // IP_PKTINFO on Darwin
        expected.extend_from_slice(&7u32.to_ne_bytes()); // ipi_ifindex
        expected.extend_from_slice(&[192, 0, 2, 10]); // ipi_spec_dst
        expected.extend_from_slice(&[0, 0, 0, 0]); // ipi_addr
        assert_eq!(c.bytes(), expected.as_slice());
    }

    #[test]
    fn xnu_binds_our_ipv4_datagram_to_the_interface_but_ignores_quinns_recvdstaddr() {
        let ours = for_datagram(
            dst("203.0.113.9:443"),
            Some("192.0.2.10".parse().unwrap()),
            Some(7),
            Some(0b10),
        );
        assert_eq!(
            xnu_udp_check_pktinfo(ours.bytes()),
            Ok((Some(7), Ipv4Addr::UNSPECIFIED))
        );
        // Without an index (an unknown explicit source), the source itself is used.
        let source_only = for_datagram(
            dst("203.0.113.9:443"),
            Some("192.0.2.10".parse().unwrap()),
            None,
            None,
        );
        assert_eq!(
            xnu_udp_check_pktinfo(source_only.bytes()),
            Ok((None, Ipv4Addr::new(192, 0, 2, 10)))
        );
        // quinn-udp's Apple encoding: IP_RECVDSTADDR with the source as an in_addr. xnu skips
        // it, so neither interface nor source reach the packet: the route lookup picks utun.
        let mut quinn = Vec::new();
        quinn.extend_from_slice(&16u32.to_ne_bytes());
        quinn.extend_from_slice(&IPPROTO_IP.to_ne_bytes());
        quinn.extend_from_slice(&IP_RECVDSTADDR.to_ne_bytes());
        quinn.extend_from_slice(&[192, 0, 2, 10]);
        assert_eq!(
            xnu_udp_check_pktinfo(&quinn),
            Ok((None, Ipv4Addr::UNSPECIFIED))
        );
    }

    #[test]
    fn ipv6_pktinfo_46_with_tclass_and_four_byte_alignment() {
        let c = for_datagram(
            dst("[2001:db8::9]:443"),
            Some("2001:db8:1::10".parse().unwrap()),
            Some(12),
            Some(0b01),
        );
        let messages = decode(c.bytes());
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!((messages[0].0, messages[0].1), (IPPROTO_IPV6, IPV6_PKTINFO));
        assert_eq!(messages[0].2.len(), IN6_PKTINFO_LEN);
        assert_eq!(&messages[0].2[..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(
            u32::from_ne_bytes(messages[0].2[16..].try_into().unwrap()),
            12
        );
        assert_eq!(
            messages[1],
            (IPPROTO_IPV6, IPV6_TCLASS, 1i32.to_ne_bytes().to_vec())
        );
        // 12 + 20 = 32 and 12 + 4 = 16: no padding needed, and none added (4-byte rule,
        // not the 8-byte one of Linux or Windows x64).
        assert_eq!(c.bytes().len(), 48);
    }

    #[test]
    fn an_interface_alone_lets_the_kernel_choose_the_source_on_it() {
        let c = for_datagram(dst("[2001:db8::9]:443"), None, Some(4), None);
        let messages = decode(c.bytes());
        assert_eq!(messages.len(), 1);
        assert_eq!(&messages[0].2[..16], &[0u8; 16]);
        assert_eq!(
            u32::from_ne_bytes(messages[0].2[16..].try_into().unwrap()),
            4
        );
        let c = for_datagram(dst("203.0.113.9:443"), None, Some(4), None);
        assert_eq!(
            xnu_udp_check_pktinfo(c.bytes()),
            Ok((Some(4), Ipv4Addr::UNSPECIFIED))
        );
    }

    #[test]
    fn mapped_destinations_take_ipv4_messages_and_nothing_is_sent_without_cause() {
        let c = for_datagram(
            dst("[::ffff:203.0.113.9]:443"),
            Some("::ffff:192.0.2.10".parse().unwrap()),
            Some(3),
            Some(0b10),
        );
        let messages = decode(c.bytes());
        assert_eq!((messages[0].0, messages[0].1), (IPPROTO_IP, IP_PKTINFO));
        assert_eq!(&messages[0].2[4..8], &[192, 0, 2, 10]);
        assert_eq!(
            messages[1],
            (IPPROTO_IP, IP_TOS, 2i32.to_ne_bytes().to_vec())
        );
        assert!(for_datagram(dst("203.0.113.9:443"), None, None, None)
            .bytes()
            .is_empty());
    }
}
