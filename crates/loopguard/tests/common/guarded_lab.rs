//! The lab with loopguard's rules installed (`TunnelRoutes`), shared by the lab tests.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use loopguard::os::linux::TunnelRoutes;
use loopguard::{GuardConfig, LinuxMark, SocketFactory};
use loopguard_lab::{EchoServers, Lab, LabOptions, Transport, TunCounter};

use super::block_on;

/// The lab with `0.0.0.0/0` and `::/0` on its TUN (loopguard's `TunnelRoutes`, default
/// configuration), UDP and TCP echo on the server, and the TUN counted.
pub struct GuardedLab {
    // Field order is drop order: the counter and the servers hold threads inside the
    // namespaces, which the lab then deletes.
    pub tun: TunCounter,
    pub echo: EchoServers,
    pub lab: Lab,
    pub config: GuardConfig,
}

impl GuardedLab {
    /// The standard lab.
    pub fn build(tag: &str) -> GuardedLab {
        GuardedLab::build_with(tag, LabOptions::default(), |_| {})
    }

    /// A lab built with `options`, changed by `prepare` (a second uplink, say) before the
    /// tunnel's routes go in.
    pub fn build_with(tag: &str, options: LabOptions, prepare: impl FnOnce(&Lab)) -> GuardedLab {
        let lab = Lab::build_with(tag, options).expect("lab");
        prepare(&lab);
        let config = GuardConfig::default();
        let tun = lab.tun();
        let routes = ["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        lab.client()
            .run(|| block_on(TunnelRoutes::new(config).apply(tun, &routes)))
            .unwrap()
            .expect("apply tunnel routes");
        let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 0).expect("echo");
        let tun = TunCounter::start(lab.client(), lab.tun(), lab.server_addrs().to_vec())
            .expect("tun counter");
        GuardedLab {
            tun,
            echo,
            lab,
            config,
        }
    }

    /// Runs `f` with a guarded factory (the lab's mark) inside the client namespace.
    pub fn in_client<T: Send, F: Future<Output = T>>(
        &self,
        f: impl FnOnce(SocketFactory<LinuxMark>) -> F + Send,
    ) -> T {
        let config = self.config;
        self.lab
            .client()
            .run(move || {
                block_on(async move { f(SocketFactory::new(LinuxMark::new(config))).await })
            })
            .unwrap()
    }

    /// Both UDP echo servers, IPv4 first.
    pub fn udp_targets(&self) -> Vec<SocketAddr> {
        self.lab
            .server_addrs()
            .iter()
            .map(|ip| self.echo.udp_addr(*ip).unwrap())
            .collect()
    }

    /// Packets to `ip` (UDP, TCP or ICMP) read from the TUN so far.
    pub fn tun_packets_to(&self, ip: IpAddr) -> u64 {
        let s = self.tun.snapshot();
        [Transport::Udp, Transport::Tcp, Transport::Icmp]
            .into_iter()
            .map(|t| s.count_to(ip, t))
            .sum()
    }

    /// Packets to either server read from the TUN so far, and every packet read from it.
    pub fn tun_packets(&self) -> (u64, u64) {
        let to_servers = self
            .lab
            .server_addrs()
            .iter()
            .map(|ip| self.tun_packets_to(*ip))
            .sum();
        (to_servers, self.tun.snapshot().all_packets)
    }
}
