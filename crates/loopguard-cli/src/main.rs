//! `loopguard`: the command-line face of the loopguard library.
//!
//! One module per command: `demo`, [`doctor`], [`probe`], [`route`], [`routes`], [`watch`]; shared
//! argument parsing lives in [`args`]. Every command returns whether it succeeded; errors caused by the
//! arguments ([`UsageError`]) exit with status 2, everything else that fails with status 1.

// Elsewhere the Linux-only commands only say so; their reports and helpers go unused.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

#[macro_use]
mod out;

mod args;
mod bench;
#[cfg(target_os = "linux")]
mod demo;
mod doctor;
mod explain;
mod probe;
mod route;
mod routes;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sockets for VPN and tunnel clients that never loop into their own tunnel.
///
/// Set RUST_LOG (for example RUST_LOG=loopguard=debug) to see the library's logs on stderr.
#[derive(Parser, Debug)]
#[command(name = "loopguard", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a lab of network namespaces and show guarded sockets escaping a tunnel that
    /// captures all traffic, next to plain sockets that loop (Linux, root)
    Demo(DemoArgs),
    /// Round trips to an echo server through a guarded socket, with the time of each (Linux)
    Probe(probe::ProbeArgs),
    /// Ask the kernel which route a guarded socket would take (Linux), or explain a Windows
    /// host's choice from its dumps (any OS)
    Route(route::RouteArgs),
    /// Install, show or remove a tunnel's routes and the policy rules that keep guarded
    /// sockets out of it (Linux, root)
    Routes(routes::RoutesArgs),
    /// Check this machine's policy routing as it concerns guarded sockets: other programs'
    /// rules, captures, collisions, rule order, rp_filter, and where marked and unmarked
    /// packets go; exit 1 when a finding is an error (Linux)
    Doctor(doctor::DoctorArgs),
    /// Print one line per debounced network change (links, addresses, routes, rules) until
    /// SIGINT, SIGTERM or SIGHUP (Linux)
    Watch(watch::WatchArgs),
    /// Measure loopguard's cost against plain sockets and DashMap, interleaved in one run
    Bench(bench::BenchArgs),
}

/// Arguments of `loopguard demo`.
#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Print the results as one JSON object instead of tables
    #[arg(long)]
    json: bool,
}

/// A failure caused by the command-line arguments: exit status 2, like clap's own errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // The reader of standard output went away (`| head -1`): nothing left to say.
        Err(e) if out::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        #[cfg(target_os = "linux")]
        Command::Demo(a) => demo::run(a.json).await,
        #[cfg(not(target_os = "linux"))]
        Command::Demo(_) => Err(linux_only("demo")),
        Command::Probe(a) => probe::run(a).await,
        Command::Route(a) => route::run(a).await,
        Command::Routes(a) => routes::run(a).await,
        Command::Doctor(a) => doctor::run(a).await,
        Command::Watch(a) => watch::run(a).await,
        Command::Bench(a) => bench::run(a).await,
    }
}

/// The error every Linux-only command returns on other systems.
#[cfg(not(target_os = "linux"))]
pub fn linux_only(command: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`loopguard {command}` works on Linux only (it uses socket marks and policy routing)"
    )
}
