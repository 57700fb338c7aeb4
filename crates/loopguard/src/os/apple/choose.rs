//! The two decisions of the Apple route lookup that need no system call: which address of
//! the chosen interface is the source, and which interface's scoped route wins.

use std::net::IpAddr;

/// Whether `candidate` can be the source of packets to `destination`: same family, a real
/// unicast address, and link-local only for a link-local destination (a link-local source
/// towards the Internet is dropped by the first router).
pub(crate) fn usable_source(destination: IpAddr, candidate: IpAddr) -> bool {
    match (destination, candidate) {
        (IpAddr::V4(d), IpAddr::V4(c)) => {
            !c.is_unspecified()
                && !c.is_loopback()
                && !c.is_multicast()
                && (!c.is_link_local() || d.is_link_local())
        }
        (IpAddr::V6(d), IpAddr::V6(c)) => {
            !c.is_unspecified()
                && !c.is_loopback()
                && !c.is_multicast()
                && (!c.is_unicast_link_local() || d.is_unicast_link_local())
        }
        _ => false,
    }
}

/// The source for `destination` on the chosen interface: the route's own interface address
/// when usable (the kernel's choice), else the interface's first usable address. An IPv6
/// route through a link-local gateway often names a link-local address, hence the fallback.
pub(crate) fn pick_source(
    destination: IpAddr,
    route_addr: Option<IpAddr>,
    interface_addrs: &[IpAddr],
) -> Option<IpAddr> {
    route_addr
        .into_iter()
        .chain(interface_addrs.iter().copied())
        .find(|c| usable_source(destination, *c))
}

/// Among the interfaces whose scoped route reaches the destination, given as
/// `(interface index, prefix length)`, the one with the longest prefix; ties go
/// to the first listed, so the choice is stable from one lookup to the next.
pub(crate) fn best_scoped(routes: impl IntoIterator<Item = (u32, u8)>) -> Option<u32> {
    let mut best: Option<(u32, u8)> = None;
    for (index, prefix) in routes {
        if best.is_none_or(|(_, p)| prefix > p) {
            best = Some((index, prefix));
        }
    }
    best.map(|(index, _)| index)
}

/// `IN6_IFF_*` address flags (xnu bsd/netinet6/in6_var.h), as `SIOCGIFAFLAG_IN6` reports
/// them for one address.
pub(crate) mod in6_flags {
    /// Duplicate address detection has not finished: the kernel will not send from it.
    pub(crate) const TENTATIVE: u32 = 0x0002;
    /// Duplicate address detection failed.
    pub(crate) const DUPLICATED: u32 = 0x0004;
    /// The prefix is no longer advertised on this link.
    pub(crate) const DETACHED: u32 = 0x0008;
    /// The preferred lifetime ran out: not for new flows (RFC 4862).
    pub(crate) const DEPRECATED: u32 = 0x0010;
    /// A temporary (privacy) address, which rotates (RFC 8981).
    pub(crate) const TEMPORARY: u32 = 0x0080;
}

/// The IPv6 addresses of one interface in the order to try them as a source, from
/// `(address, IN6_IFF_* flags)`: tentative, duplicated, detached and deprecated ones dropped
/// (xnu's own source selection, bsd/netinet6/in6_src.c `in6_selectsrc`, skips them too),
/// stable ones before temporary ones (a temporary address can rotate away
/// mid-flow). IPv4 addresses pass through unchanged, in place.
pub(crate) fn order_sources(addrs: impl IntoIterator<Item = (IpAddr, u32)>) -> Vec<IpAddr> {
    use in6_flags::*;
    let unusable = TENTATIVE | DUPLICATED | DETACHED | DEPRECATED;
    let mut kept: Vec<(IpAddr, bool)> = addrs
        .into_iter()
        .filter(|(a, flags)| a.is_ipv4() || flags & unusable == 0)
        .map(|(a, flags)| (a, a.is_ipv6() && flags & TEMPORARY != 0))
        .collect();
    // Stable sort: the kernel's order among equals is kept.
    kept.sort_by_key(|&(_, temporary)| temporary);
    kept.into_iter().map(|(a, _)| a).collect()
}

/// Runs the scoped lookups of [`best_scoped`] over `candidates` (interface indexes):
/// `lookup` answers `Ok(Some(prefix length))` when the interface has its own route,
/// `Ok(None)` when it has none. One lookup that fails (xnu answers `EINVAL` for some
/// internal interfaces) skips that interface, logged, instead of aborting the resolution;
/// only when every lookup failed and none found a route is the last error returned.
pub(crate) fn scoped_search(
    candidates: impl IntoIterator<Item = u32>,
    mut lookup: impl FnMut(u32) -> Result<Option<u8>, crate::ResolveError>,
) -> Result<u32, crate::ResolveError> {
    let mut found = Vec::new();
    let mut last_error = None;
    for index in candidates {
        match lookup(index) {
            Ok(Some(prefix)) => found.push((index, prefix)),
            Ok(None) | Err(crate::ResolveError::NoRoute) => {}
            Err(e) => {
                tracing::debug!(interface = index, error = %e, "scoped route lookup failed; interface skipped");
                last_error = Some(e);
            }
        }
    }
    match (best_scoped(found), last_error) {
        (Some(best), _) => Ok(best),
        (None, Some(e)) => Err(e),
        (None, None) => Err(crate::ResolveError::NoRoute),
    }
}

/// The tunnel's interface index, given what `if_nametoindex` answered for its name (0: no
/// interface has that name). A missing tunnel is [`TunnelGone`](crate::ResolveError::TunnelGone),
/// never "no tunnel to avoid": a VPN that restarts gets the next free `utunN` from xnu
/// (bsd/net/if_utun.c numbers units in order), so the old name then matches nothing while the
/// new tunnel is an ordinary interface that can hold the best route.
pub(crate) fn tunnel_index(tunnel: &str, index: u32) -> Result<u32, crate::ResolveError> {
    if index == 0 {
        return Err(crate::ResolveError::TunnelGone {
            tunnel: format!("`{tunnel}`"),
        });
    }
    Ok(index)
}

/// The interface owning an explicit source, given every interface as
/// `(index, is the tunnel, addresses)`: its index to stamp in `IP_PKTINFO` (xnu then scopes
/// the datagram to it, bsd/netinet/udp_usrreq.c `udp_check_pktinfo`), `Ok(None)` when no
/// interface owns it, `Err(NoRoute)` when the tunnel does (the datagram would enter it).
pub(crate) fn owner_of<'a>(
    source: IpAddr,
    interfaces: impl IntoIterator<Item = (u32, bool, &'a [IpAddr])>,
) -> Result<Option<u32>, crate::ResolveError> {
    for (index, is_tunnel, addrs) in interfaces {
        if addrs.contains(&source) {
            if is_tunnel {
                return Err(crate::ResolveError::NoRoute);
            }
            return Ok((index != 0).then_some(index));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_name_that_no_interface_has_is_gone_not_absent() {
        assert_eq!(tunnel_index("utun4", 17).unwrap(), 17);
        assert!(matches!(
            tunnel_index("utun4", 0),
            Err(crate::ResolveError::TunnelGone { tunnel }) if tunnel == "`utun4`"
        ));
    }

    #[test]
    fn unusable_ipv6_sources_are_dropped_and_temporary_ones_come_last() {
        use in6_flags::*;
        let got = order_sources([
            (ip("2001:db8::7"), TEMPORARY),
            (ip("192.0.2.10"), 0),
            (ip("2001:db8::1"), TENTATIVE),
            (ip("2001:db8::2"), DUPLICATED),
            (ip("2001:db8::3"), DEPRECATED),
            (ip("2001:db8::4"), DETACHED),
            (ip("2001:db8::5"), 0x0040), // AUTOCONF: a stable SLAAC address
            (ip("fe80::1"), 0),
        ]);
        assert_eq!(
            got,
            [
                ip("192.0.2.10"),
                ip("2001:db8::5"),
                ip("fe80::1"),
                ip("2001:db8::7")
            ]
        );
        // Fed to the source choice, the stable global one wins over the temporary one
        // the kernel listed first.
        assert_eq!(
            pick_source(ip("2001:db8:9::1"), None, &got),
            Some(ip("2001:db8::5"))
        );
    }

    #[test]
    fn a_failing_scoped_lookup_skips_that_interface_only() {
        let einval = || crate::ResolveError::Io(std::io::Error::from_raw_os_error(22));
        // Interface 3 answers EINVAL, 5 has no route, 7 has a /0.
        let got = scoped_search([3, 5, 7], |i| match i {
            3 => Err(einval()),
            5 => Ok(None),
            _ => Ok(Some(0)),
        });
        assert_eq!(got.unwrap(), 7);
        // Every lookup failed: the failure is reported, not "no route".
        assert!(matches!(
            scoped_search([3], |_| Err(einval())),
            Err(crate::ResolveError::Io(_))
        ));
        assert!(matches!(
            scoped_search([5], |_| Ok(None)),
            Err(crate::ResolveError::NoRoute)
        ));
    }

    #[test]
    fn an_explicit_source_maps_to_its_interface_and_a_tunnel_source_fails_closed() {
        let en0 = [ip("192.0.2.10"), ip("2001:db8::10")];
        let utun = [ip("198.51.100.1")];
        let list = || [(4, false, &en0[..]), (9, true, &utun[..])];
        assert_eq!(owner_of(ip("2001:db8::10"), list()).unwrap(), Some(4));
        assert_eq!(owner_of(ip("203.0.113.1"), list()).unwrap(), None);
        assert!(matches!(
            owner_of(ip("198.51.100.1"), list()),
            Err(crate::ResolveError::NoRoute)
        ));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_route_address_wins_when_usable() {
        let got = pick_source(
            ip("198.51.100.7"),
            Some(ip("192.0.2.10")),
            &[ip("192.0.2.99")],
        );
        assert_eq!(got, Some(ip("192.0.2.10")));
    }

    #[test]
    fn a_link_local_route_address_falls_back_to_a_global_one() {
        let addrs = [ip("fe80::1"), ip("192.0.2.10"), ip("2001:db8::10")];
        let got = pick_source(ip("2001:db8:1::1"), Some(ip("fe80::2")), &addrs);
        assert_eq!(got, Some(ip("2001:db8::10")));
        // A link-local destination may use a link-local source.
        let got = pick_source(ip("fe80::9"), Some(ip("fe80::2")), &addrs);
        assert_eq!(got, Some(ip("fe80::2")));
    }

    #[test]
    fn no_address_of_the_family_means_no_source() {
        let got = pick_source(
            ip("2001:db8::1"),
            Some(ip("192.0.2.10")),
            &[ip("127.0.0.1")],
        );
        assert_eq!(got, None);
        assert!(!usable_source(ip("192.0.2.1"), ip("0.0.0.0")));
        assert!(!usable_source(ip("192.0.2.1"), ip("169.254.0.5")));
    }

    #[test]
    fn the_longest_prefix_wins_and_ties_keep_the_first() {
        assert_eq!(best_scoped([(4, 0), (7, 24), (9, 24)]), Some(7));
        assert_eq!(best_scoped([(4, 0), (5, 0)]), Some(4));
        assert_eq!(best_scoped([]), None);
    }
}
