//! Linux: [`MarkedRoute`], the egress a packet carrying the guard's mark takes.

use std::io;
use std::net::IpAddr;

use super::roaming::{Egress, EgressFuture, EgressLookup};
use crate::os::linux::{route_get, RoutesError};

/// Linux: the kernel's route for a packet carrying the guard's mark (`ip route get DST mark
/// M`), which is exactly the path a guarded socket's next packet takes.
#[derive(Debug, Clone, Copy)]
pub struct MarkedRoute {
    mark: u32,
}

impl MarkedRoute {
    /// Looks routes up with `config`'s mark.
    pub fn new(config: crate::GuardConfig) -> Self {
        MarkedRoute {
            mark: config.mark(),
        }
    }
}

impl EgressLookup for MarkedRoute {
    fn egress(&self, destination: IpAddr) -> EgressFuture<'_> {
        Box::pin(async move {
            match route_get(destination, Some(self.mark)).await {
                Ok(r) => Ok(Some(Egress {
                    interface_index: r.interface_index,
                    interface: r.interface,
                    source: r.source,
                })),
                Err(RoutesError::Unreachable { .. }) => Ok(None),
                Err(e) => Err(to_io(e)),
            }
        })
    }
}

/// Keeps the kind of a failed route lookup (`PermissionDenied` for a missing capability, the
/// kernel's errno for a refused request, inside), so a
/// [`LookupError`](super::LookupError) can be matched on.
fn to_io(e: RoutesError) -> io::Error {
    let kind = match &e {
        RoutesError::PermissionDenied { .. } => io::ErrorKind::PermissionDenied,
        RoutesError::Netlink { source, .. } => source.kind(),
        RoutesError::NoRuntime(_) => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_lookup_keeps_the_kernels_errno_and_kind() {
        let refused = RoutesError::os(
            "looking up the route to 192.0.2.1",
            io::Error::from_raw_os_error(libc::EINVAL),
        );
        let e = super::super::LookupError::new("192.0.2.1".parse().unwrap(), to_io(refused));
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let denied = RoutesError::os("x", io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(to_io(denied).kind(), io::ErrorKind::PermissionDenied);
    }
}
