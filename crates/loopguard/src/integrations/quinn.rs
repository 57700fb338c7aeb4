//! QUIC outside the tunnel: [`GuardedQuinnSocket`] is a [`quinn::AsyncUdpSocket`] over a
//! guarded [`UdpSocket`], so a [`quinn::Endpoint`] (a MASQUE or other QUIC-based tunnel's
//! connection to its server) sends every datagram with the strategy's protection and route.
//!
//! [`endpoint`] builds one in a line; by hand it is
//! `Endpoint::new_with_abstract_socket(config, server_config, Arc::new(GuardedQuinnSocket::new(socket)), Arc::new(TokioRuntime))`,
//! which keeps an `Arc` of the adapter for [`GuardedQuinnSocket::take_send_error`].
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use loopguard::integrations::quinn::{endpoint, GuardedQuinnSocket};
//! use loopguard::{SocketFactory, Strategy};
//!
//! // The crypto is the application's: quinn's `EndpointConfig::default()` and
//! // `ClientConfig::with_platform_verifier()` come with its `ring` or `aws-lc-rs` features.
//! async fn connect<S: Strategy>(
//!     factory: &SocketFactory<S>,
//!     config: quinn::EndpointConfig,
//!     client: quinn::ClientConfig,
//! ) -> Result<quinn::Connection, Box<dyn std::error::Error>> {
//!     let mut endpoint = endpoint(factory, "0.0.0.0:0".parse()?, config, None)?;
//!     endpoint.set_default_client_config(client);
//!     let connection = endpoint.connect("192.0.2.1:443".parse()?, "relay.example")?.await?;
//!     Ok(connection)
//! }
//!
//! // Roaming: after the factory was reset, move the endpoint to a new guarded socket.
//! fn rebind<S: Strategy>(
//!     factory: &SocketFactory<S>,
//!     endpoint: &quinn::Endpoint,
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     let socket = factory.bind("0.0.0.0:0".parse()?)?;
//!     endpoint.rebind_abstract(Arc::new(GuardedQuinnSocket::new(Arc::new(socket))))?;
//!     Ok(())
//! }
//! ```
//!
//! # Errors
//! A datagram loopguard refuses ([`Error::HostUnreachable`], [`Error::TunnelGone`]: no path
//! outside the tunnel) or the kernel rejects is dropped, as quinn's own sockets drop a
//! datagram whose send failed: quinn 0.11 stops a connection's driver on any `try_send`
//! error but `WouldBlock`, which ends the connection at once (as
//! `ConnectionError::LocallyClosed`, the cause only logged), so a single refusal (an MTU
//! probe's `EMSGSIZE`, a moment without a route while roaming) would end it. The adapter
//! reports those errors elsewhere instead: QUIC sees a loss and retransmits, and a path that
//! stays shut ends the connection with its idle timeout. The socket's
//! [`counters`](UdpSocket::counters) count every dropped datagram (`dropped_no_route`,
//! `dropped_send_error`), [`GuardedQuinnSocket::take_send_error`] hands over the last typed
//! error, and each one is logged at `debug`. Nothing is ever sent unprotected.
//!
//! # Versions
//! quinn 0.11 speaks quinn-udp 0.5's [`Transmit`](quinn::udp::Transmit),
//! [`RecvMeta`](quinn::udp::RecvMeta) and `EcnCodepoint`, while loopguard is built on
//! quinn-udp 0.6: the adapter copies the fields across (ECN by its two bits) and drops the
//! one 0.5 has no field for (the receiving interface).

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use ::quinn::udp as udp05;
use ::quinn::{AsyncUdpSocket, Endpoint, EndpointConfig, ServerConfig, TokioRuntime, UdpPoller};

use crate::os::send_error::{self, SendFailure};
use crate::{DatagramOut, EcnCodepoint, Error, RecvMeta, SocketFactory, Strategy, UdpSocket};

/// A guarded [`UdpSocket`] as quinn's [`AsyncUdpSocket`]: every datagram quinn sends goes
/// through [`UdpSocket::try_send`], with the strategy's source and interface.
#[derive(Debug)]
pub struct GuardedQuinnSocket {
    socket: Arc<UdpSocket>,
    /// What [`AsyncUdpSocket::max_receive_segments`] reports: fixed when the adapter is made,
    /// since quinn sizes its receive buffers by it once.
    gro_segments: usize,
    /// The last send error the adapter dropped a transmit for.
    send_error: Mutex<Option<Error>>,
}

impl GuardedQuinnSocket {
    /// Wraps `socket`, turning receive coalescing on where the platform has it (as quinn does
    /// for its own sockets; quinn sizes its buffers for it). Do not change
    /// [`UdpSocket::set_gro`] or [`UdpSocket::set_fragmentation`] afterwards: quinn reads
    /// both once, when the endpoint is made.
    pub fn new(socket: Arc<UdpSocket>) -> Self {
        // Unsupported (not Linux or Android, or an old kernel) leaves one datagram a buffer.
        let _ = socket.set_gro(true);
        GuardedQuinnSocket {
            gro_segments: socket.gro_segments(),
            socket,
            send_error: Mutex::new(None),
        }
    }

    /// The guarded socket underneath (for its counters, say).
    pub fn socket(&self) -> &Arc<UdpSocket> {
        &self.socket
    }

    /// The error of the last transmit dropped since the previous call, if any: typically
    /// [`Error::HostUnreachable`] or [`Error::TunnelGone`] while no path outside the tunnel
    /// exists. A datagram too large for the path (`EMSGSIZE`, quinn's MTU probes) is not
    /// kept here: it is how quinn learns the path MTU.
    pub fn take_send_error(&self) -> Option<Error> {
        self.send_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn drop_transmit(&self, e: Error, destination: SocketAddr) {
        tracing::debug!(%destination, error = %e, "QUIC datagram dropped");
        if !is_message_too_long(&e) {
            *self
                .send_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
    }
}

impl AsyncUdpSocket for GuardedQuinnSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller::new(move || {
            let socket = self.socket.clone();
            async move { socket.writable().await }
        }))
    }

    fn try_send(&self, transmit: &udp05::Transmit<'_>) -> io::Result<()> {
        let mut datagram = DatagramOut::new(transmit.destination, transmit.contents);
        datagram.src = transmit.src_ip;
        datagram.segment_size = transmit.segment_size;
        datagram.ecn = transmit.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8));
        match self.socket.try_send(&datagram) {
            Ok(()) => Ok(()),
            // Nothing sent: quinn keeps the transmit and waits on its poller.
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e) => {
                self.drop_transmit(e, transmit.destination);
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [udp05::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut ours = [RecvMeta::default(); quinn_udp::BATCH_SIZE];
        let max = meta.len().min(ours.len());
        let n = ready!(self.socket.poll_recv(cx, bufs, &mut ours[..max]))?;
        for (out, m) in meta.iter_mut().zip(&ours[..n]) {
            *out = recv_meta_05(m);
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.socket.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.gro_segments
    }

    fn may_fragment(&self) -> bool {
        self.socket.may_fragment()
    }
}

/// quinn-udp 0.6's receive metadata as 0.5's (which has no interface index).
fn recv_meta_05(m: &RecvMeta) -> udp05::RecvMeta {
    udp05::RecvMeta {
        addr: m.addr,
        len: m.len,
        stride: m.stride,
        dst_ip: m.dst_ip,
        ecn: m.ecn.and_then(|e| udp05::EcnCodepoint::from_bits(e as u8)),
    }
}

/// A QUIC endpoint on a new guarded socket bound to `bind`, on the current tokio runtime:
/// a client when `server_config` is `None` (set its client config, then `connect`), a
/// server too otherwise.
///
/// Errors: those of [`SocketFactory::bind`] ([`Error::Protection`] when the socket cannot be
/// protected), and an [`Error::Io`] when no tokio runtime is running or quinn refuses the
/// socket.
pub fn endpoint<S: Strategy>(
    factory: &SocketFactory<S>,
    bind: SocketAddr,
    config: EndpointConfig,
    server_config: Option<ServerConfig>,
) -> Result<Endpoint, Error> {
    // quinn spawns its driver at once and would panic outside a runtime.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::Io(io::Error::other(
            "a quinn endpoint needs a running tokio runtime",
        )));
    }
    let socket = GuardedQuinnSocket::new(Arc::new(factory.bind(bind)?));
    Ok(Endpoint::new_with_abstract_socket(
        config,
        server_config,
        Arc::new(socket),
        Arc::new(TokioRuntime),
    )?)
}

/// One connection's wait for [`UdpSocket::writable`], made again after each wake-up. quinn
/// keeps one poller per connection, each with its own waker, which a single
/// `poll_send_ready` could not serve. The future's slot is allocated once and refilled.
struct WritablePoller<M, F> {
    make: M,
    waiting: Pin<Box<Option<F>>>,
}

impl<M, F> WritablePoller<M, F> {
    fn new(make: M) -> Self {
        WritablePoller {
            make,
            waiting: Box::pin(None),
        }
    }
}

impl<M, F> UdpPoller for WritablePoller<M, F>
where
    M: Fn() -> F + Send + Sync + Unpin + 'static,
    F: Future<Output = Result<(), Error>> + Send + Sync + 'static,
{
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.waiting.is_none() {
            this.waiting.set(Some((this.make)()));
        }
        let result = match this.waiting.as_mut().as_pin_mut() {
            Some(waiting) => waiting.poll(cx),
            None => Poll::Ready(Ok(())),
        };
        if result.is_ready() {
            // A finished future may not be polled again: the next call waits anew.
            this.waiting.set(None);
        }
        result.map_err(io::Error::from)
    }
}

impl<M, F> fmt::Debug for WritablePoller<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WritablePoller")
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

/// Whether `e` is the kernel refusing a datagram larger than the path allows.
fn is_message_too_long(e: &Error) -> bool {
    matches!(e, Error::Io(e) if send_error::classify(e) == SendFailure::TooLarge)
}
