//! Linux: `SO_MARK` on every socket, and policy rules that send unmarked traffic to the
//! tunnel's own table.

mod config;
mod mark;

pub use config::{ConfigError, GuardConfig};
pub use mark::LinuxMark;
