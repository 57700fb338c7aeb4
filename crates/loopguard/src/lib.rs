//! loopguard: sockets for VPN and tunnel clients that never loop into their own tunnel.

mod error;
mod strategy;
pub mod os;

pub use error::{Error, ProtectionError};
pub use strategy::{Path, ResolveError, Strategy};

#[cfg(target_os = "linux")]
pub use os::linux::{GuardConfig, LinuxMark};
