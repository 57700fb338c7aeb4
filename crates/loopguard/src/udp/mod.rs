//! [`UdpSocket`]: a protected UDP socket that owns its send path.
//!
//! Batched I/O comes from quinn-udp (GSO on send, GRO and `recvmmsg` on receive, per-datagram
//! source addresses). This module adds what a tunnel client needs on top: the strategy's
//! source for datagrams without one, the GSO limits, the fallback when a device refuses GSO,
//! bounded retries when the queue is full, and typed errors. Each datagram goes out with the
//! route the strategy chose, whether it is sent by the async methods or by the non-blocking
//! ones ([`UdpSocket::try_send`], [`UdpSocket::poll_recv`]) that poll-based stacks need.

mod nonblocking;
mod pending;
mod route;

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;

use crate::counters::{Counter, Counters, SocketCounters};
use crate::factory::Guard;
use crate::os::send_error::{self, Attempt, NextStep, SendFailure};
use crate::os::send_path::{self, Capabilities};
use crate::os::udp_options;
use crate::tripwire::{LoopProtocol, Registration};
use crate::Error;
use pending::PendingRoutes;

pub use quinn_udp::EcnCodepoint;

/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: usize = 64;

/// How many times a send that found the queue full (`ENOBUFS`) is retried before the error is
/// returned. The queue frees by itself, but no readiness event announces it, so waiting for
/// one would hang.
const QUEUE_FULL_RETRIES: u32 = 8;
/// How long a destination whose re-resolution found the same path is not re-resolved again.
const FUTILE_RE_RESOLUTION: Duration = Duration::from_secs(1);

/// One datagram, or a GSO batch of equal-sized datagrams, to send.
///
/// `src` is the source address (the port is always the socket's): `Some` pins it, `None`
/// lets the factory's strategy decide. Several datagrams share one send when `payload` holds
/// them back to back and `segment_size` is their size (the last may be shorter).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct DatagramOut<'a> {
    /// Source address; `None` asks the strategy.
    pub src: Option<IpAddr>,
    /// Destination.
    pub dst: SocketAddr,
    /// One datagram, or several back to back when `segment_size` is set.
    pub payload: &'a [u8],
    /// Size of each datagram in `payload`; `None` means `payload` is one datagram.
    pub segment_size: Option<usize>,
    /// Explicit congestion notification bits.
    pub ecn: Option<EcnCodepoint>,
}

impl<'a> DatagramOut<'a> {
    /// One datagram to `dst`, source chosen by the strategy.
    pub fn new(dst: SocketAddr, payload: &'a [u8]) -> Self {
        DatagramOut {
            src: None,
            dst,
            payload,
            segment_size: None,
            ecn: None,
        }
    }

    /// Pins the source address.
    pub fn with_src(mut self, src: IpAddr) -> Self {
        self.src = Some(src);
        self
    }

    /// Declares `payload` a batch of datagrams of `segment_size` bytes each.
    pub fn with_segment_size(mut self, segment_size: usize) -> Self {
        self.segment_size = Some(segment_size);
        self
    }

    /// Sets the ECN bits.
    pub fn with_ecn(mut self, ecn: EcnCodepoint) -> Self {
        self.ecn = Some(ecn);
        self
    }
}

/// What arrived in one receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    /// Who sent it.
    pub addr: SocketAddr,
    /// Bytes filled in the buffer.
    pub len: usize,
    /// Size of each datagram in the buffer: with GRO one buffer can hold several datagrams
    /// back to back, each `stride` bytes except perhaps the last.
    pub stride: usize,
    /// The local address the datagrams were sent to, where the platform reports it.
    pub dst_ip: Option<IpAddr>,
    /// The interface they arrived on, where the platform reports it.
    pub interface_index: Option<u32>,
    /// ECN bits.
    pub ecn: Option<EcnCodepoint>,
}

impl RecvMeta {
    /// Splits a filled buffer into its datagrams.
    pub fn datagrams<'b>(&self, buf: &'b [u8]) -> impl Iterator<Item = &'b [u8]> {
        buf[..self.len.min(buf.len())].chunks(self.stride.max(1))
    }
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            stride: 0,
            dst_ip: None,
            interface_index: None,
            ecn: None,
        }
    }
}

impl From<quinn_udp::RecvMeta> for RecvMeta {
    fn from(m: quinn_udp::RecvMeta) -> Self {
        RecvMeta {
            addr: m.addr,
            len: m.len,
            stride: m.stride,
            dst_ip: m.dst_ip,
            interface_index: m.interface_index,
            ecn: m.ecn,
        }
    }
}

/// A protected UDP socket made by a [`SocketFactory`](crate::SocketFactory).
pub struct UdpSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// What the OS send path may attach here (probed once).
    caps: Capabilities,
    /// Set when the device refused a GSO / USO batch: from then on one datagram per send.
    gso_refused: AtomicBool,
    /// Receive coalescing, off unless the caller asked ([`UdpSocket::set_gro`]).
    gro: AtomicBool,
    /// Set while the caller allowed fragmentation ([`UdpSocket::set_fragmentation`]).
    fragmentation: AtomicBool,
    guard: Arc<dyn Guard>,
    counters: Arc<SocketCounters>,
    /// The last destination whose re-resolution found the same path again, and when: its
    /// failures are not about a stale source, so it is not resolved again for a while.
    futile_re_resolution: Mutex<Option<(SocketAddr, Instant)>>,
    /// The route lookups non-blocking sends started.
    pending: Arc<PendingRoutes>,
    /// Its port in the factory's socket table, for the loop tripwire.
    _registration: Registration,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local_addr", &self.io.local_addr().ok())
            .finish()
    }
}

impl UdpSocket {
    pub(crate) fn from_protected(
        socket: socket2::Socket,
        guard: Arc<dyn Guard>,
    ) -> Result<Self, Error> {
        let std_socket = std::net::UdpSocket::from(socket);
        let state = UdpSocketState::new((&std_socket).into())?;
        let io = tokio::net::UdpSocket::from_std(std_socket)?;
        // quinn-udp turned GRO on; off until asked, so a small buffer never loses the
        // datagrams coalesced behind the first. A kernel without the option never had it on.
        let _ = udp_options::set_gro(&io, false);
        let caps = send_path::capabilities(&io);
        let counters = guard.counters().register();
        let registration = guard
            .sockets()
            .register(LoopProtocol::Udp, io.local_addr()?, None);
        Ok(UdpSocket {
            io,
            state,
            caps,
            gso_refused: AtomicBool::new(false),
            gro: AtomicBool::new(false),
            fragmentation: AtomicBool::new(false),
            guard,
            counters,
            futile_re_resolution: Mutex::new(None),
            pending: Arc::default(),
            _registration: registration,
        })
    }

    /// The local address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// How many datagrams one send may carry on this socket right now: 1 without GSO (or
    /// after a device refused it), up to [`MAX_GSO_SEGMENTS`].
    pub fn max_gso_segments(&self) -> usize {
        if self.gso_refused.load(Ordering::Relaxed) {
            return 1;
        }
        self.state.max_gso_segments().min(MAX_GSO_SEGMENTS)
    }

    /// How many datagrams one receive buffer may hold: 1 unless receive coalescing was turned
    /// on with [`set_gro`](Self::set_gro).
    pub fn gro_segments(&self) -> usize {
        if self.gro.load(Ordering::Relaxed) {
            self.state.gro_segments()
        } else {
            1
        }
    }

    /// Turns receive coalescing (GRO, Linux and Android) on or off. Off by default: with it
    /// on, one receive buffer holds up to [`gro_segments`](Self::gro_segments) datagrams back
    /// to back ([`RecvMeta::datagrams`]), and the kernel cuts off, without a word, what does
    /// not fit, so size every receive buffer `gro_segments() * the largest datagram you
    /// accept` (quinn-udp's rule) before turning it on. Off, each receive returns one
    /// datagram, and only a datagram larger than the buffer is cut. On other platforms
    /// turning it on is an `Unsupported` error.
    pub fn set_gro(&self, on: bool) -> Result<(), Error> {
        udp_options::set_gro(&self.io, on)?;
        self.gro.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Lets the kernel fragment datagrams larger than the path MTU (`true`), or refuses them
    /// with `EMSGSIZE` (`false`, the default). The default comes from quinn-udp, which sets
    /// don't-fragment on every socket (`IP_MTU_DISCOVER` / `IPV6_MTU_DISCOVER` =
    /// `*_PMTUDISC_PROBE`, and `IPV6_DONTFRAG`); tunnels over UDP whose inner MTU exceeds the path (WireGuard or
    /// OpenVPN set up that way) need fragmentation. Linux and Android; elsewhere an
    /// `Unsupported` error.
    pub fn set_fragmentation(&self, allow: bool) -> Result<(), Error> {
        udp_options::set_fragmentation(&self.io, allow)?;
        self.fragmentation.store(allow, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the IP layer may fragment this socket's datagrams: after
    /// [`set_fragmentation(true)`](Self::set_fragmentation), or where quinn-udp could not set
    /// don't-fragment when it made the socket.
    pub fn may_fragment(&self) -> bool {
        self.fragmentation.load(Ordering::Relaxed) || self.state.may_fragment()
    }

    /// What this socket did so far. [`SocketFactory::counters`](crate::SocketFactory::counters)
    /// adds up every socket of the factory.
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// Sends one datagram or one batch, in order.
    ///
    /// A batch larger than GSO allows (64 segments, 65535 bytes less headers, or what the
    /// device supports) is split into several sends. If the device refuses GSO, GSO is turned
    /// off for this socket and the batch is sent again one datagram at a time.
    ///
    /// Errors: [`Error::HostUnreachable`] when no route outside the tunnel exists and
    /// [`Error::TunnelGone`] while the strategy's tunnel is missing from the host's tables
    /// (nothing was sent for the failed part; both count as `dropped_no_route`),
    /// [`Error::Io`] otherwise. When a batch is split, the parts
    /// before a failure have been sent.
    pub async fn send(&self, datagram: &DatagramOut<'_>) -> Result<(), Error> {
        let mut sent = 0;
        let result = self.send_counted(datagram, &mut sent).await;
        if let Err(e) = &result {
            self.count_dropped(e, datagram_count(datagram) - sent);
        }
        result
    }

    /// Counts `datagrams` dropped by the error `e`.
    fn count_dropped(&self, e: &Error, datagrams: u64) {
        let reason = match e {
            Error::HostUnreachable { .. } | Error::TunnelGone { .. } => Counter::DroppedNoRoute,
            _ => Counter::DroppedSendError,
        };
        self.counters.add(reason, datagrams);
    }

    /// [`send`](Self::send), adding to `sent` the datagrams the kernel accepted.
    async fn send_counted(&self, datagram: &DatagramOut<'_>, sent: &mut u64) -> Result<(), Error> {
        // The route is asked for once per call.
        let route = route::route(&self.guard, datagram.src, datagram.dst).await?;
        let mut interface = route.interface;
        let segment = segment_size(datagram)?;
        let mut transmit = Transmit {
            destination: datagram.dst,
            ecn: datagram.ecn,
            contents: datagram.payload,
            segment_size: None,
            src_ip: route.src,
        };
        let mut rest = datagram.payload;
        // An empty payload is still one (empty) datagram.
        loop {
            let take = self.batch_len(rest.len(), segment, datagram.dst);
            let (now, later) = rest.split_at(take);
            transmit.contents = now;
            transmit.segment_size = (take > segment).then_some(segment);
            // Only a source the strategy chose can be resolved again; with the Linux mark
            // the kernel chooses, and there is nothing to forget.
            let datagrams = self
                .send_batch(&mut transmit, &mut interface, route.resolved)
                .await?;
            *sent += datagrams;
            rest = later;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Bytes of `remaining` the next send may carry: whole segments within the GSO limits.
    fn batch_len(&self, remaining: usize, segment: usize, dst: SocketAddr) -> usize {
        if segment == 0 || remaining <= segment {
            return remaining;
        }
        let headers = if dst.is_ipv4() { 20 + 8 } else { 40 + 8 };
        let by_bytes = (u16::MAX as usize - headers) / segment;
        let segments = self.max_gso_segments().min(by_bytes).max(1);
        remaining.min(segments * segment)
    }

    /// Sends one GSO batch (or single datagram), handling what the send path must survive;
    /// returns how many datagrams went out.
    async fn send_batch(
        &self,
        transmit: &mut Transmit<'_>,
        interface: &mut Option<u32>,
        resolved: bool,
    ) -> Result<u64, Error> {
        let mut attempt = Attempt {
            segmented: transmit.segment_size.is_some(),
            queue_full_retries: 0,
            resolved,
            re_resolved: false,
        };
        loop {
            let err = match self.send_once(transmit, *interface, attempt.resolved).await {
                Ok(()) => return Ok(self.count_sent(transmit)),
                Err(e) => e,
            };
            match self.recovery(err, transmit, &mut attempt) {
                Recovery::RetryQueueFull => back_off(attempt.queue_full_retries).await,
                Recovery::Unsegment => {
                    return self.send_unsegmented(transmit, *interface, resolved).await;
                }
                Recovery::ReResolve => {
                    let route = route::route(&self.guard, None, transmit.destination).await?;
                    if (route.src, route.interface) == (transmit.src_ip, *interface) {
                        // The same path again: the error is not about a stale source, and
                        // resolving per datagram would not help.
                        self.mark_re_resolution_futile(transmit.destination);
                    }
                    transmit.src_ip = route.src;
                    *interface = route.interface;
                }
                Recovery::Fail(e) => return Err(e),
            }
        }
    }

    /// Counts a batch the kernel accepted; returns how many datagrams it held.
    fn count_sent(&self, transmit: &Transmit<'_>) -> u64 {
        let segment = transmit.segment_size.unwrap_or(transmit.contents.len());
        let datagrams = transmit.contents.len().div_ceil(segment.max(1)).max(1) as u64;
        self.counters.add(Counter::DatagramsSent, datagrams);
        datagrams
    }

    /// What to do after the send of `transmit` failed with `err`, the async and the
    /// non-blocking send path alike; counts what it decides.
    fn recovery(&self, err: io::Error, transmit: &Transmit<'_>, attempt: &mut Attempt) -> Recovery {
        let failure = send_error::classify(&err);
        match send_error::next_step(failure, &err, *attempt, QUEUE_FULL_RETRIES) {
            NextStep::RetryQueueFull => {
                attempt.queue_full_retries += 1;
                self.counters.add(Counter::QueueFullRetries, 1);
                Recovery::RetryQueueFull
            }
            NextStep::Unsegment => {
                // The device refused the batch: no more GSO on this socket. The same
                // datagrams go again, one by one, in order.
                self.gso_refused.store(true, Ordering::Relaxed);
                tracing::info!(dst = %transmit.destination, error = %err, "GSO refused; sending the batch unsegmented");
                self.counters.add(Counter::GsoFallbacks, 1);
                Recovery::Unsegment
            }
            NextStep::ReResolve if self.re_resolution_was_futile(transmit.destination) => {
                Recovery::Fail(classify(err, transmit.destination))
            }
            NextStep::ReResolve => {
                // The cached source may be gone (address removed, IPv6 temporary address
                // rotated): forget it and resolve once more.
                attempt.re_resolved = true;
                self.counters.add(Counter::SourcesReResolved, 1);
                self.guard.forget(transmit.destination);
                Recovery::ReResolve
            }
            NextStep::Fail => Recovery::Fail(classify(err, transmit.destination)),
        }
    }

    /// Remembers that re-resolving `destination` did not help, for
    /// [`FUTILE_RE_RESOLUTION`].
    fn mark_re_resolution_futile(&self, destination: SocketAddr) {
        *self
            .futile_re_resolution
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((destination, Instant::now()));
    }

    /// Whether `destination`'s last re-resolution, less than [`FUTILE_RE_RESOLUTION`] ago,
    /// found the same path: then its failures are returned without another resolution.
    fn re_resolution_was_futile(&self, destination: SocketAddr) -> bool {
        matches!(
            *self.futile_re_resolution.lock().unwrap_or_else(|p| p.into_inner()),
            Some((dst, at)) if dst == destination && at.elapsed() < FUTILE_RE_RESOLUTION
        )
    }

    async fn send_unsegmented(
        &self,
        transmit: &Transmit<'_>,
        interface: Option<u32>,
        resolved: bool,
    ) -> Result<u64, Error> {
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let mut sent = 0;
        for part in transmit.contents.chunks(size) {
            let mut single = Transmit {
                contents: part,
                segment_size: None,
                ..*transmit
            };
            sent +=
                Box::pin(self.send_batch(&mut single, &mut interface.clone(), resolved)).await?;
        }
        Ok(sent)
    }

    /// One send; `resolved`: the source is the strategy's choice, not the caller's.
    async fn send_once(
        &self,
        transmit: &Transmit<'_>,
        interface: Option<u32>,
        resolved: bool,
    ) -> io::Result<()> {
        self.io
            .async_io(Interest::WRITABLE, || {
                send_path::send(
                    &self.io,
                    &self.state,
                    self.caps,
                    transmit,
                    interface,
                    resolved,
                )
            })
            .await?;
        self.counters.add(Counter::Sends, 1);
        Ok(())
    }

    /// Receives into several buffers at once (`recvmmsg`, GRO); returns how many were filled,
    /// each described by the matching `meta`.
    pub async fn recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Result<usize, Error> {
        Ok(self
            .io
            .async_io(Interest::READABLE, || self.recv_now(bufs, meta))
            .await?)
    }

    /// Receives into one buffer. With GRO it may hold several datagrams: see
    /// [`RecvMeta::datagrams`].
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<RecvMeta, Error> {
        let mut meta = [RecvMeta::default()];
        self.recv(&mut [IoSliceMut::new(buf)], &mut meta).await?;
        Ok(meta[0])
    }

    /// One receive from the kernel, `WouldBlock` when nothing is queued; counts what arrived.
    fn recv_now(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let mut raw = [quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
        let max = bufs.len().min(meta.len()).min(raw.len());
        let n = self.state.recv(
            UdpSockRef::from(&self.io),
            &mut bufs[..max],
            &mut raw[..max],
        )?;
        let mut datagrams = 0;
        for (out, m) in meta.iter_mut().zip(&raw[..n]) {
            *out = (*m).into();
            datagrams += m.len.div_ceil(m.stride.max(1)).max(1) as u64;
        }
        self.counters.add(Counter::DatagramsReceived, datagrams);
        Ok(n)
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.guard.counters().retire(&self.counters);
    }
}

/// What to do after a failed send (see [`UdpSocket::recovery`]).
enum Recovery {
    /// The queue was full: try again, a little later.
    RetryQueueFull,
    /// The device refused the batch: send its datagrams one by one.
    Unsegment,
    /// The source may be stale (it was forgotten): resolve the path again, then send.
    ReResolve,
    /// Give up with this error.
    Fail(Error),
}

/// The size of each datagram in `datagram`'s payload (the whole payload when it is one).
fn segment_size(datagram: &DatagramOut<'_>) -> Result<usize, Error> {
    match datagram.segment_size {
        Some(0) => Err(Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "segment_size 0: a datagram batch needs a positive segment size",
        ))),
        // A segment as large as the payload is one datagram; telling the kernel otherwise
        // upsets some drivers.
        Some(size) if size < datagram.payload.len() => Ok(size),
        _ => Ok(datagram.payload.len()),
    }
}

/// How many datagrams `datagram` holds: an empty payload is still one (empty) datagram.
fn datagram_count(datagram: &DatagramOut<'_>) -> u64 {
    match datagram.segment_size {
        Some(size) if size > 0 && size < datagram.payload.len() => {
            datagram.payload.len().div_ceil(size) as u64
        }
        _ => 1,
    }
}

/// Turns an OS send error into the typed error callers match on.
pub(crate) fn classify(err: io::Error, destination: SocketAddr) -> Error {
    match send_error::classify(&err) {
        SendFailure::Unreachable => Error::HostUnreachable { destination },
        _ => Error::Io(err),
    }
}

/// Waits a little before retrying a full queue by yielding to the runtime a growing number
/// of times (2, 4, ... 64): other tasks run meanwhile, the thread never sleeps, and it needs
/// no timer (a runtime may have none).
async fn back_off(attempt: u32) {
    for _ in 0..(1u32 << attempt.clamp(1, 6)) {
        tokio::task::yield_now().await;
    }
}

crate::raw_socket::borrow_raw_socket!(UdpSocket, io);
