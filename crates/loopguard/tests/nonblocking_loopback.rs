//! The non-blocking half of `UdpSocket` (`try_send`, `poll_send_ready`, `writable`,
//! `try_recv`, `poll_recv`) on loopback, with a fake pinning strategy whose route lookups the
//! test holds back. Needs no privileges.

use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use loopguard::{
    DatagramOut, Error, Path, ProtectionError, RecvMeta, ResolveError, SocketFactory, Strategy,
    UdpSocket,
};

const PINNED_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
/// Has no route outside the fake tunnel.
const NO_ROUTE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 66);
/// Its lookup fails with an I/O error.
const LOOKUP_FAILS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 69);
/// How long a test waits for what must happen at once; only a failing test waits it out.
const BOUND: Duration = Duration::from_secs(10);

/// Pins loopback destinations to 127.0.0.7; every lookup waits until the gate is open.
#[derive(Default)]
struct GatedPinning {
    open: Mutex<bool>,
    opened: Condvar,
    lookups: AtomicUsize,
}

impl GatedPinning {
    fn open_gate(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Strategy for GatedPinning {
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let _open = self.opened.wait_while(open, |open| !*open).unwrap();
        match destination {
            IpAddr::V4(NO_ROUTE) => Err(ResolveError::NoRoute),
            IpAddr::V4(LOOKUP_FAILS) => Err(ResolveError::Io(io::Error::other("netlink said no"))),
            IpAddr::V4(v4) if v4.is_loopback() => Ok(Path {
                source: PINNED_SOURCE.into(),
                interface: None,
            }),
            _ => Err(ResolveError::NoRoute),
        }
    }

    fn interface_for_source(&self, _source: IpAddr) -> Result<Option<u32>, ResolveError> {
        Ok(None)
    }
}

fn factory() -> (SocketFactory<Arc<GatedPinning>>, Arc<GatedPinning>) {
    let fake = Arc::new(GatedPinning::default());
    (SocketFactory::new(fake.clone()), fake)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn is_would_block(result: &Result<(), Error>) -> bool {
    matches!(result, Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock)
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// `try_send` until it stops answering `WouldBlock`, waiting on `writable` in between.
async fn send_when_ready(socket: &UdpSocket, datagram: &DatagramOut<'_>) -> Result<(), Error> {
    tokio::time::timeout(BOUND, async {
        loop {
            let result = socket.try_send(datagram);
            if !is_would_block(&result) {
                return result;
            }
            socket.writable().await?;
        }
    })
    .await
    .expect("try_send kept answering WouldBlock")
}

/// One datagram through `poll_recv`.
async fn poll_one(socket: &UdpSocket, buf: &mut [u8]) -> RecvMeta {
    let mut meta = [RecvMeta::default()];
    let n = tokio::time::timeout(
        BOUND,
        poll_fn(|cx| socket.poll_recv(cx, &mut [IoSliceMut::new(buf)], &mut meta)),
    )
    .await
    .expect("nothing arrived")
    .unwrap();
    assert_eq!(n, 1);
    meta[0]
}

#[tokio::test]
async fn try_send_starts_the_lookup_and_the_readiness_poll_waits_for_it() {
    let (factory, fake) = factory();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let datagram = DatagramOut::new(receiver.local_addr().unwrap(), b"first");

    assert!(
        is_would_block(&sender.try_send(&datagram)),
        "a miss must not wait"
    );
    assert!(
        is_would_block(&sender.try_send(&datagram)),
        "still looking up"
    );
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(
        sender.poll_send_ready(&mut cx).is_pending(),
        "the lookup is running"
    );

    fake.open_gate();
    tokio::time::timeout(BOUND, async {
        while counter.0.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the poller was never woken");
    assert!(matches!(
        sender.poll_send_ready(&mut cx),
        Poll::Ready(Ok(()))
    ));
    sender.try_send(&datagram).unwrap();

    let mut buf = [0u8; 1500];
    let meta = poll_one(&receiver, &mut buf).await;
    assert_eq!(&buf[..meta.len], b"first");
    assert_eq!(
        meta.addr.ip(),
        IpAddr::from(PINNED_SOURCE),
        "sent with the resolved source"
    );
    assert_eq!(
        fake.lookups.load(Ordering::SeqCst),
        1,
        "two misses, one lookup"
    );
    let counters = sender.counters();
    assert_eq!((counters.datagrams_sent, counters.dropped()), (1, 0));
}

#[tokio::test]
async fn every_task_waiting_on_writable_is_woken_when_the_lookup_ends() {
    let (factory, fake) = factory();
    let sender = Arc::new(factory.bind(addr("0.0.0.0:0")).unwrap());
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let dst = receiver.local_addr().unwrap();
    assert!(is_would_block(
        &sender.try_send(&DatagramOut::new(dst, b"x"))
    ));

    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let sender = sender.clone();
            tokio::spawn(async move { sender.writable().await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "woken before the lookup ended"
    );
    fake.open_gate();
    for waiter in waiters {
        tokio::time::timeout(BOUND, waiter)
            .await
            .expect("a waiter was never woken")
            .unwrap()
            .unwrap();
    }
    sender.try_send(&DatagramOut::new(dst, b"x")).unwrap();
}

#[tokio::test]
async fn a_lookup_that_fails_answers_the_next_try_instead_of_spinning() {
    let (factory, fake) = factory();
    fake.open_gate();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let no_route = SocketAddr::from((NO_ROUTE, 9));
    let failing = SocketAddr::from((LOOKUP_FAILS, 9));

    let refused = send_when_ready(&sender, &DatagramOut::new(no_route, b"x")).await;
    assert!(
        matches!(refused, Err(Error::HostUnreachable { destination }) if destination == no_route)
    );
    // Now known: refused at once, no new lookup.
    let lookups = fake.lookups.load(Ordering::SeqCst);
    assert!(matches!(
        sender.try_send(&DatagramOut::new(no_route, b"x")),
        Err(Error::HostUnreachable { .. })
    ));
    assert_eq!(fake.lookups.load(Ordering::SeqCst), lookups);

    let failed = send_when_ready(&sender, &DatagramOut::new(failing, b"x")).await;
    match failed {
        Err(Error::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::Other, "{e}"),
        other => panic!("expected the lookup's I/O error, got {other:?}"),
    }
    let counters = sender.counters();
    assert_eq!(
        counters.datagrams_sent, 0,
        "nothing may go out without a route"
    );
    assert_eq!(counters.dropped_no_route, 2);
    assert_eq!(counters.dropped_send_error, 1);
}

#[tokio::test]
async fn a_gso_batch_goes_whole_and_one_larger_than_a_send_is_refused_whole() {
    let (factory, fake) = factory();
    fake.open_gate();
    let sender = factory.bind(addr("0.0.0.0:0")).unwrap();
    let receiver = factory.bind(addr("127.0.0.1:0")).unwrap();
    let dst = receiver.local_addr().unwrap();
    let segments = sender.max_gso_segments().min(4);
    let payload: Vec<u8> = (0..segments * 100).map(|i| (i / 100) as u8).collect();

    let batch = DatagramOut::new(dst, &payload).with_segment_size(100);
    send_when_ready(&sender, &batch).await.unwrap();
    let mut buf = [0u8; 1500];
    for i in 0..segments {
        let meta = poll_one(&receiver, &mut buf).await;
        assert_eq!(
            &buf[..meta.len],
            &[i as u8; 100][..],
            "datagram {i} whole, in order"
        );
    }

    let too_many = sender.max_gso_segments() + 1;
    let big = vec![7u8; too_many * 10];
    match sender.try_send(&DatagramOut::new(dst, &big).with_segment_size(10)) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}"),
        other => panic!("a batch beyond one send must be refused, got {other:?}"),
    }
    let mut meta = [RecvMeta::default()];
    match receiver.try_recv(&mut [IoSliceMut::new(&mut buf)], &mut meta) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        other => panic!("nothing of the refused batch may arrive, got {other:?}"),
    }
    let counters = sender.counters();
    assert_eq!(counters.datagrams_sent as usize, segments);
    assert_eq!(counters.dropped_send_error as usize, too_many);
}
