//! The `hyper` feature's connector in the lab: the client's TUN owns `0.0.0.0/0` and `::/0`
//! (loopguard's `TunnelRoutes`), the server runs an HTTP/1 server and a WebSocket echo on
//! both its addresses. Requests and echoes through the connector must arrive, and not one
//! packet may enter the TUN.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{block_on, GuardedLab};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use loopguard::integrations::hyper::{
    BoxError, ConnectError, GuardedConnector, Resolve, Resolving,
};
use loopguard::{LinuxMark, SocketFactory};
use loopguard_lab::{Netns, Transport};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tower_service::Service;

/// The bound on waiting for something that should arrive: generous, since the wait ends as
/// soon as it does.
const WAIT: Duration = Duration::from_secs(10);

/// An address in a prefix the router blackholes: SYNs to it are dropped without an answer.
const BLACKHOLED: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 4, 0, 0, 0, 0, 1);

/// The HTTP server and the WebSocket echo, on each server address, in the server namespace;
/// stopped (and their sockets closed) when dropped.
struct Servers {
    http: HashMap<IpAddr, SocketAddr>,
    ws: HashMap<IpAddr, SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

type Bound = (HashMap<IpAddr, SocketAddr>, HashMap<IpAddr, SocketAddr>);

impl Servers {
    fn start(netns: &Netns, addrs: &[IpAddr]) -> Servers {
        let (bound_tx, bound_rx) = mpsc::channel::<Bound>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addrs = addrs.to_vec();
        let thread = netns
            .spawn(move || {
                block_on(async move {
                    let (mut http, mut ws) = (HashMap::new(), HashMap::new());
                    for ip in addrs {
                        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
                        http.insert(ip, listener.local_addr().unwrap());
                        tokio::spawn(serve_http(listener));
                        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
                        ws.insert(ip, listener.local_addr().unwrap());
                        tokio::spawn(serve_websocket(listener));
                    }
                    let _ = bound_tx.send((http, ws));
                    // The runtime, and every server task and socket with it, ends here.
                    let _ = stopped.await;
                })
            })
            .unwrap();
        let (http, ws) = bound_rx.recv_timeout(WAIT).expect("servers did not start");
        Servers {
            http,
            ws,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers every request with its method, path and the address it was served on.
async fn serve_http(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let local = stream.local_addr().unwrap().ip();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let body = format!(
                    "{} {} served on {local}",
                    request.method(),
                    request.uri().path()
                );
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Echoes every text and binary message back.
async fn serve_websocket(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Answers one name with fixed addresses, as a guarded resolver would.
struct Names(&'static str, Vec<IpAddr>);

impl Resolve for Names {
    fn resolve(&self, host: &str) -> Resolving {
        let answer: Result<Vec<IpAddr>, BoxError> = (host == self.0)
            .then(|| self.1.clone())
            .ok_or_else(|| format!("{host}: no such name").into());
        Box::pin(async move { answer })
    }
}

/// GETs `uri` and returns the body.
async fn get(
    client: &Client<GuardedConnector<LinuxMark>, Empty<Bytes>>,
    uri: String,
) -> Result<String, String> {
    let response = tokio::time::timeout(WAIT, client.get(uri.parse().unwrap()))
        .await
        .map_err(|_| format!("{uri}: no response within {WAIT:?}"))?
        .map_err(|e| format!("{uri}: {e:?}"))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{uri}: {e}"))?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Opens a WebSocket to `uri` over a stream from the connector's `Service::call`, sends a
/// text and returns the echo.
async fn websocket_echo(
    mut connector: GuardedConnector<LinuxMark>,
    uri: String,
    text: &str,
) -> Result<String, String> {
    let parsed: Uri = uri.parse().unwrap();
    let stream = connector
        .call(parsed)
        .await
        .map_err(|e| format!("{uri}: {e}"))?
        .into_inner();
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(&uri, stream))
        .await
        .map_err(|_| format!("{uri}: no handshake within {WAIT:?}"))?
        .map_err(|e| format!("{uri}: {e}"))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())?;
    let echo = tokio::time::timeout(WAIT, ws.next())
        .await
        .map_err(|_| format!("{uri}: no echo within {WAIT:?}"))?
        .ok_or("closed without an echo")?
        .map_err(|e| e.to_string())?;
    let _ = ws.close(None).await;
    Ok(echo
        .into_text()
        .map_err(|e| e.to_string())?
        .as_str()
        .to_owned())
}

/// The guarded requests of the test, run in the client namespace.
struct Seen {
    bodies: Vec<(IpAddr, Result<String, String>)>,
    echoes: Vec<(IpAddr, Result<String, String>)>,
    fallback: Result<String, String>,
    fallback_took: Duration,
    blackholed_only: Result<(), ConnectError>,
}

const DELAY: Duration = Duration::from_millis(300);

async fn guarded_requests(
    factory: SocketFactory<LinuxMark>,
    http: HashMap<IpAddr, SocketAddr>,
    ws: HashMap<IpAddr, SocketAddr>,
    server_v4: IpAddr,
) -> Seen {
    let connector = GuardedConnector::new(factory.clone());
    let client = Client::builder(TokioExecutor::new()).build(connector.clone());
    let mut bodies = Vec::new();
    let mut echoes = Vec::new();
    for (&ip, &addr) in &http {
        bodies.push((ip, get(&client, format!("http://{addr}/control")).await));
    }
    for (&ip, &addr) in &ws {
        let text = format!("hello {ip}");
        echoes.push((
            ip,
            websocket_echo(connector.clone(), format!("ws://{addr}/echo"), &text).await,
        ));
    }

    // A name with a blackholed IPv6 address and a working IPv4 one: IPv6 is tried first,
    // hangs, and IPv4 takes over after the attempt delay.
    let port = http[&server_v4].port();
    let eyeballs = GuardedConnector::new(factory.clone())
        .with_resolver(Names(
            "control.test",
            vec![server_v4, IpAddr::V6(BLACKHOLED)],
        ))
        .with_attempt_delay(DELAY);
    let client = Client::builder(TokioExecutor::new()).build(eyeballs);
    let begun = Instant::now();
    let fallback = get(&client, format!("http://control.test:{port}/eyeballs")).await;
    let fallback_took = begun.elapsed();

    // The blackholed address alone: it neither answers nor refuses, so the attempt times
    // out (which is what makes the fallback above a fallback from a hanging attempt).
    let blackholed_only = GuardedConnector::new(factory)
        .with_resolver(Names("dark.test", vec![IpAddr::V6(BLACKHOLED)]))
        .with_connect_timeout(Duration::from_secs(1))
        .connect(&format!("http://dark.test:{port}/").parse().unwrap())
        .await
        .map(drop);
    Seen {
        bodies,
        echoes,
        fallback,
        fallback_took,
        blackholed_only,
    }
}

#[test]
fn http_and_websocket_through_the_connector_stay_out_of_the_tunnel() {
    if loopguard_lab::skip_unprivileged(
        "http_and_websocket_through_the_connector_stay_out_of_the_tunnel",
    ) {
        return;
    }
    let g = GuardedLab::build("hy");
    // Declared after the lab, so dropped before it: its thread holds the server namespace.
    let servers = Servers::start(g.lab.server(), &g.lab.server_addrs());
    g.lab
        .router()
        .ip(&["-6", "route", "add", "blackhole", "2001:db8:4::/64"])
        .unwrap();
    let server_v4 = IpAddr::from(g.lab.server_v4());
    let (http, ws) = (servers.http.clone(), servers.ws.clone());
    let seen = g.in_client(move |factory| guarded_requests(factory, http, ws, server_v4));

    for (ip, body) in &seen.bodies {
        println!("GET over {ip}: {body:?}");
        assert_eq!(
            body.as_deref(),
            Ok(format!("GET /control served on {ip}").as_str())
        );
    }
    for (ip, echo) in &seen.echoes {
        println!("WebSocket over {ip}: {echo:?}");
        assert_eq!(echo.as_deref(), Ok(format!("hello {ip}").as_str()));
    }
    assert_eq!(seen.bodies.len(), 2);
    assert_eq!(seen.echoes.len(), 2);
    println!(
        "happy eyeballs: {:?} after {:?}; blackholed address alone: {:?}",
        seen.fallback, seen.fallback_took, seen.blackholed_only
    );
    assert_eq!(
        seen.fallback.as_deref(),
        Ok(format!("GET /eyeballs served on {server_v4}").as_str())
    );
    assert!(
        seen.fallback_took >= DELAY,
        "IPv4 was tried before the IPv6 attempt had its delay: {:?}",
        seen.fallback_took
    );
    assert!(
        matches!(seen.blackholed_only, Err(ConnectError::Timeout { .. })),
        "{:?}",
        seen.blackholed_only
    );

    let (to_servers, all) = g.tun_packets();
    println!("TUN: {to_servers} packets to the servers, {all} in all");
    assert_eq!(to_servers, 0, "guarded traffic entered the TUN");
    assert_eq!(all, 0, "guarded traffic entered the TUN");

    // The zeros mean something only if an unguarded connection does enter the TUN.
    for ip in g.lab.server_addrs() {
        let addr = servers.http[&ip];
        g.lab
            .client()
            .run(|| {
                block_on(async {
                    // The SYN leaves at once; its answer never comes (the TUN has no peer).
                    let _ = tokio::time::timeout(
                        Duration::from_millis(100),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await;
                })
            })
            .unwrap();
        let looped = g
            .tun
            .wait_for(WAIT, |s| s.count_to(ip, Transport::Tcp) >= 1)
            .count_to(ip, Transport::Tcp);
        println!("{ip}: plain TCP packets in the TUN: {looped}");
        assert!(
            looped >= 1,
            "an unguarded SYN to {ip} did not enter the TUN"
        );
    }
    drop(servers);
}
