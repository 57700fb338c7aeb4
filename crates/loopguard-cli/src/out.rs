//! Standard output that stops quietly when its reader goes away: `loopguard watch --json |
//! head -1` ends the watch instead of panicking on `EPIPE`.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

/// Standard output was closed by its reader (`EPIPE`): the command stops, handles what it
/// manages as on SIGTERM, and exits with status 0 without a message.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` and a newline to standard output and flushes it, so a reader sees each line
/// as it happens.
pub fn line(text: impl Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// Whether `e` is (or wraps) [`StdoutClosed`].
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StdoutClosed>().is_some()
}

/// `println!` that returns [`StdoutClosed`] from the enclosing function instead of
/// panicking.
macro_rules! outln {
    () => {
        $crate::out::line("")?
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))?
    };
}
