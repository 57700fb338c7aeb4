//! hickory-resolver over `GuardedRuntime`, on loopback with fake strategies: needs no
//! privileges. The pinning fake stamps source 127.0.0.7 (every 127/8 address is local on
//! Linux), so a query that reaches the server from it went through the factory's send path.
#![cfg(target_os = "linux")]

mod hickory_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use hickory_proto::xfer::Protocol;
use hickory_resolver::config::NameServerConfig;
use hickory_resolver::ResolveError as HickoryError;
use loopguard::integrations::hickory::{self, GuardedHickoryResolver};
use loopguard::monitor::Reset;
use loopguard::{Path, ProtectionError, ResolveError, SocketFactory, Strategy};

use hickory_support::{config, options, DnsServer, BIG, BIG_V4, BIG_V6, PEER, PEER_V4, PEER_V6};

/// Where the servers listen.
const LOCAL_V4: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The source the pinning fake chooses for IPv4 loopback.
const PINNED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
/// The pinning fake finds no path outside the tunnel to this one.
const NO_ROUTE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 66);
/// A local address that is not the pinned source.
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// hickory's per-query timeout in the tests: only a failing test waits it out.
const WAIT: Duration = Duration::from_secs(5);

/// Protects nothing and counts; when `pins`, resolves loopback destinations (IPv4 to
/// 127.0.0.7, except 127.0.0.66, which has no route; `::1` to itself), after `delay`.
#[derive(Default)]
struct Fake {
    pins: bool,
    delay: Duration,
    protected: AtomicUsize,
    resolved: AtomicUsize,
    pinned_streams: AtomicUsize,
}

impl Strategy for Fake {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        self.protected.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn pins_source(&self) -> bool {
        self.pins
    }

    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        self.resolved.fetch_add(1, Ordering::SeqCst);
        // Runs on the blocking pool: the delay keeps the route pending while hickory sends.
        std::thread::sleep(self.delay);
        let source = match destination {
            IpAddr::V4(NO_ROUTE) => return Err(ResolveError::NoRoute),
            IpAddr::V4(v4) if v4.is_loopback() => PINNED.into(),
            IpAddr::V6(Ipv6Addr::LOCALHOST) => Ipv6Addr::LOCALHOST.into(),
            _ => return Err(ResolveError::NoRoute),
        };
        Ok(Path {
            source,
            interface: None,
        })
    }

    fn pin_stream(&self, _socket: &socket2::Socket, _path: &Path) -> Result<(), ProtectionError> {
        self.pinned_streams.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn pinning() -> Arc<Fake> {
    Arc::new(Fake {
        pins: true,
        ..Fake::default()
    })
}

fn resolver_for(
    fake: &Arc<Fake>,
    config: hickory_resolver::config::ResolverConfig,
) -> GuardedHickoryResolver<Arc<Fake>> {
    hickory::resolver(SocketFactory::new(fake.clone()), config, options(WAIT, 1))
}

async fn addresses(
    resolver: &GuardedHickoryResolver<Arc<Fake>>,
    name: &str,
) -> Result<BTreeSet<IpAddr>, HickoryError> {
    Ok(resolver.lookup_ip(name).await?.iter().collect())
}

fn set(ips: [IpAddr; 2]) -> BTreeSet<IpAddr> {
    ips.into_iter().collect()
}

fn peer() -> BTreeSet<IpAddr> {
    set([PEER_V4.into(), PEER_V6.into()])
}

/// The sources the server saw, and whether each query came over TCP.
fn seen(server: &DnsServer) -> BTreeSet<(IpAddr, bool)> {
    server
        .queries()
        .iter()
        .map(|q| (q.from.ip(), q.tcp))
        .collect()
}

#[tokio::test]
async fn a_and_aaaa_over_guarded_udp_carry_the_pinned_source() {
    let server = DnsServer::start(LOCAL_V4.into());
    let fake = pinning();
    let resolver = resolver_for(&fake, server.udp_only());
    assert_eq!(addresses(&resolver, PEER).await.unwrap(), peer());
    let kinds: BTreeSet<RecordType> = server.queries().iter().map(|q| q.kind).collect();
    assert_eq!(kinds, [RecordType::A, RecordType::AAAA].into());
    // The socket is bound to 0.0.0.0: only the strategy's source makes it 127.0.0.7.
    assert_eq!(seen(&server), [(PINNED.into(), false)].into());
    assert!(
        fake.protected.load(Ordering::SeqCst) >= 2,
        "one socket per query"
    );
    assert!(fake.resolved.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_send_waiting_for_its_route_is_woken_when_the_lookup_ends() {
    // With no retry, a send never woken after its pending lookup would time out the query.
    let server = DnsServer::start(LOCAL_V4.into());
    let fake = Arc::new(Fake {
        pins: true,
        delay: Duration::from_millis(300),
        ..Fake::default()
    });
    let resolver = hickory::resolver(
        SocketFactory::new(fake.clone()),
        server.udp_only(),
        options(Duration::from_secs(3), 0),
    );
    let started = std::time::Instant::now();
    assert_eq!(addresses(&resolver, PEER).await.unwrap(), peer());
    println!(
        "resolved behind a 300 ms route lookup in {:?}",
        started.elapsed()
    );
    assert_eq!(seen(&server), [(PINNED.into(), false)].into());
}

#[tokio::test]
async fn a_and_aaaa_over_guarded_tcp_carry_the_pinned_source() {
    let server = DnsServer::start(LOCAL_V4.into());
    let fake = pinning();
    let resolver = resolver_for(&fake, server.tcp_only());
    assert_eq!(addresses(&resolver, PEER).await.unwrap(), peer());
    assert_eq!(seen(&server), [(PINNED.into(), true)].into());
    assert!(fake.pinned_streams.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_guarded_tcp() {
    let server = DnsServer::start(LOCAL_V4.into());
    let fake = pinning();
    let resolver = resolver_for(&fake, server.udp_and_tcp());
    assert_eq!(
        addresses(&resolver, BIG).await.unwrap(),
        set([BIG_V4.into(), BIG_V6.into()])
    );
    assert_eq!(
        seen(&server),
        [(PINNED.into(), false), (PINNED.into(), true)].into()
    );
}

#[tokio::test]
async fn over_ipv6_too() {
    let server = DnsServer::start(Ipv6Addr::LOCALHOST.into());
    let fake = pinning();
    for config in [server.udp_only(), server.tcp_only()] {
        let resolver = resolver_for(&fake, config);
        assert_eq!(addresses(&resolver, PEER).await.unwrap(), peer());
    }
    assert_eq!(
        seen(&server),
        [
            (Ipv6Addr::LOCALHOST.into(), false),
            (Ipv6Addr::LOCALHOST.into(), true)
        ]
        .into()
    );
}

#[tokio::test]
async fn a_server_without_a_path_outside_the_tunnel_is_never_asked() {
    let server = DnsServer::start(NO_ROUTE.into());
    let fake = pinning();
    let resolver = resolver_for(&fake, server.udp_and_tcp());
    let err = addresses(&resolver, PEER).await.unwrap_err();
    println!("{err}");
    assert!(
        err.to_string().contains("outside the tunnel"),
        "not the guard's refusal: {err}"
    );
    assert!(server.queries().is_empty(), "{:?}", server.queries());
    assert!(fake.resolved.load(Ordering::SeqCst) >= 1);
}

/// `server`'s UDP and TCP, each with `bind` as the bind address.
fn bound(server: &DnsServer, protocol: Protocol, bind: SocketAddr) -> Vec<NameServerConfig> {
    let addr = match protocol {
        Protocol::Tcp => server.tcp,
        _ => server.udp,
    };
    let mut ns = NameServerConfig::new(addr, protocol);
    ns.bind_addr = Some(bind);
    vec![ns]
}

#[tokio::test]
async fn a_pinning_strategy_refuses_a_bind_address_that_is_not_its_source() {
    let server = DnsServer::start(LOCAL_V4.into());
    let fake = pinning();
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let other = config(bound(&server, protocol, SocketAddr::from((OTHER, 0))));
        let err = addresses(&resolver_for(&fake, other), PEER)
            .await
            .unwrap_err();
        println!("{protocol}: {err}");
        assert!(err.to_string().contains("is not the source"), "{err}");
        assert!(server.queries().is_empty(), "{:?}", server.queries());
    }
    // Its own source is fine.
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let own = config(bound(&server, protocol, SocketAddr::from((PINNED, 0))));
        let found = addresses(&resolver_for(&fake, own), PEER).await;
        assert_eq!(found.unwrap(), peer(), "{protocol}");
    }
    assert_eq!(
        seen(&server),
        [(PINNED.into(), false), (PINNED.into(), true)].into()
    );
}

#[tokio::test]
async fn an_unspecified_tcp_bind_address_keeps_its_port_with_the_pinned_source() {
    let server = DnsServer::start(LOCAL_V4.into());
    let fake = pinning();
    let port = std::net::TcpListener::bind((PINNED, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let any = config(bound(
        &server,
        Protocol::Tcp,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
    ));
    assert_eq!(
        addresses(&resolver_for(&fake, any), PEER).await.unwrap(),
        peer()
    );
    let from: BTreeSet<SocketAddr> = server.queries().iter().map(|q| q.from).collect();
    assert_eq!(from, [SocketAddr::from((PINNED, port))].into());
}

#[tokio::test]
async fn a_strategy_that_does_not_pin_binds_the_address_as_given() {
    let server = DnsServer::start(LOCAL_V4.into());
    let fake = Arc::new(Fake::default());
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let other = config(bound(&server, protocol, SocketAddr::from((OTHER, 0))));
        let found = addresses(&resolver_for(&fake, other), PEER).await;
        assert_eq!(found.unwrap(), peer(), "{protocol}");
    }
    assert_eq!(
        seen(&server),
        [(OTHER.into(), false), (OTHER.into(), true)].into()
    );
    assert!(fake.protected.load(Ordering::SeqCst) >= 2);
    assert_eq!(fake.resolved.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn reset_forgets_hickorys_cached_answers() {
    let server = DnsServer::start(LOCAL_V4.into());
    let fake = pinning();
    let resolver = resolver_for(&fake, server.udp_only());
    let asked = |server: &DnsServer| server.queries().len();
    addresses(&resolver, PEER).await.unwrap();
    let first = asked(&server);
    addresses(&resolver, PEER).await.unwrap();
    assert_eq!(
        asked(&server),
        first,
        "the second lookup should come from the cache"
    );
    Reset::reset(&resolver);
    addresses(&resolver, PEER).await.unwrap();
    assert!(asked(&server) > first, "a reset resolver asked nobody");
}
