//! [`SocketFactory`]: the one place every guarded socket comes from.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use socket2::{Domain, Protocol, Socket, Type};

use crate::cache::{Lookup, PathCache};
use crate::counters::{Counter, CounterRegistry, Counters};
use crate::tripwire::{LoopTripwire, SocketTable};
use crate::{os, Error, Path, ResolveError, Strategy, TcpSocket, TcpStream, UdpSocket};

/// Makes sockets that stay out of the tunnel, all protected by one [`Strategy`].
///
/// Cloning is cheap and clones share everything, including the cache of resolved paths. Give
/// every part of the application (peer and relay UDP, control-plane TCP, DNS) a clone: a
/// socket that did not come from a factory is a leak.
pub struct SocketFactory<S: Strategy> {
    shared: Arc<Shared<S>>,
}

impl<S: Strategy> Clone for SocketFactory<S> {
    fn clone(&self) -> Self {
        SocketFactory {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Strategy + fmt::Debug> fmt::Debug for SocketFactory<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketFactory")
            .field("strategy", &self.shared.strategy)
            .field("cached_paths", &self.shared.cache.len())
            .finish()
    }
}

struct Shared<S> {
    strategy: S,
    cache: PathCache,
    /// Explicit source -> index of the interface owning it (`None`: no interface does;
    /// `Err`: the tunnel does). Looked up once per source; emptied by `reset`.
    source_interfaces: Mutex<HashMap<IpAddr, Result<Option<u32>, ()>>>,
    /// Zone (interface index) -> whether it is the tunnel's. Emptied by `reset`.
    zones: Mutex<HashMap<u32, bool>>,
    counters: CounterRegistry,
    sockets: Arc<SocketTable>,
    /// Resolutions under way, by destination, with the cache generation each was started
    /// in: every send that misses the cache for one destination in one generation waits for
    /// the same resolution (single flight); a reset starts fresh ones.
    flights: Mutex<HashMap<IpAddr, Flight>>,
}

/// One resolution under way: the cache generation it started in, and where its outcome
/// will appear.
struct Flight {
    generation: u64,
    outcome: watch::Receiver<Option<Outcome>>,
}

/// What one resolution found, as every waiter on it receives it.
#[derive(Clone, Debug)]
enum Outcome {
    Path(Path),
    NoRoute,
    TunnelGone,
    /// The lookup failed: the error's kind, OS code and text, rebuilt for each waiter.
    Failed(io::ErrorKind, Option<i32>, String),
}

impl Outcome {
    fn of(result: &Result<Path, ResolveError>) -> Outcome {
        match result {
            Ok(path) => Outcome::Path(*path),
            Err(ResolveError::NoRoute) => Outcome::NoRoute,
            Err(ResolveError::TunnelGone { .. }) => Outcome::TunnelGone,
            Err(ResolveError::Io(e)) => Outcome::Failed(e.kind(), e.raw_os_error(), e.to_string()),
        }
    }

    fn into_result(self, destination: SocketAddr) -> Result<Option<Path>, Error> {
        match self {
            Outcome::Path(path) => Ok(Some(path)),
            Outcome::NoRoute => Err(Error::HostUnreachable { destination }),
            Outcome::TunnelGone => Err(Error::TunnelGone { destination }),
            Outcome::Failed(_, Some(code), _) => Err(Error::Io(io::Error::from_raw_os_error(code))),
            Outcome::Failed(kind, None, text) => Err(Error::Io(io::Error::new(kind, text))),
        }
    }
}

/// The path to `destination` for a send or connect: a cache hit (the per-datagram case)
/// answers in place, without allocating; only a miss goes through
/// [`Guard::path_for_async`].
pub(crate) async fn path_for(
    guard: &Arc<dyn Guard>,
    destination: SocketAddr,
) -> Result<Option<Path>, Error> {
    check_zone(guard, destination).await?;
    match guard.cached_path(destination) {
        Some(answer) => answer,
        None => guard.clone().path_for_async(destination).await,
    }
}

/// Refuses a destination whose zone (IPv6 scope id) names the tunnel's interface
/// ([`Strategy::is_tunnel_interface`]): the OS sends it out of that interface whatever the
/// socket's protection says. No zone costs one comparison; a known zone answers in place; a
/// new one is looked up on the runtime's blocking pool.
pub(crate) async fn check_zone(
    guard: &Arc<dyn Guard>,
    destination: SocketAddr,
) -> Result<(), Error> {
    let Some(zone) = zone_of(destination) else {
        return Ok(());
    };
    if let Some(answer) = guard.cached_zone(zone, destination) {
        return answer;
    }
    off_the_runtime(guard, "zone", move |g| g.zone_allowed(zone, destination)).await
}

/// What [`check_zone`] answers without a lookup: `None` when the zone is new.
pub(crate) fn check_zone_now(
    guard: &Arc<dyn Guard>,
    destination: SocketAddr,
) -> Option<Result<(), Error>> {
    match zone_of(destination) {
        None => Some(Ok(())),
        Some(zone) => guard.cached_zone(zone, destination),
    }
}

/// [`check_zone`] on the calling thread: a new zone is asked of the strategy in place.
pub(crate) fn check_zone_blocking(
    guard: &Arc<dyn Guard>,
    destination: SocketAddr,
) -> Result<(), Error> {
    match zone_of(destination) {
        None => Ok(()),
        Some(zone) => guard
            .cached_zone(zone, destination)
            .unwrap_or_else(|| guard.zone_allowed(zone, destination)),
    }
}

/// The zone (IPv6 scope id) a destination names, if any.
fn zone_of(destination: SocketAddr) -> Option<u32> {
    match destination {
        SocketAddr::V6(v6) if v6.scope_id() != 0 => Some(v6.scope_id()),
        _ => None,
    }
}

/// The interface to stamp beside the explicit source `source` of a datagram to
/// `destination` (see [`Guard::interface_for_source`]): a known source answers in place; a new
/// one is looked up on the runtime's blocking pool, never on the calling runtime thread.
pub(crate) async fn interface_for_source(
    guard: &Arc<dyn Guard>,
    source: IpAddr,
    destination: SocketAddr,
) -> Result<Option<u32>, Error> {
    if let Some(answer) = guard.cached_source_interface(source, destination) {
        return answer;
    }
    off_the_runtime(guard, "source", move |g| {
        g.interface_for_source(source, destination)
    })
    .await
}

/// Runs a blocking strategy lookup on the runtime's blocking pool (inline outside a
/// runtime); a panic in it is an I/O error naming `what` was looked up.
async fn off_the_runtime<T: Send + 'static>(
    guard: &Arc<dyn Guard>,
    what: &'static str,
    lookup: impl FnOnce(&dyn Guard) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return lookup(guard.as_ref());
    };
    let guard = Arc::clone(guard);
    runtime
        .spawn_blocking(move || lookup(guard.as_ref()))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Io(io::Error::other(format!(
                "the interface lookup for this {what} panicked"
            ))))
        })
}

/// A zone naming the tunnel's interface is refused: the datagram or SYN would enter it.
fn zone_answer(tunnel: bool, destination: SocketAddr) -> Result<(), Error> {
    if tunnel {
        tracing::debug!(%destination, "refused: its zone names the tunnel's interface");
        Err(Error::HostUnreachable { destination })
    } else {
        Ok(())
    }
}

/// The future of [`Guard::path_for_async`].
pub(crate) type PathFuture =
    Pin<Box<dyn Future<Output = Result<Option<Path>, Error>> + Send + 'static>>;

/// Most explicit sources remembered; a host has few addresses, so more means churn and the
/// map starts over.
const MAX_SOURCE_INTERFACES: usize = 256;

/// What sockets need of their factory once created; object-safe so sockets are not generic.
pub(crate) trait Guard: Send + Sync {
    /// The path for `destination`, or `None` when the kernel chooses (marks, protect).
    fn path_for(&self, destination: SocketAddr) -> Result<Option<Path>, Error>;
    /// [`path_for`](Guard::path_for) for async callers: a cache miss is resolved on the
    /// runtime's blocking pool, never on the calling runtime thread, and concurrent misses for
    /// one destination share that one resolution.
    fn path_for_async(self: Arc<Self>, destination: SocketAddr) -> PathFuture;
    /// What the cache answers for `destination` without resolving: `None` on a miss.
    fn cached_path(&self, destination: SocketAddr) -> Option<Result<Option<Path>, Error>>;
    /// What is known of the explicit source `source` without asking the strategy: `None` when
    /// it was never asked.
    fn cached_source_interface(
        &self,
        source: IpAddr,
        destination: SocketAddr,
    ) -> Option<Result<Option<u32>, Error>>;
    /// The interface index to stamp beside the explicit source `source` of a datagram to
    /// `destination`: `None` when the kernel chooses or no interface owns it,
    /// [`Error::HostUnreachable`] when the tunnel owns it. Asks the strategy (blocking) when
    /// the source is new.
    fn interface_for_source(
        &self,
        source: IpAddr,
        destination: SocketAddr,
    ) -> Result<Option<u32>, Error>;
    /// What is known of zone `zone` without asking the strategy: `None` when it was never
    /// asked.
    fn cached_zone(&self, zone: u32, destination: SocketAddr) -> Option<Result<(), Error>>;
    /// Refuses `destination` when its zone `zone` names the tunnel's interface; asks the
    /// strategy (blocking) when the zone is new.
    fn zone_allowed(&self, zone: u32, destination: SocketAddr) -> Result<(), Error>;
    /// Forgets the cached path of `destination`: its source went away.
    fn forget(&self, destination: SocketAddr);
    /// Creates and protects a socket.
    fn socket(&self, domain: Domain, ty: Type, protocol: Protocol) -> Result<Socket, Error>;
    /// Holds an unconnected stream socket to `path` (the strategy's interface pinning).
    fn pin_stream(&self, socket: &Socket, path: &Path) -> Result<(), Error>;
    /// Where sockets register their counters.
    fn counters(&self) -> &CounterRegistry;
    /// Where sockets register their protocol and port, for the loop tripwire.
    fn sockets(&self) -> &Arc<SocketTable>;
}

impl<S: Strategy> Guard for Shared<S> {
    fn path_for(&self, destination: SocketAddr) -> Result<Option<Path>, Error> {
        if !self.strategy.pins_source() {
            return Ok(None);
        }
        // A dual-stack socket names an IPv4 peer as `::ffff:a.b.c.d`; its route is the IPv4
        // one, so lookup and cache use the IPv4 address (the send path encodes the IPv4
        // source the way the kernel expects for a mapped destination).
        let ip = destination.ip().to_canonical();
        let generation = match self.cached(ip, destination) {
            Ok(answer) => return answer,
            Err(generation) => generation,
        };
        let result = self.strategy.resolve(ip);
        self.cache.store(ip, generation, &result);
        match result {
            Ok(path) => Ok(Some(path)),
            Err(ResolveError::NoRoute) => Err(Error::HostUnreachable { destination }),
            Err(ResolveError::TunnelGone { tunnel }) => {
                warn_tunnel_gone(destination.ip(), &tunnel);
                Err(Error::TunnelGone { destination })
            }
            Err(ResolveError::Io(e)) => Err(Error::Io(e)),
        }
    }

    fn cached_path(&self, destination: SocketAddr) -> Option<Result<Option<Path>, Error>> {
        if !self.strategy.pins_source() {
            return Some(Ok(None));
        }
        self.cached(destination.ip().to_canonical(), destination)
            .ok()
    }

    fn path_for_async(self: Arc<Self>, destination: SocketAddr) -> PathFuture {
        Box::pin(async move {
            if !self.strategy.pins_source() {
                return Ok(None);
            }
            let ip = destination.ip().to_canonical();
            let generation = match self.cached(ip, destination) {
                Ok(answer) => return answer,
                Err(generation) => generation,
            };
            let mut outcome = self.join_flight(ip, generation);
            let waited = outcome.wait_for(Option::is_some).await.map(|o| o.clone());
            match waited {
                Ok(Some(outcome)) => outcome.into_result(destination),
                // The resolution's sender is gone without an answer: it panicked.
                _ => Err(Error::Io(io::Error::other(
                    "the route resolution for this destination panicked",
                ))),
            }
        })
    }

    fn cached_source_interface(
        &self,
        source: IpAddr,
        destination: SocketAddr,
    ) -> Option<Result<Option<u32>, Error>> {
        if !self.strategy.pins_source() {
            return Some(Ok(None));
        }
        // `::ffff:a.b.c.d` (a dual-stack socket's IPv4 address) is owned as `a.b.c.d`.
        let source = source.to_canonical();
        let answer = self
            .source_interfaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&source)
            .copied()?;
        Some(source_answer(answer, source, destination))
    }

    fn interface_for_source(
        &self,
        source: IpAddr,
        destination: SocketAddr,
    ) -> Result<Option<u32>, Error> {
        if let Some(answer) = self.cached_source_interface(source, destination) {
            return answer;
        }
        let source = source.to_canonical();
        let answer = match self.strategy.interface_for_source(source) {
            Ok(index) => Ok(index),
            Err(ResolveError::NoRoute) => Err(()),
            // Neither a vanished tunnel nor a failed lookup is remembered: the next datagram
            // asks again.
            Err(ResolveError::TunnelGone { tunnel }) => {
                warn_tunnel_gone(destination.ip(), &tunnel);
                return Err(Error::TunnelGone { destination });
            }
            Err(ResolveError::Io(e)) => return Err(Error::Io(e)),
        };
        let mut map = self
            .source_interfaces
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SOURCE_INTERFACES {
            map.clear();
        }
        map.insert(source, answer);
        drop(map);
        source_answer(answer, source, destination)
    }

    fn cached_zone(&self, zone: u32, destination: SocketAddr) -> Option<Result<(), Error>> {
        let tunnel = *self
            .zones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&zone)?;
        Some(zone_answer(tunnel, destination))
    }

    fn zone_allowed(&self, zone: u32, destination: SocketAddr) -> Result<(), Error> {
        let tunnel = match self.strategy.is_tunnel_interface(zone) {
            Ok(tunnel) => tunnel,
            // Not cached: the tunnel may be back, or the lookup may work, next time.
            Err(ResolveError::NoRoute) => return Err(Error::HostUnreachable { destination }),
            Err(ResolveError::TunnelGone { tunnel }) => {
                warn_tunnel_gone(destination.ip(), &tunnel);
                return Err(Error::TunnelGone { destination });
            }
            Err(ResolveError::Io(e)) => return Err(Error::Io(e)),
        };
        let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        if zones.len() >= MAX_SOURCE_INTERFACES {
            zones.clear();
        }
        zones.insert(zone, tunnel);
        zone_answer(tunnel, destination)
    }

    fn forget(&self, destination: SocketAddr) {
        self.cache.forget(destination.ip().to_canonical());
    }

    fn socket(&self, domain: Domain, ty: Type, protocol: Protocol) -> Result<Socket, Error> {
        let socket = Socket::new(domain, ty, Some(protocol))?;
        // Protection comes first: nothing may be sent, bound or connected before it.
        if let Err(e) = self.strategy.protect(&socket) {
            self.counters.add(Counter::ProtectionFailures, 1);
            return Err(e.into());
        }
        os::prefer_stable_source(&socket, domain);
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    fn pin_stream(&self, socket: &Socket, path: &Path) -> Result<(), Error> {
        Ok(self.strategy.pin_stream(socket, path)?)
    }

    fn counters(&self) -> &CounterRegistry {
        &self.counters
    }

    fn sockets(&self) -> &Arc<SocketTable> {
        &self.sockets
    }
}

impl<S: Strategy> Shared<S> {
    /// What the cache knows of `ip` (the canonical address of `destination`): the answer,
    /// or on a miss the generation to resolve in.
    fn cached(
        &self,
        ip: IpAddr,
        destination: SocketAddr,
    ) -> Result<Result<Option<Path>, Error>, u64> {
        match self.cache.lookup(ip) {
            Lookup::Hit(path) => Ok(Ok(Some(path))),
            Lookup::NoRoute => Ok(Err(Error::HostUnreachable { destination })),
            Lookup::TunnelGone => Ok(Err(Error::TunnelGone { destination })),
            Lookup::Miss { generation } => Err(generation),
        }
    }

    /// The resolution of `ip` under way, or a new one started on the blocking pool (inline
    /// when there is no runtime).
    fn join_flight(
        self: &Arc<Self>,
        ip: IpAddr,
        generation: u64,
    ) -> watch::Receiver<Option<Outcome>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(&ip) {
            if flight.generation == generation {
                return flight.outcome.clone();
            }
        }
        let (done, outcome) = watch::channel(None);
        flights.insert(
            ip,
            Flight {
                generation,
                outcome: outcome.clone(),
            },
        );
        drop(flights);
        let shared = Arc::clone(self);
        let resolve = move || shared.resolve_flight(ip, generation);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let resolution = runtime.spawn_blocking(resolve);
                // The answer is published by a task of the runtime, not by the blocking
                // thread: the waiters it wakes then queue on the runtime's own thread, and a
                // timer or socket woken from outside meanwhile does not wait behind all of
                // them (tokio serves wake-ups from other threads in one FIFO). The task owns
                // the sender, so the answer is published (and the cache has learnt it) even
                // when the send that started the flight is cancelled. A resolution that
                // panicked drops the sender unsent: its waiters get an error.
                runtime.spawn(async move {
                    if let Ok(answer) = resolution.await {
                        let _ = done.send(Some(answer));
                    }
                });
            }
            Err(_) => {
                let _ = done.send(Some(resolve()));
            }
        }
        outcome
    }

    /// Resolves `ip` for the flight of `generation`, stores the answer, ends the flight and
    /// returns the answer for its waiters.
    fn resolve_flight(&self, ip: IpAddr, generation: u64) -> Outcome {
        // Ends the flight even if `resolve` panics: the next miss then resolves again
        // instead of joining a flight that will never land.
        let landing = FlightEnd {
            flights: &self.flights,
            ip,
            generation,
        };
        let result = self.strategy.resolve(ip);
        self.cache.store(ip, generation, &result);
        if let Err(ResolveError::TunnelGone { tunnel }) = &result {
            warn_tunnel_gone(ip, tunnel);
        }
        // The flight ends before its answer is published: a waiter that acts on the answer
        // (a send that fails and forgets the path) and misses again must start a new
        // resolution, not join this finished one and be handed its stale answer.
        drop(landing);
        Outcome::of(&result)
    }
}

/// Removes a flight from the table when its resolution ends, however it ends.
struct FlightEnd<'a> {
    flights: &'a Mutex<HashMap<IpAddr, Flight>>,
    ip: IpAddr,
    generation: u64,
}

impl Drop for FlightEnd<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        // A later generation's flight for the same destination is not this one's to end.
        if flights
            .get(&self.ip)
            .is_some_and(|f| f.generation == self.generation)
        {
            flights.remove(&self.ip);
        }
    }
}

/// What a remembered answer for an explicit source means for a datagram: `Err(())` is a
/// source the tunnel owns, so the datagram is refused.
fn source_answer(
    answer: Result<Option<u32>, ()>,
    source: IpAddr,
    destination: SocketAddr,
) -> Result<Option<u32>, Error> {
    answer.map_err(|()| {
        tracing::debug!(%source, %destination, "explicit source belongs to the tunnel; datagram dropped");
        Error::HostUnreachable { destination }
    })
}

/// Says, once per refused resolution, that the configured tunnel is missing.
fn warn_tunnel_gone(destination: IpAddr, tunnel: &str) {
    tracing::warn!(%destination, %tunnel, "the tunnel is not in the host's tables: dropping, not sending");
}

impl<S: Strategy> SocketFactory<S> {
    /// A factory whose sockets are protected by `strategy`. Its cache keeps the paths of up
    /// to 65,536 destinations (see [`with_path_capacity`](Self::with_path_capacity)).
    pub fn new(strategy: S) -> Self {
        Self::with_path_capacity(strategy, crate::cache::DEFAULT_CAPACITY)
    }

    /// A factory whose cache keeps the resolved paths of at most `destinations` destinations
    /// (at least 1, at most 2^28); past that, storing a new one evicts another, which is then
    /// resolved again when next used. Only strategies that resolve paths use the cache.
    pub fn with_path_capacity(strategy: S, destinations: usize) -> Self {
        SocketFactory {
            shared: Arc::new(Shared {
                strategy,
                cache: PathCache::with_capacity(destinations),
                source_interfaces: Mutex::new(HashMap::new()),
                zones: Mutex::new(HashMap::new()),
                counters: CounterRegistry::default(),
                sockets: Arc::default(),
                flights: Mutex::default(),
            }),
        }
    }

    /// The strategy protecting this factory's sockets.
    pub fn strategy(&self) -> &S {
        &self.shared.strategy
    }

    /// Creates a protected UDP socket bound to `addr` (port 0 picks one). Must be called
    /// within a tokio runtime (otherwise [`Error::NoRuntime`]).
    pub fn bind(&self, addr: SocketAddr) -> Result<UdpSocket, Error> {
        Error::require_runtime("SocketFactory::bind")?;
        let socket = self
            .shared
            .socket(Domain::for_address(addr), Type::DGRAM, Protocol::UDP)?;
        socket.bind(&addr.into())?;
        // Windows: one ICMP error from a dead peer must not fail the socket for every peer.
        os::udp_reset::disable(&socket);
        UdpSocket::from_protected(socket, self.guard())
    }

    /// Creates a protected, unconnected TCP socket of `addr`'s family, for callers that set
    /// options or bind before connecting; its `connect` must run within a tokio runtime.
    pub fn tcp_socket(&self, family_of: SocketAddr) -> Result<TcpSocket, Error> {
        let socket =
            self.shared
                .socket(Domain::for_address(family_of), Type::STREAM, Protocol::TCP)?;
        Ok(TcpSocket::from_protected(socket, self.guard()))
    }

    /// Connects a protected TCP stream to `destination`.
    pub async fn connect(&self, destination: SocketAddr) -> Result<TcpStream, Error> {
        self.tcp_socket(destination)?.connect(destination).await
    }

    /// The path a datagram to `destination` would take, as the sockets of this factory see
    /// it: `None` when the kernel chooses (the Linux mark strategy), the cached or freshly
    /// resolved path otherwise, [`Error::HostUnreachable`] when none exists or when the
    /// destination's zone names the tunnel's interface ([`Strategy::is_tunnel_interface`]).
    pub fn path_for(&self, destination: SocketAddr) -> Result<Option<Path>, Error> {
        if let Some(zone) = zone_of(destination) {
            self.shared
                .cached_zone(zone, destination)
                .unwrap_or_else(|| self.shared.zone_allowed(zone, destination))?;
        }
        self.shared.path_for(destination)
    }

    /// What every socket of this factory did so far, live or dropped: datagrams sent and
    /// received, and every datagram dropped, by reason.
    pub fn counters(&self) -> Counters {
        let mut counters = self.shared.counters.total();
        counters.loops_detected = self.shared.sockets.loops_detected();
        counters
    }

    /// A tripwire for the packets this application reads from its TUN device: it recognises
    /// the packets of this factory's own sockets (a routing loop) and counts them in
    /// [`Counters::loops_detected`].
    pub fn tripwire(&self) -> LoopTripwire {
        LoopTripwire::new(Arc::clone(&self.shared.sockets))
    }

    /// The network changed (roaming, resume from sleep): forget every cached decision. Sockets
    /// resolve again on their next send.
    pub fn reset(&self) {
        self.shared.cache.reset();
        self.shared
            .zones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.shared
            .source_interfaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn guard(&self) -> Arc<dyn Guard> {
        self.shared.clone()
    }
}
