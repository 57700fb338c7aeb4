//! A laboratory of Linux network namespaces for loopguard's tests and demo.
//!
//! Everything it creates is named with the `lg-` prefix and removed when the owning guard is
//! dropped. It shells out to `ip` to build topologies: the library itself talks netlink, but a
//! test lab written with the same commands a person would type is easier to check by hand.

pub mod echo;
pub mod netns;
pub mod topology;
pub mod tun;

pub use echo::{EchoServers, EchoStats};
pub use netns::{lab_available, remove_leftovers, run_cmd, unique_name, Netns};
pub use topology::{Lab, LabOptions, RpFilter};
pub use tun::{parse_packet, PacketInfo, Transport, TunCounter, TunSnapshot};

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
