//! `loopguard route explain`: which route a host's guarded sockets would take, worked out
//! offline from dumps a user sent, with every candidate route and why it lost. One module per
//! OS; [`output`] prints the same shape for all of them.

mod output;
mod windows;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgGroup, Args};
use loopguard::route::dump;

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
    let reports = windows::explain(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!("{}", output::text(r));
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
