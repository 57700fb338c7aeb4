//! Checking loopguard's own work: where the kernel sends a marked and an unmarked packet,
//! judged from plain data. The lookups themselves are `RTM_GETROUTE` (see `route_get`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::plan::ObservedRule;
use super::Family;

/// How bad a [`Finding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; nothing is wrong.
    Info,
    /// Works, but perhaps not as intended (traffic leaves by another program's table).
    Warning,
    /// Guarded sockets loop or unguarded traffic leaks.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One thing found about the policy routing, with a stable code for scripts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// A stable code, such as `marked_enters_tunnel`.
    pub code: &'static str,
    /// What was found, naming the rule and table.
    pub message: String,
    /// The priority of the rule concerned, if one is.
    pub rule_priority: Option<u32>,
    /// The routing table concerned, if one is.
    pub table: Option<u32>,
}

/// Where the kernel sends one packet: the device and table of the route, or why none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathEnd {
    /// The output device's name.
    pub interface: Option<String>,
    /// The output device's index.
    pub interface_index: Option<u32>,
    /// The table the route came from.
    pub table: Option<u32>,
    /// Why there is no route (for example `unreachable route`).
    pub error: Option<String>,
}

/// The paths of a marked and an unmarked packet to one destination of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathCheck {
    /// The family.
    pub family: Family,
    /// The destination looked up (inside the tunnel's prefixes).
    pub destination: IpAddr,
    /// The mark looked up for the marked packet.
    pub mark: u32,
    /// A packet carrying the guard's mark.
    pub marked: PathEnd,
    /// A packet without a mark.
    pub unmarked: PathEnd,
}

/// The address to look up for a family: inside the first of `prefixes` of that family,
/// `203.0.113.1` / `2001:db8::1` (documentation addresses) when the prefix holds them,
/// else the prefix's first address after its network address.
pub(crate) fn probe_destination(prefixes: &[IpNet], family: Family) -> Option<IpAddr> {
    let prefix = prefixes.iter().find(|p| Family::of(p.addr()) == family)?;
    let doc: IpAddr = match family {
        Family::V4 => Ipv4Addr::new(203, 0, 113, 1).into(),
        Family::V6 => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
    };
    if prefix.contains(&doc) {
        return Some(doc);
    }
    Some(match prefix {
        IpNet::V4(p) if p.prefix_len() < 32 => {
            Ipv4Addr::from(u32::from(p.network()).wrapping_add(1)).into()
        }
        IpNet::V6(p) if p.prefix_len() < 128 => {
            Ipv6Addr::from(u128::from(p.network()).wrapping_add(1)).into()
        }
        p => p.addr(),
    })
}

/// Whether `rule` can match a packet carrying `mark` (0: unmarked). Rules with other
/// selectors (source, interface, ...) may match; they count as matching.
pub(crate) fn rule_matches_mark(rule: &ObservedRule, mark: u32) -> bool {
    match rule.fwmark {
        Some((m, k)) => ((mark & k) == m) != rule.invert,
        None => !rule.invert,
    }
}

/// The first rule (of `rules`, in the kernel's order) a packet with `mark` can match that
/// looks up `table`: the rule that sent it there.
pub(crate) fn rule_to_table(
    rules: &[ObservedRule],
    family: Family,
    mark: u32,
    table: u32,
) -> Option<&ObservedRule> {
    rules
        .iter()
        .filter(|r| r.family == family)
        .find(|r| r.table == table && rule_matches_mark(r, mark))
}

/// The main table's number.
const MAIN: u32 = 254;

/// Judges one [`PathCheck`] for the tunnel device `tunnel_index`: a marked packet entering
/// the tunnel is an error (`marked_enters_tunnel`); one leaving by another table than `main`
/// a warning (`captured_by_foreign_rule`), as is an unmarked packet that does not enter the
/// tunnel (`unmarked_misses_tunnel`) or a marked one with no route (`marked_unreachable`).
pub(crate) fn judge(
    check: &PathCheck,
    tunnel: &str,
    tunnel_index: u32,
    our_table: u32,
    rules: &[ObservedRule],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let family = check.family;
    let dst = check.destination;
    let rule_text = |table: u32, mark: u32| {
        rule_to_table(rules, family, mark, table).map(|r| {
            (
                Some(r.priority),
                format!("rule `{}: {}`", r.priority, r.selector()),
            )
        })
    };
    let m = &check.marked;
    if m.interface_index == Some(tunnel_index) {
        let (priority, rule) = m
            .table
            .and_then(|t| rule_text(t, check.mark))
            .unwrap_or((None, "an unknown rule".into()));
        out.push(Finding {
            severity: Severity::Error,
            code: "marked_enters_tunnel",
            message: format!(
                "{family}: a packet to {dst} with mark {:#x} enters the tunnel {tunnel} \
                 (table {}, by {rule}): guarded sockets would loop",
                check.mark,
                m.table.map_or("?".into(), |t| t.to_string()),
            ),
            rule_priority: priority,
            table: m.table,
        });
    } else if let Some(table) = m.table.filter(|t| *t != MAIN && *t != our_table) {
        let (priority, rule) = rule_text(table, check.mark).unwrap_or((None, "a rule".into()));
        out.push(Finding {
            severity: Severity::Warning,
            code: "captured_by_foreign_rule",
            message: format!(
                "{family}: a packet to {dst} with mark {:#x} is sent to table {table} by {rule} \
                 and leaves by {} instead of the main table's route",
                check.mark,
                m.interface.as_deref().unwrap_or("?"),
            ),
            rule_priority: priority,
            table: Some(table),
        });
    } else if let Some(e) = &m.error {
        out.push(Finding {
            severity: Severity::Warning,
            code: "marked_unreachable",
            message: format!(
                "{family}: a packet to {dst} with mark {:#x} has no route ({e}): guarded \
                 sockets cannot reach it",
                check.mark
            ),
            rule_priority: None,
            table: None,
        });
    }
    let u = &check.unmarked;
    if u.interface_index != Some(tunnel_index) {
        let (priority, rule) = u
            .table
            .and_then(|t| rule_text(t, 0))
            .unwrap_or((None, "a rule".into()));
        let (severity, code, what) = match (&u.error, u.table) {
            (Some(e), _) => (
                Severity::Info,
                "unmarked_refused",
                format!("is refused ({e})"),
            ),
            (None, Some(t)) if t != our_table => (
                Severity::Warning,
                "unmarked_misses_tunnel",
                format!(
                    "is sent to table {t} by {rule} and leaves by {} instead of the tunnel",
                    u.interface.as_deref().unwrap_or("?")
                ),
            ),
            _ => (
                Severity::Warning,
                "unmarked_misses_tunnel",
                format!(
                    "leaves by {} instead of the tunnel",
                    u.interface.as_deref().unwrap_or("?")
                ),
            ),
        };
        out.push(Finding {
            severity,
            code,
            message: format!("{family}: an unmarked packet to {dst} {what} {tunnel}"),
            rule_priority: if u.error.is_none() { priority } else { None },
            table: u.table,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn rule(priority: u32, fwmark: Option<(u32, u32)>, invert: bool, table: u32) -> ObservedRule {
        ObservedRule {
            family: Family::V4,
            priority,
            table,
            protocol: 0,
            invert,
            fwmark,
            suppress_prefixlen: None,
            other: false,
        }
    }

    fn end(interface: &str, index: u32, table: u32) -> PathEnd {
        PathEnd {
            interface: Some(interface.into()),
            interface_index: Some(index),
            table: Some(table),
            error: None,
        }
    }

    fn check(marked: PathEnd, unmarked: PathEnd) -> PathCheck {
        PathCheck {
            family: Family::V4,
            destination: "203.0.113.1".parse().unwrap(),
            mark: 0xca6c,
            marked,
            unmarked,
        }
    }

    #[test]
    fn destinations_are_inside_the_prefixes() {
        let p = [net("0.0.0.0/0"), net("2001:db8:5::/48")];
        assert_eq!(
            probe_destination(&p, Family::V4),
            Some("203.0.113.1".parse().unwrap())
        );
        assert_eq!(
            probe_destination(&p, Family::V6),
            Some("2001:db8:5::1".parse().unwrap())
        );
        assert_eq!(
            probe_destination(&[net("198.51.100.7/32")], Family::V4),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(probe_destination(&[net("10.0.0.0/8")], Family::V6), None);
    }

    #[test]
    fn marks_match_rules_as_the_kernel_compares_them() {
        assert!(rule_matches_mark(
            &rule(1, Some((0xca6c, u32::MAX)), false, 1),
            0xca6c
        ));
        assert!(!rule_matches_mark(
            &rule(1, Some((0xca6c, u32::MAX)), true, 1),
            0xca6c
        ));
        assert!(rule_matches_mark(
            &rule(1, Some((0xca6c, u32::MAX)), true, 1),
            0
        ));
        // Tailscale's `fwmark 0x80000/0xff0000`.
        assert!(rule_matches_mark(
            &rule(1, Some((0x80000, 0xff0000)), false, 1),
            0x8_3047
        ));
        assert!(rule_matches_mark(&rule(1, None, false, 1), 0x3047));
        assert!(!rule_matches_mark(&rule(1, None, true, 1), 0x3047));
    }

    #[test]
    fn a_marked_packet_in_the_tunnel_is_an_error_naming_the_rule() {
        // NetBird's `110: not from all fwmark 0x1bd00 lookup 7120` catches our mark.
        let rules = [
            rule(110, Some((0x1bd00, u32::MAX)), true, 7120),
            rule(32_001, Some((0xca6c, u32::MAX)), true, 19527),
        ];
        let f = judge(
            &check(end("lg-tun", 5, 7120), end("lg-tun", 5, 19527)),
            "lg-tun",
            5,
            19527,
            &rules,
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].severity, f[0].code, f[0].rule_priority, f[0].table),
            (
                Severity::Error,
                "marked_enters_tunnel",
                Some(110),
                Some(7120)
            )
        );
        assert!(f[0]
            .message
            .contains("110: not from all fwmark 0x1bd00/0xffffffff lookup 7120"));
    }

    #[test]
    fn another_tables_device_is_a_warning_and_the_main_table_is_fine() {
        // Tailscale's `5270: from all lookup 52` with an exit node.
        let rules = [rule(5270, None, false, 52)];
        let f = judge(
            &check(end("lg-ts0", 9, 52), end("lg-ts0", 9, 52)),
            "lg-tun",
            5,
            19527,
            &rules,
        );
        let codes: Vec<_> = f
            .iter()
            .map(|f| (f.severity, f.code, f.rule_priority))
            .collect();
        assert_eq!(
            codes,
            [
                (Severity::Warning, "captured_by_foreign_rule", Some(5270)),
                (Severity::Warning, "unmarked_misses_tunnel", Some(5270)),
            ]
        );
        let ok = judge(
            &check(end("lg-up", 2, 254), end("lg-tun", 5, 19527)),
            "lg-tun",
            5,
            19527,
            &rules,
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn refused_and_unreachable_packets_are_reported_without_a_leak() {
        let gone = PathEnd {
            interface: None,
            interface_index: None,
            table: None,
            error: Some("unreachable route".into()),
        };
        let f = judge(&check(gone.clone(), gone), "lg-tun", 5, 19527, &[]);
        let codes: Vec<_> = f.iter().map(|f| (f.severity, f.code)).collect();
        assert_eq!(
            codes,
            [
                (Severity::Warning, "marked_unreachable"),
                (Severity::Info, "unmarked_refused")
            ]
        );
    }
}
