//! Ctrl-C, SIGTERM and SIGHUP: the flag that makes the demo stop at its next step, so
//! dropping the lab removes everything it created.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;

/// Waits for SIGTERM, SIGINT or SIGHUP.
pub(super) async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
    Ok(())
}

/// Fails once the demo was interrupted.
pub(super) fn check(cancel: &AtomicBool) -> anyhow::Result<()> {
    if cancel.load(Ordering::SeqCst) {
        bail!("interrupted; the lab was removed");
    }
    Ok(())
}
