//! hickory-resolver over guarded sockets: [`GuardedRuntime`], a hickory
//! [`RuntimeProvider`] whose UDP sockets and TCP streams come from a [`SocketFactory`].
//!
//! Every query hickory-resolver 0.25 sends over UDP or TCP then takes the factory's protected
//! path: the strategy protects each socket, stamps its source (and interface) on each
//! datagram, binds and pins each connection, and refuses a server with no path outside the
//! tunnel ([`Error::HostUnreachable`], [`Error::TunnelGone`]) rather than letting the query
//! out unprotected. hickory's own features stay available: search domains, CNAME chains,
//! caching, every record type, retries over TCP when an answer is truncated.
//!
//! Name the servers yourself ([`ResolverConfig::from_parts`]): the system's configuration is
//! often the tunnel's own resolver, and this feature builds hickory without reading it.
//! (hickory still reads the hosts file unless
//! [`ResolverOpts::use_hosts_file`](hickory_resolver::config::ResolverOpts::use_hosts_file)
//! is `Never`.) This feature builds hickory for plain DNS over UDP and TCP. An application
//! that enables hickory-resolver's TLS or HTTPS features itself gets those over the same
//! guarded TCP connections (hickory builds them on `connect_tcp`); QUIC and HTTP/3 servers
//! are refused ("unsupported protocol"): this runtime binds no QUIC socket, so none is ever
//! bound unguarded.
//!
//! ```no_run
//! # async fn run<S: loopguard::Strategy>(
//! #     factory: loopguard::SocketFactory<S>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::IpAddr;
//!
//! use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
//! use loopguard::integrations::hickory;
//!
//! // The control plane's resolvers, asked over UDP and, for truncated answers, TCP.
//! let servers: [IpAddr; 2] = ["192.0.2.53".parse()?, "2001:db8::53".parse()?];
//! let config = ResolverConfig::from_parts(
//!     None,
//!     vec![],
//!     NameServerConfigGroup::from_ips_clear(&servers, 53, true),
//! );
//! let resolver = hickory::resolver(factory, config, ResolverOpts::default());
//! for ip in resolver.lookup_ip("control.example.com.").await?.iter() {
//!     println!("{ip}");
//! }
//! // The same, built by hand:
//! // Resolver::builder_with_config(config, GenericConnector::new(GuardedRuntime::new(factory)))
//! # Ok(())
//! # }
//! ```
//!
//! # Bind addresses
//! A [`NameServerConfig::bind_addr`](hickory_resolver::config::NameServerConfig::bind_addr),
//! for UDP or TCP, is honoured as far as the strategy allows:
//! - strategies that protect the socket itself (the Linux mark, a protect hook) bind it as
//!   given: the protection does not depend on the source;
//! - a strategy that pins sources ([`Strategy::pins_source`]) binds its own source for the
//!   server. An unspecified address keeps its port (the strategy's source with that port); an
//!   address equal to the strategy's source is bound as given; any other address is refused
//!   with [`io::ErrorKind::AddrNotAvailable`] and nothing is sent: a source on another
//!   interface, or the tunnel's, would take the query somewhere the strategy did not choose.
//!
//! # Errors
//! hickory sees [`io::Error`]s. Those made from a loopguard [`Error`] keep it inside
//! (`get_ref` / `downcast`); no path outside the tunnel is
//! [`io::ErrorKind::HostUnreachable`]. A socket that could not be protected is an error of
//! kind `Other` when binding UDP, so hickory does not retry it on other ports as it would a
//! refused port.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hickory_proto::runtime::{RuntimeProvider, TokioHandle, TokioTime};
use hickory_proto::tcp::DnsTcpStream;
use hickory_proto::udp::DnsUdpSocket;
use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::GenericConnector;
use hickory_resolver::Resolver;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::monitor::Reset;
use crate::{DatagramOut, Error, RecvMeta, SocketFactory, Strategy, TcpStream, UdpSocket};

/// How long a TCP connection may take when hickory names no limit (hickory's own default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times one `poll_send_to` tries again at once after the socket said it is ready:
/// past that the task yields instead of spinning.
const SEND_ATTEMPTS: usize = 4;

/// hickory's connection provider over a [`GuardedRuntime`].
pub type GuardedConnector<S> = GenericConnector<GuardedRuntime<S>>;

/// A hickory [`Resolver`] over a [`GuardedRuntime`].
pub type GuardedHickoryResolver<S> = Resolver<GuardedConnector<S>>;

/// A hickory-resolver that asks the servers of `config` over sockets from `factory`, with
/// `options`. Must be used within a tokio runtime.
pub fn resolver<S: Strategy>(
    factory: SocketFactory<S>,
    config: ResolverConfig,
    options: ResolverOpts,
) -> GuardedHickoryResolver<S> {
    Resolver::builder_with_config(config, GenericConnector::new(GuardedRuntime::new(factory)))
        .with_options(options)
        .build()
}

/// A network change makes cached answers stale (split-horizon DNS): clears hickory's cache,
/// so [`Roaming`](crate::monitor::Roaming) can reset the resolver with the factory.
impl<S: Strategy> Reset for GuardedHickoryResolver<S> {
    fn reset(&self) {
        self.clear_cache();
    }
}

/// hickory's [`RuntimeProvider`] over a [`SocketFactory`]: UDP sockets from
/// [`SocketFactory::bind`], TCP from [`SocketFactory::tcp_socket`], tasks and timers on
/// tokio. Cheap to clone; clones share the factory (and its cache of paths).
pub struct GuardedRuntime<S: Strategy> {
    factory: SocketFactory<S>,
    handle: TokioHandle,
}

impl<S: Strategy> GuardedRuntime<S> {
    /// A runtime whose sockets come from `factory`.
    pub fn new(factory: SocketFactory<S>) -> Self {
        GuardedRuntime {
            factory,
            handle: TokioHandle::default(),
        }
    }

    /// The factory the sockets come from.
    pub fn factory(&self) -> &SocketFactory<S> {
        &self.factory
    }
}

impl<S: Strategy> Clone for GuardedRuntime<S> {
    fn clone(&self) -> Self {
        GuardedRuntime {
            factory: self.factory.clone(),
            handle: self.handle.clone(),
        }
    }
}

impl<S: Strategy + fmt::Debug> fmt::Debug for GuardedRuntime<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedRuntime")
            .field("factory", &self.factory)
            .finish()
    }
}

impl<S: Strategy> RuntimeProvider for GuardedRuntime<S> {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = GuardedUdpSocket;
    type Tcp = GuardedTcpStream;

    fn create_handle(&self) -> Self::Handle {
        self.handle.clone()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<Self::Tcp>>>> {
        let factory = self.factory.clone();
        let limit = timeout.unwrap_or(CONNECT_TIMEOUT);
        Box::pin(async move {
            match tokio::time::timeout(limit, connect(factory, server_addr, bind_addr)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection to {server_addr} timed out after {limit:?}"),
                )),
            }
        })
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<Self::Udp>>>> {
        let factory = self.factory.clone();
        Box::pin(async move {
            // hickory binds an unspecified address with a random port: no lookup, so the
            // future is ready at once, as hickory asks.
            if factory.strategy().pins_source() && !local_addr.ip().is_unspecified() {
                check_source(&factory, local_addr.ip(), server_addr).await?;
            }
            let socket = factory.bind(local_addr).map_err(|e| match e {
                // Another port would not fix it: hickory retries `PermissionDenied`.
                e @ Error::Protection(_) => io::Error::other(e),
                e => io::Error::from(e),
            })?;
            Ok(GuardedUdpSocket { socket })
        })
    }
}

/// A guarded connection to `server`, bound as the module documentation says.
async fn connect<S: Strategy>(
    factory: SocketFactory<S>,
    server: SocketAddr,
    bind: Option<SocketAddr>,
) -> io::Result<GuardedTcpStream> {
    let mut socket = factory.tcp_socket(server)?;
    socket.set_nodelay(true)?;
    if let Some(bind) = local_for_stream(&factory, bind, server).await? {
        socket.bind(bind)?;
    }
    let stream = socket.connect(server).await?;
    Ok(GuardedTcpStream { stream })
}

/// What a stream to `server` binds before connecting: `None` leaves it to the factory.
async fn local_for_stream<S: Strategy>(
    factory: &SocketFactory<S>,
    bind: Option<SocketAddr>,
    server: SocketAddr,
) -> io::Result<Option<SocketAddr>> {
    let Some(bind) = bind else {
        return Ok(None);
    };
    if !factory.strategy().pins_source() {
        return Ok(Some(bind));
    }
    if bind.ip().is_unspecified() && bind.port() == 0 {
        return Ok(None);
    }
    let Some(source) = check_source(factory, bind.ip(), server).await? else {
        return Ok(Some(bind));
    };
    // An unspecified address asks only for the port: the strategy's source, with it. (An
    // IPv6 socket to an IPv4-mapped server binds the mapped form.)
    let ip = match (server, source) {
        (SocketAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (_, source) => source,
    };
    Ok(Some(SocketAddr::new(ip, bind.port())))
}

/// Refuses `requested` as the source for `server` unless it is unspecified or the source
/// the strategy pins for it. Returns that source (`None`: the strategy has no path to pin,
/// the kernel chooses). The lookup may block, so it runs on the blocking pool.
async fn check_source<S: Strategy>(
    factory: &SocketFactory<S>,
    requested: IpAddr,
    server: SocketAddr,
) -> io::Result<Option<IpAddr>> {
    let lookup = factory.clone();
    let path = tokio::task::spawn_blocking(move || lookup.path_for(server))
        .await
        .map_err(|_| io::Error::other(format!("the route lookup for {server} panicked")))??;
    let Some(path) = path else {
        return Ok(None);
    };
    if requested.is_unspecified() || requested.to_canonical() == path.source {
        return Ok(Some(path.source));
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        format!(
            "bind address {requested} is not the source {} the strategy pins for {server}; \
             leave bind_addr unset or unspecified: nothing was sent",
            path.source
        ),
    ))
}

/// A guarded [`UdpSocket`] as hickory's [`DnsUdpSocket`]: every datagram takes the route
/// [`UdpSocket::send`] would, and a route still being looked up makes the send wait for it.
#[derive(Debug)]
pub struct GuardedUdpSocket {
    socket: UdpSocket,
}

impl GuardedUdpSocket {
    /// The guarded socket inside.
    pub fn get_ref(&self) -> &UdpSocket {
        &self.socket
    }
}

impl DnsUdpSocket for GuardedUdpSocket {
    type Time = TokioTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut meta = [RecvMeta::default()];
        ready!(self
            .socket
            .poll_recv(cx, &mut [IoSliceMut::new(buf)], &mut meta))?;
        // Receive coalescing is off on the factory's sockets: one datagram per buffer.
        Poll::Ready(Ok((meta[0].len, meta[0].addr)))
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        for _ in 0..SEND_ATTEMPTS {
            match self.socket.try_send(&DatagramOut::new(target, buf)) {
                Ok(()) => return Poll::Ready(Ok(buf.len())),
                // A route lookup under way or a full buffer: `poll_send_ready` registers the
                // task to be woken when either is over, or is ready at once.
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.socket.poll_send_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A guarded [`TcpStream`] as hickory's [`DnsTcpStream`] (futures-io's `AsyncRead` and
/// `AsyncWrite` over tokio's).
#[derive(Debug)]
pub struct GuardedTcpStream {
    stream: TcpStream,
}

impl GuardedTcpStream {
    /// The guarded stream inside.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl DnsTcpStream for GuardedTcpStream {
    type Time = TokioTime;
}

impl futures_io::AsyncRead for GuardedTcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }
}

impl futures_io::AsyncWrite for GuardedTcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
