//! `ip route show table all` / `ip -6 route show table all`, as text or `-j` JSON, into
//! [`LinuxRoute`]s.
//!
//! Text lines are `[TYPE] PREFIX [key value | flag]...` as iproute2's `print_route()`
//! (ip/iproute.c) writes them, multipath next hops on the indented `nexthop` lines that
//! follow: `default via 192.0.2.1 dev eth0 proto dhcp src 192.0.2.10 metric 100`,
//! `local 192.0.2.10 dev eth0 table local proto kernel scope host src 192.0.2.10`,
//! `unreachable default dev lo table 100 metric 4278198272`. A route without `table` is in
//! `main`. JSON objects use that function's keys (`type`, `dst`, `from`, `gateway`, `via`,
//! `dev`, `table`, `metric`, `prefsrc`, `nexthops`).
//!
//! Both families may share a file. `default` and names without an address say no family:
//! then `pref` or `error` (printed for IPv6 routes only) make it IPv6, else it is IPv4.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::{DumpError, Location, Unread, UnreadLine};
use crate::route::policy::{table_name, LinuxRoute, NextHop, RouteType};

/// The routes read, with the lines that could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteDump {
    /// Routes in the order printed.
    pub routes: Vec<LinuxRoute>,
    /// The first lines that looked like routes but could not be read.
    pub unread: Vec<UnreadLine>,
    /// How many such lines in all.
    pub unread_total: usize,
}

/// Reads `ip route show table all` output of either family, text or JSON.
pub fn parse(file: &str, text: &str) -> Result<RouteDump, DumpError> {
    let text = text.trim_start_matches('\u{feff}');
    let mut unread = Unread::default();
    let mut routes = Vec::new();
    if text.trim_start().starts_with(['[', '{']) {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for value in stream {
            let value = value.map_err(|e| DumpError {
                file: file.to_owned(),
                location: Location::File,
                field: "(document)".to_owned(),
                problem: format!("not JSON: {e}"),
            })?;
            let items = match value {
                Value::Array(items) => items,
                object @ Value::Object(_) => vec![object],
                _ => Vec::new(),
            };
            for (n, item) in items.iter().enumerate() {
                match item.as_object().and_then(json_route) {
                    Some(route) => routes.push(route),
                    None => unread.push(n + 1, &item.to_string()),
                }
            }
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || super::is_command_line(trimmed) {
                continue;
            }
            if let Some(hop) = trimmed.strip_prefix("nexthop ") {
                // A multipath route's next hops follow it, indented.
                match (routes.last_mut(), next_hop(hop)) {
                    (Some(route), Some(hop)) if line.starts_with(char::is_whitespace) => {
                        let route: &mut LinuxRoute = route;
                        route.next_hops.push(hop);
                        route.text.push(' ');
                        route.text.push_str(trimmed);
                    }
                    _ => unread.push(n + 1, line),
                }
                continue;
            }
            match text_route(trimmed) {
                Some(route) => routes.push(route),
                // Every line of `ip route` output is a route: none is skipped silently.
                None => unread.push(n + 1, line),
            }
        }
        // A family guessed before the next hops were read may be corrected by them.
        for route in &mut routes {
            refamily(route);
        }
    }
    let (unread, unread_total) = unread.finish();
    Ok(RouteDump {
        routes,
        unread,
        unread_total,
    })
}

/// `via [inet|inet6] ADDR dev NAME weight N ...` of a `nexthop` line.
fn next_hop(text: &str) -> Option<NextHop> {
    let t: Vec<&str> = text.split_whitespace().collect();
    let mut hop = NextHop {
        via: None,
        dev: None,
    };
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            "via" => {
                i += 1;
                if matches!(t.get(i), Some(&"inet") | Some(&"inet6")) {
                    i += 1;
                }
                hop.via = Some(t.get(i)?.parse().ok()?);
            }
            "dev" => {
                i += 1;
                hop.dev = Some((*t.get(i)?).to_owned());
            }
            _ => {}
        }
        i += 1;
    }
    Some(hop)
}

/// Keys of `ip route` that take one value (the value is skipped).
const VALUED: &[&str] = &[
    "proto",
    "scope",
    "tos",
    "dsfield",
    "mtu",
    "advmss",
    "hoplimit",
    "expires",
    "pref",
    "error",
    "nhid",
    "realm",
    "realms",
    "weight",
    "rtt",
    "rttvar",
    "window",
    "cwnd",
    "initcwnd",
    "initrwnd",
    "ssthresh",
    "reordering",
    "features",
    "congctl",
    "fastopen_no_cookie",
    "quickack",
    "rto_min",
    "age",
    "cache",
    "ttl-propagate",
    "encap",
    "users",
    "used",
];

fn text_route(line: &str) -> Option<LinuxRoute> {
    let t: Vec<&str> = line.split_whitespace().collect();
    let mut i = 0;
    let kind = match RouteType::from_word(t.first()?) {
        Some(kind) => {
            i += 1;
            kind
        }
        None => RouteType::Unicast,
    };
    let destination_text = *t.get(i)?;
    i += 1;
    let mut route = LinuxRoute {
        kind,
        destination: "0.0.0.0/0".parse().ok()?,
        from: None,
        table: "main".to_owned(),
        next_hops: Vec::new(),
        src: None,
        metric: 0,
        text: line.to_owned(),
    };
    let mut hop = NextHop {
        via: None,
        dev: None,
    };
    let mut v6_hint = false;
    while i < t.len() {
        let key = t[i];
        let value = t.get(i + 1).copied();
        match key {
            "via" => {
                let mut v = value?;
                if v == "inet" || v == "inet6" {
                    i += 1;
                    v = t.get(i + 1)?;
                }
                hop.via = Some(v.parse().ok()?);
                i += 1;
            }
            "dev" => {
                hop.dev = Some(value?.to_owned());
                i += 1;
            }
            "src" => {
                route.src = Some(value?.parse().ok()?);
                i += 1;
            }
            "from" => {
                route.from = Some(prefix(value?)?);
                i += 1;
            }
            "table" => {
                route.table = table_name(value?);
                i += 1;
            }
            "metric" | "priority" => {
                route.metric = value?.parse().ok()?;
                i += 1;
            }
            "lock" => {}
            key if VALUED.contains(&key) => {
                v6_hint |= key == "pref" || key == "error";
                value?;
                i += 1;
            }
            // Flags (`onlink`, `linkdown`, `dead`, `offload`...) and anything else: one word.
            _ => {}
        }
        i += 1;
    }
    if hop.via.is_some() || hop.dev.is_some() {
        route.next_hops.push(hop);
    }
    route.destination = if destination_text == "default" {
        let v6 = v6_hint || family_hint(&route) == Some(true);
        if v6 {
            "::/0".parse().ok()?
        } else {
            "0.0.0.0/0".parse().ok()?
        }
    } else {
        prefix(destination_text)?
    };
    Some(route)
}

/// Whether the route's addresses say IPv6 (`Some(true)`) or IPv4 (`Some(false)`).
fn family_hint(route: &LinuxRoute) -> Option<bool> {
    route
        .src
        .or_else(|| route.next_hops.iter().find_map(|h| h.via))
        .map(|a| a.is_ipv6())
}

/// A `default` route read before its multipath next hops: fix its family from them.
fn refamily(route: &mut LinuxRoute) {
    if route.destination.prefix_len() == 0 && route.from.is_none() {
        // Only a gateway of the other family can say so (a v4 route `via inet6` is rare and
        // keeps its family through `src`).
        if route.src.is_none() {
            if let Some(v6) = family_hint(route) {
                if v6 != route.destination.addr().is_ipv6() {
                    route.destination = if v6 {
                        "::/0".parse().expect("literal")
                    } else {
                        "0.0.0.0/0".parse().expect("literal")
                    };
                }
            }
        }
    }
}

/// `address/len`, or an address alone (a host route).
fn prefix(text: &str) -> Option<IpNet> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net);
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

fn json_route(map: &Map<String, Value>) -> Option<LinuxRoute> {
    let kind = match map.get("type") {
        Some(t) => RouteType::from_word(t.as_str()?)?,
        None => RouteType::Unicast,
    };
    let address = |key: &str| -> Option<Option<IpAddr>> {
        match map.get(key) {
            None => Some(None),
            Some(v) => Some(Some(v.as_str()?.parse().ok()?)),
        }
    };
    let via = match (address("gateway")?, map.get("via")) {
        (Some(g), _) => Some(g),
        (None, Some(Value::Object(v))) => Some(v.get("host")?.as_str()?.parse().ok()?),
        _ => None,
    };
    let dev = match map.get("dev") {
        Some(d) => Some(d.as_str()?.to_owned()),
        None => None,
    };
    let mut next_hops = Vec::new();
    if via.is_some() || dev.is_some() {
        next_hops.push(NextHop { via, dev });
    }
    if let Some(Value::Array(hops)) = map.get("nexthops") {
        for hop in hops {
            let hop = hop.as_object()?;
            next_hops.push(NextHop {
                via: match hop.get("gateway") {
                    Some(g) => Some(g.as_str()?.parse().ok()?),
                    None => None,
                },
                dev: hop.get("dev").and_then(Value::as_str).map(str::to_owned),
            });
        }
    }
    let src = address("prefsrc")?;
    let table = map.get("table").map_or(Some("main".to_owned()), |t| {
        Some(table_name(&t.as_str().map_or(t.to_string(), str::to_owned)))
    })?;
    let metric = match map.get("metric") {
        Some(m) => u32::try_from(m.as_u64()?).ok()?,
        None => 0,
    };
    let from = match map.get("from") {
        Some(f) => Some(prefix(f.as_str()?)?),
        None => None,
    };
    let dst = map.get("dst")?.as_str()?;
    let mut route = LinuxRoute {
        kind,
        destination: "0.0.0.0/0".parse().ok()?,
        from,
        table,
        next_hops,
        src,
        metric,
        text: Value::Object(map.clone()).to_string(),
    };
    route.destination = if dst == "default" {
        let v6 = map.contains_key("pref")
            || map.contains_key("error")
            || family_hint(&route) == Some(true);
        if v6 {
            "::/0".parse().ok()?
        } else {
            "0.0.0.0/0".parse().ok()?
        }
    } else {
        prefix(dst)?
    };
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Family;

    #[test]
    fn text_routes_of_every_table_and_both_families() {
        let text = "\
default via 192.0.2.1 dev eth0 proto dhcp src 192.0.2.10 metric 100
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.10 metric 100
default dev wg0 table 51820 scope link
local 192.0.2.10 dev eth0 table local proto kernel scope host src 192.0.2.10
broadcast 192.0.2.255 dev eth0 table local proto kernel scope link src 192.0.2.10
unreachable default dev lo table 100 metric 4278198272
throw 198.51.100.0/24 table 100
default proto static metric 1024
\tnexthop via 192.0.2.1 dev eth0 weight 1
\tnexthop via 192.0.2.2 dev eth1 weight 1
::1 dev lo proto kernel metric 256 pref medium
default via fe80::1 dev eth0 proto ra metric 1024 expires 1795sec hoplimit 64 pref medium
default dev wg0 table 51820 metric 1024 pref medium
unreachable default dev lo proto kernel metric 4294967295 error -101 pref medium
2001:db8:1::/64 from 2001:db8:1::/48 dev eth0 metric 256 pref medium
";
        let dump = parse("r", text).unwrap();
        assert!(dump.unread.is_empty(), "{:?}", dump.unread);
        let r = &dump.routes;
        assert_eq!(r.len(), 13);
        assert_eq!(r[0].next_hops[0].via, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r[0].src, Some("192.0.2.10".parse().unwrap()));
        assert_eq!((r[0].metric, r[0].table.as_str()), (100, "main"));
        assert_eq!(r[2].table, "51820");
        assert_eq!(r[2].family(), Family::V4);
        assert_eq!(
            (r[3].kind, r[3].table.as_str()),
            (RouteType::Local, "local")
        );
        assert_eq!(r[3].destination, "192.0.2.10/32".parse::<IpNet>().unwrap());
        assert_eq!(r[5].kind, RouteType::Unreachable);
        assert_eq!(r[6].kind, RouteType::Throw);
        assert_eq!(r[7].next_hops.len(), 2);
        assert_eq!(r[7].family(), Family::V4);
        assert_eq!(r[9].family(), Family::V6);
        assert_eq!(r[10].family(), Family::V6, "`pref` says IPv6");
        assert_eq!(r[11].family(), Family::V6);
        assert_eq!(r[12].from, Some("2001:db8:1::/48".parse().unwrap()));
    }

    #[test]
    fn json_routes_with_the_keys_iproute2_prints() {
        // Shape from iproute2's print_route() (ip/iproute.c); the values are made up.
        let text = r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","protocol":"dhcp","prefsrc":"192.0.2.10","metric":100,"flags":[]},
{"type":"local","dst":"192.0.2.10","table":"local","dev":"eth0","protocol":"kernel","scope":"host","prefsrc":"192.0.2.10","flags":[]},
{"dst":"default","table":"51820","dev":"wg0","scope":"link","flags":[]},
{"dst":"default","protocol":"static","metric":1024,"flags":[],"nexthops":[{"gateway":"192.0.2.1","dev":"eth0","weight":1,"flags":[]},{"gateway":"192.0.2.2","dev":"eth1","weight":1,"flags":[]}]}]
[{"dst":"default","gateway":"fe80::1","dev":"eth0","protocol":"ra","metric":1024,"flags":[],"pref":"medium"},
{"type":"unreachable","dst":"default","dev":"lo","table":"100","metric":4294967295,"flags":[],"pref":"medium"}]"#;
        let dump = parse("r.json", text).unwrap();
        assert!(dump.unread.is_empty(), "{:?}", dump.unread);
        let r = &dump.routes;
        assert_eq!(r.len(), 6);
        assert_eq!(r[1].kind, RouteType::Local);
        assert_eq!(r[2].table, "51820");
        assert_eq!(r[3].next_hops.len(), 2);
        assert_eq!(r[4].family(), Family::V6);
        assert_eq!(
            (r[5].kind, r[5].family()),
            (RouteType::Unreachable, Family::V6)
        );
    }

    #[test]
    fn damaged_lines_are_reported() {
        let dump = parse("r", "default via zz dev eth0\n192.0.2.0/24 dev eth0\n").unwrap();
        assert_eq!(dump.routes.len(), 1);
        assert_eq!(dump.unread_total, 1);
    }
}
