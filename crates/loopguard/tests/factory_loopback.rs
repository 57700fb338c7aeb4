//! The portable send path, exercised on loopback with a fake strategy that pins sources.
//! Needs no privileges: the fake protects nothing, it counts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loopguard::{
    DatagramOut, Error, Path, ProtectionError, ResolveError, SocketFactory, Strategy, UdpSocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Resolves 127.0.0.0/8 destinations except 127.0.0.66 to source 127.0.0.7; everything else
/// has no route outside the tunnel. Counts protections and resolutions.
#[derive(Default)]
struct FakePinning {
    protected: AtomicUsize,
    resolved: AtomicUsize,
    source_lookups: AtomicUsize,
    pinned_streams: AtomicUsize,
    refuse_protection: bool,
    refuse_stream_pinning: bool,
}

const PINNED_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
const NO_ROUTE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 66);
/// Resolving this one finds the fake tunnel missing from the host's tables.
const TUNNEL_GONE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 67);
/// Resolves, every time, to a source no interface has: the kernel refuses each send, with a
/// code that may mean "source gone", whatever the number of resolutions.
const FOREIGN_SOURCE_DST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 68);
/// The fake tunnel's own address: an explicit source there must never be sent.
const TUNNEL_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 40);

impl Strategy for FakePinning {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        self.protected.fetch_add(1, Ordering::SeqCst);
        if self.refuse_protection {
            return Err(ProtectionError::new(
                "fake protect",
                std::io::Error::other("refused by the host app"),
                Some("the test refuses"),
            ));
        }
        Ok(())
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        self.resolved.fetch_add(1, Ordering::SeqCst);
        match destination {
            IpAddr::V4(TUNNEL_GONE) => Err(ResolveError::TunnelGone {
                tunnel: "`fake`".into(),
            }),
            IpAddr::V4(FOREIGN_SOURCE_DST) => Ok(Path {
                source: Ipv4Addr::new(192, 0, 2, 99).into(),
                interface: None,
            }),
            IpAddr::V4(v4) if v4.is_loopback() && v4 != NO_ROUTE => Ok(Path {
                source: PINNED_SOURCE.into(),
                interface: None,
            }),
            _ => Err(ResolveError::NoRoute),
        }
    }

    fn interface_for_source(&self, source: IpAddr) -> Result<Option<u32>, ResolveError> {
        self.source_lookups.fetch_add(1, Ordering::SeqCst);
        if source == IpAddr::from(TUNNEL_SOURCE) {
            return Err(ResolveError::NoRoute);
        }
        Ok(Some(1))
    }

    fn pin_stream(&self, socket: &socket2::Socket, path: &Path) -> Result<(), ProtectionError> {
        // The factory binds the resolved source before asking the strategy to pin.
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        // (An IPv6 socket to an IPv4-mapped peer binds the mapped form of the source.)
        assert_eq!(
            local.ip().to_canonical(),
            path.source,
            "pinned before the source was bound"
        );
        self.pinned_streams.fetch_add(1, Ordering::SeqCst);
        if self.refuse_stream_pinning {
            return Err(ProtectionError::new(
                "fake pin_stream",
                std::io::Error::other("no such interface"),
                None,
            ));
        }
        Ok(())
    }
}

fn factory() -> (SocketFactory<Arc<FakePinning>>, Arc<FakePinning>) {
    let fake = Arc::new(FakePinning::default());
    (SocketFactory::new(fake.clone()), fake)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Receives datagrams until `count` arrived or nothing came for 10 s (a bound that only a
/// failing test waits out).
async fn receive(socket: &UdpSocket, count: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    receive_within(socket, count, Duration::from_secs(10)).await
}

/// Receives datagrams until `count` arrived or nothing came for `quiet`.
async fn receive_within(
    socket: &UdpSocket,
    count: usize,
    quiet: Duration,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65535 * socket.gro_segments()];
    while got.len() < count {
        let meta = match tokio::time::timeout(quiet, socket.recv_from(&mut buf)).await {
            Ok(r) => r.unwrap(),
            Err(_) => break,
        };
        for d in meta.datagrams(&buf) {
            got.push((meta.addr, d.to_vec()));
        }
    }
    got
}

#[tokio::test]
async fn unpinned_datagrams_take_the_resolved_source_and_the_cache_resolves_once() {
    let (factory, fake) = factory();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let dst = receiver.local_addr().unwrap();
    for i in 0..3u8 {
        sender.send(&DatagramOut::new(dst, &[i])).await.unwrap();
    }
    let got = receive(&receiver, 3).await;
    assert_eq!(got.len(), 3);
    for (i, (from, payload)) in got.iter().enumerate() {
        assert_eq!(from.ip(), IpAddr::from(PINNED_SOURCE), "source not pinned");
        assert_eq!(payload, &[i as u8]);
    }
    assert_eq!(
        fake.resolved.load(Ordering::SeqCst),
        1,
        "cache did not hold the path"
    );
    assert_eq!(
        fake.protected.load(Ordering::SeqCst),
        2,
        "one protection per socket"
    );

    factory.reset();
    sender.send(&DatagramOut::new(dst, b"again")).await.unwrap();
    assert_eq!(receive(&receiver, 1).await.len(), 1);
    assert_eq!(
        fake.resolved.load(Ordering::SeqCst),
        2,
        "reset did not force a new lookup"
    );
}

#[tokio::test]
async fn explicit_source_is_used_and_nothing_is_resolved() {
    let (factory, fake) = factory();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let src: IpAddr = "127.0.0.9".parse().unwrap();
    let dst = receiver.local_addr().unwrap();
    sender
        .send(&DatagramOut::new(dst, b"x").with_src(src))
        .await
        .unwrap();
    let got = receive(&receiver, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.ip(), src);
    assert_eq!(fake.resolved.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn explicit_sources_are_looked_up_once_and_a_tunnel_source_fails_closed() {
    let (factory, fake) = factory();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let dst = receiver.local_addr().unwrap();
    let src: IpAddr = "127.0.0.9".parse().unwrap();
    for _ in 0..3 {
        sender
            .send(&DatagramOut::new(dst, b"x").with_src(src))
            .await
            .unwrap();
    }
    assert_eq!(receive(&receiver, 3).await.len(), 3);
    assert_eq!(fake.source_lookups.load(Ordering::SeqCst), 1, "not cached");

    let err = sender
        .send(&DatagramOut::new(dst, b"leak").with_src(TUNNEL_SOURCE.into()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::HostUnreachable { destination } if destination == dst),
        "{err:?}"
    );
    assert!(receive(&receiver, 1).await.is_empty(), "tunnel source sent");
    assert_eq!(fake.source_lookups.load(Ordering::SeqCst), 2);

    factory.reset();
    sender
        .send(&DatagramOut::new(dst, b"x").with_src(src))
        .await
        .unwrap();
    assert_eq!(
        fake.source_lookups.load(Ordering::SeqCst),
        3,
        "reset kept it"
    );
}

#[tokio::test]
async fn no_route_fails_closed_with_the_destination_and_sends_nothing() {
    let (factory, fake) = factory();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let receiver = factory.bind(SocketAddr::new(NO_ROUTE.into(), 0)).unwrap();
    let dst = receiver.local_addr().unwrap();
    for _ in 0..3 {
        let err = sender
            .send(&DatagramOut::new(dst, b"leak?"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::HostUnreachable { destination } if destination == dst),
            "{err:?}"
        );
        assert!(err.to_string().contains(&dst.to_string()));
    }
    // Expecting nothing: a short wait cannot make this fail when it should pass.
    assert!(
        receive_within(&receiver, 1, Duration::from_millis(500))
            .await
            .is_empty(),
        "a datagram went out unpinned"
    );
    // "No route" is cached briefly: three sends, one lookup.
    assert_eq!(fake.resolved.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_protection_is_fatal_and_yields_no_socket() {
    let fake = Arc::new(FakePinning {
        refuse_protection: true,
        ..Default::default()
    });
    let factory = SocketFactory::new(fake.clone());
    let err = factory.bind(addr("127.0.0.1:0")).unwrap_err();
    assert!(err.is_fatal());
    assert!(
        matches!(&err, Error::Protection(p) if p.step() == "fake protect"),
        "{err:?}"
    );
    let err = factory.connect(addr("127.0.0.1:9")).await.unwrap_err();
    assert!(matches!(err, Error::Protection(_)));
    assert_eq!(
        fake.resolved.load(Ordering::SeqCst),
        0,
        "resolved for an unprotected socket"
    );
}

#[tokio::test]
async fn gso_batches_arrive_whole_and_in_order_even_beyond_the_segment_cap() {
    let (factory, _) = factory();
    let sender = factory.bind(addr("127.0.0.1:0")).unwrap();
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let dst = receiver.local_addr().unwrap();
    // 200 datagrams of 100 bytes: more than 64 segments, so it must be split.
    let count = 200usize;
    let payload: Vec<u8> = (0..count).flat_map(|i| [(i % 256) as u8; 100]).collect();
    sender
        .send(
            &DatagramOut::new(dst, &payload)
                .with_segment_size(100)
                .with_src(dst.ip()),
        )
        .await
        .unwrap();
    let got = receive(&receiver, count).await;
    assert_eq!(got.len(), count);
    for (i, (_, d)) in got.iter().enumerate() {
        assert_eq!(d.len(), 100);
        assert!(
            d.iter().all(|b| *b == (i % 256) as u8),
            "datagram {i} out of order"
        );
    }
}

#[tokio::test]
async fn a_segment_size_at_least_the_payload_sends_one_datagram_and_zero_is_refused() {
    let (factory, _) = factory();
    let sender = factory.bind(addr("127.0.0.1:0")).unwrap();
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let dst = receiver.local_addr().unwrap();
    sender
        .send(&DatagramOut::new(dst, &[1u8; 300]).with_segment_size(1200))
        .await
        .unwrap();
    // Asks for two to see that no second one comes: a short wait, as it expects absence.
    let got = receive_within(&receiver, 2, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 300);

    let err = sender
        .send(&DatagramOut::new(dst, b"abc").with_segment_size(0))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput));
}

#[tokio::test]
async fn tcp_binds_the_resolved_source_and_fails_closed_without_a_route() {
    let (factory, _) = factory();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dst = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, peer) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
        peer
    });
    let mut stream = factory.connect(dst).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(server.await.unwrap().ip(), IpAddr::from(PINNED_SOURCE));
    assert_eq!(factory.strategy().pinned_streams.load(Ordering::SeqCst), 1);

    let unreachable = SocketAddr::new(NO_ROUTE.into(), dst.port());
    let err = factory.connect(unreachable).await.unwrap_err();
    assert!(matches!(err, Error::HostUnreachable { destination } if destination == unreachable));
}

#[tokio::test]
async fn a_refused_stream_pinning_is_fatal_and_nothing_connects() {
    let fake = Arc::new(FakePinning {
        refuse_stream_pinning: true,
        ..Default::default()
    });
    let factory = SocketFactory::new(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = factory
        .connect(listener.local_addr().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Protection(p) if p.step() == "fake pin_stream"),
        "{err:?}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "a connection was made by a socket that could not be pinned"
    );
}

#[tokio::test]
async fn counters_account_for_every_datagram_sent_dropped_and_received() {
    let (factory, _) = factory();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let dst = receiver.local_addr().unwrap();
    // A batch of 5, a single datagram, and 2 datagrams with no route.
    let batch = [7u8; 500];
    sender
        .send(&DatagramOut::new(dst, &batch).with_segment_size(100))
        .await
        .unwrap();
    sender.send(&DatagramOut::new(dst, b"one")).await.unwrap();
    let nowhere = SocketAddr::new(NO_ROUTE.into(), 9);
    for _ in 0..2 {
        sender
            .send(&DatagramOut::new(nowhere, b"x"))
            .await
            .unwrap_err();
    }
    assert_eq!(receive(&receiver, 6).await.len(), 6);

    let s = sender.counters();
    assert_eq!((s.datagrams_sent, s.sends, s.dropped_no_route), (6, 2, 2));
    assert_eq!(s.dropped_send_error, 0);
    assert_eq!(receiver.counters().datagrams_received, 6);

    // The factory's totals keep a dropped socket's counts.
    drop(sender);
    let total = factory.counters();
    assert_eq!(total.datagrams_sent, 6);
    assert_eq!(total.dropped(), 2);
    assert_eq!(total.datagrams_received, 6);
}

#[tokio::test]
async fn refused_protections_are_counted_by_the_factory() {
    let fake = Arc::new(FakePinning {
        refuse_protection: true,
        ..Default::default()
    });
    let factory = SocketFactory::new(fake);
    factory.bind(addr("127.0.0.1:0")).unwrap_err();
    factory.connect(addr("127.0.0.1:9")).await.unwrap_err();
    assert_eq!(factory.counters().protection_failures, 2);
}

/// quinn's usual socket is `[::]`, which names IPv4 peers `::ffff:a.b.c.d`: they are resolved
/// (and cached) as the IPv4 address, the IPv4 source reaches the peer, and an explicit mapped
/// source is looked up as IPv4 too.
#[tokio::test]
async fn a_dual_stack_socket_reaches_ipv4_mapped_peers_on_their_ipv4_path() {
    let (factory, fake) = factory();
    let sender = factory.bind(addr("[::]:0")).unwrap();
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let port = receiver.local_addr().unwrap().port();
    let mapped = SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), port);
    assert_eq!(
        factory.path_for(mapped).unwrap(),
        factory.path_for(receiver.local_addr().unwrap()).unwrap(),
    );
    for i in 0..2u8 {
        sender.send(&DatagramOut::new(mapped, &[i])).await.unwrap();
    }
    let got = receive(&receiver, 2).await;
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|(from, _)| from.ip() == IpAddr::from(PINNED_SOURCE)));
    assert_eq!(
        fake.resolved.load(Ordering::SeqCst),
        1,
        "one resolution, cached"
    );

    let tunnel_source = IpAddr::from(TUNNEL_SOURCE.to_ipv6_mapped());
    let err = sender
        .send(&DatagramOut::new(mapped, b"leak").with_src(tunnel_source))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HostUnreachable { .. }), "{err:?}");
    assert!(
        receive_within(&receiver, 1, Duration::from_millis(800))
            .await
            .is_empty(),
        "a mapped tunnel source was sent"
    );

    // TCP: an IPv6 socket to a mapped peer binds the mapped form of the IPv4 source.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mapped = SocketAddr::new(
        Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
        listener.local_addr().unwrap().port(),
    );
    let stream = factory
        .tcp_socket(mapped)
        .unwrap()
        .connect(mapped)
        .await
        .unwrap();
    let (_, peer) = listener.accept().await.unwrap();
    assert_eq!(peer.ip(), IpAddr::from(PINNED_SOURCE));
    drop(stream);
}

/// A strategy whose tunnel vanished refuses with its own error, sends nothing, and is not
/// asked again for every datagram.
#[tokio::test]
async fn a_missing_tunnel_fails_closed_with_its_own_error_and_is_not_resolved_per_datagram() {
    let (factory, fake) = factory();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let receiver = factory
        .bind(SocketAddr::new(TUNNEL_GONE.into(), 0))
        .unwrap();
    let dst = receiver.local_addr().unwrap();
    for _ in 0..3 {
        let err = sender.send(&DatagramOut::new(dst, b"x")).await.unwrap_err();
        assert!(
            matches!(err, Error::TunnelGone { destination } if destination == dst),
            "{err:?}"
        );
    }
    assert_eq!(
        fake.resolved.load(Ordering::SeqCst),
        1,
        "resolved per datagram"
    );
    assert_eq!(factory.counters().dropped_no_route, 3);
    let err = factory
        .tcp_socket(dst)
        .unwrap()
        .connect(dst)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TunnelGone { .. }), "{err:?}");
    assert!(
        receive_within(&receiver, 1, Duration::from_millis(800))
            .await
            .is_empty(),
        "sent while the tunnel was gone"
    );
    let io: std::io::Error = Error::TunnelGone { destination: dst }.into();
    assert_eq!(io.kind(), std::io::ErrorKind::HostUnreachable);
}

/// A strategy whose resolution blocks until a task on the caller's runtime has run: it can
/// only finish if the resolution is off the runtime thread. Counts resolutions.
struct WaitsForTheRuntime {
    runtime_ran: Arc<std::sync::atomic::AtomicBool>,
    resolutions: AtomicUsize,
}

impl Strategy for WaitsForTheRuntime {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, _destination: IpAddr) -> Result<Path, ResolveError> {
        if self.resolutions.fetch_add(1, Ordering::SeqCst) > 0 {
            return Err(ResolveError::Io(std::io::Error::other("resolved twice")));
        }
        self.until_the_runtime_ran("the resolution")?;
        Ok(Path {
            source: PINNED_SOURCE.into(),
            interface: None,
        })
    }

    fn interface_for_source(&self, _source: IpAddr) -> Result<Option<u32>, ResolveError> {
        self.until_the_runtime_ran("the source lookup")?;
        Ok(None)
    }
}

impl WaitsForTheRuntime {
    /// Blocks (at most 10 s) until a task on the caller's runtime has run; an error naming
    /// `what` if none did, which means `what` blocked the runtime's thread.
    fn until_the_runtime_ran(&self, what: &str) -> Result<(), ResolveError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.runtime_ran.load(Ordering::SeqCst) {
            if std::time::Instant::now() > deadline {
                return Err(ResolveError::Io(std::io::Error::other(format!(
                    "the runtime never ran: {what} blocked its thread"
                ))));
            }
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// A datagram with an explicit source nobody looked up yet, on a single-threaded runtime: the
/// lookup runs off the runtime thread (a task on the same thread runs while it is under way).
#[test]
fn a_new_explicit_source_is_looked_up_without_blocking_the_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let runtime_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let factory = SocketFactory::new(WaitsForTheRuntime {
            runtime_ran: runtime_ran.clone(),
            resolutions: AtomicUsize::new(0),
        });
        let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
        let dst = receiver.local_addr().unwrap();
        let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
        let marker = tokio::spawn(async move { runtime_ran.store(true, Ordering::SeqCst) });
        let datagram = DatagramOut::new(dst, b"explicit").with_src(PINNED_SOURCE.into());
        sender.send(&datagram).await.expect("sent");
        marker.await.unwrap();
        let got = receive_within(&receiver, 1, Duration::from_secs(10)).await;
        assert_eq!(
            got.first().map(|g| g.0.ip()),
            Some(IpAddr::from(PINNED_SOURCE))
        );
    });
}

/// 1,000 tasks on a single-threaded runtime send to one destination nobody resolved yet: the
/// slow resolution runs once, off the runtime thread (a task on the same thread runs while it
/// is under way), and every datagram is then sent.
#[test]
fn a_miss_storm_is_resolved_once_without_blocking_the_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let runtime_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let strategy = Arc::new(WaitsForTheRuntime {
            runtime_ran: runtime_ran.clone(),
            resolutions: AtomicUsize::new(0),
        });
        let factory = SocketFactory::new(strategy.clone());
        let receiver = Arc::new(factory.bind(addr("127.0.0.1:0")).unwrap());
        let dst = receiver.local_addr().unwrap();
        let sender = Arc::new(factory.bind(addr("0.0.0.0:0")).unwrap());
        let tasks: Vec<_> = (0..1000u16)
            .map(|i| {
                let sender = sender.clone();
                tokio::spawn(
                    async move { sender.send(&DatagramOut::new(dst, &i.to_be_bytes())).await },
                )
            })
            .collect();
        // Spawned after the senders: on this one thread it runs only once they are all
        // waiting for the resolution.
        tokio::spawn(async move { runtime_ran.store(true, Ordering::SeqCst) });
        let mut sent = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                sent += 1;
            }
        }
        assert_eq!(
            strategy.resolutions.load(Ordering::SeqCst),
            1,
            "single flight"
        );
        assert_eq!(sent, 1000, "every datagram of the storm sent");
        // The kernel may drop some of 1,000 back-to-back datagrams on loopback; at least one
        // arrives with the resolved source.
        let got = receive_within(&receiver, 1, Duration::from_secs(10)).await;
        assert_eq!(
            got.first().map(|g| g.0.ip()),
            Some(IpAddr::from(PINNED_SOURCE))
        );
    });
}

/// A send error that may mean "source gone" (`ENETUNREACH`, `EINVAL`) but persists: the path is resolved
/// again once, finds the same path, and later datagrams fail without a resolution each.
#[tokio::test]
async fn a_persistent_send_error_is_not_one_resolution_per_datagram() {
    let (factory, fake) = factory();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let dst = SocketAddr::new(FOREIGN_SOURCE_DST.into(), 9);
    for _ in 0..10 {
        let err = sender.send(&DatagramOut::new(dst, b"x")).await.unwrap_err();
        // Linux answers ENETUNREACH (a typed HostUnreachable) or EINVAL, depending on the
        // route lookup for the foreign source.
        assert!(
            matches!(&err, Error::HostUnreachable { .. })
                || matches!(&err, Error::Io(e) if e.raw_os_error() == Some(libc::EINVAL)),
            "{err:?}"
        );
    }
    assert_eq!(
        fake.resolved.load(Ordering::SeqCst),
        2,
        "the first resolution and one re-resolution"
    );
    assert_eq!(factory.counters().sources_re_resolved, 1);
}

/// A strategy whose first resolution panics; later ones answer. Counts resolutions.
struct PanicsOnce {
    resolutions: AtomicUsize,
}

impl Strategy for PanicsOnce {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, _destination: IpAddr) -> Result<Path, ResolveError> {
        if self.resolutions.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("the first resolution fails badly");
        }
        Ok(Path {
            source: PINNED_SOURCE.into(),
            interface: None,
        })
    }
}

/// A resolution that panics fails the sends waiting for it with an I/O error and sends
/// nothing; it does not leave its flight behind, so the next send resolves again and goes.
#[tokio::test]
async fn a_panicking_resolution_fails_its_sends_and_the_next_send_resolves_again() {
    let strategy = Arc::new(PanicsOnce {
        resolutions: AtomicUsize::new(0),
    });
    let factory = SocketFactory::new(strategy.clone());
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let dst = receiver.local_addr().unwrap();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let err = sender
        .send(&DatagramOut::new(dst, b"first"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    sender
        .send(&DatagramOut::new(dst, b"second"))
        .await
        .expect("the next send resolves again");
    assert_eq!(strategy.resolutions.load(Ordering::SeqCst), 2);
    let got = receive_within(&receiver, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "only the second datagram was sent: {got:?}");
    assert_eq!(got[0].0.ip(), IpAddr::from(PINNED_SOURCE));
}

/// Knows interface 7 as its tunnel, counting how often it is asked; interface 9 fails.
#[derive(Default)]
struct ZonedTunnel {
    asked: AtomicUsize,
}

impl Strategy for ZonedTunnel {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn is_tunnel_interface(&self, index: u32) -> Result<bool, ResolveError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        match index {
            9 => Err(ResolveError::TunnelGone {
                tunnel: "`fake`".into(),
            }),
            i => Ok(i == 7),
        }
    }
}

#[tokio::test]
async fn a_zone_naming_the_tunnel_is_refused_once_asked_and_asked_again_after_reset() {
    let strategy = Arc::new(ZonedTunnel::default());
    let factory = SocketFactory::new(Arc::clone(&strategy));
    let zoned = |zone| {
        SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            9,
            0,
            zone,
        ))
    };
    let socket = factory.bind("[::1]:0".parse().unwrap()).unwrap();
    for _ in 0..3 {
        let e = socket
            .send(&DatagramOut::new(zoned(7), b"x"))
            .await
            .expect_err("a zone naming the tunnel");
        assert!(matches!(e, Error::HostUnreachable { .. }), "{e:?}");
    }
    assert_eq!(strategy.asked.load(Ordering::SeqCst), 1, "cached per zone");
    assert!(matches!(
        factory.path_for(zoned(7)),
        Err(Error::HostUnreachable { .. })
    ));
    // A missing tunnel refuses and is asked again next time (not cached).
    for _ in 0..2 {
        assert!(matches!(
            factory.path_for(zoned(9)),
            Err(Error::TunnelGone { .. })
        ));
    }
    assert_eq!(strategy.asked.load(Ordering::SeqCst), 3);
    // No zone, or another interface's: not refused by the zone check.
    assert!(factory.path_for(zoned(0)).is_ok());
    assert!(factory.path_for(zoned(3)).is_ok());
    assert_eq!(
        strategy.asked.load(Ordering::SeqCst),
        4,
        "zone 0 is never asked"
    );
    factory.reset();
    assert!(factory.path_for(zoned(7)).is_err());
    assert_eq!(
        strategy.asked.load(Ordering::SeqCst),
        5,
        "asked again after reset"
    );
}

/// Reads `socket` with `buf_len`-byte buffers until `want` datagrams came (bounded); returns
/// (datagrams, reads), and checks every datagram is `size` bytes of `fill`.
#[cfg(any(target_os = "linux", target_os = "android"))]
async fn read_datagrams(
    socket: &UdpSocket,
    buf_len: usize,
    want: usize,
    size: usize,
    fill: u8,
) -> (usize, usize) {
    let mut buf = vec![0u8; buf_len];
    let (mut datagrams, mut reads) = (0, 0);
    while datagrams < want {
        let meta = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{datagrams} of {want} datagrams within 10 s"))
            .unwrap();
        reads += 1;
        for d in meta.datagrams(&buf) {
            assert_eq!(d.len(), size, "a datagram was cut");
            assert!(d.iter().all(|b| *b == fill));
            datagrams += 1;
        }
    }
    (datagrams, reads)
}

// GRO exists on Linux and Android only.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[tokio::test]
async fn a_gso_batch_read_with_mtu_sized_buffers_loses_nothing_and_gro_is_opt_in() {
    let factory = SocketFactory::new(ZonedTunnel::default());
    let rx = factory.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let tx = factory.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (count, size) = (20, 1000);
    let send = |fill: u8| {
        let payload = vec![fill; count * size];
        let to = rx.local_addr().unwrap();
        let tx = &tx;
        async move {
            let mut batch = DatagramOut::new(to, &payload);
            batch.segment_size = Some(size);
            tx.send(&batch).await.unwrap();
        }
    };
    // The default: one datagram per read, so a 1,500-byte buffer (the README's) gets all 20.
    assert_eq!(rx.gro_segments(), 1);
    send(1).await;
    let (datagrams, reads) = read_datagrams(&rx, 1500, count, size, 1).await;
    println!("GRO off: {datagrams} datagrams in {reads} reads of 1,500-byte buffers");
    assert_eq!((datagrams, reads), (count, count));
    assert_eq!(rx.counters().datagrams_received, count as u64);
    // Opted in, with buffers sized for it: fewer reads, still every datagram.
    rx.set_gro(true).unwrap();
    assert!(rx.gro_segments() > 1, "{}", rx.gro_segments());
    send(2).await;
    let (datagrams, reads) = read_datagrams(&rx, rx.gro_segments() * 1500, count, size, 2).await;
    println!("GRO on: {datagrams} datagrams in {reads} reads");
    assert_eq!(datagrams, count);
    if tx.max_gso_segments() > 1 {
        assert!(reads < count, "nothing was coalesced: {reads} reads");
    } else {
        println!("no GSO on this loopback: the batch went one by one, nothing to coalesce");
    }
    if tx.max_gso_segments() > 1 {
        // Why it is opt-in: on, a 1,500-byte buffer takes the first datagram and part of the
        // second, and the kernel drops the rest of the batch. A single datagram sent after
        // it is what the next read returns (first in, first out): the 18 others are gone.
        send(3).await;
        let mut small = vec![0u8; 1500];
        let meta = tokio::time::timeout(Duration::from_secs(10), rx.recv_from(&mut small))
            .await
            .unwrap()
            .unwrap();
        let cut: Vec<usize> = meta.datagrams(&small).map(<[u8]>::len).collect();
        tx.send(&DatagramOut::new(rx.local_addr().unwrap(), &[9u8; 10]))
            .await
            .unwrap();
        let next = tokio::time::timeout(Duration::from_secs(10), rx.recv_from(&mut small))
            .await
            .unwrap()
            .unwrap();
        println!(
            "GRO on, 1,500-byte buffer: {cut:?}, then {} bytes of {}",
            next.len, small[0]
        );
        assert_eq!(cut, [1000, 500], "the kernel's cut");
        assert_eq!(
            (next.len, small[0]),
            (10, 9),
            "the rest of the batch was not dropped"
        );
    }
    rx.set_gro(false).unwrap();
    assert_eq!(rx.gro_segments(), 1);
}
