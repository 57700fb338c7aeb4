//! [`TcpSocket`] and [`TcpStream`]: protected TCP, with the strategy applied at connect time.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::factory::Guard;
use crate::tripwire::{LoopProtocol, Registration};
use crate::udp::classify;
use crate::Error;

/// A protected TCP socket that is not connected yet, made by
/// [`SocketFactory::tcp_socket`](crate::SocketFactory::tcp_socket).
pub struct TcpSocket {
    socket: tokio::net::TcpSocket,
    guard: Arc<dyn Guard>,
    bound: bool,
}

impl std::fmt::Debug for TcpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSocket")
            .field("local_addr", &self.socket.local_addr().ok())
            .finish()
    }
}

impl TcpSocket {
    pub(crate) fn from_protected(socket: socket2::Socket, guard: Arc<dyn Guard>) -> Self {
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        TcpSocket {
            socket,
            guard,
            bound: false,
        }
    }

    /// Binds to a local address before connecting. Without it, a strategy that pins sources
    /// binds the source it resolves for the destination.
    pub fn bind(&mut self, addr: SocketAddr) -> Result<(), Error> {
        self.socket.bind(addr)?;
        self.bound = true;
        Ok(())
    }

    /// Disables Nagle's algorithm on the future connection.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<(), Error> {
        Ok(self.socket.set_nodelay(nodelay)?)
    }

    /// Connects to `destination` on the path outside the tunnel.
    ///
    /// Fails with [`Error::HostUnreachable`] when no such path exists, and with
    /// [`Error::TunnelGone`] while the strategy's tunnel is missing from the host's tables: no
    /// SYN is sent either way.
    pub async fn connect(self, destination: SocketAddr) -> Result<TcpStream, Error> {
        Error::require_runtime("TcpSocket::connect")?;
        if let Some(path) = crate::factory::path_for(&self.guard, destination).await? {
            if !self.bound {
                // An IPv4 path of an IPv4-mapped destination: an IPv6 socket binds the
                // mapped form of the source.
                let source = match (destination, path.source) {
                    (SocketAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
                    (_, source) => source,
                };
                self.socket.bind(SocketAddr::new(source, 0))?;
            }
            self.guard
                .pin_stream(&socket2::SockRef::from(&self.socket), &path)?;
        } else if !self.bound {
            // The port must be known before the SYN leaves, so the loop tripwire can
            // recognise a SYN that loops (a connect that never completes).
            let any = match destination {
                SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
            };
            self.socket.bind(any)?;
        }
        let registration = self.guard.sockets().register(
            LoopProtocol::Tcp,
            self.socket.local_addr()?,
            Some(destination),
        );
        let stream = self
            .socket
            .connect(destination)
            .await
            .map_err(|e| classify(e, destination))?;
        Ok(TcpStream {
            inner: stream,
            _registration: registration,
        })
    }
}

/// A connected, protected TCP stream. Implements tokio's [`AsyncRead`] and [`AsyncWrite`].
#[derive(Debug)]
pub struct TcpStream {
    inner: tokio::net::TcpStream,
    /// Its port and peer in the factory's socket table, for the loop tripwire.
    _registration: Registration,
}

impl TcpStream {
    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The remote address of the connection.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Disables or enables Nagle's algorithm.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// The tokio stream inside, for APIs that need one. It stays protected: protection lives
    /// on the socket, not in this wrapper; the loop tripwire stops watching it.
    pub fn into_inner(self) -> tokio::net::TcpStream {
        self.inner
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

crate::raw_socket::borrow_raw_socket!(TcpSocket, socket);
crate::raw_socket::borrow_raw_socket!(TcpStream, inner);
