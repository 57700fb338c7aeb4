//! `loopguard route explain`: which route a host's guarded sockets would take, worked out
//! offline from dumps a user sent, with every candidate route and why it lost. One module per
//! OS; [`output`] prints the same shape for all of them.

mod linux;
mod macos;
pub(crate) mod output;
pub(crate) mod windows;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgGroup, Args};
use loopguard::route::dump;

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
`Get-NetRoute` prints (--windows-netroute-table; add --windows-addresses for sources), or
netsh's tables (--windows-netsh FILE, from: netsh interface ipv4 show route > netsh.txt &
netsh interface ipv4 show interfaces >> netsh.txt & netsh interface ipv6 show route >>
netsh.txt & netsh interface ipv6 show interfaces >> netsh.txt; for sources, also
netsh interface ipv4 show addresses >> netsh.txt & netsh interface ipv6 show addresses >>
netsh.txt).
Files may be UTF-8 (with or without BOM) or UTF-16, in any display language.

macOS: netstat -rn > netstat.txt, then: loopguard route explain --macos-netstat netstat.txt \
--tunnel utun3 <DST>...

Linux (no root needed): ip rule > rules.txt; ip -6 rule >> rules.txt;
  ip route show table all > routes.txt; ip -6 route show table all >> routes.txt
(or the same with `ip -j`), then: loopguard route explain --linux-rules rules.txt \
--linux-routes routes.txt [--mark 0x3047] [--from ADDR] --tunnel wg0 <DST>...";

/// Arguments of `loopguard route explain`.
#[derive(Args, Debug)]
#[command(
    after_long_help = DUMP_HELP,
    group(ArgGroup::new("routes").required(true).multiple(true).args([
        "windows_routes", "windows_route_print", "windows_netroute_table", "windows_netsh",
        "linux_rules", "linux_rules6", "macos_netstat",
    ]))
)]
pub struct ExplainArgs {
    /// `Get-NetRoute | ConvertTo-Json` output
    #[arg(long, value_name = "R.json", requires_all = ["windows_interfaces", "windows_addresses"])]
    pub windows_routes: Option<PathBuf>,
    /// `Get-NetIPInterface | ConvertTo-Json` output (with --windows-routes)
    #[arg(long, value_name = "I.json", requires = "windows_routes")]
    pub windows_interfaces: Option<PathBuf>,
    /// `Get-NetIPAddress | ConvertTo-Json` output (with --windows-routes, or for sources with
    /// --windows-netroute-table or --windows-netsh)
    #[arg(long, value_name = "A.json", conflicts_with = "windows_route_print")]
    pub windows_addresses: Option<PathBuf>,
    /// Text of `route print` instead of the JSON dumps
    #[arg(long, value_name = "FILE")]
    pub windows_route_print: Option<PathBuf>,
    /// The table `Get-NetRoute` prints by default instead of the JSON dumps
    #[arg(long, value_name = "FILE")]
    pub windows_netroute_table: Option<PathBuf>,
    /// `netsh interface ipv4 show route`, `... ipv4 show interfaces`, `... ipv6 show route`
    /// and `... ipv6 show interfaces`, concatenated in that order, instead of the JSON dumps;
    /// `... ipv4 show addresses` and `... ipv6 show addresses` after them give sources
    #[arg(long, value_name = "FILE")]
    pub windows_netsh: Option<PathBuf>,
    /// Text of macOS `netstat -rn` (name the tunnel by its utun: --tunnel utun3)
    #[arg(long, value_name = "FILE")]
    pub macos_netstat: Option<PathBuf>,
    /// `ip rule` output, text or `-j` JSON; may be followed by `ip -6 rule` in the same file
    #[arg(long, value_name = "FILE")]
    pub linux_rules: Option<PathBuf>,
    /// `ip -6 rule` output on its own
    #[arg(long, value_name = "FILE")]
    pub linux_rules6: Option<PathBuf>,
    /// `ip route show table all` (and/or `ip -6 route show table all`) output, text or JSON;
    /// repeat for several files. Without it the rules alone answer
    #[arg(long, value_name = "FILE")]
    pub linux_routes: Vec<PathBuf>,
    /// Linux: the guarded socket's mark, decimal or 0x-hex [default: 0x3047]
    #[arg(long, value_name = "MARK", value_parser = crate::args::parse_u32)]
    pub mark: Option<u32>,
    /// Linux: the bits of the mark loopguard's rule compares; the answer is also checked with
    /// every other bit set [default: 0x30ff]
    #[arg(long, value_name = "MASK", value_parser = crate::args::parse_u32)]
    pub mask: Option<u32>,
    /// Linux: the address the socket is bound to (unbound when absent, so `from` rules do not
    /// match)
    #[arg(long, value_name = "ADDR")]
    pub from: Option<IpAddr>,
    /// The tunnel: interface alias, index or address (Windows; repeat for several), or its
    /// interface name (macOS `utunN`, Linux device)
    #[arg(long, value_name = "NAME", required = true)]
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
    let windows = [
        args.windows_routes.is_some(),
        args.windows_route_print.is_some(),
        args.windows_netroute_table.is_some(),
        args.windows_netsh.is_some(),
    ];
    let linux = args.linux_rules.is_some() || args.linux_rules6.is_some();
    let sources = windows.iter().filter(|&&w| w).count()
        + usize::from(linux)
        + usize::from(args.macos_netstat.is_some());
    if sources > 1 {
        return Err(UsageError(
            "give the dumps of one host in one format: --windows-routes, \
             --windows-route-print, --windows-netroute-table, --windows-netsh, --macos-netstat \
             or --linux-rules"
                .into(),
        )
        .into());
    }
    if !linux && (!args.linux_routes.is_empty() || args.from.is_some()) {
        return Err(UsageError("--linux-routes and --from go with --linux-rules".into()).into());
    }
    let reports = if linux {
        linux::explain(&args)?
    } else if let Some(path) = &args.macos_netstat {
        macos::explain(&args, path)?
    } else {
        windows::explain(&args)?
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            outln!("{}", output::text(r));
        }
    }
    Ok(true)
}

/// A dump's text, whatever encoding the shell wrote it in.
fn read(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read {}",
            output::escape(&path.display().to_string())
        )
    })?;
    Ok(dump::decode_text(&bytes))
}
