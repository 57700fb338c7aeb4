//! Darwin routing-socket notifications to monitor changes, on byte fixtures built here from
//! the documented layouts (`struct rt_msghdr`, `struct ifa_msghdr`, `struct if_msghdr` in
//! Darwin's `<net/route.h>` and `<net/if.h>`, as the libc crate defines them). Runs on every
//! OS.

use std::net::Ipv4Addr;

use crate::change::{Change, ChangeKind};
use crate::os::apple::route_events::{
    parse_change, EventError, LinkStates, IFA_MSGHDR_LEN, IFF_RUNNING, IFF_UP, RTF_LLINFO,
    RTF_WASCLONED, RTM_ADD, RTM_CHANGE, RTM_DELADDR, RTM_DELETE, RTM_IFINFO, RTM_NEWADDR,
};
use crate::os::apple::route_message::{
    ParseError, HEADER_LEN, RTA_DST, RTA_IFP, RTF_GATEWAY, RTF_HOST, RTF_STATIC, RTF_UP, RTM_GET,
};
use proptest::prelude::*;

use super::darwin::*;

const ESRCH: i32 = 3;

/// `struct rt_msghdr` (92 bytes): msglen u16 @0, version @2, type @3, index u16 @4, flags
/// @8, addrs @12, pid @16, seq @20, errno @24, then use, inits and rt_metrics.
fn rt_header(kind: u8, index: u16, flags: u32, addrs: u32, errno: i32) -> Vec<u8> {
    let mut h = vec![0u8; 92];
    h[2] = 5;
    h[3] = kind;
    h[4..6].copy_from_slice(&index.to_le_bytes());
    h[8..12].copy_from_slice(&flags.to_le_bytes());
    h[12..16].copy_from_slice(&addrs.to_le_bytes());
    h[16..20].copy_from_slice(&77i32.to_le_bytes());
    h[24..28].copy_from_slice(&errno.to_le_bytes());
    h
}

/// `struct ifa_msghdr` (20 bytes): msglen @0, version @2, type @3, addrs i32 @4, flags i32
/// @8, index u16 @12, padding, metric i32 @16.
fn ifa_header(kind: u8, index: u16, addrs: u32) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[2] = 5;
    h[3] = kind;
    h[4..8].copy_from_slice(&addrs.to_le_bytes());
    h[8..12].copy_from_slice(&(RTF_UP).to_le_bytes());
    h[12..14].copy_from_slice(&index.to_le_bytes());
    h
}

/// `struct if_msghdr` (112 bytes): msglen @0, version @2, type @3, addrs i32 @4, flags i32
/// @8, index u16 @12, padding, if_data (96 bytes; ifi_type first, mtu at +8).
fn if_msg(index: u16, flags: u32) -> Vec<u8> {
    let mut m = vec![0u8; 112];
    m[2] = 5;
    m[3] = RTM_IFINFO;
    m[8..12].copy_from_slice(&flags.to_le_bytes());
    m[12..14].copy_from_slice(&index.to_le_bytes());
    m[16] = 0x06; // IFT_ETHER
    m[24..28].copy_from_slice(&1500u32.to_le_bytes());
    finish(m)
}

/// `route add default 192.0.2.1` on en0 (index 4), as the kernel broadcasts it.
fn default_route(kind: u8) -> Vec<u8> {
    let mut m = rt_header(
        kind,
        4,
        RTF_UP | RTF_GATEWAY | RTF_STATIC | RTF_DONE,
        RTA_DST | RTA_GATEWAY | RTA_NETMASK | RTA_IFP | RTA_IFA,
        0,
    );
    push(&mut m, &sin(Ipv4Addr::UNSPECIFIED));
    push(&mut m, &sin(Ipv4Addr::new(192, 0, 2, 1)));
    push(&mut m, &[]);
    push(&mut m, &sdl(4, "en0", &MAC));
    push(&mut m, &sin(Ipv4Addr::new(192, 0, 2, 10)));
    finish(m)
}

/// `ifconfig en1 inet 198.51.100.20/24` (or its removal): netmask, interface, address,
/// broadcast. The netmask is shortened, family 0, as the kernel sends it.
fn v4_address(kind: u8) -> Vec<u8> {
    let mut m = ifa_header(kind, 5, RTA_NETMASK | RTA_IFP | RTA_IFA | RTA_BRD);
    push(&mut m, &[7, 0, 0, 0, 255, 255, 255]);
    push(&mut m, &sdl(5, "en1", &MAC));
    push(&mut m, &sin(Ipv4Addr::new(198, 51, 100, 20)));
    push(&mut m, &sin(Ipv4Addr::new(198, 51, 100, 255)));
    finish(m)
}

fn one(bytes: &[u8]) -> Change {
    parse_change(bytes)
        .expect("parses")
        .expect("is a network change")
}

#[test]
fn route_add_delete_and_change_give_kind_interface_and_prefix() {
    for (kind, expected) in [
        (RTM_ADD, ChangeKind::RouteAdded),
        (RTM_DELETE, ChangeKind::RouteRemoved),
        (RTM_CHANGE, ChangeKind::RouteChanged),
    ] {
        let c = one(&default_route(kind));
        assert_eq!(c.kind, expected);
        assert_eq!(c.interface_index, Some(4));
        assert_eq!(c.interface.as_deref(), Some("en0"));
        assert_eq!(c.subject, Some("0.0.0.0/0".parse().unwrap()));
        assert_eq!(c.count, 1);
    }
}

#[test]
fn a_v6_network_route_without_interface_name_gets_its_prefix_truncated() {
    // 2001:db8:5::/48 via fe80::1%en0, no RTA_IFP: index from the header, no name.
    let mut m = rt_header(
        RTM_ADD,
        4,
        RTF_UP | RTF_GATEWAY,
        RTA_DST | RTA_GATEWAY | RTA_NETMASK,
        0,
    );
    push(&mut m, &sin6("2001:db8:5::".parse().unwrap(), 0));
    push(&mut m, &sin6("fe80::1".parse().unwrap(), 4));
    push(
        &mut m,
        &[14, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    );
    let c = one(&finish(m));
    assert_eq!(c.kind, ChangeKind::RouteAdded);
    assert_eq!((c.interface_index, c.interface), (Some(4), None));
    assert_eq!(c.subject, Some("2001:db8:5::/48".parse().unwrap()));
}

#[test]
fn a_host_route_with_index_only_in_its_link_address() {
    let mut m = rt_header(RTM_DELETE, 0, RTF_UP | RTF_HOST, RTA_DST | RTA_IFP, 0);
    push(&mut m, &sin(Ipv4Addr::new(203, 0, 113, 5)));
    push(&mut m, &sdl(12, "utun4", &MAC));
    let c = one(&finish(m));
    assert_eq!(c.kind, ChangeKind::RouteRemoved);
    assert_eq!(c.interface_index, Some(12));
    assert_eq!(c.interface.as_deref(), Some("utun4"));
    assert_eq!(c.subject, Some("203.0.113.5/32".parse().unwrap()));
}

#[test]
fn neighbour_entries_clones_failed_requests_and_other_types_are_not_changes() {
    // An ARP entry appearing.
    let mut arp = rt_header(RTM_ADD, 4, RTF_UP | RTF_HOST | RTF_LLINFO, RTA_DST, 0);
    push(&mut arp, &sin(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(parse_change(&finish(arp)), Ok(None));
    // A cloned host route expiring.
    let mut clone = rt_header(RTM_DELETE, 4, RTF_UP | RTF_HOST | RTF_WASCLONED, RTA_DST, 0);
    push(&mut clone, &sin(Ipv4Addr::new(198, 51, 100, 7)));
    assert_eq!(parse_change(&finish(clone)), Ok(None));
    // Another process's failed `route delete`, echoed with rtm_errno set.
    let mut failed = default_route(RTM_DELETE);
    failed[24..28].copy_from_slice(&ESRCH.to_le_bytes());
    assert_eq!(parse_change(&failed), Ok(None));
    // A route lookup's reply seen by every routing socket.
    assert_eq!(parse_change(&default_route(RTM_GET)), Ok(None));
    // RTM_NEWMADDR (0xf): a multicast membership.
    let mut maddr = ifa_header(0xf, 4, 0);
    maddr[3] = 0xf;
    assert_eq!(parse_change(&finish(maddr)), Ok(None));
}

#[test]
fn address_added_and_removed_carry_the_address_and_its_prefix() {
    for (kind, expected) in [
        (RTM_NEWADDR, ChangeKind::AddressAdded),
        (RTM_DELADDR, ChangeKind::AddressRemoved),
    ] {
        let c = one(&v4_address(kind));
        assert_eq!(c.kind, expected);
        assert_eq!(c.interface_index, Some(5));
        assert_eq!(c.interface.as_deref(), Some("en1"));
        // The address itself, not the network: as the Linux backend reports it.
        assert_eq!(c.subject, Some("198.51.100.20/24".parse().unwrap()));
    }
}

#[test]
fn a_v6_link_local_address_without_netmask_is_a_full_length_prefix() {
    let mut m = ifa_header(RTM_NEWADDR, 7, RTA_IFA);
    push(&mut m, &sin6("fe80::aa".parse().unwrap(), 7));
    let c = one(&finish(m));
    assert_eq!(c.kind, ChangeKind::AddressAdded);
    assert_eq!((c.interface_index, c.interface), (Some(7), None));
    assert_eq!(c.subject, Some("fe80::aa/128".parse().unwrap()));
}

#[test]
fn ifinfo_reports_up_only_when_up_and_running() {
    let c = one(&if_msg(6, IFF_UP | IFF_RUNNING | 0x8000));
    assert_eq!(c.kind, ChangeKind::LinkUp);
    assert_eq!((c.interface_index, c.interface), (Some(6), None));
    assert_eq!(one(&if_msg(6, IFF_UP)).kind, ChangeKind::LinkDown);
    assert_eq!(one(&if_msg(6, 0)).kind, ChangeKind::LinkDown);
    assert_eq!(if_msg(6, 0).len(), IF_MSGHDR_LEN);
}

#[test]
fn link_states_drop_repeated_states_per_interface() {
    let mut links = LinkStates::default();
    let up = |i| Change::new(ChangeKind::LinkUp).with_interface(i, None);
    let down = |i| Change::new(ChangeKind::LinkDown).with_interface(i, None);
    assert_eq!(links.admit(up(6)), Some(up(6)));
    assert_eq!(
        links.admit(up(6)),
        None,
        "a flag change that left the link up"
    );
    assert_eq!(links.admit(up(7)), Some(up(7)), "another interface");
    assert_eq!(links.admit(down(6)), Some(down(6)));
    assert_eq!(links.admit(down(6)), None);
    assert_eq!(links.admit(up(6)), Some(up(6)));
    let route = Change::new(ChangeKind::RouteAdded).with_interface(6, None);
    assert_eq!(links.admit(route.clone()), Some(route.clone()));
    assert_eq!(
        links.admit(route.clone()),
        Some(route),
        "only link states are deduplicated"
    );
}

#[test]
fn truncated_and_inconsistent_input_gives_errors() {
    assert_eq!(parse_change(&[]), Err(EventError::TooShort { len: 0 }));
    assert_eq!(
        parse_change(&[4, 0, 5]),
        Err(EventError::TooShort { len: 3 })
    );

    let route = default_route(RTM_ADD);
    assert_eq!(
        parse_change(&route[..route.len() - 4]),
        Err(EventError::BadLength {
            declared: route.len(),
            available: route.len() - 4
        })
    );
    let mut version = route.clone();
    version[2] = 4;
    assert_eq!(
        parse_change(&version),
        Err(EventError::Version { found: 4 })
    );

    // A route message whose msglen covers only part of its header.
    let short_route = finish(route[..40].to_vec());
    assert_eq!(
        parse_change(&short_route),
        Err(EventError::Route(ParseError::TooShort { len: 40 }))
    );
    // A route message cut inside its sockaddrs.
    let cut = finish(route[..HEADER_LEN + 16 + 8].to_vec());
    assert!(matches!(
        parse_change(&cut),
        Err(EventError::Route(ParseError::Truncated {
            slot: "gateway",
            ..
        }))
    ));

    // Address and interface messages shorter than their headers.
    let addr = v4_address(RTM_NEWADDR);
    assert_eq!(
        parse_change(&finish(addr[..12].to_vec())),
        Err(EventError::ShortHeader {
            kind: RTM_NEWADDR,
            len: 12,
            header: IFA_MSGHDR_LEN
        })
    );
    let info = if_msg(3, IFF_UP);
    assert!(matches!(
        parse_change(&finish(info[..15].to_vec())),
        Err(EventError::ShortHeader {
            kind: RTM_IFINFO,
            len: 15,
            ..
        })
    ));
    // An address message cut inside its sockaddrs.
    let err = parse_change(&finish(addr[..IFA_MSGHDR_LEN + 8 + 10].to_vec())).unwrap_err();
    assert!(err.to_string().contains("interface"), "{err}");
}

#[test]
fn every_prefix_of_each_fixture_is_an_error_or_a_change_never_a_panic() {
    for good in [
        default_route(RTM_ADD),
        v4_address(RTM_NEWADDR),
        if_msg(2, IFF_UP),
    ] {
        for n in 0..good.len() {
            assert!(parse_change(&good[..n]).is_err(), "{n} bytes parsed");
            let _ = parse_change(&finish_if_long(&good[..n]));
        }
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0xff; 13]);
        assert_eq!(parse_change(&trailing), parse_change(&good));
    }
}

fn finish_if_long(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() >= 2 {
        finish(bytes.to_vec())
    } else {
        bytes.to_vec()
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_change(&bytes);
    }

    #[test]
    fn random_sockaddrs_after_each_header_never_panic(
        kind in prop::sample::select(vec![RTM_ADD, RTM_DELETE, RTM_CHANGE, RTM_NEWADDR, RTM_DELADDR, RTM_IFINFO]),
        addrs in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut m = match kind {
            RTM_NEWADDR | RTM_DELADDR => ifa_header(kind, 3, u32::from(addrs)),
            RTM_IFINFO => if_msg(3, u32::from(addrs)),
            _ => rt_header(kind, 3, RTF_UP, u32::from(addrs), 0),
        };
        m.extend_from_slice(&body);
        let _ = parse_change(&finish(m));
    }

    #[test]
    fn corrupting_one_byte_of_a_fixture_never_panics(
        which in 0usize..3,
        at in 0usize..200,
        value in any::<u8>(),
    ) {
        let mut bytes = vec![default_route(RTM_CHANGE), v4_address(RTM_DELADDR), if_msg(9, IFF_UP)]
            .swap_remove(which);
        let at = at % bytes.len();
        bytes[at] = value;
        let _ = parse_change(&bytes);
    }
}

#[test]
fn a_read_error_resyncs_instead_of_ending_the_monitor() {
    use crate::os::apple::route_events::{
        on_read_error, ReadErrorAction, MAX_CONSECUTIVE_READ_ERRORS,
    };
    use std::io::{Error, ErrorKind};
    // ENOBUFS (55 on Darwin): the receive buffer overflowed and messages were lost.
    let overflow = Error::from_raw_os_error(55);
    assert_eq!(on_read_error(&overflow, 1), ReadErrorAction::Resync);
    assert_eq!(
        on_read_error(&Error::from(ErrorKind::Interrupted), 1),
        ReadErrorAction::Retry
    );
    assert_eq!(
        on_read_error(&Error::from(ErrorKind::WouldBlock), 40),
        ReadErrorAction::Retry
    );
    assert_eq!(
        on_read_error(&overflow, MAX_CONSECUTIVE_READ_ERRORS),
        ReadErrorAction::GiveUp
    );
}
