//! [`GuardedConnector`]: guarded TCP streams for hyper-util's client and for WebSocket
//! clients, so a control plane reached over HTTP(S) or WebSocket goes around the tunnel.
//!
//! The connector is a tower `Service<Uri>`: hyper-util's legacy `Client` (its `http1` or
//! `http2` feature on) takes it as its connector, and so do TLS connectors that wrap a plain
//! TCP connector (the stream they get implements hyper's I/O traits and [`Connection`]). A WebSocket client that takes a connected stream (such as
//! `tokio_tungstenite::client_async`) gets one from [`GuardedConnector::connect`]. The
//! connector makes TCP only: it accepts any scheme (`https` and `wss` included) and leaves
//! TLS to whatever wraps it.
//!
//! Host names are resolved only by a resolver the application gives
//! ([`with_resolver`](GuardedConnector::with_resolver)), typically a
//! [`GuardedResolver`], whose DNS queries use guarded sockets too. There is no
//! fallback to the system resolver: its queries could enter the tunnel (or wait for a tunnel
//! that is not up yet), so a name given to a connector without a resolver fails with
//! [`ConnectError::NoResolver`]. IP literals need no resolver.
//!
//! A name with addresses of both families is connected with happy eyeballs (RFC 8305): IPv6
//! first, the families alternating, each next attempt started when the previous one fails or
//! after the "connection attempt delay" (250 ms by default), the first connection to succeed
//! kept and the others dropped.
//!
//! ```no_run
//! # #[cfg(all(target_os = "linux", feature = "dns"))]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use http_body_util::Empty;
//! use hyper::body::Bytes;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use loopguard::integrations::hyper::GuardedConnector;
//! use loopguard::dns::GuardedResolver;
//! use loopguard::{GuardConfig, LinuxMark, SocketFactory};
//!
//! let factory = SocketFactory::new(LinuxMark::new(GuardConfig::default()));
//! let dns = GuardedResolver::new(factory.clone(), ["192.0.2.53:53".parse()?])?;
//! let connector = GuardedConnector::new(factory).with_resolver(dns);
//! let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
//! let response = client.get("http://control.example:8080/health".parse()?).await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```

mod eyeballs;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

#[cfg(feature = "dns")]
use crate::dns::GuardedResolver;
use crate::{Error, SocketFactory, Strategy, TcpStream};

/// Any error, as a resolver reports it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`Resolve`] returns: the addresses of one host name.
pub type Resolving = Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, BoxError>> + Send>>;

/// Resolves host names for a [`GuardedConnector`].
///
/// [`GuardedResolver`] implements it. Implement it for another resolver only if that one's
/// queries stay out of the tunnel too.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host`, a host name (never an IP literal), in the resolver's order.
    fn resolve(&self, host: &str) -> Resolving;
}

#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
impl<S: Strategy> Resolve for GuardedResolver<S> {
    fn resolve(&self, host: &str) -> Resolving {
        let resolver = self.clone();
        let host = host.to_owned();
        Box::pin(async move { Ok(resolver.lookup_ip(&host).await?) })
    }
}

/// Why [`GuardedConnector`] made no connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URI names no host, or no port and a scheme without a default one.
    #[error("cannot connect to {uri:?}: {reason}")]
    BadUri {
        /// The URI as given.
        uri: String,
        /// What is missing.
        reason: &'static str,
    },
    /// The host is a name, and the connector has no resolver. Names are never handed to the
    /// system resolver, whose queries could enter the tunnel.
    #[error("{host} is a host name and this connector has no resolver (the system's could send the query into the tunnel): give one with `with_resolver`")]
    NoResolver {
        /// The host name.
        host: String,
    },
    /// The resolver failed.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error (a [`DnsError`](crate::dns::DnsError) from a
        /// [`GuardedResolver`]).
        #[source]
        source: BoxError,
    },
    /// The resolver found no address.
    #[error("{host} has no address")]
    NoAddress {
        /// The host name.
        host: String,
    },
    /// No connection within the connect timeout (which covers resolution too).
    #[error("no connection to {host} within {timeout:?}")]
    Timeout {
        /// The host, a name or an address.
        host: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// Every address failed. `source` is the error of the most preferred address, or the
    /// fatal one ([`Error::is_fatal`]) that ended the attempts at once.
    #[error("cannot connect to {host} ({attempts} address(es) failed), {destination}")]
    Connect {
        /// The host, a name or an address.
        host: String,
        /// How many addresses failed.
        attempts: usize,
        /// The address whose error is `source`.
        destination: SocketAddr,
        /// Why it failed: [`Error::HostUnreachable`] or [`Error::TunnelGone`] when there was
        /// no path outside the tunnel (nothing was sent), [`Error::Protection`] when the
        /// socket could not be protected.
        #[source]
        source: Error,
    },
}

/// The connect timeout unless set: bounds resolution and every attempt together.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 8305's recommended "Connection Attempt Delay".
const DEFAULT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Makes guarded TCP streams to the host and port of a URI, for hyper-util's client and
/// WebSocket clients (see the [module](self) docs). Cheap to clone; clones share the
/// factory and the resolver.
pub struct GuardedConnector<S: Strategy> {
    factory: SocketFactory<S>,
    resolver: Option<Arc<dyn Resolve>>,
    connect_timeout: Duration,
    attempt_delay: Duration,
    nodelay: bool,
}

impl<S: Strategy> Clone for GuardedConnector<S> {
    fn clone(&self) -> Self {
        GuardedConnector {
            factory: self.factory.clone(),
            resolver: self.resolver.clone(),
            connect_timeout: self.connect_timeout,
            attempt_delay: self.attempt_delay,
            nodelay: self.nodelay,
        }
    }
}

impl<S: Strategy> fmt::Debug for GuardedConnector<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedConnector")
            .field("resolver", &self.resolver.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_delay", &self.attempt_delay)
            .field("nodelay", &self.nodelay)
            .finish()
    }
}

impl<S: Strategy> GuardedConnector<S> {
    /// A connector making its streams with `factory`. Without a resolver it connects to IP
    /// literals only. Defaults: a 10 s connect timeout, a 250 ms connection attempt delay,
    /// Nagle's algorithm off (`TCP_NODELAY`, as control-plane requests want).
    pub fn new(factory: SocketFactory<S>) -> Self {
        GuardedConnector {
            factory,
            resolver: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_delay: DEFAULT_ATTEMPT_DELAY,
            nodelay: true,
        }
    }

    /// Resolves host names with `resolver` (typically a [`GuardedResolver`] on the same
    /// factory).
    pub fn with_resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// Bounds each connection, resolution and every attempt together.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an attempt has before the next address is tried beside it (RFC 8305's
    /// "Connection Attempt Delay"; the RFC recommends 250 ms, and no less than 100 ms).
    pub fn with_attempt_delay(mut self, delay: Duration) -> Self {
        self.attempt_delay = delay;
        self
    }

    /// Sets `TCP_NODELAY` on the streams (on by default).
    pub fn with_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Connects a guarded stream to the host and port of `uri` (a port left out is the
    /// scheme's: 80 for `http` and `ws`, 443 for `https` and `wss`).
    pub async fn connect(&self, uri: &Uri) -> Result<TcpStream, ConnectError> {
        let (host, port) = target(uri)?;
        let timeout = self.connect_timeout;
        match tokio::time::timeout(timeout, self.connect_host(&host, port)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout { host, timeout }),
        }
    }

    async fn connect_host(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addresses = self.addresses(host, port).await?;
        let (factory, nodelay) = (&self.factory, self.nodelay);
        let failures = match eyeballs::race(&addresses, self.attempt_delay, |addr| async move {
            let socket = factory.tcp_socket(addr)?;
            socket.set_nodelay(nodelay)?;
            socket.connect(addr).await
        })
        .await
        {
            Ok(stream) => return Ok(stream),
            Err(failures) => failures,
        };
        let attempts = failures.len();
        let chosen = failures.iter().position(|(_, e)| e.is_fatal()).unwrap_or(0);
        match failures.into_iter().nth(chosen) {
            Some((destination, source)) => Err(ConnectError::Connect {
                host: host.to_owned(),
                attempts,
                destination,
                source,
            }),
            None => Err(ConnectError::NoAddress {
                host: host.to_owned(),
            }),
        }
    }

    /// The addresses to try for `host`, in happy-eyeballs order.
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let Some(resolver) = &self.resolver else {
            return Err(ConnectError::NoResolver {
                host: host.to_owned(),
            });
        };
        let ips = resolver
            .resolve(host)
            .await
            .map_err(|source| ConnectError::Resolve {
                host: host.to_owned(),
                source,
            })?;
        if ips.is_empty() {
            return Err(ConnectError::NoAddress {
                host: host.to_owned(),
            });
        }
        Ok(eyeballs::interleave(
            ips.into_iter().map(|ip| SocketAddr::new(ip, port)),
        ))
    }
}

/// The host (an IPv6 literal without its brackets) and port of `uri`.
fn target(uri: &Uri) -> Result<(String, u16), ConnectError> {
    let bad = |reason| ConnectError::BadUri {
        uri: uri.to_string(),
        reason,
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or(bad("no host"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some(scheme)) => default_port(scheme).ok_or(bad(
            "no port, and no default one for its scheme (http, https, ws, wss have one)",
        ))?,
        (None, None) => return Err(bad("no port and no scheme")),
    };
    Ok((host.to_owned(), port))
}

/// The port a scheme implies.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl Connection for TcpStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// The future of [`GuardedConnector`]'s `Service::call`: the stream, wrapped for hyper's
/// I/O traits ([`TokioIo::into_inner`] unwraps it).
pub struct Connecting {
    inner: Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, ConnectError>> + Send>>,
}

impl fmt::Debug for Connecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connecting").finish_non_exhaustive()
    }
}

impl Future for Connecting {
    type Output = Result<TokioIo<TcpStream>, ConnectError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S: Strategy> tower_service::Service<Uri> for GuardedConnector<S> {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connector = self.clone();
        Connecting {
            inner: Box::pin(async move { connector.connect(&uri).await.map(TokioIo::new) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Empty, Full};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower_service::Service;

    /// Protects nothing: these tests run on loopback, without privileges.
    struct Unguarded;

    impl Strategy for Unguarded {
        fn protect(&self, _socket: &socket2::Socket) -> Result<(), crate::ProtectionError> {
            Ok(())
        }
    }

    /// Always refuses to protect.
    struct Refusing;

    impl Strategy for Refusing {
        fn protect(&self, _socket: &socket2::Socket) -> Result<(), crate::ProtectionError> {
            Err(crate::ProtectionError::new(
                "fake protect",
                std::io::Error::other("refused"),
                None,
            ))
        }
    }

    /// Answers every name with fixed addresses, or never.
    struct Fixed(Option<Vec<IpAddr>>);

    impl Resolve for Fixed {
        fn resolve(&self, _host: &str) -> Resolving {
            let answer = self.0.clone();
            Box::pin(async move {
                match answer {
                    Some(ips) => Ok(ips),
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn connector() -> GuardedConnector<Unguarded> {
        GuardedConnector::new(SocketFactory::new(Unguarded))
    }

    #[test]
    fn the_target_is_the_host_and_the_port_or_the_schemes() {
        let cases = [
            ("http://198.51.100.2/x", ("198.51.100.2", 80)),
            ("https://[2001:db8::1]/", ("2001:db8::1", 443)),
            ("ws://control.example/socket", ("control.example", 80)),
            ("WSS://control.example", ("control.example", 443)),
            ("https://[2001:db8::1]:8443/", ("2001:db8::1", 8443)),
            ("198.51.100.2:7000", ("198.51.100.2", 7000)),
        ];
        for (uri, (host, port)) in cases {
            let got = target(&uri.parse().unwrap()).unwrap();
            assert_eq!(got, (host.to_owned(), port), "{uri}");
        }
        for uri in ["ftp://192.0.2.1/", "/relative/only"] {
            let e = target(&uri.parse().unwrap()).unwrap_err();
            assert!(matches!(e, ConnectError::BadUri { .. }), "{uri}: {e:?}");
        }
    }

    #[tokio::test]
    async fn a_name_without_a_resolver_is_refused_before_any_socket() {
        // A factory that cannot protect: a socket made anyway would fail with Protection.
        let connector = GuardedConnector::new(SocketFactory::new(Refusing));
        let e = connector
            .connect(&"http://control.example/".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ConnectError::NoResolver { host } if host == "control.example"),
            "{e:?}"
        );
        assert!(e.to_string().contains("with_resolver"), "{e}");
    }

    #[tokio::test]
    async fn a_protection_failure_is_reported_as_such() {
        let connector = GuardedConnector::new(SocketFactory::new(Refusing));
        let e = connector
            .connect(&"http://127.0.0.1:9/".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ConnectError::Connect { source, attempts: 1, .. } if source.is_fatal()),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn the_timeout_covers_a_resolver_that_never_answers() {
        let connector = connector()
            .with_resolver(Fixed(None))
            .with_connect_timeout(Duration::from_millis(50));
        let e = connector
            .connect(&"http://control.example/".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ConnectError::Timeout { host, .. } if host == "control.example"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn an_empty_answer_is_no_address() {
        let connector = connector().with_resolver(Fixed(Some(Vec::new())));
        let e = connector
            .connect(&"http://control.example/".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectError::NoAddress { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_refused_address_falls_back_to_the_next_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Nothing listens on the port at 127.0.0.2: refused at once, so the next address is
        // tried without waiting for the (hour-long) delay.
        let connector = connector()
            .with_resolver(Fixed(Some(vec![
                "127.0.0.2".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
            ])))
            .with_attempt_delay(Duration::from_secs(3600));
        let uri: Uri = format!("http://control.example:{port}/").parse().unwrap();
        let (stream, accepted) = tokio::join!(connector.connect(&uri), listener.accept());
        let mut stream = stream.unwrap();
        let (mut accepted, _) = accepted.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), listener.local_addr().unwrap());
        stream.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }

    #[tokio::test]
    async fn hyper_util_client_gets_a_response_through_the_connector() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|request: hyper::Request<_>| async move {
                let body = format!("served {}", request.uri().path());
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector());
        let response = client
            .get(format!("http://{addr}/health").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"served /health");
    }

    #[tokio::test]
    async fn the_service_hands_out_the_guarded_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connector = connector();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .unwrap();
        let uri: Uri = format!("ws://{addr}/").parse().unwrap();
        let (io, accepted) = tokio::join!(connector.call(uri), listener.accept());
        let stream: TcpStream = io.unwrap().into_inner();
        let (_accepted, client) = accepted.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), addr);
        assert_eq!(stream.local_addr().unwrap(), client);
    }
}
