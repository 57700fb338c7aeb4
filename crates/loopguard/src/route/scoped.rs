//! macOS routing as plain data (what `netstat -rn` shows), and the route a guarded socket
//! would use there. Pure, so it runs on every OS on what a user pasted.
//!
//! A guarded socket on macOS is held to one interface with `IP_BOUND_IF` / `IPV6_BOUND_IF`:
//! the best interface other than the tunnel's. The answer has two steps:
//!
//! 1. The interface: the longest prefix containing the destination among the routes that do
//!    not leave through the tunnel, unscoped routes before interface-scoped ones (flag `I`:
//!    a scoped route exists for its interface only, and is how macOS keeps the physical
//!    default once a VPN takes the unscoped one), then table order.
//! 2. The route on it: a lookup scoped to that interface, as `rt_lookup_common()` in xnu's
//!    bsd/net/route.c does it for a bound socket: the routes scoped to that interface and
//!    the unscoped routes through it compete, the longest prefix wins, a scoped route before
//!    an unscoped one of the same length.
//!
//! Cloned host routes (flag `W`: ARP/NDP entries and cached per-destination clones) are
//! ignored: they are caches of an answer, not the routes that give it.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::Family;

/// A route's gateway column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gateway {
    /// An address: the next hop (or, for a host route to itself, its own address).
    Address(IpAddr),
    /// `link#N`: on-link through the interface of index N.
    Link(u32),
    /// A link-layer address or anything else: on-link.
    Other(String),
}

/// One row of `netstat -rn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedRoute {
    /// Destination prefix (`default` is `/0`).
    pub destination: IpNet,
    /// Gateway.
    pub gateway: Gateway,
    /// The flags column as printed (`UGScI`...).
    pub flags: String,
    /// Interface name (`en0`, `utun3`).
    pub interface: String,
    /// The row as printed, for display.
    pub text: String,
}

impl ScopedRoute {
    /// The route's family.
    pub fn family(&self) -> Family {
        Family::of(self.destination.addr())
    }

    /// Flag `I`: scoped to its interface.
    pub fn scoped(&self) -> bool {
        self.flags.contains('I')
    }

    /// Flag `W`: cloned from another route.
    pub fn cloned(&self) -> bool {
        self.flags.contains('W')
    }

    /// Flags `R` (reject) or `B` (blackhole): the route refuses the packet.
    pub fn refuses(&self) -> bool {
        self.flags.contains(['R', 'B'])
    }

    /// The next hop: the gateway address of a route through a gateway (flag `G`).
    pub fn next_hop(&self) -> Option<IpAddr> {
        match self.gateway {
            Gateway::Address(a) if self.flags.contains('G') => Some(a),
            _ => None,
        }
    }
}

/// Why a route was not the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopedLoss {
    /// It leaves through the tunnel.
    Tunnel,
    /// A cloned host route (`W`), ignored.
    Cloned,
    /// Scoped (`I`) to another interface than the one the socket is held to.
    ScopedToOther,
    /// Unscoped, through another interface than the one the socket is held to.
    OtherInterface,
    /// A longer prefix through the socket's interface exists.
    ShorterPrefix {
        /// This route's prefix length.
        prefix_len: u8,
        /// The longest.
        longest: u8,
    },
    /// Same prefix: the scoped route, or the earlier row, wins.
    TieBreak,
}

impl fmt::Display for ScopedLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopedLoss::Tunnel => f.write_str("tunnel interface"),
            ScopedLoss::Cloned => f.write_str("cloned host route (W), ignored"),
            ScopedLoss::ScopedToOther => f.write_str("scoped (I) to another interface"),
            ScopedLoss::OtherInterface => f.write_str("through another interface"),
            ScopedLoss::ShorterPrefix {
                prefix_len,
                longest,
            } => write!(f, "shorter prefix (/{prefix_len} < /{longest})"),
            ScopedLoss::TieBreak => f.write_str("same prefix: scoped route or earlier row wins"),
        }
    }
}

/// A route containing the destination and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedCandidate {
    /// The route.
    pub route: ScopedRoute,
    /// `None` for the answer.
    pub loss: Option<ScopedLoss>,
}

/// The answer for one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedDecision {
    /// The destination.
    pub destination: IpAddr,
    /// The interface the socket would be held to; `None` when no route outside the tunnel
    /// contains the destination.
    pub interface: Option<String>,
    /// The chosen route (also first in `candidates`).
    pub route: Option<ScopedRoute>,
    /// Every route containing the destination, the chosen one first, the others in table
    /// order.
    pub candidates: Vec<ScopedCandidate>,
}

/// The route a socket held to the best interface outside `tunnels` would use to
/// `destination`; see the module for the rules.
pub fn select_scoped(
    routes: &[ScopedRoute],
    tunnels: &[String],
    destination: IpAddr,
) -> ScopedDecision {
    let family = Family::of(destination);
    let mut candidates: Vec<ScopedCandidate> = routes
        .iter()
        .filter(|r| r.family() == family && r.destination.contains(&destination))
        .map(|r| ScopedCandidate {
            route: r.clone(),
            loss: if tunnels.contains(&r.interface) {
                Some(ScopedLoss::Tunnel)
            } else if r.cloned() {
                Some(ScopedLoss::Cloned)
            } else {
                None
            },
        })
        .collect();
    // Step 1: the interface.
    let interface = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.loss.is_none())
        .min_by_key(|(row, c)| {
            (
                std::cmp::Reverse(c.route.destination.prefix_len()),
                c.route.scoped(),
                *row,
            )
        })
        .map(|(_, c)| c.route.interface.clone());
    let Some(interface) = interface else {
        return ScopedDecision {
            destination,
            interface: None,
            route: None,
            candidates,
        };
    };
    // Step 2: the lookup scoped to it.
    for c in candidates.iter_mut().filter(|c| c.loss.is_none()) {
        if c.route.interface != interface {
            c.loss = Some(if c.route.scoped() {
                ScopedLoss::ScopedToOther
            } else {
                ScopedLoss::OtherInterface
            });
        }
    }
    let winner = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.loss.is_none())
        .min_by_key(|(row, c)| {
            (
                std::cmp::Reverse(c.route.destination.prefix_len()),
                !c.route.scoped(),
                *row,
            )
        })
        .map(|(row, _)| row)
        .unwrap_or(0);
    let longest = candidates[winner].route.destination.prefix_len();
    for (row, c) in candidates.iter_mut().enumerate() {
        if row != winner && c.loss.is_none() {
            let prefix_len = c.route.destination.prefix_len();
            c.loss = Some(if prefix_len < longest {
                ScopedLoss::ShorterPrefix {
                    prefix_len,
                    longest,
                }
            } else {
                ScopedLoss::TieBreak
            });
        }
    }
    let chosen = candidates.remove(winner);
    let route = chosen.route.clone();
    candidates.insert(0, chosen);
    ScopedDecision {
        destination,
        interface: Some(interface),
        route: Some(route),
        candidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, gateway: &str, flags: &str, interface: &str) -> ScopedRoute {
        ScopedRoute {
            destination: dst.parse().unwrap(),
            gateway: gateway
                .parse()
                .map(Gateway::Address)
                .unwrap_or(Gateway::Other(gateway.into())),
            flags: flags.into(),
            interface: interface.into(),
            text: String::new(),
        }
    }

    fn utun() -> Vec<String> {
        vec!["utun3".into()]
    }

    #[test]
    fn the_vpn_default_is_skipped_for_the_scoped_physical_default() {
        // A VPN that took the unscoped default: the physical default stays, scoped to en0.
        let routes = [
            route("0.0.0.0/0", "198.51.100.1", "UGSc", "utun3"),
            route("0.0.0.0/0", "192.0.2.1", "UGScI", "en0"),
            route("192.0.2.0/24", "link#6", "UCS", "en0"),
            route("192.0.2.1/32", "a4:91:b1:00:00:01", "UHLWIir", "en0"),
        ];
        let d = select_scoped(&routes, &utun(), "203.0.113.9".parse().unwrap());
        assert_eq!(d.interface.as_deref(), Some("en0"));
        assert_eq!(
            d.route.unwrap().next_hop(),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(d.candidates[1].loss, Some(ScopedLoss::Tunnel));
        // The gateway's own ARP entry is a clone: ignored, the LAN route answers.
        let d = select_scoped(&routes, &utun(), "192.0.2.1".parse().unwrap());
        let route = d.route.unwrap();
        assert_eq!(route.destination, "192.0.2.0/24".parse::<IpNet>().unwrap());
        assert!(d
            .candidates
            .iter()
            .any(|c| c.loss == Some(ScopedLoss::Cloned)));
    }

    #[test]
    fn split_routes_around_the_tunnel_and_routes_scoped_to_other_interfaces() {
        let routes = [
            route("0.0.0.0/0", "192.0.2.1", "UGScg", "en0"),
            route("0.0.0.0/1", "198.51.100.1", "UGSc", "utun3"),
            route("128.0.0.0/1", "198.51.100.1", "UGSc", "utun3"),
            route("0.0.0.0/0", "203.0.113.1", "UGScIg", "en7"),
        ];
        let d = select_scoped(&routes, &utun(), "203.0.113.9".parse().unwrap());
        assert_eq!(d.interface.as_deref(), Some("en0"));
        // 0/1 does not contain it; 128.0/1 does.
        let losses: Vec<_> = d.candidates.iter().map(|c| c.loss.clone()).collect();
        assert_eq!(
            losses,
            [
                None,
                Some(ScopedLoss::Tunnel),
                Some(ScopedLoss::ScopedToOther)
            ]
        );
    }

    #[test]
    fn a_longer_unscoped_route_elsewhere_picks_that_interface() {
        let routes = [
            route("0.0.0.0/0", "192.0.2.1", "UGSc", "en0"),
            route("198.51.100.0/24", "link#9", "UCS", "en7"),
        ];
        let d = select_scoped(&routes, &utun(), "198.51.100.9".parse().unwrap());
        assert_eq!(d.interface.as_deref(), Some("en7"));
        assert_eq!(d.candidates[1].loss, Some(ScopedLoss::OtherInterface));
    }

    #[test]
    fn only_tunnel_routes_is_no_interface() {
        let routes = [route("::/0", "fe80::1", "UGcIg", "utun3")];
        let d = select_scoped(&routes, &utun(), "2001:db8::1".parse().unwrap());
        assert_eq!(d.interface, None);
        assert_eq!(d.candidates.len(), 1);
    }
}
