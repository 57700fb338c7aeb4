//! `netsh interface ipv4 show route` and `netsh interface ipv6 show route` with
//! `netsh interface ipv4 show interfaces` / `ipv6 show interfaces`, concatenated in one file,
//! in any display language.
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
//! up with metric 0. Addresses are not in these tables: sources stay unknown
//! ([`HostTables::addresses`](crate::route::HostTables) is `None`).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{looks_like_data, TextDump, Unread};
use crate::route::{Family, HostTables, Interface, Luid, OperStatus, Route};

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

/// Reads the concatenated text. It never fails as a whole: lines it cannot read come back in
/// [`TextDump::unread`].
pub fn parse(text: &str) -> TextDump {
    let mut routes: Vec<RouteRow> = Vec::new();
    let mut interfaces: Vec<InterfaceRow> = Vec::new();
    let mut unread = Unread::default();
    let mut last_family: Option<Family> = None;
    // Interface rows read before any route row, waiting for a family.
    let mut waiting: Vec<usize> = Vec::new();
    for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.is_empty() || t.iter().all(|s| s.chars().all(|c| c == '-')) {
            continue;
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
    let (unread, unread_total) = unread.finish();
    TextDump {
        tables: tables(&routes, &interfaces),
        unread,
        unread_total,
    }
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

    #[test]
    fn an_unknown_language_is_read_through_the_loopback_state_word() {
        let text = GERMAN.replace("Verbunden", "Csatlakoztatva");
        let h = parse(&text).tables;
        assert_eq!(h.interface(Luid(12)).unwrap().status, OperStatus::Up);
        assert_eq!(h.interface(Luid(7)).unwrap().status, OperStatus::Down);
    }
}
