//! `doctor`: what the machine's policy routing means for guarded sockets, as findings. The
//! decisions are pure functions of the rules, routes and sysctls read; the reading is thin.

use super::check::{self, Finding, PathCheck, Severity};
use super::plan::{self, ObservedRoute, ObservedRule, WantedRule};
use super::{Family, GuardConfig};

/// Another program whose policy rules doctor recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// wg-quick: `fwmark 0xca6c`, table 51820.
    WgQuick,
    /// Tailscale: rules 5210-5270, `fwmark 0x80000/0xff0000`, table 52.
    Tailscale,
    /// Mullvad: rules 5208/5209, mark `0x6d6f6c65`, table 1836018789.
    Mullvad,
    /// NetBird: rules 100/110, mark `0x1bd00`, table 7120.
    NetBird,
    /// Cilium: its marks sit under mask `0xf00` (tables 2004/2005).
    Cilium,
    /// Calico: its marks sit under mask `0xffff0000`.
    Calico,
    /// kube-proxy: ORs `0x4000` and `0x8000` into marks (from iptables, not policy rules).
    KubeProxy,
}

impl Owner {
    /// The name printed.
    pub fn name(self) -> &'static str {
        match self {
            Owner::WgQuick => "wg-quick",
            Owner::Tailscale => "Tailscale",
            Owner::Mullvad => "Mullvad",
            Owner::NetBird => "NetBird",
            Owner::Cilium => "Cilium",
            Owner::Calico => "Calico",
            Owner::KubeProxy => "kube-proxy",
        }
    }

    /// The mark bits this owner uses: `(bits, whole)`; `whole` when it compares one whole
    /// value (a collision is then the same value), else a bit range it sets or compares.
    fn mark_bits(self) -> (u32, bool) {
        match self {
            Owner::WgQuick => (0xca6c, true),
            Owner::Tailscale => (0xff_0000, false),
            Owner::Mullvad => (0x6d6f_6c65, true),
            Owner::NetBird => (0x1_bd00, true),
            Owner::Cilium => (0xf00, false),
            Owner::Calico => (0xffff_0000, false),
            Owner::KubeProxy => (0xc000, false),
        }
    }
}

/// Whose rule this is, by the numbers those programs install.
pub(crate) fn owner_of(rule: &ObservedRule) -> Option<Owner> {
    let mark = rule.fwmark;
    match (rule.priority, rule.table, mark) {
        (_, 51_820, _) | (_, _, Some((0xca6c, _))) => Some(Owner::WgQuick),
        (5208 | 5209, _, _) | (_, 1_836_018_789, _) | (_, _, Some((0x6d6f_6c65, _))) => {
            Some(Owner::Mullvad)
        }
        (5210..=5270, _, _) | (_, 52, _) | (_, _, Some((_, 0xff_0000))) => Some(Owner::Tailscale),
        (100 | 110, _, _) | (_, 7120, _) | (_, _, Some((0x1_bd00, _))) => Some(Owner::NetBird),
        (_, 2004 | 2005, _) | (_, _, Some((_, 0xf00))) => Some(Owner::Cilium),
        (_, _, Some((_, 0xffff_0000))) => Some(Owner::Calico),
        _ => None,
    }
}

/// Everything doctor looks at, as plain data.
#[derive(Clone, Debug, Default)]
pub(crate) struct Inputs {
    /// Every rule of both families, in the kernel's order.
    pub rules: Vec<ObservedRule>,
    /// Every route of both families, all tables.
    pub routes: Vec<ObservedRoute>,
    /// The highest IPv4 `rp_filter` in force on any interface (max of `all` and the
    /// interface's own), with that interface.
    pub rp_filter: Option<(u32, String)>,
    /// `net.ipv4.conf.all.src_valid_mark`.
    pub src_valid_mark: Option<u32>,
    /// Marked and unmarked paths, per family.
    pub paths: Vec<PathCheck>,
    /// The tunnel device (name, index), when given.
    pub tunnel: Option<(String, u32)>,
    /// Owners known to run though their rules cannot show it (kube-proxy).
    pub extra_owners: Vec<Owner>,
}

/// What doctor found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DoctorReport {
    /// The findings, errors first.
    pub findings: Vec<Finding>,
    /// Where marked and unmarked packets go, per family.
    pub paths: Vec<PathCheck>,
    /// The other programs whose rules were recognised.
    pub owners: Vec<Owner>,
}

impl DoctorReport {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

fn finding(
    severity: Severity,
    code: &'static str,
    message: String,
    rule_priority: Option<u32>,
    table: Option<u32>,
) -> Finding {
    Finding {
        severity,
        code,
        message,
        rule_priority,
        table,
    }
}

fn rule_text(r: &ObservedRule) -> String {
    format!("{} rule `{}: {}`", r.family, r.priority, r.selector())
}

/// The findings for `inputs` and loopguard's `config` (rules tagged `protocol`).
pub(crate) fn diagnose(inputs: &Inputs, config: &GuardConfig, protocol: u8) -> DoctorReport {
    let mut out = Vec::new();
    // loopguard's own rules may carry another program's mark (its bypass mark, on purpose).
    let foreign = |r: &&ObservedRule| r.protocol != protocol;
    let mut owners: Vec<Owner> = inputs
        .rules
        .iter()
        .filter(foreign)
        .filter_map(owner_of)
        .collect();
    owners.extend(&inputs.extra_owners);
    owners.sort();
    owners.dedup();
    for o in &owners {
        let rules: Vec<String> = inputs
            .rules
            .iter()
            .filter(foreign)
            .filter(|r| owner_of(r) == Some(*o))
            .map(|r| format!("{} {}: {}", r.family, r.priority, r.selector()))
            .collect();
        out.push(finding(
            Severity::Info,
            "other_owner",
            if rules.is_empty() {
                format!("{} runs here", o.name())
            } else {
                format!("{} rules: {}", o.name(), rules.join("; "))
            },
            None,
            None,
        ));
    }

    // Marks whose bits collide with a present owner's.
    for o in &owners {
        let (bits, whole) = o.mark_bits();
        let collides = if whole {
            config.mark() & config.mask() == bits & config.mask()
        } else {
            config.mask() & bits != 0
        };
        if collides {
            let why = if whole {
                format!(
                    "{} uses mark {bits:#x}, which rule `fwmark {:#x}/{:#x}` cannot tell apart",
                    o.name(),
                    config.mark(),
                    config.mask()
                )
            } else {
                format!(
                    "{} sets or compares mark bits {bits:#x}, which overlap loopguard's mask \
                     {:#x}: a mark it sets on a packet changes whether the packet matches \
                     `fwmark {:#x}/{:#x}`",
                    o.name(),
                    config.mask(),
                    config.mark(),
                    config.mask()
                )
            };
            out.push(finding(
                Severity::Warning,
                "mark_collision",
                why,
                None,
                None,
            ));
        }
    }

    // The `local` rule moved after other rules (VRF / l3mdev set-ups).
    for family in [Family::V4, Family::V6] {
        let rules: Vec<&ObservedRule> =
            inputs.rules.iter().filter(|r| r.family == family).collect();
        if let Some(at) = rules
            .iter()
            .position(|r| r.table == 255 && !r.invert && r.fwmark.is_none())
        {
            if at > 0 {
                let first = rules[0];
                out.push(finding(
                    Severity::Warning,
                    "local_rule_moved",
                    format!(
                        "{family}: `{}: {}` comes after {}: traffic to this host's own \
                         addresses may be routed by that rule first",
                        rules[at].priority,
                        rules[at].selector(),
                        rule_text(first)
                    ),
                    Some(rules[at].priority),
                    Some(255),
                ));
            }
        }
    }

    // loopguard's own rules: order, and routes behind them.
    let ours = |r: &ObservedRule| plan::is_our_rule(r, config, protocol);
    for family in [Family::V4, Family::V6] {
        let w = WantedRule::for_families(config, &[family]);
        let exact: Vec<ObservedRule> = w.iter().map(|w| w.observed(protocol)).collect();
        // One of this configuration's own rules is there (the other may have been deleted).
        let present = inputs.rules.iter().any(|r| exact.contains(r));
        if !inputs.rules.iter().any(|r| *r == exact[1]) {
            // A tagged rule at our priorities or table that differs: another configuration.
            if let Some(other) = inputs
                .rules
                .iter()
                .find(|r| r.family == family && ours(r) && !exact.contains(r))
            {
                out.push(finding(
                    Severity::Warning,
                    "other_configuration",
                    format!(
                        "{family}: loopguard's {} is not one of this configuration's ({config}): \
                         give doctor the --mark, --mask, --table and --priority routes apply used",
                        rule_text(other)
                    ),
                    Some(other.priority),
                    Some(other.table),
                ));
                continue;
            }
        }
        let our_routes = inputs.routes.iter().any(|r| {
            Family::of(r.prefix.addr()) == family
                && r.table == config.table()
                && r.protocol == protocol
        });
        if present {
            if let Some(p) = plan::order_problem(&inputs.rules, &w, protocol) {
                out.push(finding(
                    Severity::Error,
                    "priority_order_broken",
                    format!("{family}: {p}"),
                    Some(config.priority() + 1),
                    Some(config.table()),
                ));
            }
            if !our_routes {
                out.push(finding(
                    Severity::Error,
                    "rules_without_routes",
                    format!(
                        "{family}: loopguard's rules send unmarked traffic to table {} which \
                         holds no route of loopguard's: it falls through to `main`",
                        config.table()
                    ),
                    Some(config.priority() + 1),
                    Some(config.table()),
                ));
            }
        } else if our_routes {
            out.push(finding(
                Severity::Warning,
                "routes_without_rules",
                format!(
                    "{family}: table {} holds loopguard's routes but no loopguard rule leads \
                     there: nothing is captured",
                    config.table()
                ),
                None,
                Some(config.table()),
            ));
        }
    }

    // Strict reverse-path filtering without src_valid_mark drops replies to marked sockets.
    if let (Some((1, iface)), Some(0)) = (&inputs.rp_filter, inputs.src_valid_mark) {
        out.push(finding(
            Severity::Warning,
            "strict_rp_filter_without_src_valid_mark",
            format!(
                "strict rp_filter on {iface} with net.ipv4.conf.all.src_valid_mark=0: replies \
                 to marked sockets may be dropped (loopguard routes apply sets it to 1)"
            ),
            None,
            None,
        ));
    }

    // Where packets really go.
    for p in &inputs.paths {
        let found = match &inputs.tunnel {
            Some((name, index)) => check::judge(p, name, *index, config.table(), &inputs.rules),
            // Without a tunnel only the marked path can be judged.
            None => check::judge(p, "-", u32::MAX, config.table(), &inputs.rules)
                .into_iter()
                .filter(|f| f.code != "unmarked_misses_tunnel" && f.code != "unmarked_refused")
                .collect(),
        };
        out.extend(found);
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    DoctorReport {
        findings: out,
        paths: inputs.paths.clone(),
        owners,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: u8 = 76;

    fn rule(
        family: Family,
        priority: u32,
        table: u32,
        fwmark: Option<(u32, u32)>,
        invert: bool,
    ) -> ObservedRule {
        ObservedRule {
            family,
            priority,
            table,
            protocol: 3,
            invert,
            fwmark,
            suppress_prefixlen: None,
            other: false,
        }
    }

    fn kernel(family: Family) -> Vec<ObservedRule> {
        vec![
            rule(family, 0, 255, None, false),
            rule(family, 32_766, 254, None, false),
            rule(family, 32_767, 253, None, false),
        ]
    }

    fn with_ours(mut rules: Vec<ObservedRule>, config: &GuardConfig) -> Vec<ObservedRule> {
        let families: Vec<Family> = [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| rules.iter().any(|r| r.family == *f))
            .collect();
        let w = WantedRule::for_families(config, &families);
        rules = plan::order_after_adding(&rules, &w, TAG);
        rules
    }

    fn our_routes(config: &GuardConfig) -> Vec<ObservedRoute> {
        ["0.0.0.0/0", "::/0"]
            .iter()
            .map(|p| ObservedRoute {
                prefix: p.parse().unwrap(),
                table: config.table(),
                protocol: TAG,
                oif: Some(5),
                metric: 0,
                plain: true,
                unreachable: false,
            })
            .collect()
    }

    fn codes(r: &DoctorReport) -> Vec<&'static str> {
        r.findings.iter().map(|f| f.code).collect()
    }

    fn sorted(mut v: Vec<Vec<ObservedRule>>) -> Vec<ObservedRule> {
        let mut all: Vec<ObservedRule> = v.drain(..).flatten().collect();
        all.sort_by_key(|r| (r.family, r.priority));
        all
    }

    #[test]
    fn a_clean_machine_has_no_findings() {
        let c = GuardConfig::default();
        let inputs = Inputs {
            rules: with_ours(sorted(vec![kernel(Family::V4), kernel(Family::V6)]), &c),
            routes: our_routes(&c),
            rp_filter: Some((2, "eth0".into())),
            src_valid_mark: Some(0),
            ..Default::default()
        };
        let r = diagnose(&inputs, &c, TAG);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert!(!r.has_errors());
    }

    #[test]
    fn each_program_is_recognised_by_its_rules() {
        let v4 = Family::V4;
        let cases = [
            (
                rule(v4, 32_765, 51_820, Some((0xca6c, u32::MAX)), true),
                Owner::WgQuick,
            ),
            (
                rule(v4, 5210, 254, Some((0x80000, 0xff0000)), false),
                Owner::Tailscale,
            ),
            (rule(v4, 5270, 52, None, false), Owner::Tailscale),
            (
                rule(v4, 5209, 1_836_018_789, Some((0x6d6f_6c65, u32::MAX)), true),
                Owner::Mullvad,
            ),
            (rule(v4, 5208, 254, None, false), Owner::Mullvad),
            (
                rule(v4, 110, 7120, Some((0x1bd00, u32::MAX)), true),
                Owner::NetBird,
            ),
            (
                rule(v4, 9, 2004, Some((0xa00, 0xf00)), false),
                Owner::Cilium,
            ),
            (
                rule(v4, 3000, 100, Some((0x10000, 0xffff0000)), false),
                Owner::Calico,
            ),
        ];
        for (r, owner) in cases {
            assert_eq!(owner_of(&r), Some(owner), "{r:?}");
        }
        assert_eq!(owner_of(&rule(v4, 1000, 200, None, false)), None);
        assert_eq!(owner_of(&kernel(v4)[1]), None);
    }

    #[test]
    fn marks_collide_only_with_owners_present_and_overlapping() {
        let wg = rule(Family::V4, 32_765, 51_820, Some((0xca6c, u32::MAX)), true);
        let ts = rule(Family::V4, 5210, 254, Some((0x80000, 0xff0000)), false);
        let inputs = Inputs {
            rules: vec![wg, ts],
            ..Default::default()
        };
        // The default mark and mask avoid both.
        let r = diagnose(&inputs, &GuardConfig::default(), TAG);
        assert!(!codes(&r).contains(&"mark_collision"), "{:?}", r.findings);
        // wg-quick's own mark, compared whole, collides with wg-quick and with Tailscale's bits.
        let r = diagnose(&inputs, &GuardConfig::with_mark(0xca6c).unwrap(), TAG);
        let collisions: Vec<&str> = r
            .findings
            .iter()
            .filter(|f| f.code == "mark_collision")
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(collisions.len(), 2, "{collisions:?}");
        assert!(collisions
            .iter()
            .any(|m| m.contains("wg-quick uses mark 0xca6c")));
        assert!(collisions
            .iter()
            .any(|m| m.contains("Tailscale sets or compares")));
        // kube-proxy is only known when told.
        let r = diagnose(
            &Inputs {
                extra_owners: vec![Owner::KubeProxy],
                ..Default::default()
            },
            &GuardConfig::with_mark(0x1).unwrap(),
            TAG,
        );
        assert!(codes(&r).contains(&"mark_collision"));
    }

    #[test]
    fn broken_order_missing_routes_and_a_moved_local_rule_are_found() {
        let c = GuardConfig::default();
        let mut rules = with_ours(kernel(Family::V4), &c);
        // `lookup main` moved up front, `local` after it.
        rules.insert(0, rule(Family::V4, 0, 254, None, false));
        let inputs = Inputs {
            rules,
            routes: Vec::new(),
            ..Default::default()
        };
        let r = diagnose(&inputs, &c, TAG);
        let c2 = codes(&r);
        assert!(c2.contains(&"priority_order_broken"), "{c2:?}");
        assert!(c2.contains(&"rules_without_routes"), "{c2:?}");
        assert!(c2.contains(&"local_rule_moved"), "{c2:?}");
        assert!(r.has_errors());
        assert_eq!(r.findings[0].severity, Severity::Error, "errors first");
        // The reverse: routes, no rules.
        let r = diagnose(
            &Inputs {
                rules: kernel(Family::V4),
                routes: our_routes(&c),
                ..Default::default()
            },
            &c,
            TAG,
        );
        assert_eq!(codes(&r), ["routes_without_rules", "routes_without_rules"]);
    }

    #[test]
    fn rules_of_another_configuration_are_named_not_called_broken() {
        let installed = GuardConfig::default();
        let asked = GuardConfig::with_mark(0x80000).unwrap();
        let inputs = Inputs {
            rules: with_ours(
                sorted(vec![kernel(Family::V4), kernel(Family::V6)]),
                &installed,
            ),
            routes: our_routes(&installed),
            ..Default::default()
        };
        let r = diagnose(&inputs, &asked, TAG);
        assert_eq!(
            codes(&r),
            ["other_configuration", "other_configuration"],
            "{:?}",
            r.findings
        );
        assert!(diagnose(&inputs, &installed, TAG).findings.is_empty());
    }

    #[test]
    fn strict_rp_filter_needs_src_valid_mark() {
        let c = GuardConfig::default();
        let strict = |valid| Inputs {
            rp_filter: Some((1, "lg-up0".into())),
            src_valid_mark: Some(valid),
            ..Default::default()
        };
        let r = diagnose(&strict(0), &c, TAG);
        assert_eq!(codes(&r), ["strict_rp_filter_without_src_valid_mark"]);
        assert!(r.findings[0].message.contains("lg-up0"));
        assert!(diagnose(&strict(1), &c, TAG).findings.is_empty());
    }
}

/// `(interface, effective rp_filter)` of the first interface whose effective IPv4
/// reverse-path filter is strict; the kernel uses the larger of `all` and the interface's
/// own value (0 off, 1 strict, 2 loose). `lo` never filters.
pub(crate) fn strict_interface(all: u32, interfaces: &[(String, u32)]) -> Option<(u32, String)> {
    interfaces
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "all" | "default" | "lo"))
        .find(|(_, own)| all.max(*own) == 1)
        .map(|(name, _)| (1, name.clone()))
}

#[cfg(test)]
mod rp_tests {
    use super::strict_interface;

    #[test]
    fn the_effective_filter_is_the_larger_value() {
        let ifs = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
            v.iter().map(|(n, x)| (n.to_string(), *x)).collect()
        };
        assert_eq!(
            strict_interface(0, &ifs(&[("lo", 1), ("eth0", 1)])),
            Some((1, "eth0".into()))
        );
        assert_eq!(
            strict_interface(1, &ifs(&[("eth0", 0)])),
            Some((1, "eth0".into()))
        );
        // Loose anywhere wins over strict.
        assert_eq!(strict_interface(2, &ifs(&[("eth0", 1)])), None);
        assert_eq!(strict_interface(1, &ifs(&[("eth0", 2)])), None);
        assert_eq!(
            strict_interface(0, &ifs(&[("eth0", 0), ("default", 1)])),
            None
        );
    }
}
