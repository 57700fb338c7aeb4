//! `loopguard doctor`: a live check of this machine's policy routing as it concerns guarded
//! sockets, for support desks. Changes nothing.

use clap::Args;

use crate::args::GuardArgs;

/// Arguments of `loopguard doctor`.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub guard: GuardArgs,
    /// The tunnel's device: judge whether marked packets avoid it and unmarked ones enter it
    #[arg(long, value_name = "IFACE")]
    pub tunnel: Option<String>,
    /// Print {"findings": [...], "paths": [...]} instead of text
    #[arg(long)]
    pub json: bool,
}

/// Runs `loopguard doctor`; `Ok(false)` (exit 1) when any finding is an error.
#[cfg(target_os = "linux")]
pub async fn run(args: DoctorArgs) -> anyhow::Result<bool> {
    use loopguard::os::linux::{RoutesError, TunnelRoutes};
    use serde_json::json;

    use crate::routes::{end_text, finding_json, path_json};

    let config = args.guard.config()?;
    let report = match TunnelRoutes::new(config)
        .doctor(args.tunnel.as_deref())
        .await
    {
        Ok(r) => r,
        Err(e @ (RoutesError::NoSuchDevice(_) | RoutesError::BadDeviceName(_))) => {
            return Err(crate::UsageError(format!("--tunnel: {e}")).into())
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        let value = json!({
            "findings": report.findings.iter().map(finding_json).collect::<Vec<_>>(),
            "paths": report.paths.iter().map(path_json).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string(&value)?);
    } else {
        let mut t = format!("loopguard doctor ({config})\npaths:");
        for p in &report.paths {
            t += &format!(
                "\n  {} {}: marked -> {}; unmarked -> {}",
                p.family,
                p.destination,
                end_text(&p.marked),
                end_text(&p.unmarked)
            );
        }
        t += "\nfindings:";
        if report.findings.is_empty() {
            t += " none";
        }
        for f in &report.findings {
            t += &format!(
                "\n  {:<7} {}: {}",
                f.severity.to_string(),
                f.code,
                f.message
            );
        }
        outln!("{t}");
    }
    Ok(!report.has_errors())
}

/// Runs `loopguard doctor`: Linux only.
#[cfg(not(target_os = "linux"))]
pub async fn run(_args: DoctorArgs) -> anyhow::Result<bool> {
    Err(crate::linux_only("doctor"))
}
