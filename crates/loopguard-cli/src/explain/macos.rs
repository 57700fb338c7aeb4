//! `route explain` for macOS dumps: `netstat -rn`.

use std::path::Path;

use loopguard::route::dump::netstat::{self, NetstatDump};
use loopguard::route::scoped::{select_scoped, ScopedCandidate, ScopedDecision, ScopedLoss};
use serde_json::{json, Value};

use super::output::{escape, warn_lines};
use super::{read, ExplainArgs};

/// Answers for every destination.
pub fn explain(args: &ExplainArgs, path: &Path) -> anyhow::Result<Vec<Value>> {
    let dump = netstat::parse(&read(path)?);
    warn_lines(path, &dump.unread, dump.unread_total);
    if dump.routes.is_empty() {
        anyhow::bail!(
            "no routes found in {} (is this the output of `netstat -rn`?)",
            escape(&path.display().to_string())
        );
    }
    let mut notes = Vec::new();
    for tunnel in &args.tunnel {
        if !dump.routes.iter().any(|r| r.interface == *tunnel) {
            notes.push(format!(
                "--tunnel {} is the interface of no route in {}: nothing to exclude for it",
                escape(tunnel),
                escape(&path.display().to_string())
            ));
        }
    }
    for note in &notes {
        eprintln!("warning: {note}");
    }
    Ok(args
        .destinations
        .iter()
        .map(|&d| report(&dump, &select_scoped(&dump.routes, &args.tunnel, d), &notes))
        .collect())
}

fn reason_kind(loss: &ScopedLoss) -> &'static str {
    match loss {
        ScopedLoss::Tunnel => "tunnel",
        ScopedLoss::Cloned => "cloned",
        ScopedLoss::ScopedToOther => "scoped_to_other_interface",
        ScopedLoss::OtherInterface => "other_interface",
        ScopedLoss::ShorterPrefix { .. } => "shorter_prefix",
        ScopedLoss::TieBreak => "tie_break",
    }
}

fn candidate_value(dump: &NetstatDump, c: &ScopedCandidate) -> Value {
    let (reason, why) = match &c.loss {
        None => (Value::Null, "chosen".to_owned()),
        Some(l) => (json!({"kind": reason_kind(l)}), l.to_string()),
    };
    json!({
        "destination_prefix": c.route.destination.to_string(),
        "next_hop": c.route.next_hop(),
        "interface": c.route.interface,
        "interface_index": dump.indices.get(&c.route.interface),
        "interface_alias": null,
        "route_metric": null,
        "interface_metric": null,
        "effective_metric": null,
        "source": null,
        "chosen": c.loss.is_none(),
        "reason": reason,
        "why": format!("{why} [{}]", c.route.flags),
    })
}

/// One destination's answer in the shape every OS shares.
fn report(dump: &NetstatDump, d: &ScopedDecision, notes: &[String]) -> Value {
    let mut notes = notes.to_vec();
    let candidates: Vec<Value> = d
        .candidates
        .iter()
        .map(|c| candidate_value(dump, c))
        .collect();
    let (error, message) = match &d.route {
        None => (
            Some("host_unreachable"),
            Some(format!(
                "no route to {} outside the tunnel ({} candidate routes, none usable)",
                d.destination,
                d.candidates.len()
            )),
        ),
        Some(r) if r.refuses() => (
            Some("reject"),
            Some(format!(
                "the route {} is a reject/blackhole route ({})",
                r.destination, r.flags
            )),
        ),
        Some(_) => (None, None),
    };
    if d.route.is_some() {
        notes.push(
            "source: the address of the interface macOS picks (addresses are not in netstat -rn)"
                .to_owned(),
        );
    }
    json!({
        "destination": d.destination,
        "error": error,
        "message": message,
        "interface": d.interface,
        "interface_index": d.interface.as_ref().and_then(|i| dump.indices.get(i)),
        "interface_alias": null,
        "source": null,
        "next_hop": d.route.as_ref().and_then(|r| r.next_hop()),
        "route": d.route.as_ref().map(|r| r.destination.to_string()),
        "effective_metric": null,
        "enters_tunnel": false,
        "candidates": candidates,
        "notes": notes,
    })
}
