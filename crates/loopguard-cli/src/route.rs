//! `loopguard route get DST`: the kernel's own route for a guarded socket.

use std::net::IpAddr;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::args::MarkArg;

/// Arguments of `loopguard route`.
#[derive(Args, Debug)]
pub struct RouteArgs {
    #[command(subcommand)]
    pub command: RouteCommand,
}

/// Subcommands of `loopguard route`.
#[derive(Subcommand, Debug)]
pub enum RouteCommand {
    /// Ask the kernel (RTM_GETROUTE carrying the mark) where a guarded socket's packets to DST
    /// would go
    Get(GetArgs),
    /// Explain, offline, which route a Windows, macOS or Linux host's guarded sockets would
    /// take to each DST, from dumps of its routing state (any OS)
    Explain(Box<crate::explain::ExplainArgs>),
}

/// Arguments of `loopguard route get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Destination address, IPv4 or IPv6
    #[arg(value_name = "DST")]
    pub destination: IpAddr,
    #[command(flatten)]
    pub mark: MarkArg,
    /// The tunnel's interface: report whether the route enters it
    #[arg(long, value_name = "IFACE")]
    pub tunnel: Option<String>,
    /// Choose the route as the pin strategy does instead (no mark, no policy rules): the best
    /// route of `main` outside this tunnel device; prints the interface, source and next hop,
    /// and why each other candidate route lost
    #[arg(long, value_name = "IFACE", conflicts_with_all = ["mark", "mask", "tunnel"])]
    pub pin_outside: Option<String>,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// The kernel's answer, as printed.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The destination asked about.
    pub destination: IpAddr,
    /// Output interface name.
    pub interface: Option<String>,
    /// Source address the kernel would choose.
    pub source: Option<IpAddr>,
    /// Next hop, if the destination is not on a directly connected network.
    pub gateway: Option<IpAddr>,
    /// Routing table the route came from.
    pub table: Option<u32>,
    /// Whether the route enters the `--tunnel` interface; `null` without `--tunnel`.
    pub enters_tunnel: Option<bool>,
}

impl Answer {
    fn text(&self, mark: u32) -> String {
        fn or_none<T: ToString>(v: &Option<T>) -> String {
            v.as_ref()
                .map(T::to_string)
                .unwrap_or_else(|| "-".to_owned())
        }
        let enters = match self.enters_tunnel {
            Some(true) => "yes: this is a loop".to_owned(),
            Some(false) => "no".to_owned(),
            None => "- (no --tunnel given)".to_owned(),
        };
        format!(
            "route to {} for a socket with mark {mark:#x}\n  interface      {}\n  source         {}\n  gateway        {}\n  table          {}\n  enters_tunnel  {enters}",
            self.destination,
            or_none(&self.interface),
            or_none(&self.source),
            or_none(&self.gateway),
            or_none(&self.table),
        )
    }
}

/// Runs `loopguard route ...`.
pub async fn run(args: RouteArgs) -> anyhow::Result<bool> {
    match args.command {
        RouteCommand::Get(args) => get(args).await,
        RouteCommand::Explain(args) => crate::explain::run(*args),
    }
}

/// Runs `loopguard route get`; `Ok(true)` when the kernel answered.
#[cfg(target_os = "linux")]
async fn get(args: GetArgs) -> anyhow::Result<bool> {
    if let Some(tunnel) = &args.pin_outside {
        return pin_get(tunnel, args.destination, args.json);
    }
    let config = args.mark.config()?;
    if let Some(tunnel) = &args.tunnel {
        // "Does not enter it" would be a false all-clear for a device that does not exist.
        match loopguard::os::linux::interface_index(tunnel).await {
            Ok(_) => {}
            Err(
                e @ (loopguard::os::linux::RoutesError::NoSuchDevice(_)
                | loopguard::os::linux::RoutesError::BadDeviceName(_)),
            ) => return Err(crate::UsageError(format!("--tunnel: {e}")).into()),
            Err(e) => return Err(e.into()),
        }
    }
    // The library's errors name the destination (and, for kernel errors, the lookup made).
    let route = loopguard::os::linux::route_get(args.destination, Some(config.mark())).await?;
    let enters_tunnel = args
        .tunnel
        .as_ref()
        .map(|t| route.interface.as_deref() == Some(t.as_str()));
    let answer = Answer {
        destination: args.destination,
        interface: route.interface,
        source: route.source,
        gateway: route.gateway,
        table: route.table,
        enters_tunnel,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&answer)?);
    } else {
        outln!("{}", answer.text(config.mark()));
    }
    Ok(true)
}

/// `loopguard route get --pin-outside`: the pin strategy's decision on the live tables, in
/// `route explain`'s form; `Ok(false)` when no route outside the tunnel exists.
#[cfg(target_os = "linux")]
fn pin_get(tunnel: &str, destination: IpAddr, json: bool) -> anyhow::Result<bool> {
    use loopguard::os::linux::{PinOutside, PinOutsideError};
    let strategy = match PinOutside::for_tunnel_named(tunnel) {
        Ok(s) => s,
        Err(e @ PinOutsideError::NoSuchTunnel(_)) => {
            return Err(crate::UsageError(format!("--pin-outside: {e}")).into())
        }
        Err(e) => return Err(e.into()),
    };
    let outcome = strategy.explain(destination)?;
    let reachable = outcome.is_ok();
    let notes = [format!(
        "pin strategy outside {tunnel}: main table, no mark, no policy rules"
    )];
    let value = crate::explain::windows::outcome_value(destination, outcome, &notes);
    if json {
        outln!("{}", serde_json::to_string(&value)?);
    } else {
        print!("{}", crate::explain::output::text(&value));
    }
    Ok(reachable)
}

/// Runs `loopguard route get`: Linux only.
#[cfg(not(target_os = "linux"))]
async fn get(_args: GetArgs) -> anyhow::Result<bool> {
    Err(crate::linux_only("route get"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let a = Answer {
            destination: "192.0.2.9".parse().unwrap(),
            interface: Some("lg-up".into()),
            source: Some("192.0.2.1".parse().unwrap()),
            gateway: None,
            table: Some(254),
            enters_tunnel: Some(false),
        };
        let v = serde_json::to_value(&a).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "destination",
                "enters_tunnel",
                "gateway",
                "interface",
                "source",
                "table"
            ]
        );
        assert_eq!(v["destination"], "192.0.2.9");
        assert_eq!(v["gateway"], serde_json::Value::Null);
        let text = a.text(0x4c47);
        assert!(
            text.contains("lg-up") && text.contains("0x4c47") && text.contains("enters_tunnel  no")
        );
    }
}
