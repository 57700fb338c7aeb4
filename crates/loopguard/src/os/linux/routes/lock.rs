//! One keeper per configuration: an advisory lock (`flock`) per network namespace and table,
//! held for as long as a [`RouteKeeper`](super::RouteKeeper) lives. Two keepers of the same
//! configuration would each restore what the other just restored (duplicate rules), and
//! stopping one would remove what the other keeps. The kernel drops the lock with the last
//! descriptor, so a killed keeper never leaves it behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::RoutesError;

/// Where the locks live.
const LOCK_DIR: &str = "/run/loopguard";

/// A held lock; released when dropped.
#[derive(Debug)]
pub(crate) struct KeeperLock {
    _file: File,
}

/// The lock file of `table` in the calling thread's network namespace (named by the
/// namespace's inode, which two namespaces never share while both exist).
fn lock_path(table: u32) -> Result<PathBuf, RoutesError> {
    let netns = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| RoutesError::os("reading this thread's network namespace", e))?
        .ino();
    Ok(PathBuf::from(LOCK_DIR).join(format!("keeper-netns{netns}-table{table}.lock")))
}

/// Takes the lock of `table` here, or says which process holds it.
pub(crate) fn lock(table: u32) -> Result<KeeperLock, RoutesError> {
    let path = lock_path(table)?;
    std::fs::create_dir_all(LOCK_DIR)
        .map_err(|e| RoutesError::os(format!("creating {LOCK_DIR}"), e))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| RoutesError::os(format!("opening {}", path.display()), e))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(RoutesError::os(format!("locking {}", path.display()), e));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(RoutesError::AlreadyKept {
            table,
            pid: holder.trim().parse().ok(),
            lock: path,
        });
    }
    // Who holds it, for the next one's message; the lock itself is the flock.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(KeeperLock { _file: file })
}
