//! `route explain` for Linux dumps: `ip rule` / `ip -6 rule` and, optionally,
//! `ip route show table all` / `ip -6 route show table all`, text or `-j` JSON.

use std::net::IpAddr;
use std::path::Path;

use loopguard::route::dump::{ip_route, ip_rule};
use loopguard::route::policy::{
    evaluate, Flow, LinuxRoute, Outcome, PolicyDecision, PolicyTables, RouteCandidate, Step,
};
use loopguard::route::Family;
use serde_json::{json, Value};

use super::output::{escape, warn_lines};
use super::{read, ExplainArgs};
use crate::UsageError;

/// The guarded socket's mark when `--mark` is not given: the library's default.
pub const DEFAULT_MARK: u32 = 0x3047;
/// The bits of the mark loopguard's rule compares when `--mask` is not given.
pub const DEFAULT_MASK: u32 = 0x30ff;

fn name(path: &Path) -> String {
    path.display().to_string()
}

fn load(args: &ExplainArgs) -> anyhow::Result<PolicyTables> {
    let mut tables = PolicyTables::default();
    let files = [
        (&args.linux_rules, None),
        (&args.linux_rules6, Some(Family::V6)),
    ];
    for (path, family) in files {
        let Some(path) = path else { continue };
        let text = read(path)?;
        let dump = match family {
            Some(f) => ip_rule::parse_family(&name(path), &text, f)?,
            None => ip_rule::parse(&name(path), &text)?,
        };
        warn_lines(path, &dump.unread, dump.unread_total);
        if dump.rules.is_empty() {
            anyhow::bail!(
                "no rules found in {} (is this the output of `ip rule`?)",
                escape(&name(path))
            );
        }
        tables.rules.extend(dump.rules);
    }
    if tables.rules.is_empty() {
        return Err(UsageError("give --linux-rules (the output of `ip rule`)".into()).into());
    }
    if !args.linux_routes.is_empty() {
        let mut routes = Vec::new();
        for path in &args.linux_routes {
            let dump = ip_route::parse(&name(path), &read(path)?)?;
            warn_lines(path, &dump.unread, dump.unread_total);
            if dump.routes.is_empty() {
                anyhow::bail!(
                    "no routes found in {} (is this the output of `ip route show table all`?)",
                    escape(&name(path))
                );
            }
            routes.extend(dump.routes);
        }
        tables.routes = Some(routes);
    }
    Ok(tables)
}

/// Answers for every destination.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<Vec<Value>> {
    let tables = load(args)?;
    let mark = args.mark.unwrap_or(DEFAULT_MARK);
    let mask = args.mask.unwrap_or(DEFAULT_MASK);
    let mut notes = Vec::new();
    if let Some(routes) = &tables.routes {
        for tunnel in &args.tunnel {
            let used = routes
                .iter()
                .any(|r| r.next_hops.iter().any(|h| h.dev.as_deref() == Some(tunnel)));
            if !used {
                notes.push(format!(
                    "--tunnel {} is the device of no route in the dump",
                    escape(tunnel)
                ));
            }
        }
    }
    for note in &notes {
        eprintln!("warning: {note}");
    }
    Ok(args
        .destinations
        .iter()
        .map(|&destination| {
            let flow = Flow {
                destination,
                mark,
                source: args.from,
            };
            let decision = evaluate(&tables, flow);
            let mut notes = notes.clone();
            // Other software may OR bits outside the mask into a guarded packet's mark; say
            // when that would change the answer.
            if mark != 0 && !mask != 0 {
                let foreign = evaluate(
                    &tables,
                    Flow {
                        mark: mark | !mask,
                        ..flow
                    },
                );
                if foreign.outcome != decision.outcome {
                    notes.push(format!(
                        "with the bits outside --mask {mask:#x} also set (mark {:#x}) the \
                         answer differs: {}",
                        mark | !mask,
                        summary(&foreign.outcome)
                    ));
                }
            }
            report(&decision, &args.tunnel, notes)
        })
        .collect())
}

fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Route { rule, table, route } => format!(
            "rule {rule}, table {table}, route {} dev {}",
            route.destination,
            route
                .next_hops
                .first()
                .and_then(|h| h.dev.as_deref())
                .unwrap_or("-")
        ),
        Outcome::Refused { rule, kind, .. } => match rule {
            Some(rule) => format!("{kind} at rule {rule}"),
            None => "no rule answers (unreachable)".to_owned(),
        },
        Outcome::Unknown { rule, why, .. } => format!("unknown at rule {rule}: {why}"),
    }
}

fn step_value(priority: u32, text: &str, step: &Step) -> Value {
    let (result, detail) = match step {
        Step::NoMatch(why) => ("no_match", Some(why.clone())),
        Step::Goto(to) => ("goto", Some(format!("to rule {to}"))),
        Step::Unresolved => ("unresolved_goto", None),
        Step::Nop => ("nop", None),
        Step::NoRouteInTable => ("no_route_in_table", None),
        Step::Suppressed(why) => ("suppressed", Some(why.clone())),
        Step::LocalTableAssumed => ("local_table_assumed", None),
        Step::Decided => ("decided", None),
        Step::Unknown => ("unknown", None),
    };
    json!({"priority": priority, "text": text, "result": result, "detail": detail})
}

fn device(route: &LinuxRoute) -> Option<&str> {
    route.next_hops.first().and_then(|h| h.dev.as_deref())
}

fn candidate_value(c: &RouteCandidate) -> Value {
    let (reason, why) = match &c.loss {
        None => (Value::Null, "chosen".to_owned()),
        Some(loss) => {
            let kind = match loss {
                loopguard::route::policy::RouteLoss::ShorterPrefix { .. } => "shorter_prefix",
                loopguard::route::policy::RouteLoss::HigherMetric { .. } => "higher_metric",
                loopguard::route::policy::RouteLoss::Later => "tie_break",
                loopguard::route::policy::RouteLoss::OtherSource => "other_source",
            };
            (json!({"kind": kind}), loss.to_string())
        }
    };
    json!({
        "destination_prefix": c.route.destination.to_string(),
        "next_hop": c.route.next_hops.first().and_then(|h| h.via),
        "interface": device(&c.route),
        "interface_index": null,
        "interface_alias": null,
        "route_metric": c.route.metric,
        "interface_metric": null,
        "effective_metric": c.route.metric,
        "source": c.route.src,
        "chosen": c.loss.is_none(),
        "reason": reason,
        "why": why,
    })
}

fn rule_value(decision: &PolicyDecision, priority: Option<u32>) -> Value {
    let Some(priority) = priority else {
        return Value::Null;
    };
    let text = decision
        .steps
        .iter()
        .rev()
        .find(|s| s.priority == priority)
        .map(|s| s.text.clone());
    json!({"priority": priority, "text": text})
}

/// One destination's answer in the shape every OS shares, plus `rule`, `table` and the rules
/// evaluated (`rules`).
fn report(decision: &PolicyDecision, tunnels: &[String], mut notes: Vec<String>) -> Value {
    notes.extend(decision.notes.iter().cloned());
    let destination: IpAddr = decision.flow.destination;
    let steps: Vec<Value> = decision
        .steps
        .iter()
        .map(|s| step_value(s.priority, &s.text, &s.step))
        .collect();
    let candidates: Vec<Value> = decision.candidates.iter().map(candidate_value).collect();
    let mut r = json!({
        "destination": destination,
        "error": null,
        "message": null,
        "interface": null,
        "interface_index": null,
        "interface_alias": null,
        "source": decision.flow.source,
        "next_hop": null,
        "route": null,
        "effective_metric": null,
        "enters_tunnel": null,
        "candidates": candidates,
        "notes": [],
        "rule": null,
        "table": null,
        "rules": steps,
    });
    match &decision.outcome {
        Outcome::Route { rule, table, route } => {
            let devs: Vec<&str> = route
                .next_hops
                .iter()
                .filter_map(|h| h.dev.as_deref())
                .collect();
            let in_tunnel = devs
                .iter()
                .filter(|d| tunnels.iter().any(|t| t == *d))
                .count();
            r["interface"] = json!(device(route));
            r["next_hop"] = json!(route.next_hops.first().and_then(|h| h.via));
            r["route"] = json!(route.destination.to_string());
            r["effective_metric"] = json!(route.metric);
            r["rule"] = rule_value(decision, Some(*rule));
            r["table"] = json!(table);
            r["enters_tunnel"] = if devs.is_empty() || (in_tunnel > 0 && in_tunnel < devs.len()) {
                Value::Null
            } else {
                json!(in_tunnel > 0)
            };
            if devs.len() > 1 {
                notes.push(format!(
                    "multipath route: the kernel hashes each flow onto one of {}",
                    devs.join(", ")
                ));
            }
            if decision.flow.source.is_none() {
                match route.src {
                    Some(src) => r["source"] = json!(src),
                    None => notes.push(format!(
                        "source: the kernel picks an address of {} (addresses are not in the \
                         dump)",
                        device(route).unwrap_or("the device")
                    )),
                }
            }
        }
        Outcome::Refused { rule, table, kind } => {
            r["error"] = json!(kind.to_string());
            r["message"] = json!(match rule {
                Some(p) => format!("rule {p} refuses the lookup ({kind})"),
                None =>
                    "no rule gives a route (the kernel answers: network unreachable)".to_owned(),
            });
            r["rule"] = rule_value(decision, *rule);
            r["table"] = json!(table);
            r["enters_tunnel"] = json!(false);
        }
        Outcome::Unknown { rule, table, why } => {
            r["error"] = json!("unknown");
            r["message"] = json!(why);
            r["rule"] = rule_value(decision, Some(*rule));
            r["table"] = json!(table);
        }
    }
    r["notes"] = json!(notes);
    r
}

#[cfg(test)]
mod tests {
    use super::super::output::{CANDIDATE_KEYS, REPORT_KEYS};
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn defaults_are_the_library_defaults() {
        assert_eq!(DEFAULT_MARK, loopguard::GuardConfig::DEFAULT_MARK);
        assert_eq!(DEFAULT_MASK, loopguard::GuardConfig::DEFAULT_MASK);
    }

    #[test]
    fn json_has_the_shared_keys_plus_rule_table_and_rules() {
        let rules = ip_rule::parse(
            "r",
            "0:\tfrom all lookup local\n32766:\tfrom all lookup main\n",
        )
        .unwrap()
        .rules;
        let routes = ip_route::parse("t", "default via 192.0.2.1 dev eth0 metric 100\n")
            .unwrap()
            .routes;
        let tables = PolicyTables {
            rules,
            routes: Some(routes),
        };
        let d = evaluate(
            &tables,
            Flow {
                destination: "198.51.100.7".parse().unwrap(),
                mark: 0,
                source: None,
            },
        );
        let r = report(&d, &["wg0".into()], Vec::new());
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = REPORT_KEYS.to_vec();
        want.extend(["rule", "table", "rules"]);
        want.sort_unstable();
        assert_eq!(keys, want);
        let ckeys: Vec<&str> = r["candidates"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = CANDIDATE_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(ckeys, want);
        assert_eq!(r["interface"], "eth0");
        assert_eq!(r["enters_tunnel"], false);
        assert_eq!(r["rule"]["priority"], 32766);
        assert_eq!(r["table"], "main");
    }
}
