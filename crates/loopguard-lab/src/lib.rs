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
    #[error("cannot run {0}: {1}")]
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

/// Prints why a privileged test is skipped and returns `true`; under `.ci/run`
/// (`LOOPGUARD_REQUIRE_PRIVILEGED=1`) a missing privilege is a failure instead.
pub fn skip_unprivileged(test: &str) -> bool {
    match lab_available() {
        Ok(()) => false,
        Err(why) => {
            if std::env::var_os("LOOPGUARD_REQUIRE_PRIVILEGED").is_some() {
                panic!("{test}: privileged test cannot run: {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            true
        }
    }
}
