//! The source address for a chosen interface.

use std::cmp::Reverse;
use std::net::IpAddr;

use super::{AddressState, Luid, UnicastAddress};

/// How far an address reaches, for matching a source to its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Loopback,
    LinkLocal,
    Wide,
}

fn scope(address: IpAddr) -> Scope {
    match address {
        IpAddr::V4(a) if a.is_loopback() => Scope::Loopback,
        IpAddr::V4(a) if a.is_link_local() => Scope::LinkLocal,
        IpAddr::V6(a) if a.is_loopback() => Scope::Loopback,
        // fe80::/10, written out because `Ipv6Addr::is_unicast_link_local` needs Rust 1.84+.
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => Scope::LinkLocal,
        _ => Scope::Wide,
    }
}

/// Number of leading bits `a` and `b` share (0 across families).
fn common_prefix_len(a: IpAddr, b: IpAddr) -> u32 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => 0,
    }
}

/// Whether `address` may be the source of a packet to `destination` leaving `interface`:
/// same interface and family, preferred (not tentative, duplicate or deprecated), not marked
/// skip-as-source, and of the destination's scope (a link-local source only for a link-local
/// destination, and a link-local destination only from a link-local source).
pub(super) fn usable(address: &UnicastAddress, interface: Luid, destination: IpAddr) -> bool {
    address.interface == interface
        && address.address.is_ipv4() == destination.is_ipv4()
        && address.state == AddressState::Preferred
        && !address.skip_as_source
        && scope(address.address) == scope(destination)
}

/// The source for a packet to `destination` leaving `interface`, or `None` when the
/// interface has no usable address (see the rules of [`select`](super::select)).
///
/// Among usable addresses: a stable one before a temporary one (a temporary IPv6 address
/// rotates away under long flows), then the one sharing the longest prefix with
/// the destination (RFC 6724 rule 8), then the lowest address, so the answer never depends
/// on table order.
pub fn choose_source(
    addresses: &[UnicastAddress],
    interface: Luid,
    destination: IpAddr,
) -> Option<IpAddr> {
    addresses
        .iter()
        .filter(|a| usable(a, interface, destination))
        .min_by_key(|a| {
            (
                a.is_temporary(),
                Reverse(common_prefix_len(a.address, destination)),
                a.address,
            )
        })
        .map(|a| a.address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{PrefixOrigin, SuffixOrigin};

    fn addr(text: &str, luid: u64) -> UnicastAddress {
        UnicastAddress {
            address: text.parse().unwrap(),
            prefix_length: 64,
            interface: Luid(luid),
            state: AddressState::Preferred,
            skip_as_source: false,
            prefix_origin: PrefixOrigin::RouterAdvertisement,
            suffix_origin: SuffixOrigin::LinkLayerAddress,
        }
    }

    #[test]
    fn stable_global_before_temporary_whatever_the_order() {
        let mut temporary = addr("2001:db8:1::aaaa", 1);
        temporary.suffix_origin = SuffixOrigin::Random;
        let stable = addr("2001:db8:1::1", 1);
        let dst = "2001:db8:9::1".parse().unwrap();
        for table in [
            vec![temporary.clone(), stable.clone()],
            vec![stable.clone(), temporary.clone()],
        ] {
            assert_eq!(choose_source(&table, Luid(1), dst), Some(stable.address));
        }
        // Only a temporary one: it is used rather than nothing.
        assert_eq!(
            choose_source(std::slice::from_ref(&temporary), Luid(1), dst),
            Some(temporary.address)
        );
    }

    #[test]
    fn link_local_only_for_link_local_destinations() {
        let ll = addr("fe80::1", 1);
        let global = addr("2001:db8:1::1", 1);
        let table = [ll.clone(), global.clone()];
        assert_eq!(
            choose_source(&table, Luid(1), "fe80::99".parse().unwrap()),
            Some(ll.address)
        );
        assert_eq!(
            choose_source(&table, Luid(1), "2001:db8:2::9".parse().unwrap()),
            Some(global.address)
        );
        assert_eq!(
            choose_source(&[ll], Luid(1), "2001:db8:2::9".parse().unwrap()),
            None
        );
    }

    #[test]
    fn deprecated_tentative_and_skip_as_source_are_never_chosen() {
        let mut deprecated = addr("2001:db8:1::d", 1);
        deprecated.state = AddressState::Deprecated;
        let mut tentative = addr("2001:db8:1::e", 1);
        tentative.state = AddressState::Tentative;
        let mut skipped = addr("2001:db8:1::f", 1);
        skipped.skip_as_source = true;
        let dst = "2001:db8:1::99".parse().unwrap();
        let table = [deprecated, tentative, skipped];
        assert_eq!(choose_source(&table, Luid(1), dst), None);
    }

    #[test]
    fn other_interfaces_and_families_do_not_count() {
        let table = [addr("2001:db8:1::1", 2), addr("192.0.2.10", 1)];
        assert_eq!(
            choose_source(&table, Luid(1), "2001:db8:1::99".parse().unwrap()),
            None
        );
        assert_eq!(
            choose_source(&table, Luid(1), "198.51.100.1".parse().unwrap()),
            Some("192.0.2.10".parse().unwrap())
        );
    }

    #[test]
    fn longest_common_prefix_then_lowest_address() {
        let table = [
            addr("192.0.2.200", 1),
            addr("198.51.100.20", 1),
            addr("198.51.100.10", 1),
        ];
        assert_eq!(
            choose_source(&table, Luid(1), "198.51.100.77".parse().unwrap()),
            Some("198.51.100.10".parse().unwrap())
        );
    }
}
