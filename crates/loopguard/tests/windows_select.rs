//! The Windows route selection rules on synthetic tables (pure code: runs on every OS), one
//! test per rule of issue 3's "Done when", and a property test against a brute-force model.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use loopguard::route::{
    path_for, select, AddressState, HostTables, Interface, LossReason, Luid, OperStatus,
    PrefixOrigin, Route, SuffixOrigin, Tunnel, UnicastAddress, Verdict,
};
use loopguard::{Path, ResolveError};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn interface(index: u32, alias: &str, v4: Option<u32>, v6: Option<u32>) -> Interface {
    Interface {
        luid: Luid(0x0006_0000_0100_0000 + u64::from(index)),
        index,
        alias: alias.into(),
        status: OperStatus::Up,
        ipv4_metric: v4,
        ipv6_metric: v6,
    }
}

fn route(prefix: &str, next_hop: Option<&str>, via: &Interface, metric: u32) -> Route {
    Route {
        destination: prefix.parse().unwrap(),
        next_hop: next_hop.map(ip),
        interface: via.luid,
        metric,
    }
}

fn address(text: &str, on: &Interface) -> UnicastAddress {
    UnicastAddress {
        address: ip(text),
        prefix_length: if text.contains(':') { 64 } else { 24 },
        interface: on.luid,
        state: AddressState::Preferred,
        skip_as_source: false,
        prefix_origin: PrefixOrigin::Dhcp,
        suffix_origin: SuffixOrigin::Dhcp,
    }
}

/// Ethernet (index 4), Wi-Fi (index 9) and the tunnel (index 21) with a default route each.
fn laptop() -> (HostTables, Interface, Interface, Interface) {
    let eth = interface(4, "Ethernet", Some(25), Some(25));
    let wifi = interface(9, "Wi-Fi", Some(35), Some(35));
    let tun = interface(21, "loopguard", Some(5), Some(5));
    let host = HostTables {
        routes: vec![
            route("0.0.0.0/0", Some("192.0.2.1"), &eth, 0),
            route("192.0.2.0/24", None, &eth, 256),
            route("0.0.0.0/0", Some("198.51.100.1"), &wifi, 0),
            route("198.51.100.0/24", None, &wifi, 256),
            route("0.0.0.0/0", None, &tun, 0),
            route("203.0.113.0/24", None, &tun, 0),
        ],
        addresses: Some(vec![
            address("192.0.2.10", &eth),
            address("198.51.100.20", &wifi),
            address("203.0.113.2", &tun),
        ]),
        interfaces: vec![eth.clone(), wifi.clone(), tun.clone()],
    };
    (host, eth, wifi, tun)
}

fn reason_for(decision_candidates: &[loopguard::route::Candidate], luid: Luid) -> Verdict {
    decision_candidates
        .iter()
        .find(|c| c.route.interface == luid)
        .map(|c| c.verdict.clone())
        .expect("no candidate on that interface")
}

#[test]
fn a_longer_prefix_beats_a_lower_metric() {
    let (mut host, eth, wifi, tun) = laptop();
    // A /16 on Wi-Fi with a huge metric still beats Ethernet's cheap default route.
    host.routes
        .push(route("203.0.0.0/16", Some("198.51.100.1"), &wifi, 9000));
    let d = select(&host, &Tunnel::new(tun.luid), ip("203.0.7.7")).unwrap();
    assert_eq!(d.interface, wifi.luid);
    assert_eq!(d.interface_index, 9);
    assert_eq!(d.effective_metric, 9035);
    assert_eq!(d.source, Some(ip("198.51.100.20")));
    assert_eq!(
        reason_for(&d.candidates, eth.luid),
        Verdict::Lost(LossReason::ShorterPrefix {
            prefix_len: 0,
            longest: 16
        })
    );
}

#[test]
fn equal_prefixes_go_by_route_plus_interface_metric() {
    let (mut host, eth, wifi, tun) = laptop();
    // By route metric alone Wi-Fi (10) would beat Ethernet (20); with the interface metrics
    // Ethernet is 20 + 5 = 25 against Wi-Fi's 10 + 50 = 60.
    host.routes = vec![
        route("0.0.0.0/0", Some("192.0.2.1"), &eth, 20),
        route("0.0.0.0/0", Some("198.51.100.1"), &wifi, 10),
    ];
    host.interfaces[0].ipv4_metric = Some(5); // Ethernet: 20 + 5 = 25
    host.interfaces[1].ipv4_metric = Some(50); // Wi-Fi: 10 + 50 = 60
    let d = select(&host, &Tunnel::new(tun.luid), ip("192.0.2.200")).unwrap();
    assert_eq!(d.interface, eth.luid);
    assert_eq!(d.effective_metric, 25);
    assert_eq!(
        reason_for(&d.candidates, wifi.luid),
        Verdict::Lost(LossReason::HigherMetric {
            effective: 60,
            best: 25
        })
    );
}

#[test]
fn a_down_adapter_is_skipped() {
    let (mut host, eth, wifi, tun) = laptop();
    host.interfaces[0].status = OperStatus::LowerLayerDown; // Ethernet unplugged after a roam
    let d = select(&host, &Tunnel::new(tun.luid), ip("192.0.2.77")).unwrap();
    assert_eq!(d.interface, wifi.luid);
    assert_eq!(
        reason_for(&d.candidates, eth.luid),
        Verdict::Lost(LossReason::InterfaceDown(OperStatus::LowerLayerDown))
    );
}

#[test]
fn the_tunnel_is_skipped_even_after_a_rename() {
    let (mut host, eth, wifi, tun) = laptop();
    let tunnel = Tunnel::find(&host, "loopguard").unwrap();
    assert_eq!(tunnel.luids(), [tun.luid]);
    // The tunnel's cheapest, longest route would win if it counted.
    host.routes.push(route("0.0.0.0/1", None, &tun, 0));
    // The user renames the tunnel, and another adapter takes its old name.
    host.interfaces[2].alias = "Local Area Connection 3".into();
    host.interfaces[1].alias = "loopguard".into();
    let d = select(&host, &tunnel, ip("1.2.3.4")).unwrap();
    assert_eq!(d.interface, eth.luid);
    let tunnel_verdicts: Vec<_> = d
        .candidates
        .iter()
        .filter(|c| c.route.interface == tun.luid)
        .map(|c| c.verdict.clone())
        .collect();
    assert_eq!(tunnel_verdicts.len(), 2);
    assert!(tunnel_verdicts
        .iter()
        .all(|v| *v == Verdict::Lost(LossReason::Tunnel)));
    // The renamed Wi-Fi is not mistaken for the tunnel.
    assert_eq!(
        reason_for(&d.candidates, wifi.luid),
        Verdict::Lost(LossReason::HigherMetric {
            effective: 35,
            best: 25
        })
    );
}

#[test]
fn a_tunnel_holding_the_only_default_route_gives_host_unreachable() {
    let (mut host, _, _, tun) = laptop();
    host.routes
        .retain(|r| r.interface == tun.luid || r.destination.prefix_len() > 0);
    let tunnel = Tunnel::new(tun.luid);
    let e = select(&host, &tunnel, ip("100.64.0.1")).unwrap_err();
    assert_eq!(e.destination, ip("100.64.0.1"));
    assert!(e.to_string().contains("100.64.0.1"), "{e}");
    assert_eq!(e.candidates.len(), 1);
    assert_eq!(e.candidates[0].verdict, Verdict::Lost(LossReason::Tunnel));
    assert!(matches!(
        path_for(&host, &tunnel, ip("100.64.0.1")),
        Err(ResolveError::NoRoute)
    ));
    // The LAN next to it is still reachable.
    assert!(select(&host, &tunnel, ip("192.0.2.50")).is_ok());
}

/// Counts tracing events at WARN or above, to prove a normal state logs nothing.
struct WarnCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn an_ipv4_only_host_asked_for_ipv6_is_unreachable_without_a_warning() {
    let (mut host, _, _, tun) = laptop();
    for i in &mut host.interfaces {
        i.ipv6_metric = None;
    }
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = WarnCounter(warnings.clone());
    tracing::subscriber::with_default(subscriber, || {
        // The counter works: a warning here would be seen.
        tracing::warn!("calibration");
        let tunnel = Tunnel::new(tun.luid);
        let e = select(&host, &tunnel, ip("2001:db8::1")).unwrap_err();
        assert!(e.candidates.is_empty());
        assert!(e.to_string().contains("2001:db8::1"));
        assert!(matches!(
            path_for(&host, &tunnel, ip("2001:db8::1")),
            Err(ResolveError::NoRoute)
        ));
    });
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        1,
        "only the calibration warning"
    );
}

#[test]
fn a_temporary_and_a_stable_ipv6_address_on_the_same_interface() {
    let (mut host, eth, _, tun) = laptop();
    host.routes.push(route("::/0", Some("fe80::1"), &eth, 256));
    host.routes.push(route("2001:db8:4::/64", None, &eth, 256));
    let mut temporary = address("2001:db8:4::7c2e:91ff:a1b3:4d5e", &eth);
    temporary.suffix_origin = SuffixOrigin::Random;
    temporary.prefix_origin = PrefixOrigin::RouterAdvertisement;
    let mut stable = address("2001:db8:4::f4d1:22ff:fe33:4455", &eth);
    stable.suffix_origin = SuffixOrigin::LinkLayerAddress;
    stable.prefix_origin = PrefixOrigin::RouterAdvertisement;
    let link_local = address("fe80::f4d1:22ff:fe33:4455", &eth);
    let addresses = host.addresses.as_mut().unwrap();
    addresses.extend([temporary.clone(), link_local.clone(), stable.clone()]);
    let tunnel = Tunnel::new(tun.luid);
    let d = select(&host, &tunnel, ip("2001:db8:99::1")).unwrap();
    assert_eq!(d.source, Some(stable.address));
    assert_eq!(d.interface_alias, "Ethernet");
    // The stable one deprecated: the temporary one is all that is left.
    host.addresses.as_mut().unwrap().iter_mut().for_each(|a| {
        if a.address == stable.address {
            a.state = AddressState::Deprecated;
        }
    });
    let d = select(&host, &tunnel, ip("2001:db8:99::1")).unwrap();
    assert_eq!(d.source, Some(temporary.address));
    // Link-local destinations get the link-local source.
    host.routes.push(route("fe80::/64", None, &eth, 256));
    let d = select(&host, &tunnel, ip("fe80::99")).unwrap();
    assert_eq!(d.source, Some(link_local.address));
}

#[test]
fn an_interface_without_a_usable_source_loses_to_one_with() {
    let (mut host, eth, wifi, tun) = laptop();
    host.addresses
        .as_mut()
        .unwrap()
        .retain(|a| a.interface != eth.luid);
    let d = select(&host, &Tunnel::new(tun.luid), ip("1.2.3.4")).unwrap();
    assert_eq!(d.interface, wifi.luid);
    assert_eq!(
        reason_for(&d.candidates, eth.luid),
        Verdict::Lost(LossReason::NoUsableSource)
    );
}

#[test]
fn ties_go_to_the_lower_index_then_on_link_then_lower_next_hop() {
    let (mut host, eth, wifi, tun) = laptop();
    host.interfaces[1].ipv4_metric = Some(25); // Wi-Fi now ties with Ethernet
    let tunnel = Tunnel::new(tun.luid);
    let d = select(&host, &tunnel, ip("1.2.3.4")).unwrap();
    assert_eq!(d.interface, eth.luid);
    assert_eq!(
        reason_for(&d.candidates, wifi.luid),
        Verdict::Lost(LossReason::TieBreak { winner_index: 4 })
    );
    // Reversing the table changes nothing.
    host.routes.reverse();
    assert_eq!(
        select(&host, &tunnel, ip("1.2.3.4")).unwrap().interface,
        eth.luid
    );
    // Two gateways on one interface: the lower next hop.
    host.routes
        .push(route("0.0.0.0/0", Some("192.0.2.0"), &eth, 0));
    let d = select(&host, &tunnel, ip("1.2.3.4")).unwrap();
    assert_eq!(d.route.next_hop, Some(ip("192.0.2.0")));
}

#[test]
fn the_strategy_adapter_gives_source_and_index() {
    let (host, _, _, tun) = laptop();
    let path = path_for(&host, &Tunnel::new(tun.luid), ip("1.2.3.4")).unwrap();
    assert_eq!(
        path,
        Path {
            source: ip("192.0.2.10"),
            interface: Some(4)
        }
    );
    // Tables without addresses cannot give a source: fail closed.
    let mut no_addresses = host.clone();
    no_addresses.addresses = None;
    let d = select(&no_addresses, &Tunnel::new(tun.luid), ip("1.2.3.4")).unwrap();
    assert_eq!((d.interface_index, d.source), (4, None));
    assert!(path_for(&no_addresses, &Tunnel::new(tun.luid), ip("1.2.3.4")).is_err());
}

#[test]
fn the_tunnel_is_found_by_alias_index_or_address() {
    let (host, _, _, tun) = laptop();
    for name in ["loopguard", "LOOPGUARD", "21", "203.0.113.2"] {
        assert_eq!(
            Tunnel::find(&host, name).unwrap().luids(),
            [tun.luid],
            "{name}"
        );
    }
    let e = Tunnel::find(&host, "wg0").unwrap_err();
    assert!(e.to_string().contains("wg0"));
    assert!(Tunnel::find(&host, "0").is_err());
}

mod reference {
    //! A brute-force model of the rules, written as differently as possible: score every
    //! usable route with one tuple and take the minimum.
    use super::*;
    use proptest::prelude::*;

    fn model(host: &HostTables, tunnel: &Tunnel, dst: IpAddr) -> Option<(usize, Option<IpAddr>)> {
        /// Lower is better: longest prefix, effective metric, then the documented tie-break.
        type Score = (i64, u64, u32, Option<IpAddr>, Luid, usize);
        let mut best: Option<(Score, Option<IpAddr>)> = None;
        for (row, r) in host.routes.iter().enumerate() {
            if !r.destination.contains(&dst) || tunnel.contains(r.interface) {
                continue;
            }
            let Some(i) = host.interfaces.iter().find(|i| i.luid == r.interface) else {
                continue;
            };
            let Some(m) = i.metric(r.family()) else {
                continue;
            };
            if i.status != OperStatus::Up {
                continue;
            }
            let source = loopguard::route::choose_source(
                host.addresses.as_deref().unwrap_or(&[]),
                r.interface,
                dst,
            );
            if host.addresses.is_some() && source.is_none() {
                continue;
            }
            let key = (
                -i64::from(r.destination.prefix_len()),
                u64::from(r.metric) + u64::from(m),
                i.index,
                r.next_hop,
                r.interface,
                row,
            );
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, source));
            }
        }
        best.map(|(k, s)| (k.5, s))
    }

    fn tables() -> impl Strategy<Value = (HostTables, Tunnel, IpAddr)> {
        let iface = (1u32..5, prop::option::of(0u32..4), any::<bool>());
        let route = (
            0usize..4,
            0u8..4,
            0u8..=3,
            0u32..4,
            prop::option::of(1u8..3),
        );
        let addr = (0usize..4, 0u8..4, any::<bool>(), any::<bool>());
        (
            prop::collection::vec(iface, 1..4),
            prop::collection::vec(route, 0..10),
            prop::collection::vec(addr, 0..6),
            0usize..4,
            0u8..4,
        )
            .prop_map(|(ifaces, routes, addrs, tunnel_at, dst)| {
                let interfaces: Vec<Interface> = ifaces
                    .iter()
                    .enumerate()
                    .map(|(n, &(index, metric, up))| Interface {
                        luid: Luid(100 + n as u64),
                        index,
                        alias: format!("if{n}"),
                        status: if up { OperStatus::Up } else { OperStatus::Down },
                        ipv4_metric: metric,
                        ipv6_metric: None,
                    })
                    .collect();
                let pick = |k: usize| interfaces[k % interfaces.len()].luid;
                // Prefixes nested inside 198.51.100.0/24 so lengths really compete.
                let routes = routes
                    .iter()
                    .map(|&(k, len, _, metric, hop)| Route {
                        destination: format!("198.51.100.0/{}", [0, 8, 24, 25][len as usize])
                            .parse::<ipnet::IpNet>()
                            .unwrap()
                            .trunc(),
                        next_hop: hop.map(|h| IpAddr::from([198, 51, 100, h])),
                        interface: pick(k),
                        metric,
                    })
                    .collect();
                let addresses = addrs
                    .iter()
                    .map(|&(k, host_part, preferred, temporary)| UnicastAddress {
                        address: IpAddr::from([198, 51, 100, 10 + host_part]),
                        prefix_length: 24,
                        interface: pick(k),
                        state: if preferred {
                            AddressState::Preferred
                        } else {
                            AddressState::Deprecated
                        },
                        skip_as_source: false,
                        prefix_origin: PrefixOrigin::Manual,
                        suffix_origin: if temporary {
                            SuffixOrigin::Random
                        } else {
                            SuffixOrigin::Manual
                        },
                    })
                    .collect();
                let tunnel = Tunnel::new(pick(tunnel_at));
                let host = HostTables {
                    interfaces,
                    routes,
                    addresses: Some(addresses),
                };
                (
                    host,
                    tunnel,
                    IpAddr::from([198, 51, 100, [1, 100, 200, 255][dst as usize]]),
                )
            })
    }

    proptest! {
        #[test]
        fn selection_matches_the_brute_force_model((host, tunnel, dst) in tables()) {
            let expected = model(&host, &tunnel, dst);
            match select(&host, &tunnel, dst) {
                Ok(d) => {
                    let (row, source) = expected.expect("select chose, the model found nothing");
                    prop_assert_eq!(&d.route, &host.routes[row]);
                    prop_assert_eq!(d.source, source);
                    prop_assert!(!tunnel.contains(d.interface));
                    // Every candidate is accounted for, exactly one chosen.
                    let chosen = d.candidates.iter().filter(|c| c.verdict == Verdict::Chosen).count();
                    prop_assert_eq!(chosen, 1);
                    let matching = host.routes.iter().filter(|r| r.destination.contains(&dst)).count();
                    prop_assert_eq!(d.candidates.len(), matching);
                }
                Err(e) => {
                    prop_assert_eq!(expected, None);
                    prop_assert_eq!(e.destination, dst);
                }
            }
        }
    }
}
