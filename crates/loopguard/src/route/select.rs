//! The selection rules: for a destination, the route Windows would use if our tunnel did not
//! exist, with every other candidate and why it lost.

use std::fmt;
use std::net::IpAddr;

use super::{source, Family, HostTables, Luid, OperStatus, Route, Tunnel};
use crate::{Path, ResolveError};

/// Why a candidate route was not chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// It leaves through the tunnel: the loop we exist to prevent.
    Tunnel,
    /// Its interface is not in the interface table.
    UnknownInterface,
    /// Its interface is not operationally up.
    InterfaceDown(OperStatus),
    /// Its interface has no metric for this family: the family is not enabled there.
    FamilyDisabled,
    /// Its interface has no usable source address for the destination, so a socket pinned
    /// to it could not send.
    NoUsableSource,
    /// A usable route with a longer prefix exists.
    ShorterPrefix {
        /// This route's prefix length.
        prefix_len: u8,
        /// The longest usable prefix length.
        longest: u8,
    },
    /// Same prefix length, but a higher route + interface metric.
    HigherMetric {
        /// This route's effective metric.
        effective: u64,
        /// The lowest effective metric among the longest prefixes.
        best: u64,
    },
    /// Equal prefix and effective metric; the tie-break (lower interface index, then on-link
    /// before a gateway and the lower next hop, then the lower LUID, then table order) chose
    /// another route.
    TieBreak {
        /// Index of the interface that won.
        winner_index: u32,
    },
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::Tunnel => f.write_str("tunnel interface"),
            LossReason::UnknownInterface => f.write_str("interface not in the interface table"),
            LossReason::InterfaceDown(status) => write!(f, "interface {status}"),
            LossReason::FamilyDisabled => f.write_str("address family not enabled on interface"),
            LossReason::NoUsableSource => f.write_str("no usable source address on interface"),
            LossReason::ShorterPrefix {
                prefix_len,
                longest,
            } => write!(f, "shorter prefix (/{prefix_len} < /{longest})"),
            LossReason::HigherMetric { effective, best } => {
                write!(f, "higher effective metric ({effective} > {best})")
            }
            LossReason::TieBreak { winner_index } => {
                write!(f, "tie-break (interface {winner_index} wins)")
            }
        }
    }
}

/// What became of one candidate route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The route selection chose.
    Chosen,
    /// Not chosen, and why.
    Lost(LossReason),
}

/// A route whose prefix contains the destination, with what selection saw in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The route.
    pub route: Route,
    /// Index of its interface, when the interface is known.
    pub interface_index: Option<u32>,
    /// Alias of its interface, when the interface is known.
    pub interface_alias: Option<String>,
    /// The interface metric of the destination's family, when known.
    pub interface_metric: Option<u32>,
    /// Route metric + interface metric, when the interface metric is known.
    pub effective_metric: Option<u64>,
    /// The source its interface would give, when addresses are known and one is usable.
    pub source: Option<IpAddr>,
    /// Chosen, or why not.
    pub verdict: Verdict,
}

/// The chosen path for a destination and every candidate that was weighed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The destination asked about.
    pub destination: IpAddr,
    /// The chosen route.
    pub route: Route,
    /// LUID of the chosen interface.
    pub interface: Luid,
    /// Index of the chosen interface (`0` when the tables did not say).
    pub interface_index: u32,
    /// Alias of the chosen interface.
    pub interface_alias: String,
    /// Source address; `None` only when the tables list no addresses.
    pub source: Option<IpAddr>,
    /// Route metric + interface metric of the chosen route.
    pub effective_metric: u64,
    /// Every route containing the destination, the chosen one first, the others in table
    /// order.
    pub candidates: Vec<Candidate>,
}

/// No route outside the tunnel leads to the destination. A normal state (an IPv4-only host
/// asked for IPv6): the caller drops the packet; nothing is logged here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no route to {destination} outside the tunnel ({} candidate routes, none usable)", .candidates.len())]
pub struct Unreachable {
    /// The destination asked about.
    pub destination: IpAddr,
    /// Every route containing the destination and why it could not be used (may be empty).
    pub candidates: Vec<Candidate>,
}

/// Chooses the path to `destination` outside `tunnel`, the way Windows chooses a route:
///
/// 1. Candidates are the routes whose prefix contains the destination.
/// 2. Out go routes through the tunnel, through an unknown interface, through an interface
///    that is not up, through an interface where the family is not enabled, and (when the
///    tables list addresses) through an interface without a usable source: we pin both the
///    interface and the source, so such a route cannot carry our packets.
/// 3. The longest prefix wins.
/// 4. Then the lowest effective metric: route metric + the interface's metric for the family.
/// 5. Then, so the answer never depends on table order: the lower interface index, then an
///    on-link route before one through a gateway and the lower next hop, then the lower LUID,
///    then the earlier row.
///
/// The source is [`choose_source`](super::choose_source) on the chosen interface.
pub fn select(
    host: &HostTables,
    tunnel: &Tunnel,
    destination: IpAddr,
) -> Result<Decision, Unreachable> {
    let family = Family::of(destination);
    let mut candidates: Vec<Candidate> = host
        .routes
        .iter()
        .filter(|r| r.family() == family && r.destination.contains(&destination))
        .map(|r| screen(host, tunnel, r, destination))
        .collect();

    let open = |c: &Candidate| matches!(c.verdict, Verdict::Chosen);
    let Some(longest) = candidates
        .iter()
        .filter(|c| open(c))
        .map(|c| c.route.destination.prefix_len())
        .max()
    else {
        return Err(Unreachable {
            destination,
            candidates,
        });
    };
    for c in candidates.iter_mut().filter(|c| open(c)) {
        let prefix_len = c.route.destination.prefix_len();
        if prefix_len < longest {
            c.verdict = Verdict::Lost(LossReason::ShorterPrefix {
                prefix_len,
                longest,
            });
        }
    }

    // Every open candidate has a metric: screening removed those without one.
    let best = candidates
        .iter()
        .filter(|c| open(c))
        .filter_map(|c| c.effective_metric)
        .min()
        .unwrap_or(0);
    for c in candidates.iter_mut().filter(|c| open(c)) {
        let effective = c.effective_metric.unwrap_or(u64::MAX);
        if effective > best {
            c.verdict = Verdict::Lost(LossReason::HigherMetric { effective, best });
        }
    }

    let winner = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| open(c))
        .min_by_key(|(row, c)| {
            (
                c.interface_index.unwrap_or(0),
                c.route.next_hop,
                c.route.interface,
                *row,
            )
        })
        .map(|(row, _)| row)
        .unwrap_or(0);
    let winner_index = candidates[winner].interface_index.unwrap_or(0);
    for (row, c) in candidates.iter_mut().enumerate() {
        if row != winner && open(c) {
            c.verdict = Verdict::Lost(LossReason::TieBreak { winner_index });
        }
    }

    let chosen = candidates.remove(winner);
    let interface = chosen.route.interface;
    let decision = Decision {
        destination,
        route: chosen.route.clone(),
        interface,
        interface_index: winner_index,
        interface_alias: chosen.interface_alias.clone().unwrap_or_default(),
        source: chosen.source,
        effective_metric: chosen.effective_metric.unwrap_or(0),
        candidates: std::iter::once(chosen).chain(candidates).collect(),
    };
    Ok(decision)
}

/// Looks up what a route needs and rules out the routes that cannot carry our packets
/// whatever the others are. A route that passes keeps `Verdict::Chosen` for now.
fn screen(host: &HostTables, tunnel: &Tunnel, route: &Route, destination: IpAddr) -> Candidate {
    let interface = host.interface(route.interface);
    let interface_metric = interface.and_then(|i| i.metric(route.family()));
    let source = host
        .addresses
        .as_deref()
        .and_then(|a| source::choose_source(a, route.interface, destination));
    let loss = if tunnel.contains(route.interface) {
        Some(LossReason::Tunnel)
    } else if let Some(i) = interface {
        if i.status != OperStatus::Up {
            Some(LossReason::InterfaceDown(i.status))
        } else if interface_metric.is_none() {
            Some(LossReason::FamilyDisabled)
        } else if host.addresses.is_some() && source.is_none() {
            Some(LossReason::NoUsableSource)
        } else {
            None
        }
    } else {
        Some(LossReason::UnknownInterface)
    };
    Candidate {
        route: route.clone(),
        interface_index: interface.map(|i| i.index),
        interface_alias: interface.map(|i| i.alias.clone()),
        interface_metric,
        effective_metric: interface_metric.map(|m| u64::from(route.metric) + u64::from(m)),
        source,
        verdict: loss.map_or(Verdict::Chosen, Verdict::Lost),
    }
}

/// The adapter for a Windows [`Strategy::resolve`](crate::Strategy::resolve): the chosen
/// source and interface index, or [`ResolveError::NoRoute`] (fail closed, no log: "no IPv6
/// here" is normal). Tables without addresses cannot give a source, so they give `NoRoute`.
pub fn path_for(
    host: &HostTables,
    tunnel: &Tunnel,
    destination: IpAddr,
) -> Result<Path, ResolveError> {
    let decision = select(host, tunnel, destination).map_err(|_| ResolveError::NoRoute)?;
    let source = decision.source.ok_or(ResolveError::NoRoute)?;
    Ok(Path {
        source,
        interface: (decision.interface_index != 0).then_some(decision.interface_index),
    })
}
