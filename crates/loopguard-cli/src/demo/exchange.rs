//! One path's exchange: UDP datagrams or TCP connections to the echo server, over plain
//! sockets or the factory's, counting the echoes that came back.

use std::collections::HashSet;
use std::net::SocketAddr;

use loopguard::{LinuxMark, LoopProtocol, LoopTripwire, SocketFactory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::paths::{path_timeout, Outcome, SocketKind};
use super::{CONNECTIONS, DATAGRAMS};

pub(super) fn unspecified_for(destination: SocketAddr) -> SocketAddr {
    match destination {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

fn payload(transport: &str, i: u32) -> Vec<u8> {
    format!("loopguard demo {transport} #{i}").into_bytes()
}

/// The same address, with an IPv4-mapped IPv6 form folded to IPv4, for comparing senders.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Either kind of UDP socket, so both paths run the same exchange.
enum Udp {
    Plain(tokio::net::UdpSocket),
    Guarded(loopguard::UdpSocket),
}

impl Udp {
    async fn send(&self, payload: &[u8], dst: SocketAddr) -> anyhow::Result<()> {
        match self {
            Udp::Plain(s) => s.send_to(payload, dst).await.map(drop)?,
            // `src` left empty: the strategy (the socket's mark) decides the path.
            Udp::Guarded(s) => s.send(&loopguard::DatagramOut::new(dst, payload)).await?,
        }
        Ok(())
    }

    /// Receives one buffer: the sender and the datagrams in it.
    async fn recv(&self, buf: &mut [u8]) -> anyhow::Result<(SocketAddr, Vec<Vec<u8>>)> {
        match self {
            Udp::Plain(s) => {
                let (n, from) = s.recv_from(buf).await?;
                Ok((from, vec![buf[..n].to_vec()]))
            }
            Udp::Guarded(s) => {
                let meta = s.recv_from(buf).await?;
                Ok((meta.addr, meta.datagrams(buf).map(<[u8]>::to_vec).collect()))
            }
        }
    }
}

pub(super) async fn udp_path(
    kind: SocketKind,
    factory: &SocketFactory<LinuxMark>,
    tripwire: &LoopTripwire,
    dst: SocketAddr,
) -> Outcome {
    let mut outcome = Outcome {
        sent: 0,
        echoed: 0,
        error: None,
    };
    let socket = match kind {
        SocketKind::Plain => tokio::net::UdpSocket::bind(unspecified_for(dst))
            .await
            .map(Udp::Plain)
            .map_err(anyhow::Error::from),
        SocketKind::Guarded => factory
            .bind(unspecified_for(dst))
            .map(Udp::Guarded)
            .map_err(anyhow::Error::from),
    };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            outcome.error = Some(format!("{e:#}"));
            return outcome;
        }
    };
    // A plain socket is not the factory's: the tripwire watches it only when told to.
    let _watched = match &socket {
        Udp::Plain(s) => s
            .local_addr()
            .ok()
            .map(|local| tripwire.watch(LoopProtocol::Udp, local, None)),
        Udp::Guarded(_) => None,
    };
    let mut pending = HashSet::new();
    for i in 0..DATAGRAMS {
        let p = payload("udp", i);
        match socket.send(&p, dst).await {
            Ok(()) => {
                outcome.sent += 1;
                pending.insert(p);
            }
            Err(e) => {
                outcome.error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let deadline = tokio::time::Instant::now() + path_timeout(kind);
    let mut buf = vec![0u8; 65_536];
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => break,
            Ok(Err(e)) => {
                outcome.error.get_or_insert_with(|| format!("{e:#}"));
                break;
            }
            Ok(Ok((from, datagrams))) => {
                if canonical(from) != canonical(dst) {
                    continue;
                }
                // Only an echo of a datagram we sent, and each once, counts.
                for d in datagrams {
                    if pending.remove(&d) {
                        outcome.echoed += 1;
                    }
                }
            }
        }
    }
    outcome
}

pub(super) async fn tcp_path(
    kind: SocketKind,
    factory: &SocketFactory<LinuxMark>,
    tripwire: &LoopTripwire,
    dst: SocketAddr,
) -> Outcome {
    // The connections run concurrently, so a looping path costs one timeout, not one each.
    let attempts = (0..CONNECTIONS).map(|i| async move {
        let message = payload("tcp", i);
        let exchange = async {
            let mut echo = vec![0u8; message.len()];
            match kind {
                SocketKind::Plain => {
                    // Bound first, so its port is known (and watched) before the SYN leaves.
                    let socket = match dst {
                        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                    };
                    socket.bind(unspecified_for(dst))?;
                    let _watched =
                        tripwire.watch(LoopProtocol::Tcp, socket.local_addr()?, Some(dst));
                    let mut s = socket.connect(dst).await?;
                    s.write_all(&message).await?;
                    s.read_exact(&mut echo).await?;
                }
                SocketKind::Guarded => {
                    let mut s = factory.connect(dst).await?;
                    s.write_all(&message).await?;
                    s.read_exact(&mut echo).await?;
                }
            }
            anyhow::Ok(echo == message)
        };
        match timeout(path_timeout(kind), exchange).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err("the echo differed from the message".to_owned()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            // Dropping the connect future closes the socket: no SYN retransmits later.
            Err(_) => Err(format!(
                "no connection within {} ms",
                path_timeout(kind).as_millis()
            )),
        }
    });
    let results = futures_join_all(attempts).await;
    let mut outcome = Outcome {
        sent: CONNECTIONS,
        echoed: 0,
        error: None,
    };
    for r in results {
        match r {
            Ok(()) => outcome.echoed += 1,
            Err(e) => {
                outcome.error.get_or_insert(e);
            }
        }
    }
    outcome
}

/// Polls a set of futures to completion together on the current task (a tiny `join_all`,
/// so the CLI needs no extra crate for it).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (future, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
