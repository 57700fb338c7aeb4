//! [`RouteResolver`]: many `ip route get` lookups over one open netlink socket.

use std::fmt;
use std::net::IpAddr;

use super::route_get::lookup;
use super::routes::{RoutesError, Rtnl};
use super::KernelRoute;

/// Asks the kernel how it would route packets, over one rtnetlink connection kept open.
///
/// [`route_get`](super::route_get) opens a socket per lookup; a strategy that resolves a
/// path on every cache miss keeps a resolver instead, so a cold lookup costs one
/// request-answer exchange (a few microseconds) rather than a socket setup as well.
///
/// The connection belongs to the network namespace of the thread that called
/// [`new`](Self::new) and is driven by the tokio runtime current at that moment.
pub struct RouteResolver {
    nl: Rtnl,
}

impl fmt::Debug for RouteResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteResolver").finish_non_exhaustive()
    }
}

impl RouteResolver {
    /// Opens the netlink socket. Must be called within a tokio runtime.
    pub fn new() -> Result<Self, RoutesError> {
        Ok(RouteResolver {
            nl: Rtnl::connect()?,
        })
    }

    /// The route to `destination` for packets carrying `mark` (`None`: unmarked), exactly as
    /// [`route_get`](super::route_get) reports it.
    pub async fn route_get(
        &mut self,
        destination: IpAddr,
        mark: Option<u32>,
    ) -> Result<KernelRoute, RoutesError> {
        lookup(&mut self.nl, destination, mark).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback always has a route, in every namespace, without privileges.
    #[tokio::test(flavor = "current_thread")]
    async fn one_resolver_answers_many_lookups_like_route_get() {
        let mut resolver = RouteResolver::new().unwrap();
        let dst: IpAddr = "127.0.0.1".parse().unwrap();
        let fresh = super::super::route_get(dst, None).await.unwrap();
        for _ in 0..3 {
            let reused = resolver.route_get(dst, Some(0x4c47)).await.unwrap();
            assert_eq!(reused.interface.as_deref(), Some("lo"));
            assert_eq!(reused, fresh);
        }
    }
}
