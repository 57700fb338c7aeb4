//! The standard three-host lab: a client with a TUN device, a router, and a server.
//!
//! ```text
//!  client (TUN lg-tun0)            router                       server
//!  lg-up0 192.0.2.2/24  ---- lg-rc0 192.0.2.1/24
//!         2001:db8:1::2/64         2001:db8:1::1/64
//!                                  lg-rs0 198.51.100.1/24 ---- lg-dn0 198.51.100.2/24
//!                                         2001:db8:2::1/64           2001:db8:2::2/64
//! ```
//!
//! Interfaces live inside their own namespaces from the start, so their names never meet
//! those of a parallel test and can stay fixed; the namespace names are unique.
//!
//! ```no_run
//! use loopguard_lab::{EchoServers, Lab, Transport, TunCounter};
//!
//! # fn main() -> Result<(), loopguard_lab::LabError> {
//! let lab = Lab::build("doc")?;
//! // Declared after the lab, so they are dropped first: their threads hold the namespaces.
//! let echo = EchoServers::start(lab.server(), &lab.server_addrs(), 7)?;
//! let counter = TunCounter::start(lab.client(), lab.tun(), lab.server_addrs().to_vec())?;
//! lab.route_all_into_tun_main_table()?;
//! // ... send from a thread in `lab.client()`, then:
//! let looped = counter.count_to(lab.server_v4().into(), Transport::Udp);
//! # let _ = (echo, looped);
//! # Ok(())
//! # }
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netns::{unique_name, Netns};
use crate::LabError;

/// IPv4 reverse-path filtering modes (`net.ipv4.conf.*.rp_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpFilter {
    /// `0`: no source validation.
    Off,
    /// `1`: strict, the reply route must leave by the interface the packet came in on.
    Strict,
    /// `2`: loose, any route back to the source will do.
    Loose,
}

impl RpFilter {
    fn value(self) -> &'static str {
        match self {
            RpFilter::Off => "0",
            RpFilter::Strict => "1",
            RpFilter::Loose => "2",
        }
    }
}

/// How to build a [`Lab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabOptions {
    /// Reverse-path filtering in the client namespace (all its interfaces).
    pub client_rp_filter: RpFilter,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            client_rp_filter: RpFilter::Loose,
        }
    }
}

/// Client uplink interface name (inside the client namespace).
const UPLINK: &str = "lg-up0";
/// Router interface towards the client.
const ROUTER_CLIENT_SIDE: &str = "lg-rc0";
/// Router interface towards the server.
const ROUTER_SERVER_SIDE: &str = "lg-rs0";
/// Server interface towards the router.
const SERVER_LINK: &str = "lg-dn0";
/// The TUN device in the client namespace.
const TUN: &str = "lg-tun0";
/// The optional second client uplink, and the router's side of it.
const UPLINK2: &str = "lg-up1";
const ROUTER_CLIENT_SIDE2: &str = "lg-rc1";

/// Prefixes that together cover the whole address space yet are more specific than any
/// default route, the classic way of capturing everything without replacing the default.
const HALF_PREFIXES: [&str; 4] = ["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"];

/// Three namespaces (client, router, server) wired together, removed when dropped.
///
/// Drop [`TunCounter`](crate::TunCounter)s and [`EchoServers`](crate::EchoServers) before the
/// lab: a thread that entered a namespace keeps it alive (unnamed) until the thread ends.
#[derive(Debug)]
pub struct Lab {
    client: Netns,
    router: Netns,
    server: Netns,
}

impl Lab {
    /// Builds the lab with [`LabOptions::default`]. `tag` (a few letters, e.g. the test's
    /// name) starts every namespace name, so [`remove_leftovers`](crate::netns::remove_leftovers)
    /// with the same tag finds what a killed run left behind.
    pub fn build(tag: &str) -> Result<Lab, LabError> {
        Lab::build_with(tag, LabOptions::default())
    }

    /// Builds the lab with explicit options.
    pub fn build_with(tag: &str, options: LabOptions) -> Result<Lab, LabError> {
        // Each Netns removes itself if a later step fails, since `?` drops it.
        let client = Netns::create(&unique_name(&format!("{tag}-c")))?;
        let router = Netns::create(&unique_name(&format!("{tag}-r")))?;
        let server = Netns::create(&unique_name(&format!("{tag}-s")))?;
        let lab = Lab {
            client,
            router,
            server,
        };
        lab.wire(options)?;
        Ok(lab)
    }

    fn wire(&self, options: LabOptions) -> Result<(), LabError> {
        let (c, r, s) = (&self.client, &self.router, &self.server);
        for ns in [c, r, s] {
            // New namespaces inherit IPv4 settings from the host: state what the lab relies
            // on. No DAD at all, so IPv6 is usable at once (also for link-local addresses).
            write_sysctls(
                ns,
                &[
                    ("ipv6/conf/all/disable_ipv6", "0"),
                    ("ipv6/conf/default/disable_ipv6", "0"),
                    ("ipv6/conf/all/accept_dad", "0"),
                    ("ipv6/conf/default/accept_dad", "0"),
                ],
            )?;
        }
        // Created inside the client and router namespaces directly: the names never exist in
        // the root namespace, so parallel labs cannot collide on them.
        c.ip(&[
            "link",
            "add",
            UPLINK,
            "type",
            "veth",
            "peer",
            "name",
            ROUTER_CLIENT_SIDE,
            "netns",
            r.name(),
        ])?;
        r.ip(&[
            "link",
            "add",
            ROUTER_SERVER_SIDE,
            "type",
            "veth",
            "peer",
            "name",
            SERVER_LINK,
            "netns",
            s.name(),
        ])?;

        c.ip(&["addr", "add", "192.0.2.2/24", "dev", UPLINK])?;
        c.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            UPLINK,
            "nodad",
        ])?;

        r.ip(&["addr", "add", "192.0.2.1/24", "dev", ROUTER_CLIENT_SIDE])?;
        r.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            ROUTER_CLIENT_SIDE,
            "nodad",
        ])?;
        r.ip(&["addr", "add", "198.51.100.1/24", "dev", ROUTER_SERVER_SIDE])?;
        r.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:2::1/64",
            "dev",
            ROUTER_SERVER_SIDE,
            "nodad",
        ])?;
        r.ip(&["link", "set", ROUTER_CLIENT_SIDE, "up"])?;
        r.ip(&["link", "set", ROUTER_SERVER_SIDE, "up"])?;
        // The client's side of a link comes up after the router's: brought up first, its
        // first IPv6 neighbour solicitation to the router goes unanswered and the first
        // datagram waits a whole retransmission (1 s), measured here.
        c.ip(&["link", "set", UPLINK, "up"])?;
        write_sysctls(
            r,
            &[("ipv4/ip_forward", "1"), ("ipv6/conf/all/forwarding", "1")],
        )?;

        s.ip(&["addr", "add", "198.51.100.2/24", "dev", SERVER_LINK])?;
        s.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:2::2/64",
            "dev",
            SERVER_LINK,
            "nodad",
        ])?;
        s.ip(&["link", "set", SERVER_LINK, "up"])?;

        c.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", UPLINK])?;
        c.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:1::1",
            "dev",
            UPLINK,
        ])?;
        s.ip(&[
            "route",
            "add",
            "default",
            "via",
            "198.51.100.1",
            "dev",
            SERVER_LINK,
        ])?;
        s.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:2::1",
            "dev",
            SERVER_LINK,
        ])?;

        // A persistent TUN with no reader: it takes routed packets and drops them until a
        // TunCounter (or a tunnel client) attaches. `addrgenmode none` before `up` keeps the
        // kernel from sending its own IPv6 chatter (router and neighbour solicitations) into it.
        c.ip(&["tuntap", "add", "dev", TUN, "mode", "tun"])?;
        c.ip(&["link", "set", TUN, "addrgenmode", "none"])?;
        c.ip(&["addr", "add", "203.0.113.2/32", "dev", TUN])?;
        c.ip(&["link", "set", TUN, "up"])?;

        self.set_client_rp_filter(options.client_rp_filter)?;
        for (ns, links) in [
            (r, [ROUTER_CLIENT_SIDE, ROUTER_SERVER_SIDE]),
            (s, [SERVER_LINK, "lo"]),
        ] {
            set_rp_filter(ns, &links, RpFilter::Loose)?;
        }
        Ok(())
    }

    /// Sets IPv4 reverse-path filtering on every interface of the client namespace. The kernel
    /// uses the larger of `all` and the interface's value, so both are set.
    pub fn set_client_rp_filter(&self, mode: RpFilter) -> Result<(), LabError> {
        set_rp_filter(&self.client, &[UPLINK, TUN, "lo"], mode)
    }

    /// Routes every destination into the TUN through the main table, without policy rules:
    /// `0.0.0.0/1`, `128.0.0.0/1`, `::/1` and `8000::/1` on the TUN, which beat the default
    /// routes by prefix length. Unmarked and marked sockets alike then loop into the TUN.
    pub fn route_all_into_tun_main_table(&self) -> Result<(), LabError> {
        for prefix in HALF_PREFIXES {
            // `replace` keeps this idempotent.
            self.client.ip(&["route", "replace", prefix, "dev", TUN])?;
        }
        Ok(())
    }

    /// Removes the routes [`route_all_into_tun_main_table`](Lab::route_all_into_tun_main_table)
    /// added; routes already absent are not an error.
    pub fn remove_tun_main_table_routes(&self) -> Result<(), LabError> {
        for prefix in HALF_PREFIXES {
            let _ = self.client.ip(&["route", "del", prefix, "dev", TUN]);
        }
        Ok(())
    }

    /// Adds a second uplink, `lg-up1` (`203.0.113.130/25`, `2001:db8:3::2/64`), through the
    /// router (`203.0.113.129`, `2001:db8:3::1`), for roaming tests: after this call both
    /// uplinks have default routes, the first (`lg-up0`) preferred with metric 100, the second
    /// with metric 200, for both families. The server's replies find either address: the
    /// router is connected to both links.
    pub fn add_second_uplink(&self) -> Result<(), LabError> {
        let (c, r) = (&self.client, &self.router);
        c.ip(&[
            "link",
            "add",
            UPLINK2,
            "type",
            "veth",
            "peer",
            "name",
            ROUTER_CLIENT_SIDE2,
            "netns",
            r.name(),
        ])?;
        c.ip(&["addr", "add", "203.0.113.130/25", "dev", UPLINK2])?;
        c.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:3::2/64",
            "dev",
            UPLINK2,
            "nodad",
        ])?;
        r.ip(&[
            "addr",
            "add",
            "203.0.113.129/25",
            "dev",
            ROUTER_CLIENT_SIDE2,
        ])?;
        r.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:3::1/64",
            "dev",
            ROUTER_CLIENT_SIDE2,
            "nodad",
        ])?;
        r.ip(&["link", "set", ROUTER_CLIENT_SIDE2, "up"])?;
        // The client side comes up last, see `wire`.
        c.ip(&["link", "set", UPLINK2, "up"])?;
        set_rp_filter(r, &[ROUTER_CLIENT_SIDE2], RpFilter::Loose)?;
        set_rp_filter(&self.client, &[UPLINK2], RpFilter::Loose)?;
        // The first uplink's defaults get an explicit metric, so "preferred" is not an
        // accident of the kernel's per-family default metrics.
        let _ = c.ip(&["-4", "route", "del", "default", "via", "192.0.2.1"]);
        let _ = c.ip(&["-6", "route", "del", "default", "via", "2001:db8:1::1"]);
        for (family, via, dev, metric) in [
            ("-4", "192.0.2.1", UPLINK, "100"),
            ("-6", "2001:db8:1::1", UPLINK, "100"),
            ("-4", "203.0.113.129", UPLINK2, "200"),
            ("-6", "2001:db8:3::1", UPLINK2, "200"),
        ] {
            c.ip(&[
                family, "route", "add", "default", "via", via, "dev", dev, "metric", metric,
            ])?;
        }
        Ok(())
    }

    /// The second uplink's name (see [`add_second_uplink`](Lab::add_second_uplink)).
    pub fn uplink2(&self) -> &'static str {
        UPLINK2
    }

    /// The client's IPv4 address on the second uplink, `203.0.113.130`.
    pub fn client2_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, 130)
    }

    /// The client's IPv6 address on the second uplink, `2001:db8:3::2`.
    pub fn client2_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 2)
    }

    /// The router's IPv4 address on the second uplink, `203.0.113.129`.
    pub fn gateway2_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, 129)
    }

    /// The router's IPv6 address on the second uplink, `2001:db8:3::1`.
    pub fn gateway2_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1)
    }

    /// The client namespace (uplink and TUN live here).
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The router namespace (forwarding on, loose `rp_filter`).
    pub fn router(&self) -> &Netns {
        &self.router
    }

    /// The server namespace, where echo servers run.
    pub fn server(&self) -> &Netns {
        &self.server
    }

    /// Names of the three namespaces: client, router, server.
    pub fn namespace_names(&self) -> [&str; 3] {
        [self.client.name(), self.router.name(), self.server.name()]
    }

    /// The server's IPv4 address, `198.51.100.2`.
    pub fn server_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, 2)
    }

    /// The server's IPv6 address, `2001:db8:2::2`.
    pub fn server_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2)
    }

    /// Both server addresses, IPv4 first.
    pub fn server_addrs(&self) -> [IpAddr; 2] {
        [self.server_v4().into(), self.server_v6().into()]
    }

    /// The client's IPv4 uplink address, `192.0.2.2`.
    pub fn client_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 2)
    }

    /// The client's IPv6 uplink address, `2001:db8:1::2`.
    pub fn client_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)
    }

    /// The router's IPv4 address on the client's link, `192.0.2.1` (the client's gateway).
    pub fn gateway_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 1)
    }

    /// The router's IPv6 address on the client's link, `2001:db8:1::1`.
    pub fn gateway_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)
    }

    /// The TUN device's IPv4 address, `203.0.113.2`.
    pub fn tun_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, 2)
    }

    /// The client's uplink interface name.
    pub fn uplink(&self) -> &'static str {
        UPLINK
    }

    /// The server's interface name (towards the router), for adding addresses to the server.
    pub fn server_link(&self) -> &'static str {
        SERVER_LINK
    }

    /// The client's TUN device name.
    pub fn tun(&self) -> &'static str {
        TUN
    }
}

fn set_rp_filter(ns: &Netns, links: &[&str], mode: RpFilter) -> Result<(), LabError> {
    let v = mode.value();
    let mut keys = vec![
        "ipv4/conf/all/rp_filter".to_owned(),
        "ipv4/conf/default/rp_filter".to_owned(),
    ];
    keys.extend(links.iter().map(|l| format!("ipv4/conf/{l}/rp_filter")));
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), v)).collect();
    write_sysctls(ns, &pairs)
}

/// Writes `/proc/sys/net/<key>` values from a thread inside `ns`: the kernel resolves
/// `/proc/sys/net` by the writing thread's namespace, and this avoids one `ip netns exec`
/// process per setting.
fn write_sysctls(ns: &Netns, pairs: &[(&str, &str)]) -> Result<(), LabError> {
    ns.run(|| {
        for (key, value) in pairs {
            let path = format!("/proc/sys/net/{key}");
            std::fs::write(&path, value).map_err(|e| {
                LabError::Io(std::io::Error::new(
                    e.kind(),
                    format!("{path} = {value}: {e}"),
                ))
            })?;
        }
        Ok(())
    })?
}
