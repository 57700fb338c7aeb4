//! The loop tripwire on a real kernel: a guarded socket whose packets loop into the TUN (the
//! lab's policy rules exempt another mark than the one the factory sets: a misconfiguration)
//! is recognised in the packets read from the TUN, with its destination, for UDP and TCP over
//! IPv4 and IPv6.
#![cfg(target_os = "linux")]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::block_on;
use loopguard::os::linux::TunnelRoutes;
use loopguard::{DatagramOut, GuardConfig, LinuxMark, LoopEvent, LoopProtocol, SocketFactory};
use loopguard_lab::{EchoServers, Lab, TunCounter};

/// Waits (bounded) until `events` holds one that `matches`.
async fn wait_for(
    events: &Mutex<Vec<LoopEvent>>,
    matches: impl Fn(&LoopEvent) -> bool,
) -> Option<LoopEvent> {
    wait_up_to(events, &matches, Duration::from_secs(10)).await
}

/// Waits at most `bound` until `events` holds one that `matches`.
async fn wait_up_to(
    events: &Mutex<Vec<LoopEvent>>,
    matches: &impl Fn(&LoopEvent) -> bool,
    bound: Duration,
) -> Option<LoopEvent> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Some(e) = events.lock().unwrap().iter().find(|e| matches(e)) {
            return Some(*e);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[test]
fn a_guarded_socket_whose_packets_loop_into_the_tun_trips_the_wire_with_its_destination() {
    if loopguard_lab::skip_unprivileged(
        "a_guarded_socket_whose_packets_loop_into_the_tun_trips_the_wire_with_its_destination",
    ) {
        return;
    }
    let lab = Lab::build("tw").expect("lab");
    // The rules exempt the default mark; the factory below marks its sockets with another.
    let routes_config = GuardConfig::default();
    let tun = lab.tun();
    let routes = ["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    lab.client()
        .run(|| block_on(TunnelRoutes::new(routes_config).apply(tun, &routes)))
        .unwrap()
        .expect("tunnel routes");
    let wrong_mark = GuardConfig::new(
        0x3046,
        GuardConfig::DEFAULT_MASK,
        GuardConfig::DEFAULT_TABLE,
        GuardConfig::DEFAULT_PRIORITY,
    )
    .unwrap();
    let factory = SocketFactory::new(LinuxMark::new(wrong_mark));
    let tripwire = factory.tripwire();
    let events = Arc::new(Mutex::new(Vec::new()));
    let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
    let counter = TunCounter::start_with(lab.client(), lab.tun(), lab.server_addrs().to_vec(), {
        let (tripwire, events) = (tripwire.clone(), events.clone());
        move |packet| {
            if let Some(event) = tripwire.check(packet) {
                events.lock().unwrap().push(event);
            }
        }
    })
    .expect("tun counter");

    for ip in lab.server_addrs() {
        let udp_dst = echo.udp_addr(ip).unwrap();
        let tcp_dst = echo.tcp_addr(ip).unwrap();
        let factory = factory.clone();
        let any: SocketAddr = if ip.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let events_in = events.clone();
        // The sockets stay open (registered) until their loops are seen.
        let (udp_event, tcp_event, udp_local) = lab
            .client()
            .run(move || {
                block_on(async move {
                    let udp = factory.bind(any).unwrap();
                    // One datagram can be lost on a loaded machine before it reaches the
                    // reader (seen once in CI); UDP is resent until its loop is seen, each
                    // copy looping the same way.
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let mut udp_event = None;
                    while udp_event.is_none() && Instant::now() < deadline {
                        udp.send(&DatagramOut::new(udp_dst, b"loop?"))
                            .await
                            .unwrap();
                        udp_event = wait_up_to(
                            &events_in,
                            &|e: &LoopEvent| e.destination == udp_dst,
                            Duration::from_millis(500),
                        )
                        .await;
                    }
                    // The SYN loops into the TUN, so the connect never completes; it is held
                    // open (and registered) until its loop is seen.
                    let tcp = factory.tcp_socket(tcp_dst).unwrap();
                    let connect = tokio::spawn(tcp.connect(tcp_dst));
                    let tcp_event = wait_for(&events_in, |e| e.destination == tcp_dst).await;
                    assert!(!connect.is_finished(), "a looping connect completed");
                    connect.abort();
                    (udp_event, tcp_event, udp.local_addr().unwrap())
                })
            })
            .unwrap();
        let udp_event = udp_event.unwrap_or_else(|| {
            panic!(
                "no loop reported for UDP to {udp_dst} within 10 s; the TUN saw {:?}",
                counter.snapshot()
            )
        });
        assert_eq!(udp_event.protocol, LoopProtocol::Udp);
        assert_eq!(udp_event.source.port(), udp_local.port());
        assert_eq!(udp_event.socket, udp_local);
        let tcp_event =
            tcp_event.unwrap_or_else(|| panic!("no loop reported for the TCP SYN to {tcp_dst}"));
        assert_eq!(tcp_event.protocol, LoopProtocol::Tcp);
        assert_eq!(tcp_event.destination, tcp_dst);
    }
    let loops = factory.counters().loops_detected;
    let found = events.lock().unwrap().len() as u64;
    assert_eq!(loops, found, "the counter and the events disagree");
    assert!(found >= 4, "{found} loops for 2 families x 2 transports");
    drop(counter);
    drop(echo);
}
