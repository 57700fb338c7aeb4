//! Thin adapters to each operating system's protection mechanism.

#[cfg(target_os = "linux")]
pub mod linux;
