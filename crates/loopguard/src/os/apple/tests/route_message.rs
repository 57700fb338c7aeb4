//! The Darwin routing-message builder and parser, on byte fixtures built here from the
//! documented layouts (`struct rt_msghdr`, `sockaddr_in`, `sockaddr_in6`, `sockaddr_dl` in
//! Darwin's `<net/route.h>`, `<netinet/in.h>`, `<net/if_dl.h>`). Runs on every OS.

use std::net::{IpAddr, Ipv4Addr};

use crate::os::apple::route_message::{
    self, get_request, parse, LinkAddr, ParseError, RouteAddr, ESRCH, HEADER_LEN, RTA_DST, RTA_IFP,
    RTF_GATEWAY, RTF_HOST, RTF_IFSCOPE, RTF_STATIC, RTF_UP, RTM_GET, RTM_VERSION,
};
use proptest::prelude::*;

use super::darwin::*;

/// `struct rt_msghdr` (92 bytes): msglen u16 @0, version u8 @2, type u8 @3, index u16 @4,
/// (2 bytes padding), flags i32 @8, addrs i32 @12, pid i32 @16, seq i32 @20, errno i32 @24,
/// use i32 @28, inits u32 @32, rt_metrics (14 × u32) @36. Little-endian, as on every Darwin
/// target. `rtm_msglen` is patched by [`finish`].
fn header(index: u16, flags: u32, addrs: u32, pid: i32, seq: i32, errno: i32) -> Vec<u8> {
    let mut h = vec![0u8; 92];
    h[2] = 5;
    h[3] = 4;
    h[4..6].copy_from_slice(&index.to_le_bytes());
    h[8..12].copy_from_slice(&flags.to_le_bytes());
    h[12..16].copy_from_slice(&addrs.to_le_bytes());
    h[16..20].copy_from_slice(&pid.to_le_bytes());
    h[20..24].copy_from_slice(&seq.to_le_bytes());
    h[24..28].copy_from_slice(&errno.to_le_bytes());
    h[36 + 4..36 + 8].copy_from_slice(&1500u32.to_le_bytes()); // rmx_mtu
    h
}

/// The reply to `route get 198.51.100.7` on a host whose default route is
/// `192.0.2.1` on en0: key 0.0.0.0, netmask of length 0, gateway flag set.
fn default_route_reply_v4() -> Vec<u8> {
    let mut m = header(
        4,
        RTF_UP | RTF_GATEWAY | RTF_STATIC | RTF_DONE,
        RTA_DST | RTA_GATEWAY | RTA_NETMASK | RTA_IFP | RTA_IFA,
        4242,
        7,
        0,
    );
    push(&mut m, &sin(Ipv4Addr::UNSPECIFIED));
    push(&mut m, &sin(Ipv4Addr::new(192, 0, 2, 1)));
    push(&mut m, &[]); // netmask of a default route: zero length
    push(&mut m, &sdl(4, "en0", &MAC));
    push(&mut m, &sin(Ipv4Addr::new(192, 0, 2, 10)));
    finish(m)
}

#[test]
fn the_request_has_the_documented_layout() {
    let dst: IpAddr = "198.51.100.7".parse().unwrap();
    let req = get_request(dst, 99, None);
    assert_eq!(req.len(), 92 + 16 + 20);
    assert_eq!(u16::from_le_bytes([req[0], req[1]]) as usize, req.len());
    assert_eq!(req[2], RTM_VERSION);
    assert_eq!(req[3], RTM_GET);
    assert_eq!(u16::from_le_bytes([req[4], req[5]]), 0, "unscoped");
    let flags = u32::from_le_bytes(req[8..12].try_into().unwrap());
    assert_eq!(flags & RTF_IFSCOPE, 0);
    assert_ne!(flags & RTF_UP, 0);
    let addrs = u32::from_le_bytes(req[12..16].try_into().unwrap());
    assert_eq!(addrs, RTA_DST | RTA_IFP);
    assert_eq!(i32::from_le_bytes(req[20..24].try_into().unwrap()), 99);
    assert_eq!(
        &req[HEADER_LEN..HEADER_LEN + 16],
        &sin(Ipv4Addr::new(198, 51, 100, 7))[..]
    );
    assert_eq!(req[HEADER_LEN + 16], 20, "sockaddr_dl length");
    assert_eq!(req[HEADER_LEN + 17], AF_LINK);
    assert!(req[HEADER_LEN + 18..].iter().all(|b| *b == 0));
}

#[test]
fn a_scoped_v6_request_names_the_interface_and_parses_back() {
    let dst: IpAddr = "2001:db8::7".parse().unwrap();
    let req = get_request(dst, -3, Some(9));
    assert_eq!(req.len(), 92 + 28 + 20);
    assert_eq!(u16::from_le_bytes([req[4], req[5]]), 9);
    let flags = u32::from_le_bytes(req[8..12].try_into().unwrap());
    assert_ne!(flags & RTF_IFSCOPE, 0);
    let back = parse(&req).unwrap();
    assert_eq!(back.seq, -3);
    assert_eq!(back.index, 9);
    assert_eq!(back.destination.and_then(|d| d.ip()), Some(dst));
    assert_eq!(
        back.interface,
        Some(RouteAddr::Link(LinkAddr {
            index: 0,
            name: String::new(),
            kind: 0,
            address: vec![],
        }))
    );
}

#[test]
fn a_v4_reply_through_a_gateway_gives_every_field() {
    let reply = parse(&default_route_reply_v4()).unwrap();
    assert_eq!(reply.kind, RTM_GET);
    assert_eq!(reply.index, 4);
    assert_eq!((reply.pid, reply.seq, reply.errno), (4242, 7, 0));
    assert_ne!(reply.flags & RTF_GATEWAY, 0);
    assert_ne!(reply.errno, ESRCH);
    assert_eq!(
        reply.destination,
        Some(RouteAddr::V4(Ipv4Addr::UNSPECIFIED))
    );
    assert_eq!(
        reply.gateway,
        Some(RouteAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
    );
    assert_eq!(reply.netmask, Some(RouteAddr::Empty));
    assert_eq!(reply.prefix_len(), Some(0));
    assert_eq!(reply.interface_name(), Some("en0"));
    let link = reply.interface.as_ref().and_then(|i| i.link()).unwrap();
    assert_eq!((link.index, link.kind), (4, IFT_ETHER));
    assert_eq!(link.address, MAC);
    assert_eq!(
        reply.interface_addr.and_then(|a| a.ip()),
        Some("192.0.2.10".parse().unwrap())
    );
}

#[test]
fn a_shortened_netmask_is_read_in_the_destination_family() {
    // 192.0.2.0/24 on en1, directly connected: the gateway is the interface's link address
    // and the netmask keeps only its first 7 bytes (len, family 0, port, 255.255.255).
    let mut m = header(
        5,
        RTF_UP | RTF_DONE,
        RTA_DST | RTA_GATEWAY | RTA_NETMASK | RTA_IFP | RTA_IFA,
        1,
        2,
        0,
    );
    push(&mut m, &sin(Ipv4Addr::new(192, 0, 2, 0)));
    push(&mut m, &sdl(5, "en1", &[]));
    push(&mut m, &[7, 0, 0, 0, 255, 255, 255]);
    push(&mut m, &sdl(5, "en1", &MAC));
    push(&mut m, &sin(Ipv4Addr::new(192, 0, 2, 10)));
    let reply = parse(&finish(m)).unwrap();
    assert_eq!(reply.flags & RTF_GATEWAY, 0);
    assert_eq!(
        reply.netmask,
        Some(RouteAddr::V4(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(reply.prefix_len(), Some(24));
    assert_eq!(
        reply
            .gateway
            .as_ref()
            .and_then(|g| g.link())
            .map(|l| l.index),
        Some(5)
    );
    assert_eq!(reply.interface_name(), Some("en1"));
}

#[test]
fn a_v6_reply_moves_the_embedded_scope_out_of_the_link_local_gateway() {
    // 2001:db8::/32 via fe80::1%en0 (index 4, embedded by the kernel), source 2001:db8::10.
    let mut m = header(
        4,
        RTF_UP | RTF_GATEWAY | RTF_DONE,
        RTA_DST | RTA_GATEWAY | RTA_NETMASK | RTA_IFP | RTA_IFA,
        1,
        3,
        0,
    );
    push(&mut m, &sin6("2001:db8::".parse().unwrap(), 0));
    push(&mut m, &sin6("fe80::1".parse().unwrap(), 4));
    // Netmask /32: len 12, family 0, then four 0xff bytes at the address offset (8).
    push(&mut m, &[12, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    push(&mut m, &sdl(4, "en0", &MAC));
    push(&mut m, &sin6("2001:db8::10".parse().unwrap(), 0));
    let reply = parse(&finish(m)).unwrap();
    assert_eq!(
        reply.gateway,
        Some(RouteAddr::V6 {
            addr: "fe80::1".parse().unwrap(),
            scope_id: 4
        })
    );
    assert_eq!(reply.prefix_len(), Some(32));
    assert_eq!(reply.interface_name(), Some("en0"));
    assert_eq!(
        reply.interface_addr.and_then(|a| a.ip()),
        Some("2001:db8::10".parse().unwrap())
    );
}

#[test]
fn a_host_route_has_a_full_prefix() {
    let mut m = header(
        12,
        RTF_UP | RTF_HOST | RTF_DONE,
        RTA_DST | RTA_GATEWAY | RTA_IFP,
        1,
        4,
        0,
    );
    push(&mut m, &sin(Ipv4Addr::new(203, 0, 113, 5)));
    push(&mut m, &sdl(12, "utun4", &[]));
    push(&mut m, &sdl(12, "utun4", &[]));
    let reply = parse(&finish(m)).unwrap();
    assert_eq!(reply.prefix_len(), Some(32));
    assert_eq!(reply.netmask, None);
    assert_eq!(reply.interface_name(), Some("utun4"));
}

#[test]
fn an_esrch_reply_means_no_route() {
    // The kernel echoes the request with rtm_errno set when nothing matches.
    let mut req = get_request("2001:db8::99".parse().unwrap(), 11, None);
    req[24..28].copy_from_slice(&ESRCH.to_le_bytes());
    let reply = parse(&req).unwrap();
    assert_eq!(reply.errno, ESRCH);
    assert_eq!(reply.errno, 3);
    assert_eq!(reply.seq, 11);
}

#[test]
fn short_and_inconsistent_input_gives_clear_errors() {
    let good = default_route_reply_v4();
    assert_eq!(parse(&[]), Err(ParseError::TooShort { len: 0 }));
    assert_eq!(parse(&good[..91]), Err(ParseError::TooShort { len: 91 }));

    // Declares more than was received.
    let cut = &good[..good.len() - 8];
    assert_eq!(
        parse(cut),
        Err(ParseError::BadLength {
            declared: good.len(),
            available: good.len() - 8
        })
    );

    // Declares less than the header.
    let mut tiny = good.clone();
    tiny[0..2].copy_from_slice(&10u16.to_le_bytes());
    assert!(matches!(
        parse(&tiny),
        Err(ParseError::BadLength { declared: 10, .. })
    ));

    // A message cut inside its sockaddrs, with a consistent rtm_msglen.
    let truncated = finish(good[..HEADER_LEN + 16 + 8].to_vec());
    let err = parse(&truncated).unwrap_err();
    assert_eq!(
        err,
        ParseError::Truncated {
            slot: "gateway",
            offset: HEADER_LEN + 16
        }
    );
    assert!(err.to_string().contains("gateway"), "{err}");

    let mut version = good.clone();
    version[2] = 4;
    assert_eq!(parse(&version), Err(ParseError::Version { found: 4 }));

    // An interface name longer than its sockaddr.
    let mut m = header(4, RTF_UP, RTA_DST | RTA_IFP, 1, 1, 0);
    push(&mut m, &sin(Ipv4Addr::new(192, 0, 2, 1)));
    let mut bad_dl = sdl(4, "en0", &MAC);
    bad_dl[5] = 40;
    push(&mut m, &bad_dl);
    assert_eq!(
        parse(&finish(m)),
        Err(ParseError::BadLinkAddr { slot: "interface" })
    );
}

#[test]
fn bytes_after_the_declared_length_are_ignored() {
    let mut bytes = default_route_reply_v4();
    let expected = parse(&bytes).unwrap();
    bytes.extend_from_slice(&[0xff; 37]);
    assert_eq!(parse(&bytes), Ok(expected));
}

#[test]
fn every_prefix_of_a_reply_is_an_error_not_a_panic() {
    let good = default_route_reply_v4();
    for n in 0..good.len() {
        assert!(parse(&good[..n]).is_err(), "{n} bytes parsed");
        // Same bytes with a matching rtm_msglen: still an error once a sockaddr is cut.
        if n >= HEADER_LEN {
            let _ = parse(&finish(good[..n].to_vec()));
        }
    }
}

#[test]
fn sockaddr_space_matches_the_fixtures() {
    assert_eq!(route_message::sockaddr_space(0), 4);
    assert_eq!(route_message::sockaddr_space(7), 8);
    assert_eq!(route_message::sockaddr_space(12), 12);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn random_headers_and_sockaddrs_never_panic(
        addrs in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // A valid header announcing random sockaddrs over random bytes.
        let mut m = header(1, RTF_UP, u32::from(addrs), 1, 1, 0);
        m.extend_from_slice(&body);
        if m.len() <= usize::from(u16::MAX) {
            let _ = parse(&finish(m));
        }
    }

    #[test]
    fn corrupting_one_byte_of_a_reply_never_panics(at in 0usize..160, value in any::<u8>()) {
        let mut bytes = default_route_reply_v4();
        let at = at % bytes.len();
        bytes[at] = value;
        let _ = parse(&bytes);
    }
}
