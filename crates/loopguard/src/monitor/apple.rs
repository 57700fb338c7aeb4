//! macOS and iOS backend: an `AF_ROUTE` socket, read with tokio, each message parsed by the
//! portable [`route_events`](crate::os::apple::route_events) parser.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use socket2::{Domain, Socket, Type};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::UnboundedSender;

use super::{Change, ChangeKind};
use crate::os::apple::route_events::{on_read_error, parse_change, LinkStates, ReadErrorAction};

/// Largest routing message read at once: a route message with eight full sockaddrs is
/// under 400 bytes.
const READ_BUFFER: usize = 8 << 10;
/// The receive buffer asked for, so a burst is not dropped while the task is busy.
const RECEIVE_BUFFER: libc::c_int = 1 << 20;

/// Opens the routing socket and spawns the task that turns its messages into [`Change`]s
/// on `tx`.
pub(super) fn start(tx: UnboundedSender<Change>) -> io::Result<Vec<tokio::task::AbortHandle>> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        io::Error::other("the network monitor must be started inside a tokio runtime")
    })?;
    // socket2 sets FD_CLOEXEC (Darwin has no SOCK_CLOEXEC), so a child the application
    // spawns does not inherit the routing socket.
    let socket = Socket::new(Domain::from(libc::AF_ROUTE), Type::RAW, None)?;
    socket.set_nonblocking(true)?;
    let fd = OwnedFd::from(socket);
    let size = RECEIVE_BUFFER;
    // SAFETY: `size` lives across the call and its length is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot enlarge the routing socket's receive buffer");
    }
    let socket = {
        let _entered = runtime.enter();
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which alone owns it until it is
        // dropped, so the descriptor stays open and the same for the registration's life.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?
    };
    let reader = runtime.spawn(async move {
        let mut links = LinkStates::default();
        let mut buf = vec![0u8; READ_BUFFER];
        let mut errors = 0u32;
        loop {
            let mut ready = match socket.readable().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "the routing socket failed");
                    return;
                }
            };
            let read = ready.try_io(|fd| {
                // SAFETY: `buf` is valid for `buf.len()` writable bytes for the call.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let n = match read {
                Err(_would_block) => continue,
                Ok(Ok(0)) => {
                    tracing::warn!("the routing socket was closed");
                    return;
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    errors += 1;
                    match on_read_error(&e, errors) {
                        ReadErrorAction::Retry => continue,
                        ReadErrorAction::Resync => {
                            // Messages may be lost: start over, as on a netlink overrun.
                            tracing::info!(error = %e, "routing socket read failed; resyncing");
                            links = LinkStates::default();
                            if tx.send(Change::new(ChangeKind::Resync)).is_err() {
                                return;
                            }
                            continue;
                        }
                        ReadErrorAction::GiveUp => {
                            tracing::warn!(error = %e, "the routing socket keeps failing; monitor stopped");
                            return;
                        }
                    }
                }
            };
            errors = 0;
            let change = match parse_change(&buf[..n]) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "unreadable routing message skipped");
                    continue;
                }
            };
            let Some(mut change) = links.admit(change) else {
                continue;
            };
            if change.interface.is_none() {
                change.interface = change.interface_index.and_then(interface_name);
            }
            if tx.send(change).is_err() {
                return; // The monitor is gone.
            }
        }
    });
    Ok(vec![reader.abort_handle()])
}

/// The name of the interface with this index, while it exists (so the tunnel's own
/// interface is recognised by name).
fn interface_name(index: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes if_indextoname may write.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
