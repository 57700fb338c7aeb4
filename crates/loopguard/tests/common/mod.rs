//! Shared by the privileged lab tests: a runtime for code run on a namespace's thread and,
//! with `linux-routes`, a lab whose TUN owns every destination through loopguard's rules,
//! with echo servers and the TUN counter running.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::future::Future;

#[cfg(feature = "linux-routes")]
mod guarded_lab;
#[cfg(feature = "linux-routes")]
#[allow(unused_imports)]
pub use guarded_lab::GuardedLab;

/// Runs `f` to completion on a new current-thread runtime: the tests' namespace threads each
/// need one of their own.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
