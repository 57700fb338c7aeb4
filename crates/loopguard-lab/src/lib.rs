//! A laboratory of Linux network namespaces for loopguard's tests and demo.
//!
//! Everything it creates is named with the `lg-` prefix and removed when the owning guard is
//! dropped. It shells out to `ip` to build topologies: the library itself talks netlink, but a
//! test lab written with the same commands a person would type is easier to check by hand.
//!
//! On other systems only [`LabError`] and [`skip_unprivileged`] exist (the latter always
//! skips), so crates that depend on the lab still build for Windows, macOS and Android.

#[cfg(target_os = "linux")]
pub mod echo;
#[cfg(target_os = "linux")]
pub mod netns;
#[cfg(target_os = "linux")]
pub mod topology;
#[cfg(target_os = "linux")]
pub mod tun;

#[cfg(target_os = "linux")]
pub use echo::{EchoServers, EchoStats};
#[cfg(target_os = "linux")]
pub use netns::{lab_available, remove_leftovers, run_cmd, unique_name, Netns};
#[cfg(target_os = "linux")]
pub use topology::{Lab, LabOptions, RpFilter};
#[cfg(target_os = "linux")]
pub use tun::{parse_packet, PacketInfo, Transport, TunCounter, TunSnapshot};

/// Network namespaces exist on Linux only.
#[cfg(not(target_os = "linux"))]
fn lab_available() -> Result<(), String> {
    Err("the namespace lab needs Linux".into())
}

/// Why the lab could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A lab name without the `lg-` prefix.
    #[error("lab names must start with `lg-`: {0}")]
    BadName(String),
    /// A command could not be started.
    #[error("cannot run {0}")]
    Spawn(String, #[source] std::io::Error),
    /// A command exited with failure.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// A thread running inside a namespace panicked.
    #[error("a thread inside namespace {0} panicked")]
    Panicked(String),
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The environment variable under which nothing may skip: `.ci/run` sets it to `1`.
pub const REQUIRE_PRIVILEGED: &str = "LOOPGUARD_REQUIRE_PRIVILEGED";

/// Prints why `test` (or a part of it) cannot run here and returns `true`, for the caller to
/// return early; under `LOOPGUARD_REQUIRE_PRIVILEGED=1` it panics instead, so in CI nothing
/// skips.
pub fn skip_because(test: &str, why: &str) -> bool {
    if std::env::var_os(REQUIRE_PRIVILEGED).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{test}: cannot run, and {REQUIRE_PRIVILEGED} forbids skipping: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    true
}

/// Skips (see [`skip_because`]) unless this process may build a lab: root, and `ip` available.
pub fn skip_unprivileged(test: &str) -> bool {
    match lab_available() {
        Ok(()) => false,
        Err(why) => skip_because(test, &why),
    }
}

/// Skips (see [`skip_because`]) unless this process is root and has `setpriv` (util-linux),
/// for tests that run a child with privileges dropped.
pub fn skip_unless_root_with_setpriv(test: &str) -> bool {
    if let Err(why) = lab_available() {
        return skip_because(test, &why);
    }
    match std::process::Command::new("setpriv")
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => false,
        _ => skip_because(test, "needs `setpriv` (util-linux) to drop privileges"),
    }
}
