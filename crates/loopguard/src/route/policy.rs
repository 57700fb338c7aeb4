//! Linux policy routing as plain data, and the kernel's decision worked out from it: the
//! rules (`ip rule`) in priority order, then the chosen table's longest prefix and metric
//! (`ip route show table all`). Pure, so it runs on every OS on what a user pasted.
//!
//! The flow asked about is a guarded socket's: locally generated (input interface `lo`), not
//! bound to a device and not in a VRF, carrying a mark, its source unspecified unless given.
//! What the paste leaves out is unknown, not absent: a table a rule looks in but the paste does
//! not hold stops the evaluation at that rule ([`Outcome::Unknown`]), except the `local` table,
//! which only ever holds the host's own and broadcast addresses (then a note says we assumed
//! the destination is none of them).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::Family;

/// A routing table's name as `ip` prints it; the kernel's three numbered tables are always
/// named (`local` 255, `main` 254, `default` 253) so `lookup 254` and `table main` agree.
pub fn table_name(raw: &str) -> String {
    match raw {
        "255" => "local".to_owned(),
        "254" => "main".to_owned(),
        "253" => "default".to_owned(),
        other => other.to_owned(),
    }
}

/// What a rule does once it matches (`fib_rule_hdr.action`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// `lookup TABLE` (`FR_ACT_TO_TBL`).
    Lookup(String),
    /// `lookup [l3mdev-table]`: the table of the flow's VRF device.
    L3mdevTable,
    /// `goto PRIORITY` (`FR_ACT_GOTO`); `None` when `ip` printed `goto none`.
    Goto(Option<u32>),
    /// `nop` (`FR_ACT_NOP`): matches and does nothing.
    Nop,
    /// `unreachable` (`FR_ACT_UNREACHABLE`): the lookup fails with `ENETUNREACH`.
    Unreachable,
    /// `prohibit` (`FR_ACT_PROHIBIT`): fails with `EACCES`.
    Prohibit,
    /// `blackhole` (`FR_ACT_BLACKHOLE`): fails with `EINVAL`, packets are dropped silently.
    Blackhole,
}

/// One policy rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    /// The family of the rule list it came from.
    pub family: Family,
    /// Priority (`pref`); lower first.
    pub priority: u32,
    /// `not`: the selector's result is inverted (`FIB_RULE_INVERT`).
    pub invert: bool,
    /// `from PREFIX`; `None` for `from all`.
    pub from: Option<IpNet>,
    /// `to PREFIX`; `None` when absent.
    pub to: Option<IpNet>,
    /// `fwmark MARK/MASK` (mask `0xffffffff` when `ip` printed none).
    pub fwmark: Option<(u32, u32)>,
    /// `iif NAME`, and whether `ip` marked it `[detached]` (no such device: never matches).
    pub iif: Option<(String, bool)>,
    /// `oif NAME`, and whether it is detached.
    pub oif: Option<(String, bool)>,
    /// `l3mdev`: matches only flows on a VRF device.
    pub l3mdev: bool,
    /// `tos`/`dsfield` value, 0 when absent.
    pub tos: u8,
    /// `tun_id`, 0 when absent.
    pub tun_id: u64,
    /// Selectors that depend on what a dump cannot say (`uidrange`, `ipproto`, `sport`,
    /// `dport`, and any word this reader does not know): a rule holding one is unknown.
    pub unknowable: Vec<String>,
    /// What it does.
    pub action: RuleAction,
    /// `suppress_prefixlength N`: a route this short or shorter is not accepted.
    pub suppress_prefixlen: Option<u8>,
    /// `suppress_ifgroup G`: routes through devices of group G are not accepted.
    pub suppress_ifgroup: Option<String>,
    /// The rule as the dump printed it, for display.
    pub text: String,
}

/// A route's type (`rtm_type`), the word before its prefix in `ip route`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteType {
    /// A normal route (no word).
    Unicast,
    /// `local`: one of the host's own addresses.
    Local,
    /// `broadcast`.
    Broadcast,
    /// `anycast`.
    Anycast,
    /// `multicast`.
    Multicast,
    /// `unreachable`: the lookup fails with `EHOSTUNREACH`.
    Unreachable,
    /// `prohibit`: fails with `EACCES`.
    Prohibit,
    /// `blackhole`: fails with `EINVAL`.
    Blackhole,
    /// `throw`: the lookup in this table fails and the rules go on.
    Throw,
    /// `nat` and anything else.
    Other,
}

impl RouteType {
    /// The type for the word `ip` prints (`None` for a word that is no type).
    pub fn from_word(word: &str) -> Option<RouteType> {
        Some(match word {
            "unicast" => RouteType::Unicast,
            "local" => RouteType::Local,
            "broadcast" => RouteType::Broadcast,
            "anycast" => RouteType::Anycast,
            "multicast" => RouteType::Multicast,
            "unreachable" => RouteType::Unreachable,
            "prohibit" => RouteType::Prohibit,
            "blackhole" => RouteType::Blackhole,
            "throw" => RouteType::Throw,
            "nat" => RouteType::Other,
            _ => return None,
        })
    }
}

impl fmt::Display for RouteType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteType::Unicast => "unicast",
            RouteType::Local => "local",
            RouteType::Broadcast => "broadcast",
            RouteType::Anycast => "anycast",
            RouteType::Multicast => "multicast",
            RouteType::Unreachable => "unreachable",
            RouteType::Prohibit => "prohibit",
            RouteType::Blackhole => "blackhole",
            RouteType::Throw => "throw",
            RouteType::Other => "other",
        })
    }
}

/// One next hop of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Gateway (`via`), `None` on-link.
    pub via: Option<IpAddr>,
    /// Device (`dev`), when printed.
    pub dev: Option<String>,
}

/// One route of any table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxRoute {
    /// Type.
    pub kind: RouteType,
    /// Destination prefix (`default` is `/0`).
    pub destination: IpNet,
    /// IPv6 source-specific routes (`from PREFIX`); `None` when absent.
    pub from: Option<IpNet>,
    /// Table (`main` when `ip` printed none).
    pub table: String,
    /// Next hops: one for a plain route, several for multipath, none for a route with neither
    /// `via` nor `dev` (unreachable, blackhole...).
    pub next_hops: Vec<NextHop>,
    /// Preferred source (`src`).
    pub src: Option<IpAddr>,
    /// Metric (`metric`, 0 when absent).
    pub metric: u32,
    /// The route as the dump printed it, for display.
    pub text: String,
}

impl LinuxRoute {
    /// The route's family.
    pub fn family(&self) -> Family {
        match self.destination {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

/// Everything a dump told: rules of both families and, when given, routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyTables {
    /// Rules, any family, in the order printed.
    pub rules: Vec<PolicyRule>,
    /// Routes of every table; `None` when only the rules were given.
    pub routes: Option<Vec<LinuxRoute>>,
}

/// The flow asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Destination.
    pub destination: IpAddr,
    /// The socket's mark (`SO_MARK`).
    pub mark: u32,
    /// The source the socket is bound to; `None` for an unbound socket.
    pub source: Option<IpAddr>,
}

/// What happened at one rule the evaluation reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The rule did not match, and why.
    NoMatch(String),
    /// Matched `goto`: evaluation jumped to this priority.
    Goto(u32),
    /// Matched a `goto` whose target no rule has (`[unresolved]`): skipped.
    Unresolved,
    /// Matched `nop`.
    Nop,
    /// Matched; its table had no route for the destination (or a `throw` route): next rule.
    NoRouteInTable,
    /// Matched; the table's answer was refused by `suppress_prefixlength` or
    /// `suppress_ifgroup`: next rule.
    Suppressed(String),
    /// Matched; the `local` table is not in the dump: assumed not a local address.
    LocalTableAssumed,
    /// This rule decided.
    Decided,
    /// The evaluation stopped here, unable to tell.
    Unknown,
}

/// A rule the evaluation reached, and what happened there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleStep {
    /// The rule's priority.
    pub priority: u32,
    /// The rule as printed.
    pub text: String,
    /// What happened.
    pub step: Step,
}

/// Why a route of the deciding table was not the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteLoss {
    /// A longer prefix contains the destination.
    ShorterPrefix {
        /// This route's prefix length.
        prefix_len: u8,
        /// The longest.
        longest: u8,
    },
    /// Same prefix, higher metric.
    HigherMetric {
        /// This route's metric.
        metric: u32,
        /// The lowest.
        best: u32,
    },
    /// Same prefix and metric, printed later.
    Later,
    /// A source-specific route (`from PREFIX`) for a source the flow does not have.
    OtherSource,
}

impl fmt::Display for RouteLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteLoss::ShorterPrefix {
                prefix_len,
                longest,
            } => write!(f, "shorter prefix (/{prefix_len} < /{longest})"),
            RouteLoss::HigherMetric { metric, best } => {
                write!(f, "higher metric ({metric} > {best})")
            }
            RouteLoss::Later => f.write_str("same prefix and metric, listed later"),
            RouteLoss::OtherSource => f.write_str("source-specific route for another source"),
        }
    }
}

/// A route of a table the evaluation looked in that contains the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteCandidate {
    /// The route.
    pub route: LinuxRoute,
    /// `None` when it was the table's answer.
    pub loss: Option<RouteLoss>,
}

/// The end of an evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A route was chosen.
    Route {
        /// Rule that decided.
        rule: u32,
        /// Its table.
        table: String,
        /// The route.
        route: LinuxRoute,
    },
    /// The lookup fails: a rule action or a route type refuses it (`unreachable`,
    /// `prohibit`, `blackhole`), or no rule matched at all (`unreachable`, rule `None`).
    Refused {
        /// Rule that decided; `None` when no rule gave an answer (`ESRCH` → unreachable).
        rule: Option<u32>,
        /// The table, when a route refused it.
        table: Option<String>,
        /// `unreachable`, `prohibit` or `blackhole`.
        kind: RouteType,
    },
    /// The dump cannot tell: the rule and table where it stopped, and why.
    Unknown {
        /// Rule where it stopped.
        rule: u32,
        /// The table that rule looks in, when it has one.
        table: Option<String>,
        /// Why.
        why: String,
    },
}

/// The evaluation of one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    /// The flow.
    pub flow: Flow,
    /// How it ended.
    pub outcome: Outcome,
    /// Every rule reached, in order.
    pub steps: Vec<RuleStep>,
    /// The routes of the deciding table that contain the destination, the chosen one first.
    pub candidates: Vec<RouteCandidate>,
    /// Assumptions made on the way.
    pub notes: Vec<String>,
}

/// Whether `rule` matches `flow`, or why not; `Err` when the dump cannot tell.
///
/// Follows `fib_rule_match()` (net/core/fib_rules.c): `iif` (a locally generated flow has
/// input interface `lo`), `oif` (0 for a socket not bound to a device), `fwmark` under its
/// mask, `tun_id`, `l3mdev` (no VRF here), `uidrange`, then the family's `match`
/// (`fib4_rule_match()` in net/ipv4/fib_rules.c, `fib6_rule_match()` in
/// net/ipv6/fib6_rules.c: source and destination prefixes, `tos`, `ipproto`, ports), and
/// last inverts the result for `not`.
fn rule_matches(rule: &PolicyRule, flow: &Flow) -> Result<Result<(), String>, String> {
    if let Some(word) = rule.unknowable.first() {
        return Err(format!(
            "the rule selects by `{word}`, which the dump cannot tell for the socket"
        ));
    }
    let plain = plain_match(rule, flow);
    Ok(match (plain, rule.invert) {
        (Ok(()), false) => Ok(()),
        (Err(why), false) => Err(why),
        (Ok(()), true) => Err("`not`: the selector matches".to_owned()),
        (Err(_), true) => Ok(()),
    })
}

fn plain_match(rule: &PolicyRule, flow: &Flow) -> Result<(), String> {
    if let Some((name, detached)) = &rule.iif {
        if *detached || name != "lo" {
            return Err(format!(
                "iif {name}: locally generated traffic comes from lo"
            ));
        }
    }
    if let Some((name, _)) = &rule.oif {
        return Err(format!("oif {name}: the socket is not bound to a device"));
    }
    if let Some((mark, mask)) = rule.fwmark {
        if (mark ^ flow.mark) & mask != 0 {
            return Err(format!(
                "fwmark {mark:#x}/{mask:#x} vs the socket's mark {:#x}",
                flow.mark
            ));
        }
    }
    if rule.tun_id != 0 {
        return Err("tun_id: not a tunnel-metadata flow".to_owned());
    }
    if rule.l3mdev {
        return Err("l3mdev: the socket is not in a VRF".to_owned());
    }
    if let Some(from) = rule.from {
        // fib4_rule_match compares the flow's source under the mask (0.0.0.0 when unbound);
        // fib6_rule_match refuses a source prefix when the flow has no source.
        let matches = match (flow.source, from) {
            (Some(src), from) => from.contains(&src),
            (None, IpNet::V4(net)) => net.prefix_len() == 0 || net.network().is_unspecified(),
            (None, IpNet::V6(net)) => net.prefix_len() == 0,
        };
        if !matches {
            return Err(match flow.source {
                Some(src) => format!("from {from}: the source is {src}"),
                None => format!("from {from}: the socket is unbound (give --from)"),
            });
        }
    }
    if let Some(to) = rule.to {
        if !to.contains(&flow.destination) {
            return Err(format!("to {to}"));
        }
    }
    if rule.tos != 0 {
        return Err(format!("tos {:#x}: the socket sends tos 0", rule.tos));
    }
    Ok(())
}

/// The routes of `table` and the destination's family, when the dump has that table.
fn table_routes<'a>(
    routes: &'a [LinuxRoute],
    table: &str,
    family: Family,
) -> Option<Vec<&'a LinuxRoute>> {
    let in_table: Vec<&LinuxRoute> = routes
        .iter()
        .filter(|r| r.table == table && r.family() == family)
        .collect();
    (!in_table.is_empty()).then_some(in_table)
}

/// `fib_table_lookup()` on one table: the longest prefix containing the destination, then
/// the lowest metric, then the first printed. Source-specific IPv6 routes count only for a
/// flow whose source they contain.
fn lookup(routes: &[&LinuxRoute], flow: &Flow) -> Vec<RouteCandidate> {
    let mut candidates: Vec<RouteCandidate> = routes
        .iter()
        .filter(|r| r.destination.contains(&flow.destination))
        .map(|r| RouteCandidate {
            route: (*r).clone(),
            loss: None,
        })
        .collect();
    for c in &mut candidates {
        if let Some(from) = c.route.from.filter(|f| f.prefix_len() > 0) {
            if !flow.source.is_some_and(|s| from.contains(&s)) {
                c.loss = Some(RouteLoss::OtherSource);
            }
        }
    }
    let open = |c: &RouteCandidate| c.loss.is_none();
    let Some(longest) = candidates
        .iter()
        .filter(|c| open(c))
        .map(|c| c.route.destination.prefix_len())
        .max()
    else {
        return candidates;
    };
    for c in candidates.iter_mut().filter(|c| open(c)) {
        let prefix_len = c.route.destination.prefix_len();
        if prefix_len < longest {
            c.loss = Some(RouteLoss::ShorterPrefix {
                prefix_len,
                longest,
            });
        }
    }
    let best = candidates
        .iter()
        .filter(|c| open(c))
        .map(|c| c.route.metric)
        .min()
        .unwrap_or(0);
    let mut chosen = false;
    for c in candidates.iter_mut().filter(|c| c.loss.is_none()) {
        if c.route.metric > best {
            c.loss = Some(RouteLoss::HigherMetric {
                metric: c.route.metric,
                best,
            });
        } else if chosen {
            c.loss = Some(RouteLoss::Later);
        } else {
            chosen = true;
        }
    }
    candidates.sort_by_key(|c| c.loss.is_some());
    candidates
}

/// Works out what the kernel decides for `flow`, following `fib_rules_lookup()`
/// (net/core/fib_rules.c): rules of the destination's family in priority order (the order
/// printed among equal priorities); a matching `goto` jumps to the first rule of its target
/// priority and tests that rule's match (an unresolved one is skipped); `nop` goes on;
/// `unreachable`, `prohibit` and `blackhole` end the lookup with an error; a lookup in a
/// table that gives no route (`-EAGAIN`, also from a `throw` route) goes on; a result refused
/// by `fib4_rule_suppress()` (net/ipv4/fib_rules.c: prefix length `<=` the rule's
/// `suppress_prefixlength`, or a device of the `suppress_ifgroup`) goes on; an `unreachable`,
/// `prohibit` or `blackhole` route ends it with an error. When no rule answers, the lookup
/// fails (`-ESRCH`, reported as unreachable).
///
/// Note for connected sockets: `ip_route_connect()` looks up once with the source unset and
/// again with the source it chose, so `from` rules can match the second time; give that
/// source in [`Flow::source`] to see the second lookup.
pub fn evaluate(tables: &PolicyTables, flow: Flow) -> PolicyDecision {
    let family = Family::of(flow.destination);
    let mut rules: Vec<&PolicyRule> = tables.rules.iter().filter(|r| r.family == family).collect();
    rules.sort_by_key(|r| r.priority);
    let mut decision = PolicyDecision {
        flow,
        outcome: Outcome::Refused {
            rule: None,
            table: None,
            kind: RouteType::Unreachable,
        },
        steps: Vec::new(),
        candidates: Vec::new(),
        notes: Vec::new(),
    };
    if rules.is_empty() {
        decision.outcome = Outcome::Unknown {
            rule: 0,
            table: None,
            why: format!("the dump has no {family} rules"),
        };
        return decision;
    }
    let mut at = 0;
    while at < rules.len() {
        let rule = rules[at];
        let mut step = |step: Step| {
            decision.steps.push(RuleStep {
                priority: rule.priority,
                text: rule.text.clone(),
                step,
            })
        };
        match rule_matches(rule, &flow) {
            Err(why) => {
                step(Step::Unknown);
                decision.outcome = Outcome::Unknown {
                    rule: rule.priority,
                    table: rule_table(rule),
                    why,
                };
                return decision;
            }
            Ok(Err(why)) => {
                step(Step::NoMatch(why));
                at += 1;
                continue;
            }
            Ok(Ok(())) => {}
        }
        let refused = |kind| Outcome::Refused {
            rule: Some(rule.priority),
            table: None,
            kind,
        };
        let table = match &rule.action {
            RuleAction::Goto(target) => {
                // The kernel only accepts forward gotos; a target no rule has is unresolved.
                let jump = target.and_then(|t| {
                    (t > rule.priority)
                        .then(|| rules.iter().position(|r| r.priority == t))
                        .flatten()
                });
                match jump {
                    Some(to) => {
                        step(Step::Goto(rules[to].priority));
                        at = to;
                    }
                    None => {
                        step(Step::Unresolved);
                        at += 1;
                    }
                }
                continue;
            }
            RuleAction::Nop => {
                step(Step::Nop);
                at += 1;
                continue;
            }
            RuleAction::L3mdevTable => {
                // Reached only if the selector matched without l3mdev, which the parser
                // never produces; the socket is in no VRF, so there is no table.
                step(Step::NoRouteInTable);
                at += 1;
                continue;
            }
            RuleAction::Unreachable => {
                step(Step::Decided);
                decision.outcome = refused(RouteType::Unreachable);
                return decision;
            }
            RuleAction::Prohibit => {
                step(Step::Decided);
                decision.outcome = refused(RouteType::Prohibit);
                return decision;
            }
            RuleAction::Blackhole => {
                step(Step::Decided);
                decision.outcome = refused(RouteType::Blackhole);
                return decision;
            }
            RuleAction::Lookup(table) => table.clone(),
        };
        let Some(routes) = tables.routes.as_deref() else {
            if table == "local" {
                step(Step::LocalTableAssumed);
                note_local(&mut decision.notes, &flow);
                at += 1;
                continue;
            }
            step(Step::Unknown);
            decision.outcome = Outcome::Unknown {
                rule: rule.priority,
                table: Some(table),
                why: "no routes were given: the rules alone stop here".to_owned(),
            };
            return decision;
        };
        let Some(in_table) = table_routes(routes, &table, family) else {
            if table == "local" {
                step(Step::LocalTableAssumed);
                note_local(&mut decision.notes, &flow);
                at += 1;
                continue;
            }
            step(Step::Unknown);
            decision.outcome = Outcome::Unknown {
                rule: rule.priority,
                table: Some(table.clone()),
                why: format!("table {table} is not in the dump ({family})"),
            };
            return decision;
        };
        let candidates = lookup(&in_table, &flow);
        let Some(best) = candidates.first().filter(|c| c.loss.is_none()).cloned() else {
            step(Step::NoRouteInTable);
            at += 1;
            continue;
        };
        match best.route.kind {
            RouteType::Throw => {
                step(Step::NoRouteInTable);
                at += 1;
                continue;
            }
            kind @ (RouteType::Unreachable | RouteType::Prohibit | RouteType::Blackhole) => {
                step(Step::Decided);
                decision.candidates = candidates;
                decision.outcome = Outcome::Refused {
                    rule: Some(rule.priority),
                    table: Some(table),
                    kind,
                };
                return decision;
            }
            _ => {}
        }
        if let Some(len) = rule.suppress_prefixlen {
            if best.route.destination.prefix_len() <= len {
                step(Step::Suppressed(format!(
                    "route {} is /{} <= suppress_prefixlength {len}",
                    best.route.destination,
                    best.route.destination.prefix_len()
                )));
                at += 1;
                continue;
            }
        }
        if let Some(group) = &rule.suppress_ifgroup {
            step(Step::Unknown);
            decision.candidates = candidates;
            decision.outcome = Outcome::Unknown {
                rule: rule.priority,
                table: Some(table),
                why: format!(
                    "suppress_ifgroup {group}: the dump does not say which group the route's \
                     device is in"
                ),
            };
            return decision;
        }
        step(Step::Decided);
        decision.candidates = candidates;
        decision.outcome = Outcome::Route {
            rule: rule.priority,
            table,
            route: best.route,
        };
        return decision;
    }
    decision
}

fn rule_table(rule: &PolicyRule) -> Option<String> {
    match &rule.action {
        RuleAction::Lookup(t) => Some(t.clone()),
        _ => None,
    }
}

fn note_local(notes: &mut Vec<String>, flow: &Flow) {
    let note = format!(
        "table local is not in the dump: assumed {} is not one of the host's own or broadcast \
         addresses",
        flow.destination
    );
    if !notes.contains(&note) {
        notes.push(note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(priority: u32, action: RuleAction) -> PolicyRule {
        PolicyRule {
            family: Family::V4,
            priority,
            invert: false,
            from: None,
            to: None,
            fwmark: None,
            iif: None,
            oif: None,
            l3mdev: false,
            tos: 0,
            tun_id: 0,
            unknowable: Vec::new(),
            action,
            suppress_prefixlen: None,
            suppress_ifgroup: None,
            text: format!("rule {priority}"),
        }
    }

    fn route(table: &str, dst: &str, dev: &str, metric: u32) -> LinuxRoute {
        LinuxRoute {
            kind: RouteType::Unicast,
            destination: dst.parse().unwrap(),
            from: None,
            table: table.into(),
            next_hops: vec![NextHop {
                via: None,
                dev: Some(dev.into()),
            }],
            src: None,
            metric,
            text: format!("{dst} dev {dev}"),
        }
    }

    fn flow(dst: &str, mark: u32) -> Flow {
        Flow {
            destination: dst.parse().unwrap(),
            mark,
            source: None,
        }
    }

    fn lookup_rule(priority: u32, table: &str) -> PolicyRule {
        rule(priority, RuleAction::Lookup(table.into()))
    }

    /// wg-quick's three rules plus the defaults.
    fn wg_quick() -> PolicyTables {
        let mut suppress = lookup_rule(32764, "main");
        suppress.suppress_prefixlen = Some(0);
        let mut not_mark = lookup_rule(32765, "51820");
        not_mark.invert = true;
        not_mark.fwmark = Some((0xca6c, 0xffff_ffff));
        PolicyTables {
            rules: vec![
                lookup_rule(0, "local"),
                suppress,
                not_mark,
                lookup_rule(32766, "main"),
                lookup_rule(32767, "default"),
            ],
            routes: Some(vec![
                route("main", "0.0.0.0/0", "eth0", 100),
                route("main", "192.0.2.0/24", "eth0", 100),
                route("51820", "0.0.0.0/0", "wg0", 0),
                route("local", "192.0.2.10/32", "eth0", 0),
            ]),
        }
    }

    fn decided_dev(d: &PolicyDecision) -> Option<(u32, &str, &str)> {
        match &d.outcome {
            Outcome::Route { rule, table, route } => Some((
                *rule,
                table.as_str(),
                route.next_hops[0].dev.as_deref().unwrap(),
            )),
            _ => None,
        }
    }

    #[test]
    fn wg_quick_unmarked_traffic_enters_the_tunnel_and_marked_traffic_does_not() {
        let t = wg_quick();
        let plain = evaluate(&t, flow("198.51.100.7", 0));
        assert_eq!(decided_dev(&plain), Some((32765, "51820", "wg0")));
        // The main table's default is /0 <= 0: suppressed, so rule 32765 decides.
        assert!(matches!(plain.steps[1].step, Step::Suppressed(_)));
        let marked = evaluate(&t, flow("198.51.100.7", 0xca6c));
        assert_eq!(decided_dev(&marked), Some((32766, "main", "eth0")));
        // The LAN's /24 is longer than 0: not suppressed, decided by 32764.
        let lan = evaluate(&t, flow("192.0.2.99", 0));
        assert_eq!(decided_dev(&lan), Some((32764, "main", "eth0")));
    }

    #[test]
    fn fwmark_is_compared_under_its_mask() {
        let mut r = lookup_rule(100, "7");
        r.fwmark = Some((0x3047, 0x30ff));
        let t = PolicyTables {
            rules: vec![r, lookup_rule(200, "main")],
            routes: Some(vec![
                route("7", "0.0.0.0/0", "eth1", 0),
                route("main", "0.0.0.0/0", "wg0", 0),
            ]),
        };
        // Bits outside the mask (Calico's 0xffff0000) do not break the match.
        let d = evaluate(&t, flow("198.51.100.7", 0x3047 | 0xabcd_0000));
        assert_eq!(decided_dev(&d), Some((100, "7", "eth1")));
        let d = evaluate(&t, flow("198.51.100.7", 0x3046));
        assert_eq!(decided_dev(&d), Some((200, "main", "wg0")));
    }

    #[test]
    fn from_rules_match_only_a_bound_socket() {
        let mut r = lookup_rule(100, "7");
        r.from = Some("192.0.2.0/24".parse().unwrap());
        let t = PolicyTables {
            rules: vec![r, lookup_rule(200, "main")],
            routes: Some(vec![
                route("7", "0.0.0.0/0", "eth1", 0),
                route("main", "0.0.0.0/0", "eth0", 0),
            ]),
        };
        let unbound = evaluate(&t, flow("198.51.100.7", 0));
        assert_eq!(decided_dev(&unbound), Some((200, "main", "eth0")));
        let mut bound = flow("198.51.100.7", 0);
        bound.source = Some("192.0.2.10".parse().unwrap());
        assert_eq!(decided_dev(&evaluate(&t, bound)), Some((100, "7", "eth1")));
    }

    #[test]
    fn goto_jumps_forward_and_unresolved_gotos_are_skipped() {
        let t = PolicyTables {
            rules: vec![
                rule(10, RuleAction::Goto(Some(30))),
                lookup_rule(20, "main"),
                lookup_rule(30, "7"),
            ],
            routes: Some(vec![
                route("main", "0.0.0.0/0", "eth0", 0),
                route("7", "0.0.0.0/0", "eth1", 0),
            ]),
        };
        assert_eq!(
            decided_dev(&evaluate(&t, flow("198.51.100.7", 0))),
            Some((30, "7", "eth1"))
        );
        let mut t = t;
        t.rules[0].action = RuleAction::Goto(Some(25));
        let d = evaluate(&t, flow("198.51.100.7", 0));
        assert_eq!(d.steps[0].step, Step::Unresolved);
        assert_eq!(decided_dev(&d), Some((20, "main", "eth0")));
    }

    #[test]
    fn nop_goes_on_and_suppress_ifgroup_is_unknown() {
        let mut by_group = lookup_rule(20, "main");
        by_group.suppress_ifgroup = Some("2".into());
        let t = PolicyTables {
            rules: vec![rule(10, RuleAction::Nop), by_group],
            routes: Some(vec![route("main", "0.0.0.0/0", "eth0", 0)]),
        };
        let d = evaluate(&t, flow("198.51.100.7", 0));
        assert_eq!(d.steps[0].step, Step::Nop);
        assert!(matches!(d.outcome, Outcome::Unknown { rule: 20, .. }));
    }

    #[test]
    fn rule_actions_and_route_types_refuse_and_throw_goes_on() {
        let mut t = PolicyTables {
            rules: vec![lookup_rule(10, "7"), lookup_rule(20, "main")],
            routes: Some(vec![route("main", "0.0.0.0/0", "eth0", 0)]),
        };
        let mut throw = route("7", "198.51.100.0/24", "-", 0);
        throw.kind = RouteType::Throw;
        throw.next_hops.clear();
        let mut blackhole = route("7", "203.0.113.0/24", "-", 0);
        blackhole.kind = RouteType::Blackhole;
        t.routes.as_mut().unwrap().extend([throw, blackhole]);
        assert_eq!(
            decided_dev(&evaluate(&t, flow("198.51.100.7", 0))),
            Some((20, "main", "eth0"))
        );
        assert_eq!(
            evaluate(&t, flow("203.0.113.5", 0)).outcome,
            Outcome::Refused {
                rule: Some(10),
                table: Some("7".into()),
                kind: RouteType::Blackhole
            }
        );
        t.rules.insert(0, rule(5, RuleAction::Prohibit));
        t.rules[0].to = Some("192.0.2.0/24".parse().unwrap());
        assert_eq!(
            evaluate(&t, flow("192.0.2.1", 0)).outcome,
            Outcome::Refused {
                rule: Some(5),
                table: None,
                kind: RouteType::Prohibit
            }
        );
    }

    #[test]
    fn not_inverts_and_l3mdev_oif_and_foreign_iif_never_match() {
        let mut l3 = rule(1000, RuleAction::L3mdevTable);
        l3.l3mdev = true;
        let mut oif = lookup_rule(1001, "7");
        oif.oif = Some(("eth1".into(), false));
        let mut iif = lookup_rule(1002, "7");
        iif.iif = Some(("eth1".into(), false));
        let mut iif_lo = lookup_rule(1003, "8");
        iif_lo.iif = Some(("lo".into(), false));
        let t = PolicyTables {
            rules: vec![l3, oif, iif, iif_lo],
            routes: Some(vec![
                route("7", "0.0.0.0/0", "eth1", 0),
                route("8", "0.0.0.0/0", "eth2", 0),
            ]),
        };
        let d = evaluate(&t, flow("198.51.100.7", 0));
        assert_eq!(decided_dev(&d), Some((1003, "8", "eth2")));
        assert!(d.steps[..3]
            .iter()
            .all(|s| matches!(s.step, Step::NoMatch(_))));
    }

    #[test]
    fn a_moved_local_rule_still_catches_local_addresses() {
        let mut t = wg_quick();
        t.rules.remove(0);
        t.rules.push(lookup_rule(32763, "local"));
        let d = evaluate(&t, flow("192.0.2.10", 0));
        assert_eq!(decided_dev(&d), Some((32763, "local", "eth0")));
    }

    #[test]
    fn what_the_dump_leaves_out_is_unknown_not_absent() {
        let mut t = wg_quick();
        t.routes
            .as_mut()
            .unwrap()
            .retain(|r| r.table != "51820" && r.table != "local");
        let d = evaluate(&t, flow("198.51.100.7", 0));
        assert_eq!(
            d.outcome,
            Outcome::Unknown {
                rule: 32765,
                table: Some("51820".into()),
                why: "table 51820 is not in the dump (IPv4)".into()
            }
        );
        assert_eq!(d.notes.len(), 1, "the missing local table is assumed");
        // Rules alone: stop at the first lookup that needs a table.
        t.routes = None;
        let d = evaluate(&t, flow("198.51.100.7", 0));
        assert!(matches!(
            d.outcome,
            Outcome::Unknown { rule: 32764, ref table, .. } if table.as_deref() == Some("main")
        ));
        // A uidrange selector cannot be told from a dump.
        let mut t = wg_quick();
        t.rules[1].unknowable.push("uidrange".into());
        assert!(matches!(
            evaluate(&t, flow("198.51.100.7", 0)).outcome,
            Outcome::Unknown { rule: 32764, .. }
        ));
    }

    #[test]
    fn longest_prefix_then_metric_in_the_table() {
        let t = PolicyTables {
            rules: vec![lookup_rule(1, "main")],
            routes: Some(vec![
                route("main", "0.0.0.0/0", "eth0", 100),
                route("main", "198.51.100.0/24", "eth1", 600),
                route("main", "198.51.100.0/24", "eth2", 50),
            ]),
        };
        let d = evaluate(&t, flow("198.51.100.7", 0));
        assert_eq!(decided_dev(&d), Some((1, "main", "eth2")));
        let losses: Vec<_> = d.candidates.iter().map(|c| c.loss.clone()).collect();
        assert_eq!(losses[0], None);
        assert!(losses.contains(&Some(RouteLoss::HigherMetric {
            metric: 600,
            best: 50
        })));
        assert!(losses.contains(&Some(RouteLoss::ShorterPrefix {
            prefix_len: 0,
            longest: 24
        })));
    }

    #[test]
    fn no_matching_rule_is_unreachable_and_no_rules_of_the_family_is_unknown() {
        let t = PolicyTables {
            rules: vec![lookup_rule(1, "main")],
            routes: Some(vec![route("main", "192.0.2.0/24", "eth0", 0)]),
        };
        assert_eq!(
            evaluate(&t, flow("198.51.100.7", 0)).outcome,
            Outcome::Refused {
                rule: None,
                table: None,
                kind: RouteType::Unreachable
            }
        );
        assert!(matches!(
            evaluate(&t, flow("2001:db8::1", 0)).outcome,
            Outcome::Unknown { .. }
        ));
    }
}
