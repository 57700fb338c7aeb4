//! Destination → path cache shared by every socket of a factory.
//!
//! Reads are the per-datagram hot path, writes are rare (a miss, a reset, a vanished source).
//! So the map lives behind an [`ArcSwap`]: a hit is an atomic load of the current map and one
//! hash lookup, with no lock a writer could hold. Writers copy the map and swap it in.
//!
//! A generation counter makes invalidation race-free: every entry remembers the generation it
//! was resolved in, a reset bumps the generation (and drops the map), and a resolution that
//! started before a reset is returned to its caller but never stored.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use crate::{Path, ResolveError};

/// How long "no route" is remembered, so a host without IPv6 does not redo the full lookup
/// for every datagram, yet notices within this time when a route appears.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
enum Entry {
    Found(Path),
    NoRoute { until: Instant },
}

type Map = FxHashMap<IpAddr, Entry>;

/// The cache. Cheap to read from many threads at once.
#[derive(Debug)]
pub(crate) struct PathCache {
    map: ArcSwap<Map>,
    generation: AtomicU64,
    /// Serialises writers so two misses do not both copy the map and lose one insert.
    write: Mutex<()>,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A cached path.
    Hit(Path),
    /// A cached "no route" that has not expired.
    NoRoute,
    /// Nothing usable: resolve, then [`PathCache::store`] with this generation.
    Miss { generation: u64 },
}

impl PathCache {
    pub(crate) fn new() -> Self {
        PathCache {
            map: ArcSwap::from_pointee(Map::default()),
            generation: AtomicU64::new(0),
            write: Mutex::new(()),
        }
    }

    /// The current generation; it changes on every [`reset`](Self::reset).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn lookup(&self, destination: IpAddr) -> Lookup {
        // Read the generation before the map: a reset in between makes us miss, never return
        // an entry of the old network as if it were new.
        let generation = self.generation();
        match self.map.load().get(&destination) {
            Some(Entry::Found(path)) => Lookup::Hit(*path),
            Some(Entry::NoRoute { until }) if Instant::now() < *until => Lookup::NoRoute,
            _ => Lookup::Miss { generation },
        }
    }

    /// Stores a resolution made in `generation`, unless a reset happened since. I/O failures
    /// of the lookup itself are not cached: the next datagram tries again.
    pub(crate) fn store(
        &self,
        destination: IpAddr,
        generation: u64,
        result: &Result<Path, ResolveError>,
    ) {
        let entry = match result {
            Ok(path) => Entry::Found(*path),
            Err(ResolveError::NoRoute) => Entry::NoRoute {
                until: Instant::now() + NEGATIVE_TTL,
            },
            Err(ResolveError::Io(_)) => return,
        };
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if self.generation() != generation {
            return;
        }
        let mut map = Map::clone(&self.map.load());
        map.insert(destination, entry);
        self.map.store(Arc::new(map));
    }

    /// Forgets one destination, for example after the kernel said its source is gone.
    pub(crate) fn forget(&self, destination: IpAddr) {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let current = self.map.load();
        if current.contains_key(&destination) {
            let mut map = Map::clone(&current);
            map.remove(&destination);
            self.map.store(Arc::new(map));
        }
    }

    /// Forgets everything: the network changed.
    pub(crate) fn reset(&self) {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.store(Arc::new(Map::default()));
    }

    /// How many destinations are cached.
    pub(crate) fn len(&self) -> usize {
        self.map.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn path(s: &str) -> Path {
        Path {
            source: s.parse().unwrap(),
            interface: Some(2),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn miss_then_hit() {
        let cache = PathCache::new();
        let Lookup::Miss { generation } = cache.lookup(ip("192.0.2.1")) else {
            panic!("empty cache hit")
        };
        cache.store(ip("192.0.2.1"), generation, &Ok(path("198.51.100.2")));
        assert_eq!(
            cache.lookup(ip("192.0.2.1")),
            Lookup::Hit(path("198.51.100.2"))
        );
        assert!(matches!(cache.lookup(ip("192.0.2.2")), Lookup::Miss { .. }));
    }

    #[test]
    fn a_resolution_that_raced_a_reset_is_not_stored() {
        let cache = PathCache::new();
        let Lookup::Miss { generation } = cache.lookup(ip("192.0.2.1")) else {
            panic!()
        };
        cache.reset();
        cache.store(ip("192.0.2.1"), generation, &Ok(path("198.51.100.2")));
        assert!(matches!(cache.lookup(ip("192.0.2.1")), Lookup::Miss { .. }));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn reset_and_forget_drop_entries() {
        let cache = PathCache::new();
        let g = cache.generation();
        cache.store(ip("192.0.2.1"), g, &Ok(path("198.51.100.2")));
        cache.store(ip("192.0.2.3"), g, &Ok(path("198.51.100.2")));
        cache.forget(ip("192.0.2.1"));
        assert!(matches!(cache.lookup(ip("192.0.2.1")), Lookup::Miss { .. }));
        assert!(matches!(cache.lookup(ip("192.0.2.3")), Lookup::Hit(_)));
        cache.reset();
        assert_ne!(cache.generation(), g);
        assert!(matches!(cache.lookup(ip("192.0.2.3")), Lookup::Miss { .. }));
    }

    #[test]
    fn no_route_is_remembered_briefly_and_lookup_failures_not_at_all() {
        let cache = PathCache::new();
        let g = cache.generation();
        cache.store(ip("2001:db8::1"), g, &Err(ResolveError::NoRoute));
        assert_eq!(cache.lookup(ip("2001:db8::1")), Lookup::NoRoute);
        cache.store(
            ip("2001:db8::2"),
            g,
            &Err(ResolveError::Io(io::Error::other("netlink"))),
        );
        assert!(matches!(
            cache.lookup(ip("2001:db8::2")),
            Lookup::Miss { .. }
        ));
        // An expired negative entry is a miss again.
        let past = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap();
        let mut map = Map::default();
        map.insert(ip("2001:db8::3"), Entry::NoRoute { until: past });
        cache.map.store(Arc::new(map));
        assert!(matches!(
            cache.lookup(ip("2001:db8::3")),
            Lookup::Miss { .. }
        ));
    }
}
