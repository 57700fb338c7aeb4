//! The whole life of a Linux tunnel client on loopguard, in one task: a TUN device that owns
//! the default routes, the rules that keep the client's own socket out of it, one
//! `tokio::select!` loop over the TUN, the peer socket, network changes and Ctrl-C, and the
//! rules removed again on the way out.
//!
//! ```text
//! cargo run --example tunnel_client -- <tun name> <peer ip:port>
//! ```
//!
//! Run it only where taking over every route is what you want (a VM, a network namespace):
//! it routes `0.0.0.0/0` and `::/0` into the new device. The "crypto" is a stand-in that
//! frames packets; a WireGuard client puts boringtun's `Tunn::encapsulate` and
//! `Tunn::decapsulate` where `seal` and `open` are.

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("this example uses the Linux strategy (LinuxMark and TunnelRoutes)");
}

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(tun_name), Some(peer)) = (args.next(), args.next()) else {
        eprintln!("usage: tunnel_client <tun name> <peer ip:port>");
        std::process::exit(2);
    };
    let peer: std::net::SocketAddr = peer.parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(client::run(&tun_name, peer))
}

#[cfg(target_os = "linux")]
mod client {
    use std::io;
    use std::net::SocketAddr;

    use loopguard::monitor::{MarkedRoute, Monitor, MonitorConfig, Roaming};
    use loopguard::{DatagramOut, Error, GuardConfig, LinuxMark, SocketFactory, TunnelRoutes};

    /// Bytes the stand-in crypto adds in front of each packet.
    const HEADER: &[u8] = b"LG";

    pub async fn run(tun_name: &str, peer: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
        // 1. The TUN device (any TUN crate does; tun-rs here).
        let tun = tun_rs::DeviceBuilder::new()
            .name(tun_name)
            .mtu(1380)
            .enable(true)
            .build_async()?;

        // 2. The rules: everything unmarked goes into the TUN, the guard's mark does not.
        //    The guard object removes them when dropped, also on an early return.
        let config = GuardConfig::default();
        let (report, routes) = TunnelRoutes::new(config)
            .install(tun_name, &["0.0.0.0/0".parse()?, "::/0".parse()?])
            .await?;
        println!("routes installed: {report:?}");

        // 3. The factory and the peer socket: marked, so its datagrams skip the tunnel.
        let factory = SocketFactory::new(LinuxMark::new(config));
        let bind: SocketAddr = if peer.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()?;
        let socket = factory.bind(bind)?;

        // 4. Roaming: network changes, ignoring the tunnel's own device, reset the factory
        //    and say whether the peer's path changed.
        let monitor = Monitor::new(MonitorConfig::default().ignore_interface(tun_name))?;
        let mut roaming = Roaming::new(monitor, MarkedRoute::new(config));
        roaming.reset_on_change(factory.clone());
        roaming.track(peer.ip());

        // 5. One loop, no helper task. Each branch's future is cancel safe: the one that
        //    loses a round loses nothing.
        let mut from_tun = vec![0u8; 65_535];
        let mut from_peer = vec![0u8; 65_535];
        let mut sealed = Vec::with_capacity(65_535 + HEADER.len());
        // Made once, so a Ctrl-C between two rounds is not missed.
        let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
        loop {
            tokio::select! {
                read = tun.recv(&mut from_tun) => {
                    let len = read?;
                    seal(&from_tun[..len], &mut sealed);
                    match socket.send(&DatagramOut::new(peer, &sealed)).await {
                        Ok(()) => {}
                        // Fail closed: no path outside the tunnel, so the packet is dropped.
                        Err(e @ (Error::HostUnreachable { .. } | Error::TunnelGone { .. })) => {
                            eprintln!("dropped: {e}");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                received = socket.recv_from(&mut from_peer) => {
                    let meta = received?;
                    if meta.addr != peer {
                        continue;
                    }
                    if let Some(packet) = open(&from_peer[..meta.len]) {
                        tun.send(packet).await?;
                    }
                }
                event = roaming.next() => match event {
                    Some(event) if event.rebind_required() => {
                        // A WireGuard client would send a handshake from the new path here.
                        println!("the path to the peer changed: {event:?}");
                    }
                    Some(_) => {}
                    None => return Err(io::Error::other("the network monitor stopped").into()),
                },
                _ = &mut stop => break,
            }
        }

        // 6. Removal: the rules go before the device does.
        let removed = routes.remove().await?;
        println!("routes removed: {removed:?}");
        Ok(())
    }

    /// The stand-in for encryption: a header in front of the packet.
    fn seal(packet: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(HEADER);
        out.extend_from_slice(packet);
    }

    /// The stand-in for decryption: the packet behind the header, if there is one.
    fn open(datagram: &[u8]) -> Option<&[u8]> {
        datagram.strip_prefix(HEADER)
    }
}
