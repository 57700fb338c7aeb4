//! The non-blocking half of [`UdpSocket`]: `try_send`, `poll_recv` and the readiness polls
//! that poll-based stacks (quinn's `AsyncUdpSocket`, hickory's `DnsUdpSocket`, hand-written
//! `select!` loops) are built on. Every datagram carries the same route as with
//! [`UdpSocket::send`]; what may not wait (a route lookup, a full socket buffer) is
//! `WouldBlock`, and the readiness polls wait for it.

use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::task::{ready, Context, Poll};

use quinn_udp::Transmit;
use tokio::io::Interest;

use super::route::{self, Route};
use super::{datagram_count, segment_size, DatagramOut, Recovery, RecvMeta, UdpSocket};
use crate::counters::Counter;
use crate::os::send_error::Attempt;
use crate::os::send_path;
use crate::Error;

impl UdpSocket {
    /// Sends one datagram or one GSO batch if that can be done without waiting.
    ///
    /// The route is the one [`send`](Self::send) would use. When it is not cached yet, its
    /// lookup starts (on the runtime's blocking pool; outside a runtime it runs on this
    /// thread) and the call returns an [`Error::Io`] of kind [`io::ErrorKind::WouldBlock`],
    /// as it does when the socket's buffer is full: wait with
    /// [`poll_send_ready`](Self::poll_send_ready) or [`writable`](Self::writable), then call
    /// again. After `WouldBlock` nothing was sent, so the same datagram may be tried again.
    ///
    /// Unlike `send`, a batch is never split: it may hold at most
    /// [`max_gso_segments`](Self::max_gso_segments) datagrams and 65535 bytes less headers
    /// (otherwise `InvalidInput`). A full queue (`ENOBUFS`) is retried a few times at once,
    /// then returned. The first time a device refuses GSO, the batch is sent one datagram at
    /// a time; should the buffer fill part way through, the rest is dropped, counted in
    /// `dropped_send_error`, and reported as an error of kind `Other`.
    ///
    /// The other errors are those of `send`, counted the same way.
    pub fn try_send(&self, datagram: &DatagramOut<'_>) -> Result<(), Error> {
        let mut sent = 0;
        let result = match self.try_send_counted(datagram, &mut sent) {
            Err(e) if is_would_block(&e) && sent > 0 => Err(Error::Io(io::Error::other(format!(
                "the device refused GSO; {sent} of {} datagrams went one by one before the \
                 socket's buffer filled, the rest were dropped",
                datagram_count(datagram)
            )))),
            result => result,
        };
        match &result {
            Err(e) if !is_would_block(e) => self.count_dropped(e, datagram_count(datagram) - sent),
            _ => {}
        }
        result
    }

    fn try_send_counted(&self, datagram: &DatagramOut<'_>, sent: &mut u64) -> Result<(), Error> {
        let route = self.route_without_waiting(datagram.src, datagram.dst)?;
        let segment = segment_size(datagram)?;
        let len = datagram.payload.len();
        if self.batch_len(len, segment, datagram.dst) < len {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a batch of {} datagrams of {segment} bytes is more than one send carries \
                     here (at most {} datagrams and 65535 bytes less headers); split it, or \
                     use send",
                    datagram_count(datagram),
                    self.max_gso_segments()
                ),
            )));
        }
        let transmit = Transmit {
            destination: datagram.dst,
            ecn: datagram.ecn,
            contents: datagram.payload,
            segment_size: (len > segment).then_some(segment),
            src_ip: route.src,
        };
        self.try_send_batch(&transmit, route, sent)
    }

    /// The route from the caches, or from a lookup this socket started earlier; otherwise the
    /// lookup starts now and the answer is `WouldBlock`.
    fn route_without_waiting(&self, src: Option<IpAddr>, dst: SocketAddr) -> Result<Route, Error> {
        if let Some(answer) = route::route_now(&self.guard, src, dst) {
            return answer;
        }
        if let Some(answer) = self.pending.take_finished((src, dst)) {
            return answer;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime, so no task to wait for: nothing else runs on this thread anyway.
            return route::route_blocking(&self.guard, src, dst);
        };
        self.start_lookup(&runtime, src, dst);
        Err(would_block())
    }

    fn start_lookup(&self, runtime: &tokio::runtime::Handle, src: Option<IpAddr>, dst: SocketAddr) {
        let Some(finisher) = self.pending.begin((src, dst)) else {
            return;
        };
        let guard = self.guard.clone();
        runtime.spawn(async move {
            let answer = route::route(&guard, src, dst).await;
            finisher.finish(answer);
        });
    }

    fn try_send_batch(
        &self,
        transmit: &Transmit<'_>,
        route: Route,
        sent: &mut u64,
    ) -> Result<(), Error> {
        let mut attempt = Attempt {
            segmented: transmit.segment_size.is_some(),
            queue_full_retries: 0,
            resolved: route.resolved,
            re_resolved: false,
        };
        loop {
            let err = match self.try_send_once(transmit, route) {
                Ok(()) => {
                    *sent += self.count_sent(transmit);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Error::Io(e)),
                Err(e) => e,
            };
            match self.recovery(err, transmit, &mut attempt) {
                // No readiness event announces a freed queue, and this call may not wait:
                // retry at once, a bounded number of times.
                Recovery::RetryQueueFull => {}
                Recovery::Unsegment => {
                    let size = transmit.segment_size.unwrap_or(transmit.contents.len());
                    for part in transmit.contents.chunks(size.max(1)) {
                        let single = Transmit {
                            contents: part,
                            segment_size: None,
                            ..*transmit
                        };
                        self.try_send_batch(&single, route, sent)?;
                    }
                    return Ok(());
                }
                Recovery::ReResolve => {
                    // The source was forgotten; the next call sends with the new route. A
                    // second failure this soon is returned rather than resolved again.
                    self.mark_re_resolution_futile(transmit.destination);
                    self.route_without_waiting(None, transmit.destination)?;
                    return Err(would_block());
                }
                Recovery::Fail(e) => return Err(e),
            }
        }
    }

    fn try_send_once(&self, transmit: &Transmit<'_>, route: Route) -> io::Result<()> {
        self.io.try_io(Interest::WRITABLE, || {
            send_path::send(
                &self.io,
                &self.state,
                self.caps,
                transmit,
                route.interface,
                route.resolved,
            )
        })?;
        self.counters.add(Counter::Sends, 1);
        Ok(())
    }

    /// Polls until a [`try_send`](Self::try_send) may succeed: the route lookups this socket
    /// started have finished and the socket can take a datagram.
    ///
    /// As with tokio's `poll_send_ready`, only the waker of the last call is kept for the
    /// socket's readiness; for several waiting tasks use [`writable`](Self::writable).
    pub fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.pending.poll_idle(cx));
        self.io.poll_send_ready(cx).map_err(Error::Io)
    }

    /// Waits until a [`try_send`](Self::try_send) may succeed (see
    /// [`poll_send_ready`](Self::poll_send_ready)); any number of tasks may wait at once.
    /// Cancel safe.
    pub async fn writable(&self) -> Result<(), Error> {
        poll_fn(|cx| self.pending.poll_idle(cx)).await;
        self.io.writable().await.map_err(Error::Io)
    }

    /// Receives into several buffers at once, as [`recv`](Self::recv) does, or returns an
    /// [`Error::Io`] of kind `WouldBlock` when nothing is queued.
    pub fn try_recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Result<usize, Error> {
        Ok(self
            .io
            .try_io(Interest::READABLE, || self.recv_now(bufs, meta))?)
    }

    /// Polls for datagrams, as [`recv`](Self::recv) awaits them: `Pending` registers `cx` to
    /// be woken when the socket becomes readable. Only the waker of the last call is kept.
    pub fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<Result<usize, Error>> {
        loop {
            ready!(self.io.poll_recv_ready(cx))?;
            match self.try_recv(bufs, meta) {
                // Readiness was stale and is cleared now: poll again to register.
                Err(e) if is_would_block(&e) => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

fn would_block() -> Error {
    Error::Io(io::Error::from(io::ErrorKind::WouldBlock))
}

fn is_would_block(e: &Error) -> bool {
    matches!(e, Error::Io(e) if e.kind() == io::ErrorKind::WouldBlock)
}
