//! The Android protect hook, driven by a fake host protector on loopback. Needs no
//! privileges: the fake records what it sees instead of calling `VpnService.protect`.
#![cfg(unix)]

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loopguard::{DatagramOut, Error, ProtectFailure, ProtectHook, Protector, SocketFactory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fake does when asked to protect.
#[derive(Clone, Copy, Default)]
enum Answer {
    #[default]
    Protect,
    Refuse,
    Fail,
}

/// What a socket looked like at the moment it was handed to the host.
#[derive(Debug, Clone, Copy)]
struct Seen {
    fd: RawFd,
    /// The local port: 0 means not bound yet.
    local_port: u16,
    /// Whether the socket had a peer (connected) already.
    connected: bool,
}

#[derive(Default)]
struct FakeHost {
    protect_answer: Answer,
    network_answer: Option<Answer>,
    protected: Mutex<Vec<Seen>>,
    bound_to_network: Mutex<Vec<RawFd>>,
    /// Called inside `protect` to check the rest of the world (nothing received yet).
    probe: Mutex<Option<Box<dyn Fn() + Send>>>,
}

fn inspect(fd: RawFd) -> Seen {
    // SAFETY: the factory owns `fd` and keeps it open for the whole protect call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&borrowed);
    let local_port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port());
    Seen {
        fd,
        local_port,
        connected: socket.peer_addr().is_ok(),
    }
}

fn answer(a: Answer) -> Result<(), ProtectFailure> {
    match a {
        Answer::Protect => Ok(()),
        Answer::Refuse => Err(ProtectFailure::Refused),
        Answer::Fail => Err(ProtectFailure::Failed(io::Error::other(
            "JNI: VpnService is gone",
        ))),
    }
}

impl Protector for FakeHost {
    fn protect(&self, fd: RawFd) -> Result<(), ProtectFailure> {
        self.protected.lock().unwrap().push(inspect(fd));
        if let Some(probe) = self.probe.lock().unwrap().as_ref() {
            probe();
        }
        answer(self.protect_answer)
    }

    fn bind_network(&self, fd: RawFd) -> Result<(), ProtectFailure> {
        let Some(a) = self.network_answer else {
            return Ok(());
        };
        assert_eq!(
            self.protected.lock().unwrap().last().map(|s| s.fd),
            Some(fd),
            "bound to the network before being protected"
        );
        self.bound_to_network.lock().unwrap().push(fd);
        answer(a)
    }
}

fn factory(host: FakeHost) -> (SocketFactory<ProtectHook<Arc<FakeHost>>>, Arc<FakeHost>) {
    let host = Arc::new(host);
    (SocketFactory::new(ProtectHook::new(host.clone())), host)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn seen(host: &FakeHost) -> Vec<Seen> {
    host.protected.lock().unwrap().clone()
}

#[tokio::test]
async fn every_udp_socket_is_protected_once_with_its_own_fd_before_it_is_bound() {
    let (factory, host) = factory(FakeHost::default());
    let v4 = factory.bind(addr("127.0.0.1:0")).unwrap();
    let v6 = factory.bind(addr("[::1]:0")).unwrap();
    let got = seen(&host);
    assert_eq!(got.len(), 2, "one protection per socket: {got:?}");
    assert_eq!(got[0].fd, v4.as_raw_fd());
    assert_eq!(got[1].fd, v6.as_raw_fd());
    for s in &got {
        assert_eq!(s.local_port, 0, "bound before protection: {s:?}");
        assert!(!s.connected, "connected before protection: {s:?}");
    }

    // Sending and receiving never asks again.
    let dst = v4.local_addr().unwrap();
    let other = factory.bind(addr("127.0.0.1:0")).unwrap();
    other.send(&DatagramOut::new(dst, b"one")).await.unwrap();
    other.send(&DatagramOut::new(dst, b"two")).await.unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(2), v4.recv_from(&mut buf))
            .await
            .expect("datagram lost")
            .unwrap();
    }
    assert_eq!(seen(&host).len(), 3);
}

#[tokio::test]
async fn a_tcp_socket_is_protected_once_before_it_connects() {
    let (factory, host) = factory(FakeHost::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dst = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let mut stream = factory.connect(dst).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
    server.await.unwrap();

    let got = seen(&host);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].fd, stream.into_inner().as_raw_fd());
    assert_eq!(got[0].local_port, 0, "bound before protection");
    assert!(!got[0].connected, "connected before protection");
}

#[tokio::test]
async fn nothing_is_sent_before_the_host_protected_the_socket() {
    let receiver = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    let receiver = Arc::new(receiver);
    let watched = receiver.clone();
    let (factory, host) = factory(FakeHost::default());
    // At each protection, the receiver must still be empty.
    *host.probe.lock().unwrap() = Some(Box::new(move || {
        let mut buf = [0u8; 16];
        let err = watched.recv_from(&mut buf).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::WouldBlock,
            "a datagram arrived before protection"
        );
    }));
    let dst = receiver.local_addr().unwrap();
    for i in 0..3u8 {
        let sender = factory.bind(addr("127.0.0.1:0")).unwrap();
        sender.send(&DatagramOut::new(dst, &[i])).await.unwrap();
        // Drain what this sender sent, so the next protection sees an empty queue again,
        // and check it really went out after protection.
        let mut buf = [0u8; 16];
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let (n, _) = loop {
            match receiver.recv_from(&mut buf) {
                Ok(r) => break r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "datagram {i} lost");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..n], &[i]);
    }
    assert_eq!(seen(&host).len(), 3);
}

#[tokio::test]
async fn a_refusal_is_a_fatal_protection_error_and_no_socket_is_handed_out() {
    let (factory, host) = factory(FakeHost {
        protect_answer: Answer::Refuse,
        ..Default::default()
    });
    let err = factory.bind(addr("127.0.0.1:0")).unwrap_err();
    assert!(err.is_fatal());
    let Error::Protection(p) = &err else {
        panic!("not a protection error: {err:?}")
    };
    assert_eq!(p.step(), "VpnService.protect");
    assert_eq!(p.os_error().kind(), io::ErrorKind::PermissionDenied);
    let text = with_sources(&err);
    assert!(text.contains("returned false"), "{text}");
    assert!(text.contains("VpnService.prepare"), "{text}");

    // TCP: refused before any SYN, so the listener never sees a connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = factory
        .connect(listener.local_addr().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Protection(p) if p.step() == "VpnService.protect"));
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "an unprotected socket connected");
    assert_eq!(seen(&host).len(), 2);
}

#[tokio::test]
async fn a_failing_callback_is_told_apart_from_a_refusal() {
    let (factory, _) = factory(FakeHost {
        protect_answer: Answer::Fail,
        ..Default::default()
    });
    let err = factory.bind(addr("[::1]:0")).unwrap_err();
    let Error::Protection(p) = &err else {
        panic!("not a protection error: {err:?}")
    };
    assert_eq!(p.step(), "VpnService.protect");
    let text = with_sources(&err);
    assert!(text.contains("VpnService is gone"), "{text}");
    assert!(!text.contains("returned false"), "{text}");
}

#[tokio::test]
async fn the_network_binding_runs_after_protection_on_the_same_fd() {
    let (factory, host) = factory(FakeHost {
        network_answer: Some(Answer::Protect),
        ..Default::default()
    });
    let udp = factory.bind(addr("127.0.0.1:0")).unwrap();
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let tcp = factory
        .connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let bound = host.bound_to_network.lock().unwrap().clone();
    assert_eq!(
        bound,
        vec![udp.as_raw_fd(), tcp.into_inner().as_raw_fd()],
        "Network.bindSocket not called once per socket"
    );
}

#[tokio::test]
async fn a_refused_network_binding_is_fatal_and_names_its_step() {
    let (factory, host) = factory(FakeHost {
        network_answer: Some(Answer::Refuse),
        ..Default::default()
    });
    let err = factory.bind(addr("127.0.0.1:0")).unwrap_err();
    assert!(
        matches!(&err, Error::Protection(p) if p.step() == "Network.bindSocket"),
        "{err:?}"
    );
    assert_eq!(seen(&host).len(), 1);
    assert_eq!(host.bound_to_network.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_closure_is_a_protector() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let record = calls.clone();
    let factory = SocketFactory::new(ProtectHook::new(move |fd: RawFd| {
        record.lock().unwrap().push(fd);
        Ok(())
    }));
    let socket = factory.bind(addr("127.0.0.1:0")).unwrap();
    assert_eq!(*calls.lock().unwrap(), vec![socket.as_raw_fd()]);
}

/// The fd contract on `Protector`: borrowed for the call, never adopted. A protector that
/// only borrows leaves the fd open, the same socket, with what it did to it still in place.
#[tokio::test]
async fn the_fd_is_still_open_and_protected_after_the_hook_returns() {
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let seen_by_hook = recorded.clone();
    let factory = SocketFactory::new(ProtectHook::new(move |fd: RawFd| {
        // SAFETY: the fd is borrowed for this call only, as the contract says.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        // Stands in for VpnService.protect's mark: an option the host sets on the socket.
        socket2::SockRef::from(&borrowed)
            .set_keepalive(true)
            .map_err(ProtectFailure::Failed)?;
        seen_by_hook.lock().unwrap().push(fd);
        Ok(())
    }));
    let socket = factory.bind(addr("127.0.0.1:0")).unwrap();
    let fd = socket.as_raw_fd();
    assert_eq!(*recorded.lock().unwrap(), vec![fd], "protected another fd");
    // SAFETY: F_GETFD only reads the descriptor's flags.
    assert_ne!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1, "fd closed");
    let still = socket2::SockRef::from(&socket);
    assert!(still.keepalive().unwrap(), "the host's protection was lost");
    // And it is the socket in use.
    let peer = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send(&DatagramOut::new(peer.local_addr().unwrap(), b"still ours"))
        .await
        .unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"still ours"[..], socket.local_addr().unwrap())
    );
}

/// What `ParcelFileDescriptor.adoptFd` followed by a close and a reuse of the number looks
/// like from loopguard's side: the fd now names another socket. The factory refuses it.
#[tokio::test]
async fn a_host_that_replaces_the_fd_gets_a_protection_error_not_a_socket() {
    let decoy = Arc::new(StdUdpSocket::bind("127.0.0.1:0").unwrap());
    let held = decoy.clone();
    let factory = SocketFactory::new(ProtectHook::new(move |fd: RawFd| {
        // SAFETY: dup2 onto the borrowed fd: exactly the misuse the contract forbids.
        if unsafe { libc::dup2(held.as_raw_fd(), fd) } < 0 {
            return Err(ProtectFailure::Failed(io::Error::last_os_error()));
        }
        Ok(())
    }));
    match factory.bind(addr("127.0.0.1:0")) {
        Err(Error::Protection(e)) => {
            assert_eq!(e.step(), "VpnService.protect");
            assert!(with_sources(&e).contains("replaced"), "{e}");
        }
        other => panic!("a replaced fd was handed out: {other:?}"),
    }
    // The decoy is untouched: only the duplicate under the old number was closed.
    assert!(decoy.local_addr().is_ok());
}

/// The error's text and its sources' (the OS error, the host's failure), `a: b: c`.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    text
}
