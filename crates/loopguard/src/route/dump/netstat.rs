//! macOS `netstat -rn` (both families, or `-f inet` / `-f inet6` alone) into
//! [`ScopedRoute`]s.
//!
//! Rows are `Destination Gateway Flags [Refs Use] Netif [Expire]` (macOS before 11 prints
//! the `Refs` and `Use` counters, later ones do not); the section and column headers
//! ("Routing tables", "Internet:", "Internet6:") are skipped. Destinations are written the
//! BSD way: `default`; a network with its trailing zero bytes and the implied length left
//! out (`127` is 127.0.0.0/8, `192.0.2` is 192.0.2.0/24, `128.0/1` is 128.0.0.0/1); an IPv6
//! scope zone before the length (`fe80::%en0/64`). Interfaces' indices come from the
//! `link#N` gateways of their on-link routes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use super::{Unread, UnreadLine};
use crate::route::scoped::{Gateway, ScopedRoute};

/// The routes read, with the lines that could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetstatDump {
    /// Rows in the order printed.
    pub routes: Vec<ScopedRoute>,
    /// Interface name → index, from `link#N` gateways.
    pub indices: HashMap<String, u32>,
    /// The first lines that looked like rows but could not be read.
    pub unread: Vec<UnreadLine>,
    /// How many such lines in all.
    pub unread_total: usize,
}

/// An address without its `%zone`.
fn unzoned(text: &str) -> &str {
    text.split('%').next().unwrap_or(text)
}

/// A destination as `netstat` prints it.
fn destination(text: &str, v6_section: bool) -> Option<IpNet> {
    if text == "default" {
        return Some(if v6_section {
            "::/0".parse().ok()?
        } else {
            "0.0.0.0/0".parse().ok()?
        });
    }
    let (address, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (text, None),
    };
    // `fe80::%en0/64`: the zone sits before the length.
    let address = unzoned(address);
    if address.contains(':') {
        let a: IpAddr = address.parse().ok()?;
        return IpNet::new(a, len.unwrap_or(128)).ok();
    }
    let bytes: Vec<u8> = address
        .split('.')
        .map(|b| b.parse::<u8>().ok())
        .collect::<Option<_>>()?;
    if bytes.is_empty() || bytes.len() > 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    octets[..bytes.len()].copy_from_slice(&bytes);
    let implied = u8::try_from(bytes.len() * 8).ok()?;
    IpNet::new(IpAddr::V4(Ipv4Addr::from(octets)), len.unwrap_or(implied)).ok()
}

fn gateway(text: &str) -> Gateway {
    if let Some(index) = text.strip_prefix("link#").and_then(|n| n.parse().ok()) {
        return Gateway::Link(index);
    }
    match unzoned(text).parse::<IpAddr>() {
        Ok(a) => Gateway::Address(a),
        Err(_) => Gateway::Other(text.to_owned()),
    }
}

/// Whether a flags column is one: letters from the set `route(8)` documents.
fn is_flags(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| "123ABCDGHILMRSUWXYbcgimrsw".contains(c))
}

fn row(line: &str, v6_section: bool) -> Option<ScopedRoute> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() < 4 || !is_flags(t[2]) {
        return None;
    }
    // The interface is the first column after the flags that is not a counter.
    let interface = t[3..].iter().find(|c| c.parse::<u64>().is_err())?;
    // A pasted `-f inet6` table may have lost its "Internet6:" header: a `default` through
    // an IPv6 gateway is IPv6 whatever the section.
    let v6 =
        v6_section || t[0].contains(':') || unzoned(t[1]).parse::<std::net::Ipv6Addr>().is_ok();
    let dst = destination(t[0], v6)?;
    Some(ScopedRoute {
        destination: dst,
        gateway: gateway(t[1]),
        flags: t[2].to_owned(),
        interface: (*interface).to_owned(),
        text: line.trim().to_owned(),
    })
}

/// Reads `netstat -rn` text. It never fails as a whole: lines it cannot read come back in
/// [`NetstatDump::unread`].
pub fn parse(text: &str) -> NetstatDump {
    let mut dump = NetstatDump::default();
    let mut unread = Unread::default();
    let mut v6_section = false;
    for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.ends_with(':') && !trimmed.contains(' ') {
            // "Internet:" / "Internet6:" (any letters: only the 6 matters).
            v6_section = trimmed.contains('6');
            continue;
        }
        match row(trimmed, v6_section) {
            Some(route) => {
                if let Gateway::Link(index) = route.gateway {
                    dump.indices.entry(route.interface.clone()).or_insert(index);
                }
                dump.routes.push(route);
            }
            None => {
                let first = trimmed.split_whitespace().next().unwrap_or("");
                if super::looks_like_data(first) || first == "default" {
                    unread.push(n + 1, line);
                }
            }
        }
    }
    (dump.unread, dump.unread_total) = unread.finish();
    dump
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsd_destinations() {
        let cases = [
            ("127", "127.0.0.0/8"),
            ("192.0.2", "192.0.2.0/24"),
            ("169.254", "169.254.0.0/16"),
            ("0/1", "0.0.0.0/1"),
            ("128.0/1", "128.0.0.0/1"),
            ("224.0.0/4", "224.0.0.0/4"),
            ("192.0.2.1", "192.0.2.1/32"),
            ("192.0.2.1/32", "192.0.2.1/32"),
            ("fe80::%en0/64", "fe80::/64"),
            ("fe80::1%lo0", "fe80::1/128"),
            ("2001:db8::/64", "2001:db8::/64"),
        ];
        for (text, want) in cases {
            assert_eq!(
                destination(text, false),
                Some(want.parse().unwrap()),
                "{text}"
            );
        }
        assert_eq!(destination("default", true), Some("::/0".parse().unwrap()));
        assert_eq!(destination("1.2.3.4.5", false), None);
    }

    #[test]
    fn rows_with_and_without_the_refs_and_use_counters() {
        let text = "\
Routing tables

Internet:
Destination        Gateway            Flags        Refs      Use   Netif Expire
default            192.0.2.1          UGSc           12        0     en0
192.0.2            link#4             UCS             2        0     en0      !

Internet6:
Destination                             Gateway                         Flags         Netif Expire
default                                 fe80::1%en0                     UGcg            en0
fe80::%utun3/64                         fe80::a0b1:c2d3:e4f5:1%utun3    UcI           utun3
";
        let dump = parse(text);
        assert!(dump.unread.is_empty(), "{:?}", dump.unread);
        assert_eq!(dump.routes.len(), 4);
        assert_eq!(dump.routes[0].interface, "en0");
        assert_eq!(dump.routes[2].destination, "::/0".parse::<IpNet>().unwrap());
        assert_eq!(dump.routes[2].next_hop(), Some("fe80::1".parse().unwrap()));
        assert_eq!(dump.indices.get("en0"), Some(&4));
    }
}
