//! `route explain` for Windows dumps: PowerShell JSON, `route print`, the `Get-NetRoute`
//! table and `netsh`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use loopguard::route::dump::{self, route_print};
use loopguard::route::{
    select, Candidate, Decision, Family, HostTables, LossReason, Luid, Tunnel, Unreachable, Verdict,
};
use serde_json::{json, Value};

use super::output::{escape, short_list, warn_unread};
use super::{read, ExplainArgs};
use crate::UsageError;

/// Which reader the tables came from: what the "no routes" hint names, and whether missing
/// addresses mean "trimmed from the paste" (`route print`) or "none" (the other readers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    PowerShell,
    RoutePrint,
    NetrouteTable,
    Netsh,
}

impl Kind {
    fn command(self) -> &'static str {
        match self {
            Kind::PowerShell => "Get-NetRoute | ConvertTo-Json",
            Kind::RoutePrint => "route print",
            Kind::NetrouteTable => "Get-NetRoute",
            Kind::Netsh => "netsh interface ipv4 show route",
        }
    }
}

/// The tables and where they came from.
struct Loaded {
    tables: HostTables,
    file: PathBuf,
    kind: Kind,
}

fn load(args: &ExplainArgs) -> anyhow::Result<Loaded> {
    let name = |p: &Path| p.display().to_string();
    let addresses = |p: &Path| -> anyhow::Result<_> {
        Ok(dump::powershell::parse_addresses(&name(p), &read(p)?)?)
    };
    if let Some(path) = &args.windows_route_print {
        let dump = route_print::parse(&read(path)?);
        warn_unread(path, &dump);
        return Ok(Loaded {
            tables: dump.tables,
            file: path.clone(),
            kind: Kind::RoutePrint,
        });
    }
    if let Some(path) = &args.windows_netroute_table {
        let dump = dump::netroute_table::parse(&read(path)?);
        warn_unread(path, &dump);
        let mut tables = dump.tables;
        if let Some(a) = &args.windows_addresses {
            tables.addresses = Some(addresses(a)?);
        }
        return Ok(Loaded {
            tables,
            file: path.clone(),
            kind: Kind::NetrouteTable,
        });
    }
    if let Some(path) = &args.windows_netsh {
        let dump = dump::netsh::parse(&read(path)?);
        warn_unread(path, &dump);
        let mut tables = dump.tables;
        if let Some(a) = &args.windows_addresses {
            tables.addresses = Some(addresses(a)?);
        }
        return Ok(Loaded {
            tables,
            file: path.clone(),
            kind: Kind::Netsh,
        });
    }
    // clap guarantees the three JSON dumps come together.
    let (Some(r), Some(i), Some(a)) = (
        &args.windows_routes,
        &args.windows_interfaces,
        &args.windows_addresses,
    ) else {
        return Err(UsageError(
            "give --windows-routes with --windows-interfaces and --windows-addresses".into(),
        )
        .into());
    };
    let tables = dump::powershell::host_tables(
        (&name(r), &read(r)?),
        (&name(i), &read(i)?),
        (&name(a), &read(a)?),
    )?;
    Ok(Loaded {
        tables,
        file: r.clone(),
        kind: Kind::PowerShell,
    })
}

/// Answers for every destination, with the notes that apply to all of them.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<Vec<Value>> {
    let loaded = load(args)?;
    if loaded.tables.routes.is_empty() {
        anyhow::bail!(
            "no routes found in {} (is this the output of `{}`?)",
            escape(&loaded.file.display().to_string()),
            loaded.kind.command()
        );
    }
    let (tunnel, notes) = find_tunnel(&loaded, &args.tunnel)?;
    for note in &notes {
        eprintln!("warning: {note}");
    }
    Ok(args
        .destinations
        .iter()
        .map(|&d| report(&loaded, &tunnel, &notes, d))
        .collect())
}

/// The interface's name as a user would give it: its index, or for `route print`'s IPv4
/// pseudo-interfaces the address the table names it by (never a made-up index 0).
fn interface_name(luid: Luid, index: Option<u32>) -> Value {
    if let Some(address) = route_print::ipv4_pseudo_address(luid) {
        return Value::from(address.to_string());
    }
    match index {
        Some(i) if i != 0 => Value::from(i.to_string()),
        _ => Value::Null,
    }
}

fn find_tunnel(loaded: &Loaded, names: &[String]) -> anyhow::Result<(Tunnel, Vec<String>)> {
    let host = &loaded.tables;
    let mut luids = Vec::new();
    let mut notes = Vec::new();
    for name in names {
        let found = Tunnel::find(host, name).map_err(|e| {
            let known: Vec<String> = host
                .interfaces
                .iter()
                .map(|i| match interface_name(i.luid, Some(i.index)) {
                    Value::String(n) if n != i.alias && !i.alias.is_empty() => {
                        format!("{n} ({})", i.alias)
                    }
                    _ => i.alias.clone(),
                })
                .collect();
            UsageError(format!(
                "--tunnel: {}; the dump has: {}",
                escape(&e.to_string()),
                short_list(&known, 10)
            ))
        })?;
        let routes = host
            .routes
            .iter()
            .filter(|r| found.contains(r.interface))
            .count();
        if routes == 0 {
            let alias = found
                .luids()
                .iter()
                .filter_map(|&l| host.interface(l))
                .map(|i| i.alias.clone())
                .find(|a| !a.is_empty())
                .unwrap_or_default();
            let mut note = format!(
                "--tunnel {} ({}) matches no route in {}: nothing to exclude for it",
                escape(name),
                escape(&alias),
                escape(&loaded.file.display().to_string())
            );
            let v4_by_address = host
                .routes
                .iter()
                .any(|r| route_print::ipv4_pseudo_address(r.interface).is_some());
            if loaded.kind == Kind::RoutePrint && v4_by_address && name.parse::<IpAddr>().is_err() {
                note += "; route print's IPv4 table names interfaces by address, so if the \
                         tunnel has IPv4 routes name its IPv4 address too (--tunnel ADDRESS), \
                         or IPv4 answers may go through it";
            }
            notes.push(note);
        }
        luids.extend_from_slice(found.luids());
    }
    Ok((Tunnel::from_luids(luids), notes))
}

fn reason_value(reason: &LossReason) -> Value {
    match reason {
        LossReason::Tunnel => json!({"kind": "tunnel"}),
        LossReason::UnknownInterface => json!({"kind": "unknown_interface"}),
        LossReason::InterfaceDown(status) => {
            json!({"kind": "interface_down", "status": status.to_string()})
        }
        LossReason::FamilyDisabled => json!({"kind": "family_disabled"}),
        LossReason::NoUsableSource => json!({"kind": "no_usable_source"}),
        LossReason::ShorterPrefix {
            prefix_len,
            longest,
        } => json!({"kind": "shorter_prefix", "prefix_len": prefix_len, "longest": longest}),
        LossReason::HigherMetric { effective, best } => {
            json!({"kind": "higher_metric", "effective": effective, "best": best})
        }
        LossReason::TieBreak { winner_index } => {
            json!({"kind": "tie_break", "winner_index": winner_index})
        }
    }
}

/// `null` for what the dump did not say (index 0, empty alias).
fn index_value(index: Option<u32>) -> Value {
    index.filter(|&i| i != 0).map_or(Value::Null, Value::from)
}

fn alias_value(alias: Option<&str>) -> Value {
    alias
        .filter(|a| !a.is_empty())
        .map_or(Value::Null, Value::from)
}

fn candidate_value(c: &Candidate) -> Value {
    let (chosen, reason, why) = match &c.verdict {
        Verdict::Chosen => (true, Value::Null, "chosen".to_owned()),
        Verdict::Lost(r) => (false, reason_value(r), r.to_string()),
    };
    json!({
        "destination_prefix": c.route.destination.to_string(),
        "next_hop": c.route.next_hop,
        "interface": interface_name(c.route.interface, c.interface_index),
        "interface_index": index_value(c.interface_index),
        "interface_alias": alias_value(c.interface_alias.as_deref()),
        "route_metric": c.route.metric,
        "interface_metric": c.interface_metric,
        "effective_metric": c.effective_metric,
        "source": c.source,
        "chosen": chosen,
        "reason": reason,
        "why": why,
    })
}

/// Whether a pasted text dump shows no address at all of `family` on `luid`: then the
/// addresses were trimmed from the paste (or never printed), and "no usable source" would
/// be a guess.
fn no_address_shown(host: &HostTables, luid: Luid, family: Family) -> bool {
    !host
        .addresses
        .iter()
        .flatten()
        .any(|a| a.interface == luid && Family::of(a.address) == family)
}

/// One destination's answer, as the JSON object `--json` prints (the text is made from it).
fn report(loaded: &Loaded, tunnel: &Tunnel, notes: &[String], destination: IpAddr) -> Value {
    let host = &loaded.tables;
    let mut notes = notes.to_vec();
    let mut outcome = select(host, tunnel, destination);
    // `route print` lists addresses only as far as the paste goes (its /128 host routes; the
    // other readers take them from Get-NetIPAddress, complete, or have none): when the only thing
    // against a route is an interface with no address of the family in the paste, answer the
    // interface and next hop with the source unknown rather than "unreachable".
    if let Err(e) = &outcome {
        let family = Family::of(destination);
        let trimmed: Vec<Luid> = e
            .candidates
            .iter()
            .filter(|c| c.verdict == Verdict::Lost(LossReason::NoUsableSource))
            .map(|c| c.route.interface)
            .filter(|&l| no_address_shown(host, l, family))
            .collect();
        if loaded.kind == Kind::RoutePrint && !trimmed.is_empty() {
            let without = HostTables {
                addresses: None,
                ..host.clone()
            };
            if let Ok(d) = select(&without, tunnel, destination) {
                if trimmed.contains(&d.interface) {
                    notes.push(format!(
                        "the dump shows no {family} address on interface {}: source unknown \
                         (were its host routes trimmed from the paste?)",
                        interface_name(d.interface, Some(d.interface_index))
                            .as_str()
                            .unwrap_or("-")
                    ));
                    outcome = Ok(d);
                }
            }
        }
    }
    outcome_value(destination, outcome, &notes)
}

/// The JSON object of one decision (the chosen path and every candidate, or why none was
/// usable): what `route explain --json` prints per destination, and `route get
/// --pin-outside` for the live host.
pub(crate) fn outcome_value(
    destination: IpAddr,
    outcome: Result<Decision, Unreachable>,
    notes: &[String],
) -> Value {
    match outcome {
        Ok(d) => json!({
            "destination": destination,
            "error": null,
            "message": null,
            "interface": interface_name(d.interface, Some(d.interface_index)),
            "interface_index": index_value(Some(d.interface_index)),
            "interface_alias": alias_value(Some(&d.interface_alias)),
            "source": d.source,
            "next_hop": d.route.next_hop,
            "route": d.route.destination.to_string(),
            "effective_metric": d.effective_metric,
            "enters_tunnel": false,
            "candidates": d.candidates.iter().map(candidate_value).collect::<Vec<_>>(),
            "notes": notes,
        }),
        Err(e) => json!({
            "destination": destination,
            "error": "host_unreachable",
            "message": e.to_string(),
            "interface": null,
            "interface_index": null,
            "interface_alias": null,
            "source": null,
            "next_hop": null,
            "route": null,
            "effective_metric": null,
            "enters_tunnel": false,
            "candidates": e.candidates.iter().map(candidate_value).collect::<Vec<_>>(),
            "notes": notes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::output::{CANDIDATE_KEYS, REPORT_KEYS};
    use super::*;
    use loopguard::route::{Interface, OperStatus, Route};

    fn loaded() -> Loaded {
        let eth = Interface {
            luid: Luid(12),
            index: 12,
            alias: "Ethernet".into(),
            status: OperStatus::Up,
            ipv4_metric: Some(25),
            ipv6_metric: None,
        };
        let tun = Interface {
            luid: Luid(24),
            index: 24,
            alias: "loopguard".into(),
            ..eth.clone()
        };
        let idle = Interface {
            luid: Luid(27),
            index: 27,
            alias: "TAP".into(),
            ..eth.clone()
        };
        Loaded {
            tables: HostTables {
                routes: vec![
                    Route {
                        destination: "0.0.0.0/0".parse().unwrap(),
                        next_hop: Some("192.0.2.1".parse().unwrap()),
                        interface: Luid(12),
                        metric: 0,
                    },
                    Route {
                        destination: "0.0.0.0/1".parse().unwrap(),
                        next_hop: None,
                        interface: Luid(24),
                        metric: 0,
                    },
                ],
                interfaces: vec![eth, tun, idle],
                addresses: None,
            },
            file: "r.json".into(),
            kind: Kind::PowerShell,
        }
    }

    #[test]
    fn json_has_the_shared_keys_and_null_choices_when_unreachable() {
        let l = loaded();
        let (tunnel, notes) = find_tunnel(&l, &["loopguard".into()]).unwrap();
        assert!(notes.is_empty());
        let ok = report(&l, &tunnel, &notes, "1.2.3.4".parse().unwrap());
        let keys: Vec<&str> = ok.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = REPORT_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        let ckeys: Vec<&str> = ok["candidates"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = CANDIDATE_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(ckeys, want);
        assert_eq!(ok["interface_index"], 12);
        assert_eq!(ok["interface"], "12");
        assert_eq!(ok["candidates"][1]["reason"]["kind"], "tunnel");
        let bad = report(&l, &tunnel, &notes, "2001:db8::1".parse().unwrap());
        assert_eq!(bad["error"], "host_unreachable");
        assert_eq!(bad["interface_index"], Value::Null);
        assert_eq!(bad["source"], Value::Null);
        let t = super::super::output::text(&bad);
        assert!(t.contains("2001:db8::1 -> host_unreachable"), "{t}");
    }

    #[test]
    fn a_tunnel_without_routes_is_an_answer_with_a_note() {
        let l = loaded();
        let (tunnel, notes) = find_tunnel(&l, &["27".into()]).unwrap();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("--tunnel 27 (TAP) matches no route"),
            "{}",
            notes[0]
        );
        let r = report(&l, &tunnel, &notes, "1.2.3.4".parse().unwrap());
        assert_eq!(r["notes"][0], notes[0].as_str());
    }

    #[test]
    fn an_unknown_tunnel_is_a_usage_error_listing_the_interfaces() {
        let e = find_tunnel(&loaded(), &["wg0".into()]).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(e.to_string().contains("12 (Ethernet)"), "{e}");
    }
}
