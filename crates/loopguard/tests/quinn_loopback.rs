//! `integrations::quinn` on loopback, without privileges: a plain quinn server and a client
//! whose endpoint runs on a guarded socket of a fake pinning strategy (sources pinned to
//! 127.0.0.7). Linux only, for the tests' TLS (ring builds C code).
#![cfg(target_os = "linux")]

mod quinn_tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loopguard::integrations::quinn::{endpoint, GuardedQuinnSocket};
use loopguard::{Error, Path, ProtectionError, ResolveError, SocketFactory, Strategy};
use quinn::AsyncUdpSocket;
use quinn_tls::{configs, echo_once, echo_server, payload, SERVER_NAME};

/// Where the fake strategy pins every loopback destination's source.
const PINNED_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
/// A destination without a route outside the fake tunnel.
const NO_ROUTE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 66);
/// How long a test waits for what must happen; only a failing test waits it out.
const BOUND: Duration = Duration::from_secs(20);

#[derive(Default)]
struct FakePinning {
    resolved: AtomicUsize,
}

impl Strategy for FakePinning {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        self.resolved.fetch_add(1, Ordering::SeqCst);
        match destination {
            IpAddr::V4(v4) if v4.is_loopback() && v4 != NO_ROUTE => Ok(Path {
                source: PINNED_SOURCE.into(),
                interface: None,
            }),
            _ => Err(ResolveError::NoRoute),
        }
    }
}

fn factory() -> (SocketFactory<Arc<FakePinning>>, Arc<FakePinning>) {
    let fake = Arc::new(FakePinning::default());
    (SocketFactory::new(fake.clone()), fake)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_guarded_quinn_client_handshakes_and_echoes_a_stream_with_the_strategys_source() {
    let (server_config, client_config) = configs(Duration::from_secs(10));
    let server = quinn::Endpoint::server(server_config, addr("127.0.0.1:0")).unwrap();
    let server_addr = server.local_addr().unwrap();
    let served = tokio::spawn(echo_server(server.clone()));

    let (factory, fake) = factory();
    let guarded = Arc::new(GuardedQuinnSocket::new(Arc::new(
        factory.bind(addr("0.0.0.0:0")).unwrap(),
    )));
    let mut client = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        guarded.clone(),
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    client.set_default_client_config(client_config);

    let data = payload(48 * 1024);
    let (connection, echoed) = tokio::time::timeout(BOUND, async {
        let connection = client
            .connect(server_addr, SERVER_NAME)
            .unwrap()
            .await
            .expect("handshake");
        let echoed = echo_once(&connection, &data).await;
        (connection, echoed)
    })
    .await
    .expect("handshake and echo within the bound");
    connection.close(0u32.into(), b"done");
    client.wait_idle().await;
    server.close(0u32.into(), b"done");
    let peers = tokio::time::timeout(BOUND, served).await.unwrap().unwrap();

    let counters = guarded.socket().counters();
    println!(
        "echoed {} of {} bytes; server saw {peers:?}; lookups {}; {counters:?}",
        echoed.len(),
        data.len(),
        fake.resolved.load(Ordering::SeqCst)
    );
    assert!(echoed == data, "the echo differs from what was sent");
    // Every datagram carried the strategy's source: the server only ever saw 127.0.0.7.
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].ip(), IpAddr::from(PINNED_SOURCE));
    assert_eq!(peers[0].port(), guarded.local_addr().unwrap().port());
    assert!(fake.resolved.load(Ordering::SeqCst) >= 1);
    assert!(counters.datagrams_sent >= 10, "{counters:?}");
    assert!(counters.datagrams_received >= 10, "{counters:?}");
    assert_eq!(counters.dropped(), 0, "{counters:?}");
    assert!(guarded.take_send_error().is_none());
}

#[tokio::test]
async fn without_a_route_the_connection_times_out_and_the_typed_error_is_kept() {
    // A server where the strategy has no route: nothing may reach it.
    let (server_config, client_config) = configs(Duration::from_millis(800));
    let server = quinn::Endpoint::server(server_config, SocketAddr::from((NO_ROUTE, 0))).unwrap();
    let server_addr = server.local_addr().unwrap();
    let served = tokio::spawn(echo_server(server.clone()));

    let (factory, _fake) = factory();
    let guarded = Arc::new(GuardedQuinnSocket::new(Arc::new(
        factory.bind(addr("0.0.0.0:0")).unwrap(),
    )));
    let mut client = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        guarded.clone(),
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    client.set_default_client_config(client_config);

    // Were a refused datagram an error for quinn, its driver would stop and the attempt end
    // at once as `LocallyClosed`, the cause only logged.
    let outcome = tokio::time::timeout(BOUND, client.connect(server_addr, SERVER_NAME).unwrap())
        .await
        .expect("the connection attempt ends within the bound");
    server.close(0u32.into(), b"done");
    let peers = tokio::time::timeout(BOUND, served).await.unwrap().unwrap();
    let counters = guarded.socket().counters();
    let error = guarded.take_send_error();
    println!("outcome {outcome:?}; kept {error:?}; {counters:?}; server saw {peers:?}");
    assert!(
        matches!(outcome, Err(quinn::ConnectionError::TimedOut)),
        "{outcome:?}"
    );
    assert!(
        matches!(error, Some(Error::HostUnreachable { destination }) if destination == server_addr),
        "{error:?}"
    );
    assert!(counters.dropped_no_route >= 1, "{counters:?}");
    assert_eq!(counters.datagrams_sent, 0, "{counters:?}");
    assert!(peers.is_empty(), "{peers:?}");
    // Taken: the next call has nothing until another transmit is dropped.
    assert!(guarded.take_send_error().is_none());
}

#[tokio::test]
async fn the_adapter_reports_receive_coalescing_and_fragmentation_as_the_socket_has_them() {
    let (factory, _fake) = factory();
    for bind in ["127.0.0.1:0", "[::1]:0", "[::]:0"] {
        let socket = Arc::new(factory.bind(addr(bind)).unwrap());
        assert_eq!(socket.gro_segments(), 1, "GRO is off until asked");
        let guarded = GuardedQuinnSocket::new(socket.clone());
        // quinn sizes its buffers by this: it must be what the socket now coalesces.
        assert_eq!(guarded.max_receive_segments(), socket.gro_segments());
        assert!(
            guarded.max_receive_segments() > 1,
            "{bind}: the adapter turns GRO on"
        );
        assert_eq!(guarded.max_transmit_segments(), socket.max_gso_segments());
        // quinn-udp's default: don't fragment, so quinn may discover the path MTU.
        assert!(
            !guarded.may_fragment(),
            "{bind}: don't-fragment is the default"
        );
        socket.set_fragmentation(true).unwrap();
        assert!(guarded.may_fragment(), "{bind}: fragmentation allowed");
        socket.set_fragmentation(false).unwrap();
        assert!(!guarded.may_fragment(), "{bind}: don't-fragment again");
    }
}

#[tokio::test]
async fn the_endpoint_helper_binds_a_guarded_socket() {
    let (server_config, client_config) = configs(Duration::from_secs(10));
    let server = quinn::Endpoint::server(server_config, addr("127.0.0.1:0")).unwrap();
    let served = tokio::spawn(echo_server(server.clone()));
    let (factory, fake) = factory();
    let mut client = endpoint(
        &factory,
        addr("0.0.0.0:0"),
        quinn::EndpointConfig::default(),
        None,
    )
    .unwrap();
    client.set_default_client_config(client_config);
    let echoed = tokio::time::timeout(BOUND, async {
        let connection = client
            .connect(server.local_addr().unwrap(), SERVER_NAME)
            .unwrap()
            .await
            .expect("handshake");
        let echoed = echo_once(&connection, b"through the helper").await;
        connection.close(0u32.into(), b"done");
        echoed
    })
    .await
    .unwrap();
    client.wait_idle().await;
    server.close(0u32.into(), b"done");
    let peers = tokio::time::timeout(BOUND, served).await.unwrap().unwrap();
    assert_eq!(echoed, b"through the helper");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].ip(), IpAddr::from(PINNED_SOURCE));
    assert!(fake.resolved.load(Ordering::SeqCst) >= 1);
    assert!(factory.counters().datagrams_sent >= 1);
}

#[test]
fn the_endpoint_helper_refuses_to_run_outside_a_runtime() {
    let (factory, _fake) = factory();
    let result = endpoint(
        &factory,
        addr("127.0.0.1:0"),
        quinn::EndpointConfig::default(),
        None,
    );
    assert!(
        matches!(&result, Err(Error::Io(e)) if e.to_string().contains("tokio runtime")),
        "{:?}",
        result.err()
    );
}
