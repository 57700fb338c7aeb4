//! `loopguard route explain`: which route a Windows host's guarded sockets would take, worked
//! out offline from dumps a user sent, with every candidate route and why it lost.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgGroup, Args};
use loopguard::route::dump::{self, TextDump};
use loopguard::route::{select, Candidate, HostTables, LossReason, Tunnel, Verdict};
use serde_json::{json, Value};

use crate::UsageError;

/// How users produce the dumps; shown in `--help` and the README.
const DUMP_HELP: &str = "\
Producing the dumps on the Windows host (PowerShell 5.1 or 7, no admin rights needed):

  Get-NetRoute | ConvertTo-Json | Out-File -Encoding utf8 routes.json
  Get-NetIPInterface | ConvertTo-Json | Out-File -Encoding utf8 interfaces.json
  Get-NetIPAddress | ConvertTo-Json | Out-File -Encoding utf8 addresses.json

then: loopguard route explain --windows-routes routes.json --windows-interfaces \
interfaces.json --windows-addresses addresses.json --tunnel <alias or index> <DST>...

Text pasted into a bug report works too: `route print > route-print.txt` (name the tunnel by
its IPv4 address and by its index: --tunnel 203.0.113.2 --tunnel 24), or the table
`Get-NetRoute` prints (--windows-netroute-table; add --windows-addresses for sources).
Files may be UTF-8 (with or without BOM) or UTF-16, in any display language.";

/// Arguments of `loopguard route explain`.
#[derive(Args, Debug)]
#[command(
    after_long_help = DUMP_HELP,
    group(ArgGroup::new("routes").required(true).args(["windows_routes", "windows_route_print", "windows_netroute_table"]))
)]
pub struct ExplainArgs {
    /// `Get-NetRoute | ConvertTo-Json` output
    #[arg(long, value_name = "R.json", requires_all = ["windows_interfaces", "windows_addresses"])]
    pub windows_routes: Option<PathBuf>,
    /// `Get-NetIPInterface | ConvertTo-Json` output (with --windows-routes)
    #[arg(long, value_name = "I.json", requires = "windows_routes")]
    pub windows_interfaces: Option<PathBuf>,
    /// `Get-NetIPAddress | ConvertTo-Json` output (with --windows-routes or
    /// --windows-netroute-table)
    #[arg(long, value_name = "A.json", conflicts_with = "windows_route_print")]
    pub windows_addresses: Option<PathBuf>,
    /// Text of `route print` instead of the JSON dumps
    #[arg(long, value_name = "FILE")]
    pub windows_route_print: Option<PathBuf>,
    /// The table `Get-NetRoute` prints by default instead of the JSON dumps
    #[arg(long, value_name = "FILE")]
    pub windows_netroute_table: Option<PathBuf>,
    /// The tunnel: interface alias, index or address; repeat for several (route print)
    #[arg(long, value_name = "ALIAS_OR_INDEX", required = true)]
    pub tunnel: Vec<String>,
    /// Destinations to explain, IPv4 or IPv6
    #[arg(value_name = "DST", required = true)]
    pub destinations: Vec<IpAddr>,
    /// Print a JSON array, one object per destination, instead of tables
    #[arg(long)]
    pub json: bool,
}

/// Runs `loopguard route explain`: `Ok(true)` once the dumps were read, whether or not each
/// destination is reachable (an unreachable one is an answer, not a failure).
pub fn run(args: ExplainArgs) -> anyhow::Result<bool> {
    let host = load(&args)?;
    let tunnel = find_tunnel(&host, &args.tunnel)?;
    let reports: Vec<Value> = args
        .destinations
        .iter()
        .map(|&d| report(&host, &tunnel, d))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!("{}", text(r));
        }
    }
    Ok(true)
}

fn read(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(dump::decode_text(&bytes))
}

/// Says which lines of a text dump were skipped, so nobody trusts an answer built on half a
/// table without knowing.
fn warn_unread(path: &Path, dump: &TextDump) {
    for u in &dump.unread {
        eprintln!(
            "warning: {}: line {}: could not read: {}",
            path.display(),
            u.line,
            u.text.trim()
        );
    }
}

fn load(args: &ExplainArgs) -> anyhow::Result<HostTables> {
    let name = |p: &Path| p.display().to_string();
    let addresses = |p: &Path| -> anyhow::Result<_> {
        Ok(dump::powershell::parse_addresses(&name(p), &read(p)?)?)
    };
    if let Some(path) = &args.windows_route_print {
        let dump = dump::route_print::parse(&read(path)?);
        warn_unread(path, &dump);
        return Ok(dump.tables);
    }
    if let Some(path) = &args.windows_netroute_table {
        let dump = dump::netroute_table::parse(&read(path)?);
        warn_unread(path, &dump);
        let mut tables = dump.tables;
        if let Some(a) = &args.windows_addresses {
            tables.addresses = Some(addresses(a)?);
        }
        return Ok(tables);
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
    Ok(dump::powershell::host_tables(
        (&name(r), &read(r)?),
        (&name(i), &read(i)?),
        (&name(a), &read(a)?),
    )?)
}

fn find_tunnel(host: &HostTables, names: &[String]) -> anyhow::Result<Tunnel> {
    let mut luids = Vec::new();
    for name in names {
        match Tunnel::find(host, name) {
            Ok(t) => luids.extend_from_slice(t.luids()),
            Err(e) => {
                let known: Vec<String> = host
                    .interfaces
                    .iter()
                    .map(|i| format!("{} ({})", i.index, i.alias))
                    .collect();
                return Err(UsageError(format!(
                    "--tunnel: {e}; the dump has: {}",
                    known.join(", ")
                ))
                .into());
            }
        }
    }
    Ok(Tunnel::from_luids(luids))
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

fn candidate_value(c: &Candidate) -> Value {
    let (chosen, reason, why) = match &c.verdict {
        Verdict::Chosen => (true, Value::Null, "chosen".to_owned()),
        Verdict::Lost(r) => (false, reason_value(r), r.to_string()),
    };
    json!({
        "destination_prefix": c.route.destination.to_string(),
        "next_hop": c.route.next_hop,
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

/// One destination's answer, as the JSON object `--json` prints (the text is made from it).
fn report(host: &HostTables, tunnel: &Tunnel, destination: IpAddr) -> Value {
    match select(host, tunnel, destination) {
        Ok(d) => json!({
            "destination": destination,
            "error": null,
            "interface_index": index_value(Some(d.interface_index)),
            "interface_alias": alias_value(Some(&d.interface_alias)),
            "source": d.source,
            "next_hop": d.route.next_hop,
            "route": d.route.destination.to_string(),
            "effective_metric": d.effective_metric,
            "candidates": d.candidates.iter().map(candidate_value).collect::<Vec<_>>(),
        }),
        Err(e) => json!({
            "destination": destination,
            "error": "host_unreachable",
            "message": e.to_string(),
            "interface_index": null,
            "interface_alias": null,
            "source": null,
            "next_hop": null,
            "route": null,
            "effective_metric": null,
            "candidates": e.candidates.iter().map(candidate_value).collect::<Vec<_>>(),
        }),
    }
}

/// The decision table for one destination.
fn text(r: &Value) -> String {
    let s = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = if r["error"].is_null() {
        format!(
            "{} -> interface {} ({}), source {}, next hop {}, route {} (effective metric {})\n",
            s(&r["destination"]),
            s(&r["interface_index"]),
            s(&r["interface_alias"]),
            s(&r["source"]),
            if r["next_hop"].is_null() {
                "on-link".to_owned()
            } else {
                s(&r["next_hop"])
            },
            s(&r["route"]),
            s(&r["effective_metric"]),
        )
    } else {
        format!(
            "{} -> unreachable: {}\n",
            s(&r["destination"]),
            s(&r["message"])
        )
    };
    let rows: Vec<[String; 8]> = r["candidates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            [
                s(&c["destination_prefix"]),
                if c["next_hop"].is_null() {
                    "on-link".to_owned()
                } else {
                    s(&c["next_hop"])
                },
                s(&c["interface_index"]),
                s(&c["interface_alias"]),
                s(&c["route_metric"]),
                s(&c["interface_metric"]),
                s(&c["effective_metric"]),
                s(&c["why"]),
            ]
        })
        .collect();
    let header = [
        "prefix",
        "next hop",
        "if",
        "alias",
        "route",
        "if-metric",
        "effective",
        "verdict",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::from(" ");
        for (cell, w) in cells.iter().zip(widths) {
            l += &format!(" {cell:<w$}");
        }
        l.trim_end().to_owned() + "\n"
    };
    if rows.is_empty() {
        out += "  (no route contains this destination)\n";
    } else {
        out += &line(&header.map(String::from));
        for row in &rows {
            out += &line(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopguard::route::{Interface, Luid, OperStatus, Route};

    fn host() -> HostTables {
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
        HostTables {
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
            interfaces: vec![eth, tun],
            addresses: None,
        }
    }

    #[test]
    fn json_has_the_documented_keys_and_null_choices_when_unreachable() {
        let h = host();
        let tunnel = find_tunnel(&h, &["loopguard".into()]).unwrap();
        let ok = report(&h, &tunnel, "1.2.3.4".parse().unwrap());
        for key in [
            "destination",
            "interface_index",
            "interface_alias",
            "source",
            "candidates",
        ] {
            assert!(ok.get(key).is_some(), "{key}");
        }
        assert_eq!(ok["interface_index"], 12);
        assert_eq!(ok["candidates"][1]["reason"]["kind"], "tunnel");
        let bad = report(&h, &tunnel, "2001:db8::1".parse().unwrap());
        assert_eq!(bad["error"], "host_unreachable");
        assert_eq!(bad["interface_index"], Value::Null);
        assert_eq!(bad["source"], Value::Null);
        let t = text(&bad);
        assert!(t.contains("2001:db8::1 -> unreachable"), "{t}");
    }

    #[test]
    fn an_unknown_tunnel_is_a_usage_error_listing_the_interfaces() {
        let e = find_tunnel(&host(), &["wg0".into()]).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(e.to_string().contains("12 (Ethernet)"), "{e}");
    }
}
