//! The text of `route print` (also `netstat -r`), in any language.
//!
//! The layout: an interface list (`index...MAC......description`), then an IPv4 and an IPv6
//! table, each with an "active" block and a "persistent" block, blocks separated by lines of
//! `=`. Rows are recognised by their shape, never by header words:
//!
//! - IPv4: `destination netmask gateway interface metric`, where the gateway is an address or
//!   a localized word for on-link ("On-link", "Auf Verbindung"), the interface column is the
//!   interface's own IPv4 address, and the metric is already route + interface metric;
//! - IPv6: `if metric destination [gateway]`, the gateway wrapping onto the next line when
//!   the destination is long, the metric again the sum.
//!
//! The first block holding rows of a family is its active table; later blocks of that family
//! (persistent routes) are configuration, not state, and are skipped.
//!
//! What the text lacks shapes the tables: the IPv4 table names interfaces by address, not
//! index, and nothing in the text ties an address to an index, so each IPv4 interface address
//! becomes a pseudo-interface (LUID `0x1_0000_0000 + address`, index 0, see
//! [`ipv4_pseudo_address`]) holding that address; every entry of the interface list becomes an
//! interface with its index and description (so a tunnel without routes is still found), the
//! IPv6 table's interfaces among them, their addresses taken from the on-link `/128` host
//! routes. Interface metrics are 0 and route metrics the printed sums, so
//! effective metrics stay exactly what Windows printed. The tunnel is named by its IPv4
//! address (IPv4 table) and by its index (IPv6 table).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::{looks_like_data, TextDump, Unread};
use crate::route::{
    AddressState, HostTables, Interface, Luid, OperStatus, PrefixOrigin, Route, SuffixOrigin,
    UnicastAddress,
};

/// The LUID standing in for the IPv4 pseudo-interface of `address`.
pub fn ipv4_pseudo_luid(address: Ipv4Addr) -> Luid {
    Luid((1 << 32) + u64::from(u32::from(address)))
}

/// The IPv4 address behind a pseudo-interface LUID made by [`ipv4_pseudo_luid`]; `None` for
/// any other LUID. Real LUIDs carry the interface type in bits 48..64 and are never in this
/// range.
pub fn ipv4_pseudo_address(luid: Luid) -> Option<Ipv4Addr> {
    let offset = luid.0.checked_sub(1 << 32)?;
    u32::try_from(offset).ok().map(Ipv4Addr::from)
}

/// One line of the text, by shape.
enum Shape {
    Blank,
    Separator,
    InterfaceEntry {
        index: u32,
        description: String,
    },
    V4Active {
        destination: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        interface: Ipv4Addr,
        metric: u32,
    },
    V4Persistent,
    V6 {
        index: u32,
        metric: u32,
        destination: IpNet,
        gateway: Option<String>,
    },
    Other,
}

fn shape(line: &str) -> Shape {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Shape::Blank;
    }
    if trimmed.len() >= 10 && trimmed.chars().all(|c| c == '=') {
        return Shape::Separator;
    }
    if let Some(entry) = interface_entry(trimmed) {
        return entry;
    }
    let t: Vec<&str> = trimmed.split_whitespace().collect();
    let v4 = |s: &str| s.parse::<Ipv4Addr>().ok();
    if t.len() >= 5 {
        if let (Some(dst), Some(mask), Some(interface), Ok(metric)) = (
            v4(t[0]),
            v4(t[1]),
            v4(t[t.len() - 2]),
            t[t.len() - 1].parse::<u32>(),
        ) {
            let gateway = if t.len() == 5 { v4(t[2]) } else { None };
            return match ipnet::ipv4_mask_to_prefix(mask)
                .ok()
                .and_then(|len| Ipv4Net::new(dst, len).ok())
            {
                Some(destination) => Shape::V4Active {
                    destination,
                    gateway,
                    interface,
                    metric,
                },
                None => Shape::Other,
            };
        }
    }
    if t.len() >= 4 && t[..3].iter().all(|s| v4(s).is_some()) {
        return Shape::V4Persistent;
    }
    if t.len() >= 3 {
        if let (Ok(index), Ok(metric), Ok(destination @ IpNet::V6(_))) = (
            t[0].parse::<u32>(),
            t[1].parse::<u32>(),
            t[2].parse::<IpNet>(),
        ) {
            let gateway = (t.len() > 3).then(|| t[3..].join(" "));
            return Shape::V6 {
                index,
                metric,
                destination,
                gateway,
            };
        }
    }
    Shape::Other
}

/// `12...00 15 5d 01 02 03 ......Intel(R) Ethernet` or `1...........Software Loopback`.
fn interface_entry(trimmed: &str) -> Option<Shape> {
    let digits = trimmed.find(|c: char| !c.is_ascii_digit())?;
    let index: u32 = trimmed[..digits].parse().ok()?;
    let rest = trimmed[digits..].trim_start();
    if !rest.starts_with("...") {
        return None;
    }
    let mut rest = rest.trim_start_matches('.').trim_start();
    // Skip the MAC bytes ("00 15 5d ..."), then the dots before the description.
    loop {
        let token_end = rest.find(' ').unwrap_or(rest.len());
        let token = &rest[..token_end];
        if token.len() == 2 && token.chars().all(|c| c.is_ascii_hexdigit()) {
            rest = rest[token_end..].trim_start();
        } else {
            break;
        }
    }
    let description = rest.trim_start_matches('.').trim().to_owned();
    Some(Shape::InterfaceEntry { index, description })
}

/// Reads `route print` text. It never fails as a whole: lines it cannot read come back in
/// [`TextDump::unread`].
pub fn parse(text: &str) -> TextDump {
    let mut block = 0usize;
    let mut v4_block = None;
    let mut v6_block = None;
    let mut descriptions: Vec<(u32, String)> = Vec::new();
    let mut v4_rows: Vec<(Ipv4Net, Option<Ipv4Addr>, Ipv4Addr, u32)> = Vec::new();
    let mut v6_rows: Vec<(u32, u32, IpNet, Option<String>)> = Vec::new();
    // A v6 row whose gateway wrapped onto the next line.
    let mut pending_gateway: Option<usize> = None;
    let mut unread = Unread::default();

    for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let s = shape(line);
        if let Some(row) = pending_gateway.take() {
            if let Shape::Other = s {
                v6_rows[row].3 = Some(line.trim().to_owned());
                continue;
            }
        }
        match s {
            Shape::Blank => {}
            Shape::Separator => block += 1,
            Shape::InterfaceEntry { index, description } => descriptions.push((index, description)),
            Shape::V4Active {
                destination,
                gateway,
                interface,
                metric,
            } => {
                if *v4_block.get_or_insert(block) == block {
                    v4_rows.push((destination, gateway, interface, metric));
                }
            }
            Shape::V4Persistent => {}
            Shape::V6 {
                index,
                metric,
                destination,
                gateway,
            } => {
                if *v6_block.get_or_insert(block) == block {
                    if gateway.is_none() {
                        pending_gateway = Some(v6_rows.len());
                    }
                    v6_rows.push((index, metric, destination, gateway));
                }
            }
            Shape::Other => {
                if line.split_whitespace().any(looks_like_data) {
                    unread.push(n + 1, line);
                }
            }
        }
    }
    let (unread, unread_total) = unread.finish();
    TextDump {
        tables: tables(&descriptions, &v4_rows, &v6_rows),
        unread,
        unread_total,
    }
}

fn tables(
    descriptions: &[(u32, String)],
    v4_rows: &[(Ipv4Net, Option<Ipv4Addr>, Ipv4Addr, u32)],
    v6_rows: &[(u32, u32, IpNet, Option<String>)],
) -> HostTables {
    let mut host = HostTables::default();
    let mut addresses = Vec::new();
    // LUID -> position in `host.interfaces`, and the (address, LUID) pairs already held, so a
    // big dump stays linear.
    let mut positions: HashMap<Luid, usize> = HashMap::new();
    let mut held: HashSet<(IpAddr, Luid)> = HashSet::new();
    let address = |address: IpAddr, prefix_length: u8, interface: Luid| UnicastAddress {
        address,
        prefix_length,
        interface,
        state: AddressState::Preferred,
        skip_as_source: false,
        prefix_origin: PrefixOrigin::Other,
        suffix_origin: SuffixOrigin::Other,
    };
    // Builds the interface only when it is new: a big dump repeats the same few interfaces
    // on every row.
    let mut add_interface =
        |host: &mut HostTables, luid: Luid, interface: &dyn Fn() -> Interface| -> usize {
            *positions.entry(luid).or_insert_with(|| {
                host.interfaces.push(interface());
                host.interfaces.len() - 1
            })
        };
    for (index, description) in descriptions {
        add_interface(&mut host, Luid(u64::from(*index)), &|| Interface {
            luid: Luid(u64::from(*index)),
            index: *index,
            alias: description.clone(),
            status: OperStatus::Up,
            ipv4_metric: None,
            ipv6_metric: None,
        });
    }
    for &(destination, gateway, interface, metric) in v4_rows {
        let luid = ipv4_pseudo_luid(interface);
        let known = host.interfaces.len();
        let fresh = || Interface {
            luid,
            index: 0,
            alias: format!("IPv4 {interface}"),
            status: OperStatus::Up,
            ipv4_metric: Some(0),
            ipv6_metric: None,
        };
        if add_interface(&mut host, luid, &fresh) == known {
            addresses.push(address(IpAddr::V4(interface), 32, luid));
        }
        host.routes.push(Route {
            destination: IpNet::V4(destination),
            next_hop: gateway.filter(|g| !g.is_unspecified()).map(IpAddr::V4),
            interface: luid,
            metric,
        });
    }
    for (index, metric, destination, gateway) in v6_rows {
        let luid = Luid(u64::from(*index));
        let fresh = || Interface {
            luid,
            index: *index,
            alias: format!("interface {index}"),
            status: OperStatus::Up,
            ipv4_metric: None,
            ipv6_metric: None,
        };
        let at = add_interface(&mut host, luid, &fresh);
        host.interfaces[at].ipv6_metric = Some(0);
        // A localized "On-link" is any gateway text that is not an address.
        let next_hop = gateway
            .as_deref()
            .and_then(|g| g.parse::<IpAddr>().ok())
            .filter(|g| !g.is_unspecified());
        let host_route = destination.prefix_len() == 128 && next_hop.is_none();
        let own = destination.addr();
        if host_route && !own.is_multicast() && held.insert((own, luid)) {
            addresses.push(address(own, 128, luid));
        }
        host.routes.push(Route {
            destination: *destination,
            next_hop,
            interface: luid,
            metric: *metric,
        });
    }
    host.addresses = Some(addresses);
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_list_entries_with_and_without_mac() {
        let Some(Shape::InterfaceEntry { index, description }) =
            interface_entry("12...00 15 5d 01 02 03 ......Intel(R) Ethernet Connection I219-V")
        else {
            panic!("not an entry")
        };
        assert_eq!(
            (index, description.as_str()),
            (12, "Intel(R) Ethernet Connection I219-V")
        );
        let Some(Shape::InterfaceEntry { index, description }) =
            interface_entry("1...........................Software Loopback Interface 1")
        else {
            panic!("not an entry")
        };
        assert_eq!(
            (index, description.as_str()),
            (1, "Software Loopback Interface 1")
        );
        assert!(interface_entry("12 281 fe80::/64").is_none());
    }

    #[test]
    fn pseudo_luids_round_trip_and_real_ones_are_not_addresses() {
        let a: Ipv4Addr = "203.0.113.2".parse().unwrap();
        assert_eq!(ipv4_pseudo_address(ipv4_pseudo_luid(a)), Some(a));
        assert_eq!(ipv4_pseudo_address(Luid(24)), None);
        assert_eq!(ipv4_pseudo_address(Luid(0x0006_0000_0100_0000)), None);
    }

    #[test]
    fn interface_list_entries_without_routes_are_interfaces() {
        let text = "\
===========================================================================
Interface List
 27...00 ff 12 34 56 78 ......TAP-Windows Adapter V9
 12...f6 d1 22 33 44 55 ......Intel(R) Ethernet
===========================================================================
IPv4 Route Table
===========================================================================
Active Routes:
          0.0.0.0          0.0.0.0        192.0.2.1       192.0.2.10     25
===========================================================================
";
        let dump = parse(text);
        let tap = dump.tables.interface(Luid(27)).expect("listed interface");
        assert_eq!(tap.alias, "TAP-Windows Adapter V9");
        assert_eq!((tap.ipv4_metric, tap.ipv6_metric), (None, None));
        assert_eq!(dump.tables.routes.len(), 1);
    }

    #[test]
    fn only_the_first_unread_lines_are_kept_but_all_are_counted() {
        let text = "1.2.3.4 junk\n".repeat(super::super::KEPT_UNREAD + 5);
        let dump = parse(&text);
        assert_eq!(dump.unread.len(), super::super::KEPT_UNREAD);
        assert_eq!(dump.unread_total, super::super::KEPT_UNREAD + 5);
    }

    #[test]
    fn wrapped_gateway_and_localized_on_link() {
        let text = "\
IPv6-Routentabelle
===========================================================================
Aktive Routen:
 If Metrik Netzwerkziel             Gateway
 14    281 ::/0                     fe80::1
 14    281 2001:db8:10:20:30:40:50:60/128
                                    Auf Verbindung
 14    281 fe80::/64                Auf Verbindung
===========================================================================
Ständige Routen:
 14    1 ::/0                     2001:db8::99
";
        let dump = parse(text);
        assert!(dump.unread.is_empty(), "{:?}", dump.unread);
        let routes = &dump.tables.routes;
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].next_hop, Some("fe80::1".parse().unwrap()));
        assert_eq!(routes[1].next_hop, None);
        assert_eq!(routes[2].next_hop, None);
        let addresses = dump.tables.addresses.unwrap();
        assert_eq!(addresses.len(), 1);
        assert_eq!(
            addresses[0].address,
            "2001:db8:10:20:30:40:50:60".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn bad_mask_and_truncated_rows_are_reported() {
        let text = "\
===========================================================================
Active Routes:
          0.0.0.0          0.0.0.0      192.0.2.1     192.0.2.10     25
     198.51.100.0    255.0.255.0         On-link     192.0.2.10    281
     203.0.113.0
";
        let dump = parse(text);
        assert_eq!(dump.tables.routes.len(), 1);
        let lines: Vec<usize> = dump.unread.iter().map(|u| u.line).collect();
        assert_eq!(lines, [4, 5]);
    }
}
