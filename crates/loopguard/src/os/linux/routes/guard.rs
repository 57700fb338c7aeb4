//! [`RoutesGuard`]: the tunnel's routes, removed when the guard goes out of scope.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use ipnet::IpNet;

use super::{sysctl, ApplyReport, RemoveReport, RoutesError, SysctlChange, TunnelRoutes};

/// The network namespace of the calling thread.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Keeps a tunnel's routes and rules installed for as long as it lives; made by
/// [`TunnelRoutes::install`].
///
/// [`remove`](Self::remove) removes them and reports errors; dropping the guard without
/// calling it (an early return, `?`, a panic that unwinds) removes them too, on a short-lived
/// thread of its own in the namespace they were installed in, and logs a failure with
/// `tracing` (a destructor cannot return one). Dropping blocks until the removal is done.
///
/// What no guard can do: a process killed with SIGKILL, or aborted (`panic = "abort"`, a
/// segmentation fault, the OOM killer), runs no destructor, so the rules stay. Those rules
/// fail closed on their own: every prefix in the tunnel's table has a last-resort
/// `unreachable` route that outlives the tunnel's device, so unmarked traffic for the tunnel
/// is refused, not sent out of the uplink, until the next [`TunnelRoutes::apply`] or
/// [`TunnelRoutes::remove_all`] (`loopguard routes remove`) cleans up.
#[derive(Debug)]
#[must_use = "dropping the guard removes the routes at once"]
pub struct RoutesGuard {
    routes: TunnelRoutes,
    /// The namespace the routes live in, entered by the removal thread on drop.
    netns: File,
    armed: bool,
    /// The sysctls to put back after removing, when asked to.
    restore: Option<Vec<SysctlChange>>,
}

impl TunnelRoutes {
    /// [`apply`](Self::apply)s, and returns a guard that removes everything again when it
    /// is dropped (or by [`RoutesGuard::remove`]). Must run inside a tokio runtime.
    pub async fn install(
        &self,
        dev: &str,
        prefixes: &[IpNet],
    ) -> Result<(ApplyReport, RoutesGuard), RoutesError> {
        let netns = File::open(THREAD_NETNS)
            .map_err(|e| RoutesError::os("opening the thread's network namespace", e))?;
        let report = self.apply(dev, prefixes).await?;
        Ok((
            report,
            RoutesGuard {
                routes: self.clone(),
                netns,
                armed: true,
                restore: None,
            },
        ))
    }
}

impl RoutesGuard {
    /// The routes this guard removes.
    pub fn routes(&self) -> &TunnelRoutes {
        &self.routes
    }

    /// Also puts back these sysctls (the `apply` report's) after removing, unless another
    /// program changed them since: see [`restore_sysctls`](super::restore_sysctls). Opt-in.
    pub fn restore_sysctls_on_remove(mut self, changes: &[SysctlChange]) -> Self {
        self.restore = Some(changes.to_vec());
        self
    }

    /// Removes the routes, rules and nftables table now (and restores the sysctls when
    /// asked to), reporting what was deleted. Must run inside a tokio runtime, in the
    /// namespace of the routes (like every `TunnelRoutes` call).
    pub async fn remove(mut self) -> Result<RemoveReport, RoutesError> {
        self.armed = false;
        let report = self.routes.remove().await?;
        if let Some(changes) = self.restore.take() {
            sysctl::restore_sysctls(&changes)?;
        }
        Ok(report)
    }

    /// Leaves the routes installed and forgets them (for a hand-over to another process, which
    /// then owns their removal).
    pub fn keep_installed(mut self) {
        self.armed = false;
    }

    fn remove_on_own_thread(&self) -> Result<RemoveReport, String> {
        let routes = self.routes.clone();
        let restore = self.restore.clone();
        let netns = self.netns.try_clone().map_err(|e| e.to_string())?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(&netns)?;
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("starting a runtime: {e}"))?;
                    let report = runtime
                        .block_on(routes.remove())
                        .map_err(|e| e.to_string())?;
                    if let Some(changes) = restore {
                        sysctl::restore_sysctls(&changes).map_err(|e| e.to_string())?;
                    }
                    Ok(report)
                })
                .join()
                .unwrap_or_else(|_| Err("the removal thread panicked".into()))
        })
    }
}

/// Moves the calling thread into the namespace `netns`, unless it is there already. A
/// failure stops the removal: it must never run in another namespace.
fn enter(netns: &File) -> Result<(), String> {
    let target = netns.metadata().map_err(|e| e.to_string())?;
    let here = std::fs::metadata(THREAD_NETNS).map_err(|e| e.to_string())?;
    if (here.dev(), here.ino()) == (target.dev(), target.ino()) {
        return Ok(());
    }
    // SAFETY: setns takes a descriptor and a flag; `netns` stays open for the call.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "entering the routes' network namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl Drop for RoutesGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match self.remove_on_own_thread() {
            Ok(report) => tracing::debug!(?report, "tunnel routes removed by their guard"),
            Err(e) => tracing::error!(
                error = %e,
                "the tunnel routes' guard could not remove them; `loopguard routes remove` will"
            ),
        }
    }
}
