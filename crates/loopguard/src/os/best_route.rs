//! The pin strategies' logic, portable: for each destination, the best route on every
//! interface except the tunnel's, decided by [`route::select`] on a
//! snapshot of the host's tables.
//!
//! The operating system is reached only through two small traits, so the same strategy runs
//! with a fake host in tests, on Windows with the IP Helper readers (`os::windows::IpHelper`)
//! and `IP_UNICAST_IF` (`os::windows::UnicastIf`), and on Linux with the netlink tables and
//! `SO_BINDTOIFINDEX` (`os::linux::PinOutside`):
//!
//! - [`HostSnapshot`] reads the interfaces, routes and addresses, and may ask the OS which
//!   source it would use on the chosen interface;
//! - [`StreamPin`] holds a stream socket to the chosen interface.
//!
//! Nothing here changes the system routing table.

use std::io;
use std::net::IpAddr;
use std::sync::RwLock;

use crate::route::{self, choose_source, HostTables, Interface, Tunnel};
use crate::{Path, ProtectionError, ResolveError, Strategy};

/// Reads the host's routing state.
pub trait HostSnapshot: Send + Sync + 'static {
    /// The interfaces (with LUID, index, status and metrics), the forwarding table of both
    /// families, and every unicast address. Called on each cache miss.
    fn snapshot(&self) -> io::Result<HostTables>;

    /// The source address the OS itself would pick for `destination` when leaving through
    /// `interface` (on Windows, `GetBestRoute2` restricted to the interface's LUID).
    /// `Ok(None)` or an error mean "no opinion": the strategy then uses
    /// [`choose_source`] on the snapshot. The default has none.
    fn best_source(
        &self,
        interface: &Interface,
        destination: IpAddr,
    ) -> io::Result<Option<IpAddr>> {
        let _ = (interface, destination);
        Ok(None)
    }
}

/// Holds an unconnected stream socket to one interface.
pub trait StreamPin: Send + Sync + 'static {
    /// Pins `socket` (of `destination`'s family) to the interface with this index.
    fn pin(&self, socket: &socket2::Socket, family_of: IpAddr, interface: u32) -> io::Result<()>;

    /// The call [`pin`](StreamPin::pin) makes, named in its errors. The default names
    /// Windows' `IP_UNICAST_IF` / `IPV6_UNICAST_IF`.
    fn step(&self, family_of: IpAddr) -> &'static str {
        if family_of.is_ipv4() {
            "setsockopt(IP_UNICAST_IF)"
        } else {
            "setsockopt(IPV6_UNICAST_IF)"
        }
    }
}

/// The value of `IP_UNICAST_IF` / `IPV6_UNICAST_IF` for an interface index, as the bytes of a
/// native `u32` must hold it: for IPv4 the index in network byte order, for IPv6 in host
/// order. Windows reads the IPv4 one as an address-like value; passing the host
/// order index there pins the socket to another interface, or to none.
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) fn unicast_if_value(family_of: IpAddr, interface: u32) -> u32 {
    match family_of {
        IpAddr::V4(_) => interface.to_be(),
        IpAddr::V6(_) => interface,
    }
}

/// The best route outside the tunnel, the way Windows would choose it if the tunnel did not
/// exist: see [`route::select`] for the rules. Datagrams without a
/// source get the chosen source and interface index (stamped with `IP_PKTINFO` /
/// `IPV6_PKTINFO`); stream sockets are bound to the source and pinned to the interface.
///
/// The tunnel is identified by LUID, so a rename does not matter. A tunnel that is no longer
/// in the host's tables fails closed ([`ResolveError::TunnelGone`]): a tunnel restarted under
/// a new LUID would otherwise be an ordinary candidate, and win. What happens next is a
/// [`TunnelRestart`] policy: a tunnel found by name ([`Tunnel::find`]) is found again by that
/// name; one given by LUID alone stays refused until the strategy is built again.
///
/// On Windows use `loopguard::os::windows::WindowsRoute`, this strategy with the real host.
#[derive(Debug)]
pub struct BestRouteOutsideTunnel<H, P> {
    host: H,
    pin: P,
    tunnel: RwLock<Tunnel>,
    restart: TunnelRestart,
}

/// What a pinning strategy does when its tunnel is no longer in the host's tables. Until the
/// tunnel is found again, every destination is refused either way (fail closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelRestart {
    /// Look the tunnel up again by the name it was found by, on every resolution while it is
    /// missing, and avoid the new interface from then on. The default for a tunnel found by
    /// name.
    FollowName,
    /// Stay refused: the caller builds a new strategy (and factory) for the new tunnel. The
    /// only choice for a tunnel given by LUID alone.
    FailClosed,
}

impl<H: HostSnapshot, P: StreamPin> BestRouteOutsideTunnel<H, P> {
    /// A strategy that never uses `tunnel`, reading the host through `host` and pinning
    /// streams with `pin`. A tunnel with a [name](Tunnel::name) is followed across restarts
    /// ([`TunnelRestart::FollowName`]).
    pub fn new(host: H, pin: P, tunnel: Tunnel) -> Self {
        let restart = if tunnel.name().is_some() {
            TunnelRestart::FollowName
        } else {
            TunnelRestart::FailClosed
        };
        BestRouteOutsideTunnel {
            host,
            pin,
            tunnel: RwLock::new(tunnel),
            restart,
        }
    }

    /// The same strategy with another restart policy. `FollowName` without a name behaves as
    /// `FailClosed`.
    pub fn with_restart(mut self, restart: TunnelRestart) -> Self {
        self.restart = restart;
        self
    }

    /// The tunnel this strategy avoids now (after a followed restart, the new one).
    pub fn tunnel(&self) -> Tunnel {
        self.tunnel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The tunnel as it is in `host`: the known one if it is there, else (following by name)
    /// the one found under that name, else [`ResolveError::TunnelGone`].
    fn tunnel_in(&self, host: &HostTables) -> Result<Tunnel, ResolveError> {
        let known = self.tunnel();
        if known.is_present_in(host) {
            return Ok(known);
        }
        let gone = || ResolveError::TunnelGone {
            tunnel: known.describe(),
        };
        let (TunnelRestart::FollowName, Some(name)) = (self.restart, known.name()) else {
            return Err(gone());
        };
        let found = Tunnel::find(host, name).map_err(|_| gone())?;
        tracing::warn!(
            tunnel = name,
            old = ?known.luids(),
            new = ?found.luids(),
            "the tunnel came back under a new identity; avoiding the new one"
        );
        *self.tunnel.write().unwrap_or_else(|p| p.into_inner()) = found.clone();
        Ok(found)
    }

    /// The host reader.
    pub fn host(&self) -> &H {
        &self.host
    }

    /// The full decision for `destination`, with every candidate route and why it lost:
    /// what `loopguard route` prints. The source is the one [`resolve`](Strategy::resolve)
    /// would use.
    ///
    /// A tunnel missing from the tables is an error of kind `NotFound`.
    pub fn explain(
        &self,
        destination: IpAddr,
    ) -> io::Result<Result<route::Decision, route::Unreachable>> {
        let host = self.host.snapshot()?;
        let tunnel = self.tunnel_in(&host).map_err(|e| match e {
            ResolveError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::NotFound, other.to_string()),
        })?;
        Ok(
            route::select(&host, &tunnel, destination).map(|mut decision| {
                if let Some(interface) = host.interface(decision.interface) {
                    decision.source = self
                        .source_on(&host, interface, destination)
                        .or(decision.source);
                }
                decision
            }),
        )
    }

    /// The OS's own source choice on `interface`, kept only when it is a usable address of
    /// that interface in the snapshot (so a stale or odd answer cannot pin a foreign source).
    fn source_on(
        &self,
        host: &HostTables,
        interface: &Interface,
        destination: IpAddr,
    ) -> Option<IpAddr> {
        let proposed = match self.host.best_source(interface, destination) {
            Ok(Some(source)) => source,
            Ok(None) => return None,
            Err(e) => {
                tracing::trace!(%destination, error = %e, "OS source choice unavailable; using the snapshot's");
                return None;
            }
        };
        let addresses = host.addresses.as_deref()?;
        let proposed_row = addresses
            .iter()
            .find(|a| a.address == proposed && a.interface == interface.luid)?;
        let usable = choose_source(
            std::slice::from_ref(proposed_row),
            interface.luid,
            destination,
        )?;
        // Windows prefers temporary IPv6 addresses by default (RFC 6724 rule 7), so
        // GetBestRoute2 often answers one; a temporary address rotates away under a long flow,
        // so a stable usable address of the same interface wins. Temporary is
        // decided by the row's flags as `UnicastAddress::is_temporary` reads them: an IPv6
        // address whose suffix origin is `Random`. Where Windows randomizes the identifiers
        // of public SLAAC addresses too (RandomizeIdentifiers, the default), those report
        // `Random` as well and count as temporary here: the OS's answer is then kept when no
        // address of the interface has a stable suffix (link-layer, manual, DHCP), which is
        // the best the row's flags can tell.
        if proposed_row.is_temporary() {
            let stable = choose_source(addresses, interface.luid, destination).filter(|&choice| {
                addresses
                    .iter()
                    .any(|a| a.address == choice && !a.is_temporary())
            });
            if let Some(stable) = stable {
                return Some(stable);
            }
        }
        Some(usable)
    }
}

/// The index of the interface owning `source` in `host`'s address table: what a datagram
/// with an explicit source is stamped with. Windows, like for TCP, does not
/// promise to choose the interface from the source alone; index 0 in `IP_PKTINFO` leaves the
/// choice to the route lookup, which may pick the tunnel. The tunnel's own address is
/// [`ResolveError::NoRoute`] (the datagram would enter it); an address no interface owns, or
/// a host without an address table, is `Ok(None)` (Windows refuses a foreign source itself).
pub fn interface_owning(
    host: &HostTables,
    tunnel: &Tunnel,
    source: IpAddr,
) -> Result<Option<u32>, ResolveError> {
    let Some(addresses) = host.addresses.as_deref() else {
        return Ok(None);
    };
    let Some(owner) = addresses.iter().find(|a| a.address == source) else {
        return Ok(None);
    };
    if tunnel.contains(owner.interface) {
        return Err(ResolveError::NoRoute);
    }
    Ok(host
        .interfaces
        .iter()
        .find(|i| i.luid == owner.interface)
        .map(|i| i.index)
        .filter(|&index| index != 0))
}

impl<H: HostSnapshot, P: StreamPin> Strategy for BestRouteOutsideTunnel<H, P> {
    /// Nothing to do per socket: there are no marks on Windows. Each datagram and each
    /// connection is pinned to its path instead.
    fn protect(&self, _socket: &socket2::Socket) -> Result<(), ProtectionError> {
        Ok(())
    }

    fn pins_source(&self) -> bool {
        true
    }

    fn resolve(&self, destination: IpAddr) -> Result<Path, ResolveError> {
        let host = self.host.snapshot()?;
        let tunnel = self.tunnel_in(&host)?;
        let path = route::path_for(&host, &tunnel, destination)?;
        let Some(index) = path.interface else {
            return Ok(path);
        };
        let source = host
            .interfaces
            .iter()
            .find(|i| i.index == index && !tunnel.contains(i.luid))
            .and_then(|interface| self.source_on(&host, interface, destination))
            .unwrap_or(path.source);
        Ok(Path { source, ..path })
    }

    fn interface_for_source(&self, source: IpAddr) -> Result<Option<u32>, ResolveError> {
        let host = self.host.snapshot()?;
        let tunnel = self.tunnel_in(&host)?;
        interface_owning(&host, &tunnel, source)
    }

    /// The tunnel's interfaces by index, in the current snapshot (a rename or a restart
    /// followed by name counts; a missing tunnel is [`ResolveError::TunnelGone`]).
    fn is_tunnel_interface(&self, index: u32) -> Result<bool, ResolveError> {
        let host = self.host.snapshot()?;
        let tunnel = self.tunnel_in(&host)?;
        Ok(host
            .interfaces
            .iter()
            .any(|i| i.index == index && tunnel.contains(i.luid)))
    }

    /// Pins the stream to the resolved interface. A path without an interface index cannot
    /// be pinned: that is a protection failure (binding the source alone does not choose the
    /// interface on Windows), never a silent fallback.
    fn pin_stream(&self, socket: &socket2::Socket, path: &Path) -> Result<(), ProtectionError> {
        let step = self.pin.step(path.source);
        let Some(index) = path.interface else {
            return Err(ProtectionError::new(
                step,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the path names no interface index",
                ),
                None,
            ));
        };
        self.pin
            .pin(socket, path.source, index)
            .map_err(|e| ProtectionError::new(step, e, None))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::route::{
        AddressState, Luid, OperStatus, PrefixOrigin, Route, SuffixOrigin, UnicastAddress,
    };

    const TUN: Luid = Luid(0x0035_0000_0000_0001);
    const ETH: Luid = Luid(0x0006_0000_0000_0002);
    const WIFI: Luid = Luid(0x0047_0000_0000_0003);

    fn interface(luid: Luid, index: u32, alias: &str, metric: u32) -> Interface {
        Interface {
            luid,
            index,
            alias: alias.into(),
            status: OperStatus::Up,
            ipv4_metric: Some(metric),
            ipv6_metric: None,
        }
    }

    fn route(prefix: &str, luid: Luid, metric: u32) -> Route {
        Route {
            destination: prefix.parse().unwrap(),
            next_hop: None,
            interface: luid,
            metric,
        }
    }

    fn address(text: &str, luid: Luid) -> UnicastAddress {
        UnicastAddress {
            address: text.parse().unwrap(),
            prefix_length: 24,
            interface: luid,
            state: AddressState::Preferred,
            skip_as_source: false,
            prefix_origin: PrefixOrigin::Manual,
            suffix_origin: SuffixOrigin::Manual,
        }
    }

    /// A host whose tunnel owns the default route (metric 0), with Ethernet and Wi-Fi below it.
    fn host() -> HostTables {
        HostTables {
            interfaces: vec![
                interface(TUN, 40, "lg-tun", 5),
                interface(ETH, 2, "Ethernet", 25),
                interface(WIFI, 3, "Wi-Fi", 50),
            ],
            routes: vec![
                route("0.0.0.0/0", TUN, 0),
                route("0.0.0.0/0", ETH, 0),
                route("0.0.0.0/0", WIFI, 0),
                route("198.51.100.0/24", WIFI, 0),
            ],
            addresses: Some(vec![
                address("192.0.2.40", TUN),
                address("192.0.2.10", ETH),
                address("192.0.2.11", ETH),
                address("198.51.100.3", WIFI),
            ]),
        }
    }

    /// A fake host: a fixed snapshot (or an error), and an optional OS source answer.
    struct FakeHost {
        tables: io::Result<HostTables>,
        os_source: Option<io::Result<Option<IpAddr>>>,
        snapshots: AtomicUsize,
    }

    impl FakeHost {
        fn new(tables: HostTables) -> Self {
            FakeHost {
                tables: Ok(tables),
                os_source: None,
                snapshots: AtomicUsize::new(0),
            }
        }
    }

    impl HostSnapshot for FakeHost {
        fn snapshot(&self) -> io::Result<HostTables> {
            self.snapshots.fetch_add(1, Ordering::SeqCst);
            match &self.tables {
                Ok(t) => Ok(t.clone()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            }
        }

        fn best_source(&self, _: &Interface, _: IpAddr) -> io::Result<Option<IpAddr>> {
            match &self.os_source {
                None => Ok(None),
                Some(Ok(s)) => Ok(*s),
                // What Wine answers for GetBestRoute2.
                Some(Err(_)) => Err(io::Error::from_raw_os_error(50)),
            }
        }
    }

    /// Records what it was asked to pin.
    #[derive(Default)]
    struct RecordingPin {
        pinned: Mutex<Vec<(IpAddr, u32)>>,
        refuse: bool,
    }

    impl StreamPin for RecordingPin {
        fn pin(&self, _: &socket2::Socket, family_of: IpAddr, interface: u32) -> io::Result<()> {
            if self.refuse {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            self.pinned.lock().unwrap().push((family_of, interface));
            Ok(())
        }
    }

    fn strategy(host: FakeHost) -> BestRouteOutsideTunnel<FakeHost, RecordingPin> {
        BestRouteOutsideTunnel::new(host, RecordingPin::default(), Tunnel::new(TUN))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn resolves_around_the_tunnel_by_effective_metric_and_longest_prefix() {
        let s = strategy(FakeHost::new(host()));
        assert!(s.pins_source());
        // Default: the tunnel (metric 0 + 5) is skipped; Ethernet 0+25 beats Wi-Fi 0+50.
        assert_eq!(
            s.resolve(ip("203.0.113.9")).unwrap(),
            Path {
                source: ip("192.0.2.10"),
                interface: Some(2)
            }
        );
        // A longer prefix on Wi-Fi beats Ethernet's lower metric.
        assert_eq!(
            s.resolve(ip("198.51.100.77")).unwrap(),
            Path {
                source: ip("198.51.100.3"),
                interface: Some(3)
            }
        );
        assert_eq!(s.host().snapshots.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn only_the_tunnel_leads_there_or_no_family_route_gives_no_route() {
        let mut tables = host();
        tables.routes.retain(|r| r.interface == TUN);
        let s = strategy(FakeHost::new(tables));
        assert!(matches!(
            s.resolve(ip("203.0.113.9")),
            Err(ResolveError::NoRoute)
        ));
        let s = strategy(FakeHost::new(host()));
        assert!(matches!(
            s.resolve(ip("2001:db8::1")),
            Err(ResolveError::NoRoute)
        ));
    }

    #[test]
    fn a_zone_is_the_tunnel_only_when_it_names_the_tunnels_index() {
        let s = strategy(FakeHost::new(host()));
        assert!(s.is_tunnel_interface(40).unwrap(), "the tunnel's index");
        assert!(!s.is_tunnel_interface(2).unwrap(), "Ethernet");
        assert!(!s.is_tunnel_interface(99).unwrap(), "no such interface");
        // The tunnel gone: refused, not allowed.
        let mut tables = host();
        tables.interfaces.retain(|i| i.luid != TUN);
        let s = strategy(FakeHost::new(tables));
        assert!(matches!(
            s.is_tunnel_interface(2),
            Err(ResolveError::TunnelGone { .. })
        ));
    }

    #[test]
    fn a_failed_snapshot_is_an_io_error_not_no_route() {
        let s = strategy(FakeHost {
            tables: Err(io::Error::other("GetIpForwardTable2 failed")),
            os_source: None,
            snapshots: AtomicUsize::new(0),
        });
        assert!(matches!(
            s.resolve(ip("203.0.113.9")),
            Err(ResolveError::Io(_))
        ));
    }

    #[test]
    fn the_os_source_is_used_when_it_is_a_usable_address_of_the_chosen_interface() {
        let mut fake = FakeHost::new(host());
        fake.os_source = Some(Ok(Some(ip("192.0.2.11"))));
        let s = strategy(fake);
        assert_eq!(
            s.resolve(ip("203.0.113.9")).unwrap().source,
            ip("192.0.2.11")
        );
        let decision = s.explain(ip("203.0.113.9")).unwrap().unwrap();
        assert_eq!(decision.source, Some(ip("192.0.2.11")));
    }

    #[test]
    fn a_foreign_or_failed_os_source_falls_back_to_the_portable_choice() {
        // The tunnel's address, as a confused OS answer: never used.
        let mut fake = FakeHost::new(host());
        fake.os_source = Some(Ok(Some(ip("192.0.2.40"))));
        let s = strategy(fake);
        assert_eq!(
            s.resolve(ip("203.0.113.9")).unwrap().source,
            ip("192.0.2.10")
        );
        // ERROR_NOT_SUPPORTED (Wine's GetBestRoute2).
        let mut fake = FakeHost::new(host());
        fake.os_source = Some(Err(io::Error::other("not supported")));
        let s = strategy(fake);
        assert_eq!(
            s.resolve(ip("203.0.113.9")).unwrap().source,
            ip("192.0.2.10")
        );
    }

    #[test]
    fn a_temporary_os_source_gives_way_to_a_stable_one_of_the_same_interface() {
        let mut tables = host();
        tables.interfaces[1].ipv6_metric = Some(25);
        tables.routes.push(route("::/0", ETH, 0));
        let mut stable = address("2001:db8:1::5", ETH);
        stable.prefix_length = 64;
        stable.prefix_origin = PrefixOrigin::RouterAdvertisement;
        stable.suffix_origin = SuffixOrigin::LinkLayerAddress;
        let mut temporary = stable.clone();
        temporary.address = ip("2001:db8:1::7e3a");
        temporary.suffix_origin = SuffixOrigin::Random;
        tables
            .addresses
            .as_mut()
            .unwrap()
            .extend([temporary, stable]);
        // GetBestRoute2 answers the temporary one, as Windows prefers by default.
        let mut fake = FakeHost::new(tables.clone());
        fake.os_source = Some(Ok(Some(ip("2001:db8:1::7e3a"))));
        let s = strategy(fake);
        assert_eq!(
            s.resolve(ip("2001:db8:9::1")).unwrap().source,
            ip("2001:db8:1::5")
        );
        // Only temporary (random-suffix) addresses: the OS's answer stands.
        tables
            .addresses
            .as_mut()
            .unwrap()
            .retain(|a| a.address != ip("2001:db8:1::5"));
        let mut fake = FakeHost::new(tables);
        fake.os_source = Some(Ok(Some(ip("2001:db8:1::7e3a"))));
        let s = strategy(fake);
        assert_eq!(
            s.resolve(ip("2001:db8:9::1")).unwrap().source,
            ip("2001:db8:1::7e3a")
        );
    }

    #[test]
    fn the_tunnel_is_skipped_after_a_rename() {
        let mut tables = host();
        tables.interfaces[0].alias = "Ethernet 2".into();
        let s = strategy(FakeHost::new(tables));
        assert_eq!(s.resolve(ip("203.0.113.9")).unwrap().interface, Some(2));
    }

    #[test]
    fn streams_are_pinned_to_the_resolved_index_and_a_missing_index_fails_closed() {
        let s = strategy(FakeHost::new(host()));
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let path = s.resolve(ip("203.0.113.9")).unwrap();
        s.pin_stream(&socket, &path).unwrap();
        assert_eq!(*s.pin.pinned.lock().unwrap(), vec![(ip("192.0.2.10"), 2)]);
        let err = s
            .pin_stream(
                &socket,
                &Path {
                    source: ip("192.0.2.10"),
                    interface: None,
                },
            )
            .unwrap_err();
        assert_eq!(err.step(), "setsockopt(IP_UNICAST_IF)");
        let refusing = BestRouteOutsideTunnel::new(
            FakeHost::new(host()),
            RecordingPin {
                refuse: true,
                ..Default::default()
            },
            Tunnel::new(TUN),
        );
        let err = refusing.pin_stream(&socket, &path).unwrap_err();
        assert_eq!(err.step(), "setsockopt(IP_UNICAST_IF)");
    }

    #[test]
    fn an_explicit_source_is_stamped_with_the_index_of_its_own_interface() {
        let s = strategy(FakeHost::new(host()));
        // Ethernet's second address, although the route to the destination prefers .10.
        assert_eq!(s.interface_for_source(ip("192.0.2.11")).unwrap(), Some(2));
        assert_eq!(s.interface_for_source(ip("198.51.100.3")).unwrap(), Some(3));
        // Not an address of this host: nothing to stamp, Windows refuses the source itself.
        assert_eq!(s.interface_for_source(ip("203.0.113.50")).unwrap(), None);
        // The tunnel's own address: the datagram would enter the tunnel, so it is dropped.
        assert!(matches!(
            s.interface_for_source(ip("192.0.2.40")),
            Err(ResolveError::NoRoute)
        ));
    }

    #[test]
    fn unicast_if_takes_the_ipv4_index_in_network_order_and_the_ipv6_index_in_host_order() {
        let v4 = unicast_if_value(ip("192.0.2.1"), 7);
        assert_eq!(v4.to_ne_bytes(), [0, 0, 0, 7]);
        let v6 = unicast_if_value(ip("2001:db8::1"), 7);
        assert_eq!(v6, 7);
    }

    /// A host whose tables a test changes between resolutions.
    struct ChangingHost(Mutex<HostTables>);

    impl HostSnapshot for ChangingHost {
        fn snapshot(&self) -> io::Result<HostTables> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    impl ChangingHost {
        fn set(&self, tables: HostTables) {
            *self.0.lock().unwrap() = tables;
        }
    }

    const NEW_TUN: Luid = Luid(0x0035_0000_0000_0009);

    /// `host()` after the tunnel restarted: the old LUID is gone, and a new adapter with the
    /// same alias holds the lowest-metric default and the same address.
    fn restarted() -> HostTables {
        let mut tables = host();
        tables.interfaces[0] = interface(NEW_TUN, 41, "lg-tun", 5);
        for r in &mut tables.routes {
            if r.interface == TUN {
                r.interface = NEW_TUN;
            }
        }
        for a in tables.addresses.iter_mut().flatten() {
            if a.interface == TUN {
                a.interface = NEW_TUN;
            }
        }
        tables
    }

    /// `host()` with the tunnel deleted: no interface, route or address of it.
    fn deleted() -> HostTables {
        let mut tables = host();
        tables.interfaces.retain(|i| i.luid != TUN);
        tables.routes.retain(|r| r.interface != TUN);
        tables
            .addresses
            .iter_mut()
            .for_each(|a| a.retain(|a| a.interface != TUN));
        tables
    }

    #[test]
    fn a_tunnel_restarted_under_a_new_luid_fails_closed_when_given_by_luid() {
        // What the check prevents: to the selection the new adapter is an ordinary one, and
        // the lowest-metric default wins.
        let naive = route::path_for(&restarted(), &Tunnel::new(TUN), ip("203.0.113.9")).unwrap();
        assert_eq!(naive.interface, Some(41));

        let s = strategy(FakeHost::new(restarted()));
        for dst in ["203.0.113.9", "198.51.100.7"] {
            assert!(
                matches!(s.resolve(ip(dst)), Err(ResolveError::TunnelGone { ref tunnel }) if tunnel.contains("0x35000000000001")),
                "{dst}"
            );
        }
        assert!(matches!(
            s.interface_for_source(ip("192.0.2.10")),
            Err(ResolveError::TunnelGone { .. })
        ));
        assert!(s.explain(ip("203.0.113.9")).is_err());
        // Deleted, not restarted: refused the same way.
        let s = strategy(FakeHost::new(deleted()));
        assert!(matches!(
            s.resolve(ip("203.0.113.9")),
            Err(ResolveError::TunnelGone { .. })
        ));
    }

    #[test]
    fn a_tunnel_found_by_name_is_refused_while_gone_and_followed_when_it_returns() {
        let host = ChangingHost(Mutex::new(host()));
        let tunnel = Tunnel::find(&host.snapshot().unwrap(), "lg-tun").unwrap();
        assert_eq!(tunnel.name(), Some("lg-tun"));
        let s = BestRouteOutsideTunnel::new(host, RecordingPin::default(), tunnel);
        assert_eq!(s.resolve(ip("203.0.113.9")).unwrap().interface, Some(2));

        s.host().set(deleted());
        assert!(matches!(
            s.resolve(ip("203.0.113.9")),
            Err(ResolveError::TunnelGone { ref tunnel }) if tunnel == "`lg-tun`"
        ));

        s.host().set(restarted());
        let path = s.resolve(ip("203.0.113.9")).unwrap();
        assert_eq!(
            path.interface,
            Some(2),
            "the new tunnel (index 41) is avoided"
        );
        assert_eq!(s.tunnel().luids(), &[NEW_TUN]);
        // The tunnel's address now belongs to the new tunnel: an explicit source there is
        // refused as before.
        assert!(matches!(
            s.interface_for_source(ip("192.0.2.40")),
            Err(ResolveError::NoRoute)
        ));
    }

    #[test]
    fn following_by_name_can_be_turned_off() {
        let host = ChangingHost(Mutex::new(host()));
        let tunnel = Tunnel::find(&host.snapshot().unwrap(), "lg-tun").unwrap();
        let s = BestRouteOutsideTunnel::new(host, RecordingPin::default(), tunnel)
            .with_restart(TunnelRestart::FailClosed);
        s.host().set(restarted());
        assert!(matches!(
            s.resolve(ip("203.0.113.9")),
            Err(ResolveError::TunnelGone { .. })
        ));
        assert_eq!(s.tunnel().luids(), &[TUN]);
    }
}
