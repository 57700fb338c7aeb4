//! One `RTM_GET` round trip on an `AF_ROUTE` socket.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::route_message::{self, RouteMessage, ESRCH, RTM_GET};
use crate::ResolveError;

/// How long to wait for the kernel's answer: it comes at once, unless the socket is flooded
/// with other routing messages.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// How many foreign routing messages to skip before giving up on our reply.
const MAX_FOREIGN_MESSAGES: usize = 256;

// The pure builder and parser hard-code Darwin's values; make sure they match the SDK's.
const _: () = {
    assert!(std::mem::size_of::<libc::rt_msghdr>() == route_message::HEADER_LEN);
    assert!(libc::RTM_VERSION == route_message::RTM_VERSION as libc::c_int);
    assert!(libc::RTM_GET == RTM_GET as libc::c_int);
    assert!(libc::RTF_IFSCOPE == route_message::RTF_IFSCOPE as libc::c_int);
    assert!(libc::RTA_IFP == route_message::RTA_IFP as libc::c_int);
    assert!(libc::ESRCH == ESRCH);
};

/// Asks the kernel for the route to `destination`, limited to interface `scope` when given.
/// "No route" is [`ResolveError::NoRoute`]; the reply's interface, gateway and source are
/// in the returned message.
pub(super) fn route_get(
    destination: IpAddr,
    scope: Option<u16>,
    seq: i32,
) -> Result<RouteMessage, ResolveError> {
    // The routing socket talks to the kernel only: it sends nothing on any network, so it
    // needs no protection.
    let socket = Socket::new(Domain::from(libc::AF_ROUTE), Type::RAW, None)?;
    socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let request = route_message::get_request(destination, seq, scope);
    if let Err(e) = (&socket).write_all(&request) {
        // The kernel fails the write itself when nothing matches.
        return Err(match e.raw_os_error() {
            Some(ESRCH) => ResolveError::NoRoute,
            _ => ResolveError::Io(e),
        });
    }
    let pid = std::process::id() as i32;
    let mut buf = vec![0u8; 2048];
    for _ in 0..MAX_FOREIGN_MESSAGES {
        let n = (&socket).read(&mut buf)?;
        // The socket sees every routing message of the system: keep only our answer.
        let Ok(reply) = route_message::parse(&buf[..n]) else {
            continue;
        };
        if reply.kind != RTM_GET || reply.pid != pid || reply.seq != seq {
            continue;
        }
        // A failed request comes back as sent (destination only); an answer must be about
        // the address asked for.
        if reply.errno == 0 && !reply.covers(destination) {
            tracing::debug!(%destination, "RTM_GET reply for another address skipped");
            continue;
        }
        return match reply.errno {
            0 => Ok(reply),
            ESRCH => Err(ResolveError::NoRoute),
            errno => Err(ResolveError::Io(io::Error::from_raw_os_error(errno))),
        };
    }
    Err(ResolveError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        "no RTM_GET reply among the routing socket's messages",
    )))
}
