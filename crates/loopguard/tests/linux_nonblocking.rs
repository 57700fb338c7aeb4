//! The non-blocking API (`try_send`, `writable`, `poll_recv`) end to end in the lab, the way
//! an event loop uses it: one `tokio::select!` over the socket and a ticker, no helper task.
//! With the mark (`LinuxMark`, the tunnel's routes installed by `TunnelRoutes`) and with
//! `PinOutside` (the tunnel's half routes in `main`, so each destination's first `try_send`
//! starts a real route lookup); guarded datagrams must reach the echo server with nothing in
//! the TUN.
#![cfg(target_os = "linux")]

mod common;

use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{block_on, GuardedLab};
use loopguard::{DatagramOut, Error, PinOutside, RecvMeta, SocketFactory, Strategy, UdpSocket};
use loopguard_lab::{EchoServers, Lab, Transport, TunCounter};

/// The bound on the whole exchange; it ends as soon as every echo is back.
const WAIT: Duration = Duration::from_secs(10);
/// Datagrams sent per destination and source choice.
const COUNT: u32 = 20;

fn any_of(family_of: SocketAddr) -> SocketAddr {
    if family_of.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap()
}

/// Sends `COUNT` datagrams to `dst` with `try_send` (waiting on `writable` only when told
/// `WouldBlock`) from a `select!` loop that also polls for the echoes and ticks; returns how
/// many distinct echoes came back and how many `WouldBlock`s were seen.
async fn event_loop(socket: &UdpSocket, dst: SocketAddr, src: Option<IpAddr>) -> (u32, u32) {
    let mut next = 0u32;
    let mut echoed = vec![false; COUNT as usize];
    let mut would_block = 0;
    let mut buf = [0u8; 1500];
    let mut meta = [RecvMeta::default()];
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    let deadline = tokio::time::Instant::now() + WAIT;
    while echoed.iter().any(|e| !e) && tokio::time::Instant::now() < deadline {
        tokio::select! {
            ready = socket.writable(), if next < COUNT => {
                ready.expect("writable");
                let payload = next.to_be_bytes();
                let mut datagram = DatagramOut::new(dst, &payload);
                datagram.src = src;
                match socket.try_send(&datagram) {
                    Ok(()) => next += 1,
                    Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => would_block += 1,
                    Err(e) => panic!("guarded try_send to {dst}: {e}"),
                }
            }
            received = poll_fn(|cx| socket.poll_recv(cx, &mut [IoSliceMut::new(&mut buf)], &mut meta)) => {
                received.expect("poll_recv");
                if let Ok(bytes) = <[u8; 4]>::try_from(&buf[..meta[0].len]) {
                    if let Some(seen) = echoed.get_mut(u32::from_be_bytes(bytes) as usize) {
                        *seen = true;
                    }
                }
            }
            _ = ticker.tick() => {}
        }
    }
    (echoed.iter().filter(|e| **e).count() as u32, would_block)
}

/// Runs the event loop to each target once per source choice (`None`: the strategy's);
/// returns what went wrong.
async fn exchange<S: Strategy>(
    factory: SocketFactory<S>,
    plan: Vec<(SocketAddr, Vec<Option<IpAddr>>)>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (dst, choices) in plan {
        let socket = factory.bind(any_of(dst)).unwrap();
        for choice in choices {
            let (echoed, would_block) = event_loop(&socket, dst, choice).await;
            println!("{dst} src {choice:?}: {echoed}/{COUNT} echoed, {would_block} WouldBlock");
            if echoed != COUNT {
                failures.push(format!("{dst} src {choice:?}: {echoed}/{COUNT} echoed"));
            }
        }
        let counters = socket.counters();
        if counters.dropped() != 0 {
            failures.push(format!("{dst}: {} dropped", counters.dropped()));
        }
    }
    failures
}

fn tun_packets_to_servers(tun: &TunCounter, lab: &Lab) -> u64 {
    let s = tun.snapshot();
    lab.server_addrs()
        .iter()
        .flat_map(|ip| [Transport::Udp, Transport::Icmp].map(|t| s.count_to(*ip, t)))
        .sum()
}

#[test]
fn a_select_loop_over_try_send_and_poll_recv_stays_out_of_the_tunnel_with_the_mark() {
    if loopguard_lab::skip_unprivileged(
        "a_select_loop_over_try_send_and_poll_recv_stays_out_of_the_tunnel_with_the_mark",
    ) {
        return;
    }
    let g = GuardedLab::build("nbm");
    let sources: [IpAddr; 2] = [g.lab.client_v4().into(), g.lab.client_v6().into()];
    let plan = g
        .udp_targets()
        .into_iter()
        .zip(sources)
        .map(|(dst, src)| (dst, vec![None, Some(src)]))
        .collect();
    let failures = g.in_client(|factory| exchange(factory, plan));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        tun_packets_to_servers(&g.tun, &g.lab),
        0,
        "guarded datagrams entered the TUN"
    );
}

#[test]
fn a_select_loop_over_try_send_and_poll_recv_stays_out_of_the_tunnel_with_pinning() {
    if loopguard_lab::skip_unprivileged(
        "a_select_loop_over_try_send_and_poll_recv_stays_out_of_the_tunnel_with_pinning",
    ) {
        return;
    }
    // Field order is drop order: the threads inside the namespaces go before the lab.
    let lab = Lab::build("nbp").expect("lab");
    lab.route_all_into_tun_main_table().expect("half routes");
    let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
    let tun = TunCounter::start(lab.client(), lab.tun(), lab.server_addrs().to_vec())
        .expect("tun counter");
    let [v4, v6] = [0, 1].map(|i| echo.udp_addr(lab.server_addrs()[i]).unwrap());
    // An explicit IPv6 source cannot be pinned by packet info on Linux: PinOutside refuses
    // it (checked below) rather than let the kernel pick the tunnel.
    let plan = vec![
        (v4, vec![None, Some(lab.client_v4().into())]),
        (v6, vec![None]),
    ];
    let client_v6 = IpAddr::from(lab.client_v6());
    let tun_name = lab.tun();
    let (failures, explicit_v6) = lab
        .client()
        .run(move || {
            let strategy = PinOutside::for_tunnel_named(tun_name).expect("pin strategy");
            let factory = SocketFactory::new(strategy);
            block_on(async move {
                let socket = factory.bind(any_of(v6)).unwrap();
                let datagram = DatagramOut::new(v6, b"explicit").with_src(client_v6);
                let explicit_v6 = loop {
                    match socket.try_send(&datagram) {
                        Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                            socket.writable().await.unwrap()
                        }
                        other => break other,
                    }
                };
                (exchange(factory, plan).await, explicit_v6)
            })
        })
        .unwrap();
    println!("explicit IPv6 source: {explicit_v6:?}");
    assert!(
        explicit_v6.is_err(),
        "an explicit IPv6 source was sent unpinned"
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        tun_packets_to_servers(&tun, &lab),
        0,
        "pinned datagrams entered the TUN"
    );
    drop((tun, echo));
}
