//! One keeper per configuration: a lock per network namespace and table, held for as long as
//! a route keeper (`loopguard::keeper::RouteKeeper`) lives. Two keepers of the same configuration would
//! each restore what the other just restored (duplicate rules), and stopping one would remove
//! what the other keeps.
//!
//! The lock is a listening Unix socket with an abstract name (`@loopguard-keeper-table-N`):
//! abstract names belong to the network namespace, need no file or permission (a keeper
//! with only `CAP_NET_ADMIN` takes it as well as root), and the kernel frees the name when
//! the socket closes, so a killed keeper never leaves it behind. A second keeper's `bind`
//! fails with `EADDRINUSE`; it then connects to learn the holder's pid (`SO_PEERCRED`).
//! "Closes" means its last copy: a child forked by the keeper's process holds one until it
//! execs (the descriptor is close-on-exec), so in a process that spawns programs the lock
//! may come free a moment after the keeper stopped.

use std::io;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use super::RoutesError;

/// A held lock; released when dropped.
#[derive(Debug)]
pub(crate) struct KeeperLock {
    _socket: UnixListener,
}

/// The abstract name of `table`'s lock.
pub(crate) fn lock_name(table: u32) -> String {
    format!("loopguard-keeper-table-{table}")
}

/// Takes the lock of `table` in the calling thread's network namespace, or says which
/// process holds it.
pub(crate) fn lock(table: u32) -> Result<KeeperLock, RoutesError> {
    let name = lock_name(table);
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| RoutesError::os(format!("naming the keeper lock @{name}"), e))?;
    match UnixListener::bind_addr(&addr) {
        Ok(socket) => Ok(KeeperLock { _socket: socket }),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(RoutesError::AlreadyKept {
            table,
            pid: holder(&addr),
            lock: format!("@{name}"),
        }),
        Err(e) => Err(RoutesError::os(
            format!("taking the keeper lock @{name}"),
            e,
        )),
    }
}

/// The pid of the process listening on `addr`, from the credentials the kernel recorded
/// when it listened.
fn holder(addr: &SocketAddr) -> Option<u32> {
    let stream = UnixStream::connect_addr(addr).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the pointers describe `cred` and `len`, alive for the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}
