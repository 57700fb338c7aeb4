//! QUIC outside the tunnel, end to end in the lab: a plain quinn server in the server
//! namespace, and in the client namespace (whose TUN owns `0.0.0.0/0` and `::/0` through
//! `TunnelRoutes`) a quinn client on `integrations::quinn` over a `LinuxMark` socket. Over
//! IPv4 and IPv6 the handshake and a 64 KiB stream echo complete with no packet in the TUN,
//! while a plain quinn client's datagrams enter it.
#![cfg(target_os = "linux")]

mod common;
mod quinn_tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{block_on, GuardedLab};
use loopguard::integrations::quinn::GuardedQuinnSocket;
use loopguard_lab::{Netns, Transport};
use quinn_tls::{configs, echo_once, echo_server, payload, SERVER_NAME};

/// The bound on waiting for what should happen (a handshake, an echo): generous, since the
/// wait ends as soon as it does.
const WAIT: Duration = Duration::from_secs(15);

/// quinn echo servers on the given addresses inside a namespace, each on its own port.
struct QuicServers {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    peers: mpsc::Receiver<Vec<SocketAddr>>,
    thread: Option<JoinHandle<()>>,
}

impl QuicServers {
    fn start(netns: &Netns, ips: &[IpAddr], config: quinn::ServerConfig) -> QuicServers {
        let ips = ips.to_vec();
        let (addrs_tx, addrs_rx) = mpsc::channel();
        let (peers_tx, peers) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = netns
            .spawn(move || {
                let served = block_on(async move {
                    let endpoints: Vec<quinn::Endpoint> = ips
                        .iter()
                        .map(|ip| {
                            quinn::Endpoint::server(config.clone(), SocketAddr::new(*ip, 0))
                                .expect("quinn server")
                        })
                        .collect();
                    let addrs = endpoints.iter().map(|e| e.local_addr().unwrap());
                    let _ = addrs_tx.send(addrs.collect::<Vec<_>>());
                    let tasks: Vec<_> = endpoints
                        .iter()
                        .map(|e| tokio::spawn(echo_server(e.clone())))
                        .collect();
                    let _ = stopped.await;
                    for endpoint in &endpoints {
                        endpoint.close(0u32.into(), b"done");
                    }
                    let mut served = Vec::new();
                    for task in tasks {
                        served.extend(task.await.unwrap_or_default());
                    }
                    served
                });
                let _ = peers_tx.send(served);
            })
            .expect("server thread");
        let addrs = addrs_rx.recv_timeout(WAIT).expect("the servers started");
        QuicServers {
            addrs,
            stop: Some(stop),
            peers,
            thread: Some(thread),
        }
    }

    /// Stops the servers and returns the peers whose handshakes completed.
    fn stop(mut self) -> Vec<SocketAddr> {
        self.halt();
        self.peers.recv_timeout(WAIT).expect("the servers stopped")
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for QuicServers {
    fn drop(&mut self) {
        // A failed test still ends the thread before the lab deletes its namespace.
        self.halt();
    }
}

fn any_addr(like: SocketAddr) -> SocketAddr {
    if like.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap()
}

#[test]
fn guarded_quic_handshakes_and_echoes_outside_the_tunnel_over_ipv4_and_ipv6() {
    if loopguard_lab::skip_unprivileged(
        "guarded_quic_handshakes_and_echoes_outside_the_tunnel_over_ipv4_and_ipv6",
    ) {
        return;
    }
    let g = GuardedLab::build("qn");
    let (server_config, client_config) = configs(Duration::from_secs(5));
    let servers = QuicServers::start(g.lab.server(), &g.lab.server_addrs(), server_config);
    let data = payload(64 * 1024);

    for &server in &servers.addrs {
        let client_config = client_config.clone();
        let sent = data.clone();
        let (echoed, counters, send_error) = g.in_client(|factory| async move {
            let guarded = Arc::new(GuardedQuinnSocket::new(Arc::new(
                factory.bind(any_addr(server)).expect("guarded socket"),
            )));
            let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                None,
                guarded.clone(),
                Arc::new(quinn::TokioRuntime),
            )
            .unwrap();
            endpoint.set_default_client_config(client_config);
            let echoed = tokio::time::timeout(WAIT, async {
                let connection = endpoint.connect(server, SERVER_NAME).unwrap().await?;
                let echoed = echo_once(&connection, &sent).await;
                connection.close(0u32.into(), b"done");
                Ok::<_, quinn::ConnectionError>(echoed)
            })
            .await;
            let _ = tokio::time::timeout(WAIT, endpoint.wait_idle()).await;
            (
                echoed,
                guarded.socket().counters(),
                guarded.take_send_error(),
            )
        });
        let in_tun = g.tun_packets_to(server.ip());
        println!(
            "{server}: echo {:?} bytes of {}; TUN {in_tun}; last send error {send_error:?}; {counters:?}",
            echoed.as_ref().map(|r| r.as_ref().map(Vec::len)),
            data.len()
        );
        let echoed = echoed
            .expect("handshake and echo within the bound")
            .expect("handshake");
        assert!(echoed == data, "{server}: the echo differs");
        assert_eq!(in_tun, 0, "guarded QUIC to {server} entered the TUN");
        assert_eq!(counters.dropped_no_route, 0, "{counters:?}");
        assert!(counters.datagrams_sent >= 10, "{counters:?}");
    }

    // The zeros above mean something only if unguarded QUIC does loop.
    let (_, plain_config) = configs(Duration::from_millis(800));
    for &server in &servers.addrs {
        let plain_config = plain_config.clone();
        let outcome = g
            .lab
            .client()
            .run(move || {
                block_on(async move {
                    let mut plain = quinn::Endpoint::client(any_addr(server)).unwrap();
                    plain.set_default_client_config(plain_config);
                    let connecting = plain.connect(server, SERVER_NAME).unwrap();
                    tokio::time::timeout(WAIT, connecting)
                        .await
                        .map(|r| r.err())
                })
            })
            .unwrap();
        let looped = g
            .tun
            .wait_for(WAIT, |s| s.count_to(server.ip(), Transport::Udp) >= 1)
            .count_to(server.ip(), Transport::Udp);
        println!("{server}: plain quinn client {outcome:?}; its datagrams in the TUN: {looped}");
        assert!(
            matches!(outcome, Ok(Some(quinn::ConnectionError::TimedOut))),
            "a plain client reached {server}: {outcome:?}"
        );
        assert!(looped >= 1, "plain QUIC to {server} did not enter the TUN");
    }

    // The server saw the guarded clients from the uplink's addresses, never the TUN's.
    let peers = servers.stop();
    println!("server saw {peers:?}");
    let mut seen: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
    seen.sort();
    let mut expected = vec![
        IpAddr::from(g.lab.client_v4()),
        IpAddr::from(g.lab.client_v6()),
    ];
    expected.sort();
    assert_eq!(seen, expected);
}
