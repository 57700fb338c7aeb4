//! `loopguard routes apply|show|remove`: a tunnel's routes in their own table and the policy
//! rules that keep guarded (marked) sockets out of it, for an existing TUN device.

use clap::{Args, Subcommand};
use ipnet::IpNet;
use serde::Serialize;

use crate::args::GuardArgs;

/// Arguments of `loopguard routes`.
#[derive(Args, Debug)]
pub struct RoutesArgs {
    #[command(subcommand)]
    pub command: RoutesCommand,
}

/// Subcommands of `loopguard routes`.
#[derive(Subcommand, Debug)]
pub enum RoutesCommand {
    /// Install the tunnel's routes on a device in the guard's table, the two policy rules,
    /// and what strict rp_filter needs; removes loopguard's stale rules and routes first.
    /// Idempotent
    Apply(ApplyArgs),
    /// Show the rules, routes and nftables table loopguard installed for this configuration,
    /// and the other programs' rules beside them
    Show(ShowArgs),
    /// Remove what loopguard installed, and nothing else: without --mark, --mask, --table or
    /// --priority, everything it tagged (every rule, every route in any table, every nftables
    /// table inet loopguard_*), whatever configuration installed it; with any of them,
    /// exactly that configuration
    Remove(ShowArgs),
}

/// Arguments of `loopguard routes apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The tunnel's device (for example a TUN); it must exist and be up
    #[arg(long, value_name = "IFACE")]
    pub dev: String,
    /// A prefix to route into the tunnel, IPv4 or IPv6 (repeat or list several, e.g.
    /// --route 0.0.0.0/0 ::/0)
    #[arg(long = "route", value_name = "CIDR", required = true, num_args = 1.., value_parser = parse_net)]
    pub routes: Vec<IpNet>,
    #[command(flatten)]
    pub guard: GuardArgs,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Keep the routes and rules asserted (restore them when another program deletes them)
    /// until SIGINT, SIGTERM or SIGHUP, then remove them
    #[arg(long)]
    pub watch: bool,
    /// With --watch: after removing, put back the sysctls apply changed (unless another
    /// program changed them since). Off by default: other programs may rely on them
    #[arg(long, requires = "watch")]
    pub restore_sysctls: bool,
}

/// Arguments of `loopguard routes show` and `loopguard routes remove`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub guard: GuardArgs,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// Parses a prefix such as `192.0.2.0/24` or `2001:db8::/32`, naming the value when it is not
/// one.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    text.trim().parse::<IpNet>().map_err(|_| {
        format!(
            "`{text}` is not an IPv4 or IPv6 prefix (write it like 192.0.2.0/24 or 2001:db8::/32)"
        )
    })
}

/// The guard numbers, as printed in JSON.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigJson {
    /// Socket mark.
    pub mark: u32,
    /// Mark mask.
    pub mask: u32,
    /// Routing table.
    pub table: u32,
    /// Priority of the first rule.
    pub priority: u32,
}

/// Runs `loopguard routes ...`; `Ok(true)` on success.
#[cfg(target_os = "linux")]
pub async fn run(args: RoutesArgs) -> anyhow::Result<bool> {
    match args.command {
        RoutesCommand::Apply(a) => linux::apply(a).await,
        RoutesCommand::Show(a) => linux::show(a).await,
        RoutesCommand::Remove(a) => linux::remove(a).await,
    }
}

/// Runs `loopguard routes ...`: Linux only.
#[cfg(not(target_os = "linux"))]
pub async fn run(_args: RoutesArgs) -> anyhow::Result<bool> {
    Err(crate::linux_only("routes"))
}

#[cfg(target_os = "linux")]
pub(crate) use linux::{end_text, finding_json, path_json};

#[cfg(target_os = "linux")]
mod linux {
    use loopguard::keeper::{KeepOptions, KeeperEvent, RouteKeeper};
    use loopguard::os::linux::{
        restore_sysctls, Finding, PathCheck, PathEnd, RoutesError, RoutesState, SysctlChange,
        TunnelRoutes,
    };
    use loopguard::GuardConfig;
    use serde::Serialize;
    use serde_json::json;

    use super::{ApplyArgs, ConfigJson, ShowArgs};
    use crate::UsageError;

    fn config_json(c: &GuardConfig) -> ConfigJson {
        ConfigJson {
            mark: c.mark(),
            mask: c.mask(),
            table: c.table(),
            priority: c.priority(),
        }
    }

    /// Errors about what the user typed exit with status 2, like clap's; the rest with 1.
    fn classify(e: RoutesError) -> anyhow::Error {
        match e {
            RoutesError::NoSuchDevice(_)
            | RoutesError::BadDeviceName(_)
            | RoutesError::NoPrefixes
            | RoutesError::HostBitsSet { .. } => UsageError(format!("nothing changed: {e}")).into(),
            // Its message already says nothing changed.
            RoutesError::PriorityCannotWork(_) => UsageError(e.to_string()).into(),
            other => anyhow::Error::new(other),
        }
    }

    fn print<T: Serialize>(
        json: bool,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if json {
            outln!("{}", serde_json::to_string(value)?);
        } else {
            outln!("{}", text());
        }
        Ok(())
    }

    pub(super) async fn apply(args: ApplyArgs) -> anyhow::Result<bool> {
        let config = args.guard.config()?;
        let routes = TunnelRoutes::new(config);
        let (report, keeper) = if args.watch {
            // Registered before anything is installed: a signal from now on means "remove".
            let signal = crate::watch::stop_signal()
                .map_err(|e| anyhow::anyhow!("registering for SIGINT, SIGTERM and SIGHUP: {e}"))?;
            let (report, keeper) = routes
                .keep(&args.dev, &args.routes, KeepOptions::default())
                .await
                .map_err(classify)?;
            (report, Some((keeper, signal)))
        } else {
            let report = routes
                .apply(&args.dev, &args.routes)
                .await
                .map_err(classify)?;
            (report, None)
        };
        let prefixes: Vec<String> = args.routes.iter().map(ToString::to_string).collect();
        let sysctls: Vec<_> = report
            .sysctls
            .iter()
            .map(|s| json!({ "key": s.key, "previous": s.previous, "value": s.value }))
            .collect();
        let paths: Vec<_> = report.paths.iter().map(path_json).collect();
        let findings: Vec<_> = report.findings.iter().map(finding_json).collect();
        let value = json!({
            "config": config_json(&config),
            "device": args.dev,
            "routes": prefixes,
            "rules_added": report.rules_added,
            "rules_removed": report.rules_removed,
            "routes_added": report.routes_added,
            "routes_removed": report.routes_removed,
            "sysctls": sysctls,
            "conntrack_table": report.conntrack_table,
            "paths": paths,
            "findings": findings,
        });
        let printed = print(args.json, &value, || {
            let mut t = format!(
                "applied {} on {} ({config})\n  rules added {}, stale removed {}; routes added {}, stale removed {}\n  nftables table inet {} saves and restores the mark (strict rp_filter)",
                summary(&prefixes),
                args.dev,
                report.rules_added,
                report.rules_removed,
                report.routes_added,
                report.routes_removed,
                report.conntrack_table,
            );
            for s in &report.sysctls {
                t += &format!("\n  sysctl {} = {} (was {})", s.key, s.value, s.previous);
            }
            for p in &report.paths {
                t += &format!(
                    "\n  checked {}: marked -> {}, unmarked -> {}",
                    p.destination,
                    end_text(&p.marked),
                    end_text(&p.unmarked)
                );
            }
            for f in &report.findings {
                t += &format!("\n  {}: {} ({})", f.severity, f.message, f.code);
            }
            t
        });
        match keeper {
            Some((keeper, signal)) => {
                if let Err(e) = printed {
                    // Nobody reads the report (a closed pipe): remove what was installed, as
                    // on a signal, before saying why.
                    keeper.stop().await.map_err(classify)?;
                    return Err(e);
                }
                let restore = args.restore_sysctls.then_some(&report.sysctls[..]);
                keep_until_signal(args.json, &config, keeper, signal, restore).await
            }
            None => printed.map(|()| true),
        }
    }

    /// The prefixes for a line of text: all of them when few, else the first few and how
    /// many (10,000 prefixes on one line help nobody; `--json` lists them all).
    pub(super) fn summary(prefixes: &[String]) -> String {
        const SHOWN: usize = 4;
        if prefixes.len() <= SHOWN * 2 {
            return prefixes.join(", ");
        }
        format!(
            "{} prefixes ({}, ... {})",
            prefixes.len(),
            prefixes[..SHOWN].join(", "),
            prefixes[prefixes.len() - 1]
        )
    }

    /// `routes apply --watch`: restores what others delete, printing every restore and
    /// every failed repair, until SIGINT, SIGTERM or SIGHUP (or until standard output is
    /// closed), then removes everything loopguard installed.
    async fn keep_until_signal(
        json: bool,
        config: &GuardConfig,
        mut keeper: RouteKeeper,
        signal: impl std::future::Future<Output = ()>,
        restore: Option<&[SysctlChange]>,
    ) -> anyhow::Result<bool> {
        eprintln!("keeping the routes asserted until SIGINT, SIGTERM or SIGHUP");
        tokio::pin!(signal);
        // Stops on a signal, or when printing fails (a closed pipe): the removal below runs
        // either way, then the printing error (if any) ends the command.
        let closed = loop {
            let event = tokio::select! {
                _ = &mut signal => break None,
                e = keeper.next_event() => e,
            };
            let Some(event) = event else {
                // The watcher ended on its own; it has logged why.
                signal.as_mut().await;
                break None;
            };
            if let Err(e) = print_event(json, &event) {
                break Some(e);
            }
        };
        let report = keeper.stop().await.map_err(classify)?;
        let restored = match restore {
            Some(changes) => restore_sysctls(changes).map_err(classify)?,
            None => Vec::new(),
        };
        if let Some(e) = closed {
            return Err(e);
        }
        let restored_json: Vec<_> = restored
            .iter()
            .map(|s| json!({ "key": s.key, "previous": s.previous, "value": s.value }))
            .collect();
        let removed = &report.removed;
        let value = json!({
            "stopped": true,
            "restores": report.restores,
            "rules_removed": removed.rules_removed,
            "routes_removed": removed.routes_removed,
            "conntrack_table_removed": removed.conntrack_table_removed,
            "sysctls_restored": restored_json,
        });
        print(json, &value, || {
            let mut t = format!(
                "stopped after {} restore(s); removed {} rule(s), {} route(s) ({config})",
                report.restores, removed.rules_removed, removed.routes_removed
            );
            for s in &restored {
                t += &format!(
                    "\n  sysctl {} = {} (restored, was {})",
                    s.key, s.value, s.previous
                );
            }
            t
        })?;
        Ok(true)
    }

    /// One line per keeper event: JSON with an `event` field, or text.
    fn print_event(json: bool, event: &KeeperEvent) -> anyhow::Result<()> {
        if !json {
            outln!("keeper: {event}");
            return Ok(());
        }
        let value = match event {
            KeeperEvent::Restored { piece, count } => {
                json!({ "event": "restored", "piece": piece.as_str(), "count": count })
            }
            KeeperEvent::RepairFailed { piece, error } => json!({
                "event": "repair_failed", "piece": piece.as_str(), "error": crate::out::with_sources(error)
            }),
            KeeperEvent::DeviceRenamed { index, from, to } => json!({
                "event": "device_renamed", "index": index, "from": from, "to": to
            }),
            KeeperEvent::DeviceReplaced {
                name,
                old_index,
                new_index,
            } => json!({
                "event": "device_replaced", "name": name,
                "old_index": old_index, "new_index": new_index
            }),
            KeeperEvent::Recovered => json!({ "event": "recovered" }),
            other => json!({ "event": "other", "text": other.to_string() }),
        };
        outln!("{value}");
        Ok(())
    }

    /// One path end as `dev X table T` or the reason there is none.
    pub(crate) fn end_text(e: &PathEnd) -> String {
        match (&e.error, &e.interface, e.table) {
            (Some(err), _, _) => format!("no route ({err})"),
            (None, i, t) => format!(
                "dev {} table {}",
                i.as_deref().unwrap_or("?"),
                t.map_or("?".into(), |t| t.to_string())
            ),
        }
    }

    pub(crate) fn end_json(e: &PathEnd) -> serde_json::Value {
        json!({ "interface": e.interface, "table": e.table, "error": e.error })
    }

    pub(crate) fn path_json(p: &PathCheck) -> serde_json::Value {
        json!({
            "family": p.family.to_string(),
            "destination": p.destination.to_string(),
            "mark": p.mark,
            "marked": end_json(&p.marked),
            "unmarked": end_json(&p.unmarked),
        })
    }

    pub(crate) fn finding_json(f: &Finding) -> serde_json::Value {
        json!({
            "severity": f.severity.to_string(),
            "code": f.code,
            "message": f.message,
            "rule_priority": f.rule_priority,
            "table": f.table,
        })
    }

    fn state_json(config: &GuardConfig, state: &RoutesState) -> serde_json::Value {
        let rules: Vec<_> = state
            .rules
            .iter()
            .map(|r| {
                json!({
                    "priority": r.priority,
                    "family": r.family.to_string(),
                    "selector": r.selector,
                    "table": r.table,
                })
            })
            .collect();
        let routes: Vec<_> = state
            .routes
            .iter()
            .map(|r| {
                json!({
                    "prefix": r.prefix.to_string(),
                    "device": r.device,
                    "device_index": r.device_index,
                    "table": r.table,
                    "terminal": r.terminal,
                })
            })
            .collect();
        let other_rules: Vec<_> = state
            .other_rules
            .iter()
            .map(|r| {
                json!({
                    "priority": r.priority,
                    "family": r.family.to_string(),
                    "selector": r.selector,
                    "table": r.table,
                    "owner": r.owner.map(|o| o.name()),
                })
            })
            .collect();
        json!({
            "config": config_json(config),
            "rules": rules,
            "routes": routes,
            "conntrack_table": state.conntrack_table,
            "other_rules": other_rules,
        })
    }

    fn state_text(config: &GuardConfig, state: &RoutesState) -> String {
        let mut others = String::new();
        if !state.other_rules.is_empty() {
            others += "\nother programs' rules:";
        }
        for r in &state.other_rules {
            let owner = r
                .owner
                .map(|o| format!(" ({})", o.name()))
                .unwrap_or_default();
            others += &format!("\n    {}: {} {}{owner}", r.priority, r.family, r.selector);
        }
        if state.rules.is_empty() && state.routes.is_empty() && state.conntrack_table.is_none() {
            return format!("nothing installed by loopguard for {config}{others}");
        }
        let mut t = format!("installed by loopguard for {config}:\n  rules:");
        if state.rules.is_empty() {
            t += " none";
        }
        for r in &state.rules {
            t += &format!("\n    {}: {} {}", r.priority, r.family, r.selector);
        }
        t += "\n  routes:";
        if state.routes.is_empty() {
            t += " none";
        }
        for r in &state.routes {
            if r.terminal {
                t += &format!(
                    "\n    unreachable {} table {} (last resort, metric 4294967295)",
                    r.prefix, r.table
                );
                continue;
            }
            let dev = match (&r.device, r.device_index) {
                (Some(name), _) => name.clone(),
                (None, Some(i)) => format!("index {i} (gone)"),
                (None, None) => "-".to_owned(),
            };
            t += &format!("\n    {} dev {dev} table {}", r.prefix, r.table);
        }
        t += &format!(
            "\n  nftables table: {}",
            state
                .conntrack_table
                .as_deref()
                .map(|n| format!("inet {n}"))
                .unwrap_or_else(|| "none".into())
        );
        t + &others
    }

    pub(super) async fn show(args: ShowArgs) -> anyhow::Result<bool> {
        let config = args.guard.config()?;
        let state = TunnelRoutes::new(config).show().await.map_err(classify)?;
        print(args.json, &state_json(&config, &state), || {
            state_text(&config, &state)
        })?;
        Ok(true)
    }

    pub(super) async fn remove(args: ShowArgs) -> anyhow::Result<bool> {
        // Without options: everything loopguard tagged, whatever configuration it was.
        let everything = args.guard == crate::args::GuardArgs::default();
        let config = args.guard.config()?;
        let routes = TunnelRoutes::new(config);
        let report = if everything {
            routes.remove_all().await
        } else {
            routes.remove().await
        }
        .map_err(classify)?;
        let value = json!({
            "config": (!everything).then(|| config_json(&config)),
            "everything": everything,
            "rules_removed": report.rules_removed,
            "routes_removed": report.routes_removed,
            "conntrack_table_removed": report.conntrack_table_removed,
            "conntrack_tables": report.conntrack_tables,
        });
        print(args.json, &value, || {
            let tables = if report.conntrack_tables.is_empty() {
                String::new()
            } else {
                format!(
                    " and nftables table(s) inet {}",
                    report.conntrack_tables.join(", inet ")
                )
            };
            let scope = if everything {
                "everything loopguard installed".to_owned()
            } else {
                config.to_string()
            };
            format!(
                "removed {} rule(s), {} route(s){tables} ({scope})",
                report.rules_removed, report.routes_removed,
            )
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_long_prefix_list_is_summarised_in_text() {
        let few: Vec<String> = ["0.0.0.0/0", "::/0"].map(String::from).to_vec();
        assert_eq!(linux::summary(&few), "0.0.0.0/0, ::/0");
        let many: Vec<String> = (0..10_000)
            .map(|i| format!("2001:db8:{i:x}::/48"))
            .collect();
        let text = linux::summary(&many);
        assert_eq!(
            text,
            "10000 prefixes (2001:db8:0::/48, 2001:db8:1::/48, 2001:db8:2::/48, \
             2001:db8:3::/48, ... 2001:db8:270f::/48)"
        );
    }

    #[test]
    fn prefixes_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_net("192.0.2.0/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            parse_net("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse_net("0.0.0.0/0").unwrap().prefix_len(), 0);
        for bad in [
            "300.1.2.3/40",
            "192.0.2.0/33",
            "192.0.2.0",
            "2001:db8::/129",
            "x",
        ] {
            let e = parse_net(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }
}
