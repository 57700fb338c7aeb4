//! The source and interface one send is stamped with: the strategy's path for the
//! destination, or the interface that owns an explicit source.
//!
//! Three ways to get it, one rule: [`route`] awaits the lookup (off the runtime's threads),
//! [`route_now`] answers from the caches only, and [`route_blocking`] asks the strategy on the
//! calling thread, for callers outside any runtime.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::factory::{self, Guard};
use crate::{Error, Path};

/// Where one send goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Route {
    /// The source address to stamp; `None` lets the kernel choose.
    pub src: Option<IpAddr>,
    /// The interface to pin the datagram to; `None` pins none.
    pub interface: Option<u32>,
    /// The source is the strategy's choice (it may be resolved again when it goes stale),
    /// not the caller's.
    pub resolved: bool,
}

impl Route {
    fn from_path(path: Option<Path>) -> Self {
        Route {
            src: path.map(|path| path.source),
            interface: path.and_then(|path| path.interface),
            resolved: path.is_some(),
        }
    }

    fn explicit(src: IpAddr, interface: Option<u32>) -> Self {
        Route {
            src: Some(src),
            interface,
            resolved: false,
        }
    }
}

/// The route of a datagram from `src` (`None`: the strategy's choice) to `dst`. An explicit
/// source gets the index of the interface that owns it (Windows and macOS stamp it; index 0
/// would let the OS pick the tunnel); a zone naming the tunnel is refused either way.
pub(super) async fn route(
    guard: &Arc<dyn Guard>,
    src: Option<IpAddr>,
    dst: SocketAddr,
) -> Result<Route, Error> {
    match src {
        Some(src) => {
            factory::check_zone(guard, dst).await?;
            let interface = factory::interface_for_source(guard, src, dst).await?;
            Ok(Route::explicit(src, interface))
        }
        None => factory::path_for(guard, dst).await.map(Route::from_path),
    }
}

/// What [`route`] answers from the caches alone: `None` when a lookup is needed.
pub(super) fn route_now(
    guard: &Arc<dyn Guard>,
    src: Option<IpAddr>,
    dst: SocketAddr,
) -> Option<Result<Route, Error>> {
    if let Err(e) = factory::check_zone_now(guard, dst)? {
        return Some(Err(e));
    }
    Some(match src {
        Some(src) => guard
            .cached_source_interface(src, dst)?
            .map(|interface| Route::explicit(src, interface)),
        None => guard.cached_path(dst)?.map(Route::from_path),
    })
}

/// [`route`] on the calling thread, blocking while the strategy looks the route up: for
/// callers outside an async runtime, where nothing else waits on this thread.
pub(super) fn route_blocking(
    guard: &Arc<dyn Guard>,
    src: Option<IpAddr>,
    dst: SocketAddr,
) -> Result<Route, Error> {
    if let Some(answer) = route_now(guard, src, dst) {
        return answer;
    }
    factory::check_zone_blocking(guard, dst)?;
    match src {
        Some(src) => Ok(Route::explicit(src, guard.interface_for_source(src, dst)?)),
        None => guard.path_for(dst).map(Route::from_path),
    }
}
