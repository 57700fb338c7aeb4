//! `netsh interface ipv4 show route` and `netsh interface ipv6 show route` with
//! `netsh interface ipv4 show interfaces` / `ipv6 show interfaces`, and optionally
//! `netsh interface ipv4 show addresses` / `ipv6 show addresses`, concatenated in one file, in
//! any display language.
//!
//! Route rows are `Publish Type Met Prefix Idx Gateway/InterfaceName` (`No Manual 0
//! 0.0.0.0/0 12 192.0.2.1`; the first two columns are localized words: `Nein Manuell`), the
//! last column an address for a route through a gateway or the interface's name for an
//! on-link one. Interface rows are `Idx Met MTU State Name` (`12 25 1500 connected
//! Ethernet`). Rows are recognised by shape, never by header words.
//!
//! `show route` gives route metrics only; the interface metric (and whether the interface is
//! up) comes from the interfaces table, which names no family: a table belongs to the family
//! of the route table before it (the one after it when it comes first), so collect them in
//! the order the README gives. The state word is localized: `connected` and its translations
//! we know count as up, and so does whatever word the loopback pseudo-interface (always
//! connected) shows, which covers any other language. Interfaces without a row are taken as
//! up with metric 0.
//!
//! Sources come from the `show addresses` parts; without them they stay unknown
//! ([`HostTables::addresses`](crate::route::HostTables) is `None`). The IPv4 part is a block
//! per interface: a header naming it in quotes (`Configuration for interface "Ethernet"`,
//! `Konfiguration für Schnittstelle "Ethernet"`), then `key: value` lines. An address is a
//! value that is an IPv4 address followed at once by a value that is a prefix holding it
//! (`IP Address: 192.0.2.10` then `Subnet Prefix: 192.0.2.0/24 (mask 255.255.255.0)`); the
//! default gateway is followed by its metric instead, so it never counts. The block names its
//! interface only by name, matched to the interface tables' names. The IPv6 part is a table
//! per interface under `Interface 12: Ethernet` (`Schnittstelle 12: Ethernet`): rows of
//! address type, DAD state, two lifetimes and the address. The type `Temporary` marks a
//! temporary address and the DAD state words are read in English; other words count as a
//! preferred address of no particular origin. The IPv6 prefix length is not shown: 64 is
//! assumed (source selection does not use it).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::{looks_like_data, TextDump, Unread};
use crate::route::{
    AddressState, Family, HostTables, Interface, Luid, OperStatus, PrefixOrigin, Route,
    SuffixOrigin, UnicastAddress,
};

/// Words Windows prints for a connected interface, in the languages we have seen.
const CONNECTED: &[&str] = &[
    "connected",
    "verbunden",
    "connecté",
    "connecte",
    "conectado",
    "connesso",
    "verbonden",
    "połączono",
    "подключено",
];

/// One interface row.
struct InterfaceRow {
    index: u32,
    metric: u32,
    state: String,
    name: String,
    family: Option<Family>,
}

/// One route row.
struct RouteRow {
    destination: IpNet,
    metric: u32,
    index: u32,
    gateway: Option<IpAddr>,
    name: Option<String>,
}

fn route_row(t: &[&str]) -> Option<RouteRow> {
    // Publish, Type, Met, Prefix, Idx, then the gateway or a name of any length.
    let at = t
        .iter()
        .position(|s| s.contains('/') && s.parse::<IpNet>().is_ok())?;
    if at < 1 || t.len() < at + 3 {
        return None;
    }
    let destination: IpNet = t[at].parse().ok()?;
    let metric = t[at - 1].parse().ok()?;
    let index = t[at + 1].parse().ok()?;
    let rest = t[at + 2..].join(" ");
    let (gateway, name) = match rest.parse::<IpAddr>() {
        Ok(g) if g.is_unspecified() => (None, None),
        Ok(g) => (Some(g), None),
        Err(_) => (None, Some(rest)),
    };
    if gateway.is_some_and(|g| g.is_ipv4() != destination.addr().is_ipv4()) {
        return None;
    }
    Some(RouteRow {
        destination,
        metric,
        index,
        gateway,
        name,
    })
}

fn interface_row(t: &[&str]) -> Option<InterfaceRow> {
    if t.len() < 5 {
        return None;
    }
    Some(InterfaceRow {
        index: t[0].parse().ok()?,
        metric: t[1].parse().ok()?,
        state: {
            // The MTU column must be a number too.
            t[2].parse::<u64>().ok()?;
            t[3].to_lowercase()
        },
        name: t[4..].join(" "),
        family: None,
    })
}

/// One address of a `show addresses` part, and the interface it is on: by name (IPv4) or by
/// index (IPv6).
struct AddressRow {
    on: Owner,
    address: UnicastAddress,
    /// Where it was read, to report it when no interface has its name.
    line: (usize, String),
}

enum Owner {
    Name(String),
    Index(u32),
}

/// What the `show addresses` block being read belongs to.
enum Block {
    None,
    /// An IPv4 block of this interface, and an address waiting for its prefix line.
    V4 {
        name: String,
        pending: Option<Ipv4Addr>,
    },
    /// An IPv6 table of the interface with this index.
    V6(u32),
}

/// The interface a `show addresses` IPv4 block is about: the quoted name of its header line.
fn v4_block_header(line: &str) -> Option<String> {
    let (before, rest) = line.split_once('"')?;
    let (name, after) = rest.rsplit_once('"')?;
    (!before.contains(':') && after.trim().is_empty() && !name.is_empty()).then(|| name.into())
}

/// The interface a `show addresses` IPv6 table is about: `<word> <index>: <name>`.
fn v6_block_header(t: &[&str]) -> Option<u32> {
    if t.len() < 3 {
        return None;
    }
    t[1].strip_suffix(':')?.parse().ok()
}

/// The value of a `key: value` line of an IPv4 block (the key may hold spaces, but no data:
/// `No Manual 256 ::/0 12 fe80::1`, a route row, is not one).
fn key_value(line: &str) -> Option<&str> {
    let (key, value) = line.split_once(':')?;
    let words: Vec<&str> = key.split_whitespace().collect();
    (!words.is_empty() && !words.iter().any(|w| looks_like_data(w))).then(|| value.trim())
}

/// An IPv6 address row: type, DAD state, valid and preferred lifetimes, address (with an
/// optional `%zone`).
fn v6_address_row(t: &[&str], index: u32) -> Option<UnicastAddress> {
    if t.len() < 5 {
        return None;
    }
    let last = t[t.len() - 1];
    let address: Ipv6Addr = last.split('%').next()?.parse().ok()?;
    let state = match t[1].to_lowercase().as_str() {
        "deprecated" => AddressState::Deprecated,
        "tentative" => AddressState::Tentative,
        "duplicate" => AddressState::Duplicate,
        "invalid" => AddressState::Invalid,
        _ => AddressState::Preferred,
    };
    let suffix_origin = if t[0].eq_ignore_ascii_case("temporary") {
        SuffixOrigin::Random
    } else {
        SuffixOrigin::Other
    };
    Some(UnicastAddress {
        address: address.into(),
        prefix_length: 64,
        interface: Luid(u64::from(index)),
        state,
        skip_as_source: false,
        prefix_origin: PrefixOrigin::Other,
        suffix_origin,
    })
}

/// An IPv4 address of a `show addresses` block, once its prefix line has been read.
fn v4_address(address: Ipv4Addr, prefix: &str) -> Option<UnicastAddress> {
    let net: ipnet::Ipv4Net = prefix.split_whitespace().next()?.parse().ok()?;
    net.contains(&address).then(|| UnicastAddress {
        address: address.into(),
        prefix_length: net.prefix_len(),
        interface: Luid(0),
        state: AddressState::Preferred,
        skip_as_source: false,
        prefix_origin: PrefixOrigin::Other,
        suffix_origin: SuffixOrigin::Other,
    })
}

/// Reads the concatenated text. It never fails as a whole: lines it cannot read come back in
/// [`TextDump::unread`].
pub fn parse(text: &str) -> TextDump {
    let mut routes: Vec<RouteRow> = Vec::new();
    let mut interfaces: Vec<InterfaceRow> = Vec::new();
    let mut addresses: Vec<AddressRow> = Vec::new();
    let mut block = Block::None;
    let mut unread = Unread::default();
    let mut last_family: Option<Family> = None;
    // Interface rows read before any route row, waiting for a family.
    let mut waiting: Vec<usize> = Vec::new();
    for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.is_empty() || t.iter().all(|s| s.chars().all(|c| c == '-')) {
            continue;
        }
        if let Some(name) = v4_block_header(line) {
            block = Block::V4 {
                name,
                pending: None,
            };
            continue;
        }
        if let Some(index) = v6_block_header(&t) {
            block = Block::V6(index);
            continue;
        }
        match &mut block {
            Block::V4 { name, pending } => {
                if let Some(value) = key_value(line) {
                    let waiting = pending.take();
                    if let Ok(address) = value.parse::<Ipv4Addr>() {
                        *pending = Some(address);
                    } else if let Some(address) = waiting.and_then(|a| v4_address(a, value)) {
                        addresses.push(AddressRow {
                            on: Owner::Name(name.clone()),
                            address,
                            line: (n + 1, line.to_owned()),
                        });
                    }
                    continue;
                }
                block = Block::None;
            }
            Block::V6(index) => {
                if let Some(address) = v6_address_row(&t, *index) {
                    addresses.push(AddressRow {
                        on: Owner::Index(*index),
                        address,
                        line: (n + 1, line.to_owned()),
                    });
                    continue;
                }
                // The table's header line (words, however abbreviated) stays in the block; a
                // line with a number or an address ends it.
                let data = |s: &&str| {
                    s.parse::<u64>().is_ok()
                        || s.parse::<IpAddr>().is_ok()
                        || s.parse::<IpNet>().is_ok()
                };
                if t.iter().any(data) {
                    block = Block::None;
                } else {
                    continue;
                }
            }
            Block::None => {}
        }
        if let Some(row) = route_row(&t) {
            let family = Family::of(row.destination.addr());
            if last_family != Some(family) {
                for &i in &waiting {
                    interfaces[i].family = Some(family);
                }
                waiting.clear();
            }
            last_family = Some(family);
            routes.push(row);
            continue;
        }
        if let Some(mut row) = interface_row(&t) {
            row.family = last_family;
            if last_family.is_none() {
                waiting.push(interfaces.len());
            }
            interfaces.push(row);
            continue;
        }
        if t.iter().any(|s| looks_like_data(s)) {
            unread.push(n + 1, line);
        }
    }
    let mut tables = tables(&routes, &interfaces);
    if !addresses.is_empty() {
        tables.addresses = Some(attach(&mut tables, addresses, &mut unread));
    }
    let (unread, unread_total) = unread.finish();
    TextDump {
        tables,
        unread,
        unread_total,
    }
}

/// The addresses on the interfaces they name. An IPv4 block whose name no interface table
/// row has is reported as unread (its addresses have no index); an IPv6 table's index that
/// no other part names becomes an interface of its own.
fn attach(
    host: &mut HostTables,
    rows: Vec<AddressRow>,
    unread: &mut Unread,
) -> Vec<UnicastAddress> {
    let mut out = Vec::new();
    for row in rows {
        let luid = match &row.on {
            Owner::Name(name) => match host.interfaces.iter().find(|i| &i.alias == name) {
                Some(interface) => interface.luid,
                None => {
                    unread.push(row.line.0, &row.line.1);
                    continue;
                }
            },
            Owner::Index(index) => {
                let luid = Luid(u64::from(*index));
                if host.interface(luid).is_none() {
                    host.interfaces.push(Interface {
                        luid,
                        index: *index,
                        alias: String::new(),
                        status: OperStatus::Up,
                        ipv4_metric: None,
                        ipv6_metric: None,
                    });
                }
                luid
            }
        };
        out.push(UnicastAddress {
            interface: luid,
            ..row.address
        });
    }
    out
}

fn tables(routes: &[RouteRow], rows: &[InterfaceRow]) -> HostTables {
    let loopback_word = rows
        .iter()
        .find(|r| r.index == 1 || r.name.to_lowercase().contains("loopback"))
        .map(|r| r.state.clone());
    let up = |state: &str| CONNECTED.contains(&state) || loopback_word.as_deref() == Some(state);
    let mut host = HostTables::default();
    let mut positions: HashMap<u32, usize> = HashMap::new();
    let mut at = |host: &mut HostTables, index: u32| -> usize {
        *positions.entry(index).or_insert_with(|| {
            host.interfaces.push(Interface {
                luid: Luid(u64::from(index)),
                index,
                alias: String::new(),
                status: OperStatus::Up,
                ipv4_metric: None,
                ipv6_metric: None,
            });
            host.interfaces.len() - 1
        })
    };
    for row in rows {
        let i = at(&mut host, row.index);
        let interface = &mut host.interfaces[i];
        interface.alias.clone_from(&row.name);
        interface.status = if up(&row.state) {
            OperStatus::Up
        } else {
            OperStatus::Down
        };
        match row.family {
            Some(Family::V6) => interface.ipv6_metric = Some(row.metric),
            // A file of interfaces alone is read as IPv4.
            _ => interface.ipv4_metric = Some(row.metric),
        }
    }
    for route in routes {
        let i = at(&mut host, route.index);
        let interface = &mut host.interfaces[i];
        if interface.alias.is_empty() {
            if let Some(name) = &route.name {
                interface.alias.clone_from(name);
            }
        }
        // A family with routes but no interface row: enabled, metric unknown, taken as 0.
        let family = Family::of(route.destination.addr());
        let slot = match family {
            Family::V4 => &mut interface.ipv4_metric,
            Family::V6 => &mut interface.ipv6_metric,
        };
        slot.get_or_insert(0);
        host.routes.push(Route {
            destination: route.destination,
            next_hop: route.gateway,
            interface: Luid(u64::from(route.index)),
            metric: route.metric,
        });
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    const GERMAN: &str = "\
Veröffentlichen  Typ       Met  Präfix                    Idx  Gateway/Schnittstellenname
---------------  --------  ---  ------------------------  ---  ------------------------
Nein             Manuell   0    0.0.0.0/0                  12  192.0.2.1
Nein             Manuell   0    0.0.0.0/1                  24  loopguard
Nein             System    256  192.0.2.0/24               12  Ethernet

Idx     Met         MTU          Status                Name
---  ----------  ----------  ------------  ---------------------------
  1          75  4294967295  Verbunden     Loopback Pseudo-Interface 1
 12          25        1500  Verbunden     Ethernet
 24           5        1420  Verbunden     loopguard
  7          50        1500  Getrennt      WLAN

Veröffentlichen  Typ       Met  Präfix                    Idx  Gateway/Schnittstellenname
---------------  --------  ---  ------------------------  ---  ------------------------
Nein             Manuell   256  ::/0                       12  fe80::1
Nein             Manuell   256  ::/0                        7  fe80::1

Idx     Met         MTU          Status                Name
---  ----------  ----------  ------------  ---------------------------
 12          45        1500  Verbunden     Ethernet
  7          60        1500  Getrennt      WLAN
";

    #[test]
    fn routes_and_per_family_interface_metrics_in_german() {
        let dump = parse(GERMAN);
        assert!(dump.unread.is_empty(), "{:?}", dump.unread);
        let h = &dump.tables;
        assert_eq!(h.routes.len(), 5);
        let eth = h.interface(Luid(12)).unwrap();
        assert_eq!(eth.alias, "Ethernet");
        assert_eq!((eth.ipv4_metric, eth.ipv6_metric), (Some(25), Some(45)));
        assert_eq!(eth.status, OperStatus::Up);
        let wlan = h.interface(Luid(7)).unwrap();
        assert_eq!(wlan.status, OperStatus::Down);
        assert_eq!(h.routes[0].next_hop, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(h.routes[1].next_hop, None);
        assert_eq!(h.addresses, None);
    }

    /// `show addresses` for both families after the tables above, in English. The shape
    /// follows what `netsh interface ipv4 show addresses` and `ipv6 show addresses` print on
    /// Windows 10 and 11 (documentation addresses in place of real ones).
    const ADDRESSES: &str = "
Configuration for interface \"Ethernet\"
    DHCP enabled:                         Yes
    IP Address:                           192.0.2.10
    Subnet Prefix:                        192.0.2.0/24 (mask 255.255.255.0)
    IP Address:                           198.51.100.10
    Subnet Prefix:                        198.51.100.0/25 (mask 255.255.255.128)
    Default Gateway:                      192.0.2.1
    Gateway Metric:                       0
    InterfaceMetric:                      25

Configuration for interface \"loopguard\"
    DHCP enabled:                         No
    IP Address:                           203.0.113.2
    Subnet Prefix:                        203.0.113.2/32 (mask 255.255.255.255)
    InterfaceMetric:                      5

Configuration for interface \"Bluetooth Network Connection\"
    DHCP enabled:                         Yes
    IP Address:                           192.0.2.77
    Subnet Prefix:                        192.0.2.0/24 (mask 255.255.255.0)

Interface 1: Loopback Pseudo-Interface 1

Addr Type  DAD State   Valid Life Pref. Life Address
---------  ----------- ---------- ---------- ------------------------
Other      Preferred     infinite   infinite ::1

Interface 12: Ethernet

Addr Type  DAD State   Valid Life Pref. Life Address
---------  ----------- ---------- ---------- ------------------------
Public     Preferred    23h59m58s   3h59m58s 2001:db8:1::10
Temporary  Preferred    23h59m58s   3h59m58s 2001:db8:1::abcd
Temporary  Deprecated   23h59m58s         0s 2001:db8:1::dead
Other      Preferred     infinite   infinite fe80::10%12
";

    #[test]
    fn show_addresses_gives_sources_by_interface_name_and_index() {
        let dump = parse(&format!("{GERMAN}{ADDRESSES}"));
        // The Bluetooth block names no interface of the tables: its address has no index.
        let unread: Vec<&str> = dump.unread.iter().map(|u| u.text.trim()).collect();
        assert_eq!(
            unread,
            ["Subnet Prefix:                        192.0.2.0/24 (mask 255.255.255.0)"]
        );
        let addresses = dump.tables.addresses.expect("addresses read");
        let on = |luid: u64| -> Vec<String> {
            addresses
                .iter()
                .filter(|a| a.interface == Luid(luid))
                .map(|a| format!("{}/{} {:?}", a.address, a.prefix_length, a.state))
                .collect()
        };
        // The gateway (followed by its metric, not a prefix) is no address.
        assert_eq!(
            on(12),
            [
                "192.0.2.10/24 Preferred",
                "198.51.100.10/25 Preferred",
                "2001:db8:1::10/64 Preferred",
                "2001:db8:1::abcd/64 Preferred",
                "2001:db8:1::dead/64 Deprecated",
                "fe80::10/64 Preferred",
            ]
        );
        assert_eq!(on(24), ["203.0.113.2/32 Preferred"]);
        assert_eq!(on(1), ["::1/64 Preferred"]);
        let temporary: Vec<String> = addresses
            .iter()
            .filter(|a| a.is_temporary())
            .map(|a| a.address.to_string())
            .collect();
        assert_eq!(temporary, ["2001:db8:1::abcd", "2001:db8:1::dead"]);
        // Nothing else changed.
        assert_eq!(dump.tables.routes.len(), 5);
    }

    /// The German words are illustrative: rows are recognised by their shape.
    #[test]
    fn show_addresses_in_german_and_without_other_tables() {
        let text = "\
Konfiguration für Schnittstelle \"Ethernet\"
    DHCP aktiviert:                       Ja
    IP-Adresse:                           192.0.2.10
    Subnetzpräfix:                        192.0.2.0/24 (Maske 255.255.255.0)
    Standardgateway:                      192.0.2.1
    Gatewaymetrik:                        0
    Schnittstellenmetrik:                 25

Schnittstelle 12: Ethernet

Adresstyp  DAD-Status  Gültige Gült.  Bevorz. Gült. Adresse
---------  ----------- ---------- ---------- ------------------------
Öffentlich Bevorzugt    23h59m58s   3h59m58s 2001:db8:1::10
";
        let mut dump = parse(&format!("{GERMAN}{text}"));
        assert!(dump.unread.is_empty(), "{:?}", dump.unread);
        let mut got: Vec<String> = dump
            .tables
            .addresses
            .take()
            .unwrap()
            .iter()
            .map(|a| format!("{} {}", a.address, a.interface.0))
            .collect();
        got.sort();
        assert_eq!(got, ["192.0.2.10 12", "2001:db8:1::10 12"]);
        // Alone, the IPv4 block names an interface no table has; the IPv6 table's index
        // becomes an interface.
        let alone = parse(text);
        assert_eq!(alone.unread_total, 1);
        assert!(alone.tables.interface(Luid(12)).is_some());
        assert_eq!(alone.tables.addresses.map(|a| a.len()), Some(1));
    }

    #[test]
    fn without_show_addresses_sources_stay_unknown() {
        assert_eq!(parse(GERMAN).tables.addresses, None);
    }

    #[test]
    fn an_unknown_language_is_read_through_the_loopback_state_word() {
        let text = GERMAN.replace("Verbunden", "Csatlakoztatva");
        let h = parse(&text).tables;
        assert_eq!(h.interface(Luid(12)).unwrap().status, OperStatus::Up);
        assert_eq!(h.interface(Luid(7)).unwrap().status, OperStatus::Down);
    }
}
