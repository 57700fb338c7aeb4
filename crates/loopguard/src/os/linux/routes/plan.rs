//! Deciding, from plain data, which rules and routes are wanted, which of ours are stale, and
//! which belong to somebody else. No I/O here, so every decision is unit-tested.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::AddressFamily;

use super::{Family, GuardConfig, RoutesError};

/// The kernel's main table.
const MAIN_TABLE: u32 = 254;
/// "No suppress_prefixlength/suppress_ifgroup": the kernel dumps these as -1.
const UNSET: u32 = u32::MAX;
/// The metric the kernel gives an IPv6 route added without one.
const IPV6_DEFAULT_METRIC: u32 = 1024;
/// The metric of the tunnel table's last-resort `unreachable` routes: the highest, so the
/// tunnel's own route to the same prefix wins while it exists.
pub(crate) const TERMINAL_METRIC: u32 = u32::MAX;

/// A policy rule as the kernel reported it, reduced to what loopguard compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObservedRule {
    pub family: Family,
    pub priority: u32,
    pub table: u32,
    pub protocol: u8,
    pub invert: bool,
    /// `(mark, mask)` when the rule matches a firewall mark.
    pub fwmark: Option<(u32, u32)>,
    pub suppress_prefixlen: Option<u32>,
    /// The rule does anything other than "look up a table" or has selectors loopguard never
    /// sets (source, destination, interfaces, ports, ...): it can never be one we want.
    pub other: bool,
}

impl ObservedRule {
    /// Reduces a dumped rule; `None` for families loopguard does not handle.
    pub(crate) fn from_message(m: &RuleMessage) -> Option<Self> {
        let family = Family::from_af(m.header.family)?;
        let mut rule = ObservedRule {
            family,
            priority: 0,
            table: u32::from(m.header.table),
            protocol: 0,
            invert: m.header.flags.contains(RuleFlags::Invert),
            fwmark: None,
            suppress_prefixlen: None,
            other: m.header.action != RuleAction::ToTable
                || m.header.src_len != 0
                || m.header.dst_len != 0
                || m.header.tos != 0,
        };
        let (mut mark, mut mask) = (None, None);
        for a in &m.attributes {
            match a {
                RuleAttribute::Priority(p) => rule.priority = *p,
                RuleAttribute::Table(t) => rule.table = *t,
                RuleAttribute::Protocol(p) => rule.protocol = u8::from(*p),
                RuleAttribute::FwMark(v) => mark = Some(*v),
                RuleAttribute::FwMask(v) => mask = Some(*v),
                RuleAttribute::SuppressPrefixLen(v) if *v != UNSET => {
                    rule.suppress_prefixlen = Some(*v)
                }
                RuleAttribute::SuppressIfGroup(v) if *v != UNSET => rule.other = true,
                RuleAttribute::SuppressPrefixLen(_) | RuleAttribute::SuppressIfGroup(_) => {}
                RuleAttribute::Source(_)
                | RuleAttribute::Destination(_)
                | RuleAttribute::Iifname(_)
                | RuleAttribute::Oifname(_)
                | RuleAttribute::Goto(_)
                | RuleAttribute::IpProtocol(_)
                | RuleAttribute::SourcePortRange(_)
                | RuleAttribute::DestinationPortRange(_) => rule.other = true,
                // Realm, tunnel id, uid range (dumped as the full range) and unknown
                // attributes do not change what loopguard compares.
                _ => {}
            }
        }
        // The kernel dumps a mask with every mark; a mark of 0 with mask 0 is "no mark".
        rule.fwmark = match (mark, mask) {
            (None, None) | (Some(0), Some(0)) | (None, Some(0)) => None,
            (m, k) => Some((m.unwrap_or(0), k.unwrap_or(u32::MAX))),
        };
        Some(rule)
    }

    /// The rule's selector and action as `ip rule` would print them.
    pub(crate) fn selector(&self) -> String {
        let mut s = String::new();
        if self.invert {
            s.push_str("not ");
        }
        s.push_str("from all");
        if let Some((mark, mask)) = self.fwmark {
            s.push_str(&format!(" fwmark {mark:#x}/{mask:#x}"));
        }
        s.push_str(&format!(" lookup {}", table_name(self.table)));
        if let Some(len) = self.suppress_prefixlen {
            s.push_str(&format!(" suppress_prefixlength {len}"));
        }
        if self.other {
            s.push_str(" (and other selectors)");
        }
        s
    }
}

fn table_name(table: u32) -> String {
    match table {
        253 => "default".into(),
        254 => "main".into(),
        255 => "local".into(),
        t => t.to_string(),
    }
}

/// One of the two rules loopguard wants per address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WantedRule {
    /// `priority: lookup main suppress_prefixlength 0`.
    SuppressMain { family: Family, priority: u32 },
    /// `priority + 1: not fwmark mark/mask lookup table`.
    NotFwmark {
        family: Family,
        priority: u32,
        mark: u32,
        mask: u32,
        table: u32,
    },
}

impl WantedRule {
    /// The wanted rules for the families that have prefixes.
    pub(crate) fn for_families(config: &GuardConfig, families: &[Family]) -> Vec<WantedRule> {
        let mut out = Vec::new();
        for &family in families {
            out.push(WantedRule::SuppressMain {
                family,
                priority: config.priority(),
            });
            out.push(WantedRule::NotFwmark {
                family,
                priority: config.priority() + 1,
                mark: config.mark(),
                mask: config.mask(),
                table: config.table(),
            });
        }
        out
    }

    /// What the kernel would report for this rule, tagged with `protocol`.
    pub(crate) fn observed(&self, protocol: u8) -> ObservedRule {
        match *self {
            WantedRule::SuppressMain { family, priority } => ObservedRule {
                family,
                priority,
                table: MAIN_TABLE,
                protocol,
                invert: false,
                fwmark: None,
                suppress_prefixlen: Some(0),
                other: false,
            },
            WantedRule::NotFwmark {
                family,
                priority,
                mark,
                mask,
                table,
            } => ObservedRule {
                family,
                priority,
                table,
                protocol,
                invert: true,
                fwmark: Some((mark, mask)),
                suppress_prefixlen: None,
                other: false,
            },
        }
    }

    /// The netlink message adding this rule.
    pub(crate) fn message(&self, protocol: u8) -> RuleMessage {
        let o = self.observed(protocol);
        let mut m = RuleMessage::default();
        m.header.family = o.family.af();
        m.header.action = RuleAction::ToTable;
        // Tables above 255 only fit the attribute; the header then says "unspecified".
        m.header.table = u8::try_from(o.table).unwrap_or(0);
        if o.invert {
            m.header.flags = RuleFlags::Invert;
        }
        m.attributes.push(RuleAttribute::Priority(o.priority));
        m.attributes.push(RuleAttribute::Table(o.table));
        m.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(protocol)));
        if let Some((mark, mask)) = o.fwmark {
            m.attributes.push(RuleAttribute::FwMark(mark));
            m.attributes.push(RuleAttribute::FwMask(mask));
        }
        if let Some(len) = o.suppress_prefixlen {
            m.attributes.push(RuleAttribute::SuppressPrefixLen(len));
        }
        m
    }

    /// The priority, for messages.
    pub(crate) fn priority(&self) -> u32 {
        match *self {
            WantedRule::SuppressMain { priority, .. } | WantedRule::NotFwmark { priority, .. } => {
                priority
            }
        }
    }
}

/// Whether a rule is loopguard's, for this configuration: our tag, and looking up our table
/// (at any priority: a run with another priority left it), or the `lookup main
/// suppress_prefixlength 0` rule at our priority. A rule with our tag for another table
/// belongs to another loopguard configuration and is left alone, even at our priorities
/// (where [`priority_holder`] makes `apply` refuse).
pub(crate) fn is_our_rule(rule: &ObservedRule, config: &GuardConfig, protocol: u8) -> bool {
    rule.protocol == protocol
        && (rule.table == config.table()
            || (rule.priority == config.priority() && is_suppress_main(rule)))
}

/// The rules of this configuration among `rules` (both families): [`is_our_rule`], except
/// the suppress rule of a family whose priorities another configuration holds (it is that
/// configuration's too, and removing it would change how that one routes).
pub(crate) fn our_rules_among(
    rules: &[ObservedRule],
    config: &GuardConfig,
    protocol: u8,
) -> Vec<usize> {
    (0..rules.len())
        .filter(|&i| {
            let r = &rules[i];
            is_our_rule(r, config, protocol)
                && !(is_suppress_main(r)
                    && r.table != config.table()
                    && priority_holder(rules, config, protocol)
                        .is_some_and(|h| h.family == r.family))
        })
        .collect()
}

/// A rule of another loopguard configuration at one of our priorities: our tag, at our
/// priority or the next, looking up a table that is neither ours nor `main`. Two
/// configurations at the same priorities delete each other's rules, so `apply` refuses.
pub(crate) fn priority_holder<'a>(
    rules: &'a [ObservedRule],
    config: &GuardConfig,
    protocol: u8,
) -> Option<&'a ObservedRule> {
    rules.iter().find(|r| {
        r.protocol == protocol
            && (r.priority == config.priority() || r.priority == config.priority() + 1)
            && r.table != config.table()
            && r.table != MAIN_TABLE
    })
}

/// `lookup main suppress_prefixlength 0`, the first of loopguard's two rules.
fn is_suppress_main(rule: &ObservedRule) -> bool {
    rule.table == MAIN_TABLE
        && !rule.invert
        && rule.fwmark.is_none()
        && rule.suppress_prefixlen == Some(0)
        && !rule.other
}

/// Whether a rule is one of the kernel's three (`0: lookup local`, `32766: lookup main`,
/// `32767: lookup default`), where the kernel put them.
pub(crate) fn is_kernel_default(rule: &ObservedRule) -> bool {
    let plain =
        !rule.invert && rule.fwmark.is_none() && rule.suppress_prefixlen.is_none() && !rule.other;
    plain
        && matches!(
            (rule.priority, rule.table),
            (0, 255) | (32_766, MAIN_TABLE) | (32_767, 253)
        )
}

/// Whether a rule sends every packet to `main` unconditionally: the kernel's own
/// `32766: from all lookup main`, or a copy of it moved elsewhere.
fn is_catch_all_main(rule: &ObservedRule) -> bool {
    rule.table == MAIN_TABLE
        && !rule.invert
        && rule.fwmark.is_none()
        && rule.suppress_prefixlen.is_none()
        && !rule.other
}

/// Why loopguard's rules of `family`, in the order the kernel evaluates them (`rules`, as
/// dumped), cannot capture unmarked traffic; `None` when they can. Both rules must be
/// there, the suppress rule before the fwmark rule, and no unconditional `lookup main`
/// before the fwmark rule (a rule added at an existing rule's priority goes after it, so
/// the second rule at the priority of `lookup main` would come too late).
///
/// `wanted` are the two rules of `family` (from [`WantedRule::for_families`]).
pub(crate) fn order_problem(
    rules: &[ObservedRule],
    wanted: &[WantedRule],
    protocol: u8,
) -> Option<String> {
    let [suppress, fwmark] = wanted else {
        return Some("internal: two rules per family are expected".into());
    };
    let (suppress, fwmark) = (suppress.observed(protocol), fwmark.observed(protocol));
    let family = fwmark.family;
    let rules: Vec<&ObservedRule> = rules.iter().filter(|r| r.family == family).collect();
    let Some(at_fwmark) = rules.iter().position(|r| **r == fwmark) else {
        return Some(format!(
            "the {family} rule `{}: {}` is missing",
            fwmark.priority,
            fwmark.selector()
        ));
    };
    match rules.iter().position(|r| **r == suppress) {
        None => {
            return Some(format!(
                "the {family} rule `{}: {}` is missing",
                suppress.priority,
                suppress.selector()
            ))
        }
        Some(at) if at > at_fwmark => {
            return Some(format!(
                "the {family} rule `{}: {}` comes after `{}: {}`",
                suppress.priority,
                suppress.selector(),
                fwmark.priority,
                fwmark.selector()
            ))
        }
        Some(_) => {}
    }
    rules[..at_fwmark]
        .iter()
        .find(|r| is_catch_all_main(r))
        .map(|r| {
            format!(
                "the {family} rule `{}: {}` comes before `{}: {}`: unmarked traffic would \
                 skip the tunnel; choose a priority below {}",
                r.priority,
                r.selector(),
                fwmark.priority,
                fwmark.selector(),
                r.priority.saturating_sub(1)
            )
        })
}

/// The order the kernel would evaluate `existing` rules in once `wanted` ones are added: a
/// new rule goes after every rule of lower or equal priority.
pub(crate) fn order_after_adding(
    existing: &[ObservedRule],
    wanted: &[WantedRule],
    protocol: u8,
) -> Vec<ObservedRule> {
    let mut out = existing.to_vec();
    for w in wanted {
        let o = w.observed(protocol);
        if out.contains(&o) {
            continue;
        }
        let at = out
            .iter()
            .position(|r| r.family == o.family && r.priority > o.priority)
            .unwrap_or(out.len());
        out.insert(at, o);
    }
    out
}

/// What to do with the rules: indexes of observed rules to delete, and rules to add.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RulePlan {
    pub delete: Vec<usize>,
    pub add: Vec<WantedRule>,
}

/// Keeps one observed copy of each wanted rule, deletes our other rules (stale or
/// duplicates), adds what is missing. Rules that are not ours are never touched.
pub(crate) fn plan_rules(
    observed: &[ObservedRule],
    wanted: &[WantedRule],
    config: &GuardConfig,
    protocol: u8,
) -> RulePlan {
    let mut plan = RulePlan::default();
    let mut found = vec![false; wanted.len()];
    for (i, rule) in observed.iter().enumerate() {
        if !is_our_rule(rule, config, protocol) {
            continue;
        }
        let hit = wanted
            .iter()
            .enumerate()
            .find(|(j, w)| !found[*j] && w.observed(protocol) == *rule)
            .map(|(j, _)| j);
        match hit {
            Some(j) => found[j] = true,
            None => plan.delete.push(i),
        }
    }
    plan.add = wanted
        .iter()
        .zip(&found)
        .filter(|(_, f)| !**f)
        .map(|(w, _)| *w)
        .collect();
    plan
}

/// A route as the kernel reported it, reduced to what loopguard compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObservedRoute {
    pub prefix: IpNet,
    pub table: u32,
    pub protocol: u8,
    pub oif: Option<u32>,
    pub metric: u32,
    /// A plain unicast route through a device, with no gateway or multipath.
    pub plain: bool,
    /// An `unreachable` route (no device): the kernel answers "network unreachable".
    pub unreachable: bool,
}

impl ObservedRoute {
    /// Reduces a dumped route; `None` for families loopguard does not handle.
    pub(crate) fn from_message(m: &RouteMessage) -> Option<Self> {
        let family = Family::from_af(m.header.address_family)?;
        let mut table = u32::from(m.header.table);
        let (mut dst, mut oif, mut metric) = (None, None, 0);
        let mut plain = m.header.kind == RouteType::Unicast && m.header.source_prefix_length == 0;
        let unreachable =
            m.header.kind == RouteType::Unreachable && m.header.source_prefix_length == 0;
        for a in &m.attributes {
            match a {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => metric = *p,
                RouteAttribute::Gateway(_)
                | RouteAttribute::MultiPath(_)
                | RouteAttribute::Via(_) => plain = false,
                _ => {}
            }
        }
        let addr = dst.unwrap_or(match family {
            Family::V4 => IpAddr::from([0u8; 4]),
            Family::V6 => IpAddr::from([0u16; 8]),
        });
        let prefix = IpNet::new(addr, m.header.destination_prefix_length).ok()?;
        Some(ObservedRoute {
            prefix,
            table,
            protocol: u8::from(m.header.protocol),
            oif,
            metric,
            plain,
            unreachable,
        })
    }

    /// Whether this is a last-resort route [`terminal_message`] adds.
    pub(crate) fn is_terminal(&self, table: u32, protocol: u8) -> bool {
        self.unreachable
            && self.table == table
            && self.protocol == protocol
            && self.metric == TERMINAL_METRIC
    }
}

/// The metric the kernel gives a route loopguard adds (it sets none).
fn default_metric(prefix: &IpNet) -> u32 {
    match prefix {
        IpNet::V4(_) => 0,
        IpNet::V6(_) => IPV6_DEFAULT_METRIC,
    }
}

/// What to do with the routes of our table.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RoutePlan {
    pub delete: Vec<usize>,
    pub add: Vec<IpNet>,
    /// Prefixes whose last-resort `unreachable` route is missing.
    pub add_terminal: Vec<IpNet>,
}

/// Plans the routes of `table`: our routes not wanted (or on another device) go, wanted ones
/// missing are added, and each wanted prefix gets a last-resort `unreachable` route of the
/// same prefix ([`terminal_message`]) so that, while the rules exist, a packet for the
/// tunnel that its device routes no longer take (they vanish with a TUN deleted by a crash)
/// is refused instead of falling through to `main`. Destinations outside the prefixes (a
/// split tunnel) still fall through to `main`, as before. A foreign route where ours must go is an
/// error, found before anything changes.
pub(crate) fn plan_routes(
    observed: &[ObservedRoute],
    wanted: &[IpNet],
    oif: u32,
    table: u32,
    protocol: u8,
) -> Result<RoutePlan, RoutesError> {
    let mut plan = RoutePlan::default();
    let mut found = vec![false; wanted.len()];
    let mut terminal_found = vec![false; wanted.len()];
    for (i, r) in observed.iter().enumerate() {
        if r.table != table {
            continue;
        }
        if r.is_terminal(table, protocol) {
            match wanted.iter().position(|p| *p == r.prefix) {
                Some(j) if !terminal_found[j] => terminal_found[j] = true,
                _ => plan.delete.push(i),
            }
            continue;
        }
        let slot = wanted.iter().position(|p| *p == r.prefix);
        if r.protocol != protocol {
            // Somebody else's route: it stays; it only matters if it would collide with ours.
            if let Some(j) = slot {
                let ours_would_collide = r.metric == default_metric(&r.prefix)
                    && !(found[j]
                        || observed
                            .iter()
                            .any(|o| is_wanted(o, &r.prefix, oif, table, protocol)));
                if ours_would_collide {
                    return Err(RoutesError::ForeignRoute {
                        prefix: r.prefix,
                        table,
                        protocol: r.protocol,
                    });
                }
            }
            continue;
        }
        match slot {
            Some(j) if !found[j] && is_wanted(r, &r.prefix, oif, table, protocol) => {
                found[j] = true
            }
            _ => plan.delete.push(i),
        }
    }
    plan.add = wanted
        .iter()
        .zip(&found)
        .filter(|(_, f)| !**f)
        .map(|(p, _)| *p)
        .collect();
    plan.add_terminal = wanted
        .iter()
        .zip(&terminal_found)
        .filter(|(_, f)| !**f)
        .map(|(p, _)| *p)
        .collect();
    Ok(plan)
}

/// The netlink message adding the last-resort route of `prefix` in `table`:
/// `unreachable PREFIX metric 4294967295 proto TAG` (`unreachable default` for `0.0.0.0/0`
/// and `::/0`). It has no device, so deleting the tunnel's device (a crashed client's
/// non-persistent TUN) does not delete it.
pub(crate) fn terminal_message(prefix: &IpNet, table: u32, protocol: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: Family::of(prefix.addr()).af(),
        destination_prefix_length: prefix.prefix_len(),
        table: u8::try_from(table).unwrap_or(0),
        protocol: RouteProtocol::from(protocol),
        scope: RouteScope::Universe,
        kind: RouteType::Unreachable,
        ..m.header
    };
    if prefix.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                prefix.addr(),
            )));
    }
    m.attributes.push(RouteAttribute::Table(table));
    m.attributes.push(RouteAttribute::Priority(TERMINAL_METRIC));
    m
}

fn is_wanted(r: &ObservedRoute, prefix: &IpNet, oif: u32, table: u32, protocol: u8) -> bool {
    r.prefix == *prefix
        && r.table == table
        && r.protocol == protocol
        && r.oif == Some(oif)
        && r.plain
        && r.metric == default_metric(prefix)
}

/// The netlink message adding `prefix` on device `oif` in `table`, tagged with `protocol`.
pub(crate) fn route_message(prefix: &IpNet, oif: u32, table: u32, protocol: u8) -> RouteMessage {
    let family = if prefix.addr().is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: family.af(),
        destination_prefix_length: prefix.prefix_len(),
        table: u8::try_from(table).unwrap_or(0),
        protocol: RouteProtocol::from(protocol),
        // A route through a device with no gateway: on-link, as `ip route add .. dev ..`.
        scope: match family {
            Family::V4 => RouteScope::Link,
            Family::V6 => RouteScope::Universe,
        },
        kind: RouteType::Unicast,
        ..m.header
    };
    if prefix.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                prefix.addr(),
            )));
    }
    m.attributes.push(RouteAttribute::Table(table));
    m.attributes.push(RouteAttribute::Oif(oif));
    m
}

/// Checks the prefixes and returns them without duplicates, IPv4 first.
pub(crate) fn validate_prefixes(prefixes: &[IpNet]) -> Result<Vec<IpNet>, RoutesError> {
    if prefixes.is_empty() {
        return Err(RoutesError::NoPrefixes);
    }
    let mut out: Vec<IpNet> = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        if p.trunc() != *p {
            return Err(RoutesError::HostBitsSet { prefix: *p });
        }
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out.sort_by_key(|p| (p.addr().is_ipv6(), p.prefix_len()));
    Ok(out)
}

/// The families present in `prefixes`.
pub(crate) fn families(prefixes: &[IpNet]) -> Vec<Family> {
    let mut out = Vec::new();
    if prefixes.iter().any(|p| p.addr().is_ipv4()) {
        out.push(Family::V4);
    }
    if prefixes.iter().any(|p| p.addr().is_ipv6()) {
        out.push(Family::V6);
    }
    out
}

impl Family {
    pub(crate) fn from_af(af: AddressFamily) -> Option<Self> {
        match af {
            AddressFamily::Inet => Some(Family::V4),
            AddressFamily::Inet6 => Some(Family::V6),
            _ => None,
        }
    }

    pub(crate) fn af(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: u8 = 76;

    fn config() -> GuardConfig {
        GuardConfig::new(0x10, 0xf0, 1000, 500).unwrap()
    }

    fn wanted() -> Vec<WantedRule> {
        WantedRule::for_families(&config(), &[Family::V4, Family::V6])
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn wanted_rules_have_the_documented_selectors() {
        let w = wanted();
        assert_eq!(w.len(), 4);
        assert_eq!(
            w[0].observed(TAG).selector(),
            "from all lookup main suppress_prefixlength 0"
        );
        assert_eq!(
            w[1].observed(TAG).selector(),
            "not from all fwmark 0x10/0xf0 lookup 1000"
        );
        assert_eq!((w[0].priority(), w[1].priority()), (500, 501));
    }

    #[test]
    fn rule_messages_round_trip_through_the_observed_form() {
        for w in wanted() {
            let m = w.message(TAG);
            assert_eq!(ObservedRule::from_message(&m), Some(w.observed(TAG)));
        }
    }

    #[test]
    fn installed_rules_are_kept_and_missing_ones_added() {
        let w = wanted();
        let observed = vec![w[0].observed(TAG), w[3].observed(TAG)];
        let plan = plan_rules(&observed, &w, &config(), TAG);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.add, vec![w[1], w[2]]);
    }

    #[test]
    fn stale_and_duplicate_rules_of_ours_are_deleted_foreign_ones_never() {
        let w = WantedRule::for_families(&config(), &[Family::V4]);
        let mut stale_mark = w[1].observed(TAG);
        stale_mark.fwmark = Some((0x20, 0xf0)); // a killed run with another mark, our table
        let mut foreign_same_priority = w[0].observed(TAG);
        foreign_same_priority.protocol = 4; // `ip rule add ... priority 500` by someone else
        let mut foreign_same_mark = w[1].observed(TAG);
        foreign_same_mark.protocol = 0;
        let mut other_config = w[1].observed(TAG);
        other_config.priority = 9000;
        other_config.table = 2000;
        let mut v6_leftover = w[0].observed(TAG);
        v6_leftover.family = Family::V6; // no IPv6 prefixes wanted now
        let observed = vec![
            w[0].observed(TAG),
            stale_mark,
            foreign_same_priority,
            foreign_same_mark,
            w[0].observed(TAG), // duplicate of ours
            other_config,
            v6_leftover,
        ];
        let plan = plan_rules(&observed, &w, &config(), TAG);
        assert_eq!(plan.delete, vec![1, 4, 6]);
        assert_eq!(plan.add, vec![w[1]]);
    }

    #[test]
    fn another_configuration_at_our_priorities_is_found_and_never_counted_as_ours() {
        let w = WantedRule::for_families(&config(), &[Family::V4, Family::V6]);
        // Another configuration (table 77) at the same priorities, IPv4 only.
        let mut theirs = w[1].observed(TAG);
        theirs.table = 77;
        let rules = vec![w[0].observed(TAG), theirs.clone(), w[2].observed(TAG)];
        assert_eq!(priority_holder(&rules, &config(), TAG), Some(&theirs));
        // Their fwmark rule is not ours, nor the IPv4 suppress rule they share; the IPv6
        // suppress rule (no other configuration there) is.
        assert_eq!(our_rules_among(&rules, &config(), TAG), vec![2]);
        // Without them, both suppress rules are ours, and nothing holds our priorities.
        let alone = vec![w[0].observed(TAG), w[2].observed(TAG)];
        assert_eq!(priority_holder(&alone, &config(), TAG), None);
        assert_eq!(our_rules_among(&alone, &config(), TAG), vec![0, 1]);
        // Another configuration elsewhere, and a foreign rule at our priority: no holder.
        let mut elsewhere = theirs.clone();
        elsewhere.priority = 9001;
        let mut foreign = theirs;
        foreign.protocol = 4;
        assert_eq!(priority_holder(&[elsewhere, foreign], &config(), TAG), None);
    }

    /// The kernel's three default rules of a family.
    fn kernel_rules(family: Family) -> Vec<ObservedRule> {
        [(0, 255), (32_766, 254), (32_767, 253)]
            .into_iter()
            .map(|(priority, table)| ObservedRule {
                family,
                priority,
                table,
                protocol: 2,
                invert: false,
                fwmark: None,
                suppress_prefixlen: None,
                other: false,
            })
            .collect()
    }

    #[test]
    fn rules_added_after_the_kernels_keep_the_capture() {
        let w = WantedRule::for_families(&config(), &[Family::V4]);
        let order = order_after_adding(&kernel_rules(Family::V4), &w, TAG);
        let prios: Vec<u32> = order.iter().map(|r| r.priority).collect();
        assert_eq!(prios, [0, 500, 501, 32_766, 32_767]);
        assert_eq!(order_problem(&order, &w, TAG), None);
    }

    #[test]
    fn a_second_rule_at_the_priority_of_lookup_main_is_found() {
        // What `--priority 32765` did (GuardConfig now refuses it): the second rule at 32766
        // lands after the kernel's `lookup main`.
        let w = [
            WantedRule::SuppressMain {
                family: Family::V4,
                priority: 32_765,
            },
            WantedRule::NotFwmark {
                family: Family::V4,
                priority: 32_766,
                mark: 0x10,
                mask: 0xf0,
                table: 1000,
            },
        ];
        let order = order_after_adding(&kernel_rules(Family::V4), &w, TAG);
        assert_eq!((order[3].priority, order[3].invert), (32_766, true));
        let p = order_problem(&order, &w, TAG).expect("a leak");
        assert!(
            p.contains("`32766: from all lookup main` comes before") && p.contains("below 32765"),
            "{p}"
        );
    }

    #[test]
    fn a_moved_main_rule_missing_or_swapped_rules_are_problems() {
        let w = WantedRule::for_families(&config(), &[Family::V6]);
        let mut rules = kernel_rules(Family::V6);
        // VRF-style set-ups move `lookup main` up front.
        rules[1].priority = 100;
        rules.sort_by_key(|r| r.priority);
        let order = order_after_adding(&rules, &w, TAG);
        let p = order_problem(&order, &w, TAG).unwrap();
        assert!(
            p.contains("100: from all lookup main") && p.contains("below 99"),
            "{p}"
        );
        let only_fwmark = vec![w[1].observed(TAG)];
        assert!(order_problem(&only_fwmark, &w, TAG)
            .unwrap()
            .contains("suppress_prefixlength 0` is missing"));
        let swapped = vec![w[1].observed(TAG), w[0].observed(TAG)];
        assert!(order_problem(&swapped, &w, TAG)
            .unwrap()
            .contains("comes after"));
        assert!(order_problem(&[], &w, TAG).unwrap().contains("is missing"));
        // Rules of the other family do not count.
        let v4 = WantedRule::for_families(&config(), &[Family::V4]);
        let order = order_after_adding(&kernel_rules(Family::V4), &v4, TAG);
        assert!(order_problem(&order, &w, TAG)
            .unwrap()
            .contains("is missing"));
    }

    #[test]
    fn routes_are_planned_by_tag_table_and_device() {
        let r = |p: &str, table, protocol, oif| ObservedRoute {
            prefix: net(p),
            table,
            protocol,
            oif: Some(oif),
            metric: default_metric(&net(p)),
            plain: true,
            unreachable: false,
        };
        let observed = vec![
            r("0.0.0.0/0", 1000, TAG, 7),      // wanted, kept
            r("203.0.113.0/24", 1000, TAG, 7), // stale, ours
            r("198.51.100.0/24", 1000, 4, 7),  // foreign, kept
            r("::/0", 1000, TAG, 9),           // ours on the wrong device
            r("192.0.2.0/24", 254, TAG, 7),    // another table: not looked at
        ];
        let plan = plan_routes(&observed, &[net("0.0.0.0/0"), net("::/0")], 7, 1000, TAG).unwrap();
        assert_eq!(plan.delete, vec![1, 3]);
        assert_eq!(plan.add, vec![net("::/0")]);
        assert_eq!(plan.add_terminal, vec![net("0.0.0.0/0"), net("::/0")]);
    }

    #[test]
    fn each_prefix_gets_one_terminal_route_and_stale_ones_go() {
        let terminal =
            |p: &str| ObservedRoute::from_message(&terminal_message(&net(p), 1000, TAG)).unwrap();
        let v4 = terminal("0.0.0.0/0");
        assert!(v4.is_terminal(1000, TAG) && !v4.plain);
        assert_eq!((v4.prefix, v4.metric), (net("0.0.0.0/0"), u32::MAX));
        let split = terminal("198.51.100.0/24");
        assert_eq!(split.prefix, net("198.51.100.0/24"));
        let mut foreign = terminal("198.51.100.0/24");
        foreign.protocol = 4; // `ip route add unreachable ... metric 4294967295` by hand
        let observed = vec![
            split.clone(),
            split.clone(),    // a duplicate of ours
            terminal("::/0"), // no longer wanted
            foreign,          // never touched
        ];
        let plan = plan_routes(&observed, &[net("198.51.100.0/24")], 7, 1000, TAG).unwrap();
        assert_eq!(plan.delete, vec![1, 2]);
        assert_eq!(plan.add, vec![net("198.51.100.0/24")]);
        assert!(plan.add_terminal.is_empty());
        let plan = plan_routes(&[], &[net("::/0"), net("0.0.0.0/0")], 7, 1000, TAG).unwrap();
        assert_eq!(plan.add_terminal, vec![net("::/0"), net("0.0.0.0/0")]);
    }

    #[test]
    fn a_foreign_route_in_our_place_is_an_error() {
        let observed = vec![ObservedRoute {
            prefix: net("0.0.0.0/0"),
            table: 1000,
            protocol: 4,
            oif: Some(3),
            metric: 0,
            plain: true,
            unreachable: false,
        }];
        let err = plan_routes(&observed, &[net("0.0.0.0/0")], 7, 1000, TAG).unwrap_err();
        assert!(matches!(
            err,
            RoutesError::ForeignRoute {
                table: 1000,
                protocol: 4,
                ..
            }
        ));
    }

    #[test]
    fn route_messages_round_trip_through_the_observed_form() {
        for p in ["0.0.0.0/0", "198.51.100.0/24", "::/0", "2001:db8::/32"] {
            let m = route_message(&net(p), 7, 1000, TAG);
            let o = ObservedRoute::from_message(&m).unwrap();
            assert_eq!(
                (o.prefix, o.table, o.protocol, o.oif, o.plain),
                (net(p), 1000, TAG, Some(7), true)
            );
        }
    }

    #[test]
    fn prefixes_are_checked_and_deduplicated() {
        assert!(matches!(
            validate_prefixes(&[]),
            Err(RoutesError::NoPrefixes)
        ));
        assert!(matches!(
            validate_prefixes(&[net("192.0.2.1/24")]),
            Err(RoutesError::HostBitsSet { .. })
        ));
        let v = validate_prefixes(&[net("::/0"), net("0.0.0.0/0"), net("::/0")]).unwrap();
        assert_eq!(v, vec![net("0.0.0.0/0"), net("::/0")]);
        assert_eq!(families(&v), vec![Family::V4, Family::V6]);
    }
}
