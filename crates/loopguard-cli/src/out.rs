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

/// `error` and each of its sources, `a: b: c`, as anyhow's `{:#}` shows a chain: library
/// errors keep their sources out of their own text.
pub fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
