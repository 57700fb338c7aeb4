//! The control messages the Windows send path attaches to a datagram (`WSAMSG.Control`),
//! laid out in plain bytes so the layout and the rules are tested on every OS.
//!
//! Rules:
//! - a pinned source travels as `IP_PKTINFO` / `IPV6_PKTINFO`, with the interface index
//!   when the resolver gave one (quinn-udp always writes index 0 for IPv4, which is why the
//!   Windows send path is ours);
//! - `IP_PKTINFO` is never the only control message where the provider supports ECN (a
//!   buffer holding only it can be stripped before filter drivers see it): `IP_ECN` /
//!   `IPV6_ECN` goes with it, carrying the datagram's ECN bits or 0 (Not-ECT, what an
//!   unmarked datagram carries anyway);
//! - ECN is attached only where the provider supports it (the socket's capability, probed
//!   once, as quinn-udp does with `IP_RECVECN`): a provider without it (Windows before build
//!   20348, Wine) may fail the whole send on an unknown control message, so there PKTINFO
//!   travels alone rather than not at all;
//! - CE is never sent: "Your application isn't allowed to specify the Congestion Encountered
//!   (CE) code point when sending datagrams. The send will return with error WSAEINVAL"
//!   (Win32 docs, "Winsock explicit congestion notification (ECN)"). A CE request is sent as
//!   ECT(0), the ECN-capable mark it implies; a WSAEINVAL there would otherwise read as
//!   "source gone" or "USO refused";
//! - a GSO batch carries `UDP_SEND_MSG_SIZE` (USO).
//!
//! Layout (`WSA_CMSG_*` macros of `ws2def.h`): a header `{ SIZE_T cmsg_len; INT cmsg_level;
//! INT cmsg_type; }`, the data at the next `SIZE_T`-aligned offset, each message padded to
//! that alignment; `cmsg_len` counts header and data, without the padding.

use std::net::{IpAddr, SocketAddr};

use super::cmsg::{Control, Layout};

/// `IPPROTO_IP`.
pub(crate) const IPPROTO_IP: i32 = 0;
/// `IPPROTO_IPV6`.
pub(crate) const IPPROTO_IPV6: i32 = 41;
/// `IPPROTO_UDP`.
pub(crate) const IPPROTO_UDP: i32 = 17;
/// `IP_PKTINFO` (and `IPV6_PKTINFO`, the same number at the IPv6 level).
pub(crate) const PKTINFO: i32 = 19;
/// `IP_ECN` (and `IPV6_ECN`).
pub(crate) const ECN: i32 = 50;
/// `UDP_SEND_MSG_SIZE`.
pub(crate) const UDP_SEND_MSG_SIZE: i32 = 2;

/// The `WSA_CMSG_*` layout: a `SIZE_T` length, everything aligned to `SIZE_T`.
pub(crate) const LAYOUT: Layout = Layout {
    len_size: std::mem::size_of::<usize>(),
    align: std::mem::size_of::<usize>(),
};
#[cfg(test)]
const ALIGN: usize = LAYOUT.align;

/// ECN codepoints as Winsock carries them (an `INT`).
const ECT_0: i32 = 0b10;
const CE: i32 = 0b11;

/// The control messages for one send: `src` (with `interface`) as PKTINFO plus ECN beside
/// it, ECN alone when only ECN bits are set, and the segment size of a GSO batch. ECN
/// messages only when `ecn_supported` (the provider's capability for this family).
pub(crate) fn for_datagram(
    destination: SocketAddr,
    src: Option<IpAddr>,
    interface: Option<u32>,
    ecn: Option<u8>,
    segment_size: Option<usize>,
    ecn_supported: bool,
) -> Control {
    let mut control = Control::new(LAYOUT);
    // The level follows the source when there is one, else the destination (an IPv4-mapped
    // destination on a dual-stack socket takes IPv4-level messages).
    let v4 = match src {
        Some(src) => src.is_ipv4(),
        None => match destination.ip() {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
        },
    };
    let level = if v4 { IPPROTO_IP } else { IPPROTO_IPV6 };
    let index = interface.unwrap_or(0);
    match src {
        Some(IpAddr::V4(a)) => {
            // IN_PKTINFO { IN_ADDR ipi_addr; ULONG ipi_ifindex; }
            let mut data = [0u8; 8];
            data[..4].copy_from_slice(&a.octets());
            data[4..].copy_from_slice(&index.to_ne_bytes());
            control.push(IPPROTO_IP, PKTINFO, &data);
        }
        Some(IpAddr::V6(a)) => {
            // IN6_PKTINFO { IN6_ADDR ipi6_addr; ULONG ipi6_ifindex; }
            let mut data = [0u8; 20];
            data[..16].copy_from_slice(&a.octets());
            data[16..].copy_from_slice(&index.to_ne_bytes());
            control.push(IPPROTO_IPV6, PKTINFO, &data);
        }
        None => {}
    }
    if ecn_supported && (src.is_some() || ecn.is_some()) {
        // An INT (winsock-ecn); never PKTINFO alone; never CE.
        let bits = match i32::from(ecn.unwrap_or(0) & 0b11) {
            CE => ECT_0,
            bits => bits,
        };
        control.push(level, ECN, &bits.to_ne_bytes());
    }
    if let Some(size) = segment_size {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        control.push(IPPROTO_UDP, UDP_SEND_MSG_SIZE, &size.to_ne_bytes());
    }
    control
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Vec<(i32, i32, Vec<u8>)> {
        crate::os::cmsg::decode(LAYOUT, bytes)
    }

    fn dst(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_pktinfo_carries_source_and_index_and_never_travels_alone() {
        let c = for_datagram(
            dst("203.0.113.9:443"),
            Some("192.0.2.10".parse().unwrap()),
            Some(7),
            None,
            None,
            true,
        );
        let messages = decode(c.bytes());
        assert_eq!(messages.len(), 2, "{messages:?}");
        let (level, ty, data) = &messages[0];
        assert_eq!((*level, *ty), (IPPROTO_IP, PKTINFO));
        assert_eq!(&data[..4], &[192, 0, 2, 10]);
        assert_eq!(u32::from_ne_bytes(data[4..8].try_into().unwrap()), 7);
        assert_eq!(messages[1], (IPPROTO_IP, ECN, 0i32.to_ne_bytes().to_vec()));
        if ALIGN == 8 {
            // What the Windows x64 macros give: 16-byte header, 24 + 24 bytes in all.
            assert_eq!(c.bytes().len(), 48);
            assert_eq!(usize::from_ne_bytes(c.bytes()[..8].try_into().unwrap()), 24);
        }
    }

    #[test]
    fn ipv6_pktinfo_with_ecn_bits_and_a_segment_size() {
        let c = for_datagram(
            dst("[2001:db8::9]:443"),
            Some("2001:db8:1::10".parse().unwrap()),
            Some(12),
            Some(0b10),
            Some(1200),
            true,
        );
        let messages = decode(c.bytes());
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!((messages[0].0, messages[0].1), (IPPROTO_IPV6, PKTINFO));
        assert_eq!(messages[0].2.len(), 20);
        assert_eq!(&messages[0].2[..2], &[0x20, 0x01]);
        assert_eq!(
            u32::from_ne_bytes(messages[0].2[16..20].try_into().unwrap()),
            12
        );
        assert_eq!(
            messages[1],
            (IPPROTO_IPV6, ECN, 2i32.to_ne_bytes().to_vec())
        );
        assert_eq!(
            messages[2],
            (
                IPPROTO_UDP,
                UDP_SEND_MSG_SIZE,
                1200u32.to_ne_bytes().to_vec()
            )
        );
    }

    #[test]
    fn no_source_gives_no_pktinfo_and_nothing_at_all_without_ecn() {
        let c = for_datagram(dst("203.0.113.9:443"), None, None, None, None, true);
        assert!(c.bytes().is_empty());
        let c = for_datagram(
            dst("[::ffff:203.0.113.9]:443"),
            None,
            None,
            Some(1),
            None,
            true,
        );
        assert_eq!(
            decode(c.bytes()),
            vec![(IPPROTO_IP, ECN, 1i32.to_ne_bytes().to_vec())]
        );
    }

    #[test]
    fn an_explicit_source_without_index_writes_index_zero() {
        let c = for_datagram(
            dst("203.0.113.9:443"),
            Some("192.0.2.10".parse().unwrap()),
            None,
            None,
            None,
            true,
        );
        let messages = decode(c.bytes());
        assert_eq!(&messages[0].2[4..8], &[0, 0, 0, 0]);
        assert_eq!(messages.len(), 2);
    }

    #[test]
    fn congestion_experienced_is_never_sent_and_ect_bits_pass_unchanged() {
        let ecn_of = |bits: u8| {
            let c = for_datagram(dst("203.0.113.9:443"), None, None, Some(bits), None, true);
            let messages = decode(c.bytes());
            assert_eq!(messages.len(), 1);
            assert_eq!((messages[0].0, messages[0].1), (IPPROTO_IP, ECN));
            i32::from_ne_bytes(messages[0].2[..4].try_into().unwrap())
        };
        // Winsock ECN: CE on send is WSAEINVAL.
        assert_eq!(ecn_of(0b11), 0b10);
        assert_eq!(ecn_of(0b10), 0b10);
        assert_eq!(ecn_of(0b01), 0b01);
        assert_eq!(ecn_of(0b00), 0b00);
    }

    #[test]
    fn without_provider_ecn_support_no_ecn_message_is_attached() {
        let c = for_datagram(
            dst("203.0.113.9:443"),
            Some("192.0.2.10".parse().unwrap()),
            Some(7),
            Some(0b10),
            None,
            false,
        );
        let messages = decode(c.bytes());
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!((messages[0].0, messages[0].1), (IPPROTO_IP, PKTINFO));
        let c = for_datagram(dst("203.0.113.9:443"), None, None, Some(0b10), None, false);
        assert!(c.bytes().is_empty());
    }
}
