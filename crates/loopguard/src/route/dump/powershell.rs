//! `Get-NetRoute`, `Get-NetIPInterface` and `Get-NetIPAddress` piped to `ConvertTo-Json`.
//!
//! Both PowerShell generations are read: Windows PowerShell 5.1 writes enums as numbers
//! (`"AddressFamily": 2`, `"ConnectionState": 1`), PowerShell 7 with `-EnumsAsStrings` (and
//! some 7.x releases by default) as names (`"IPv4"`, `"Connected"`). One object is written as
//! an object, several as an array, and 5.1 wraps an array passed with `-InputObject` as
//! `{"value": [...], "Count": n}`; all three are accepted. Property names compare
//! case-insensitively, as in PowerShell; properties not listed here (the `Cim*` bookkeeping,
//! lifetimes, `PSComputerName`) are ignored. No dump carries LUIDs, so the interface index
//! stands in for one ([`Luid`]`(index)`).

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::{DumpError, Location};
use crate::route::{
    AddressState, Family, HostTables, Interface, Luid, OperStatus, PrefixOrigin, Route,
    SuffixOrigin, UnicastAddress,
};

/// One row of `Get-NetIPInterface`: an interface's settings for one address family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpInterfaceRow {
    /// `ifIndex` / `InterfaceIndex`.
    pub index: u32,
    /// `InterfaceAlias`.
    pub alias: String,
    /// `AddressFamily`.
    pub family: Family,
    /// `InterfaceMetric`.
    pub metric: u32,
    /// `ConnectionState`: Connected (1) or Disconnected (0).
    pub connected: bool,
}

/// Reads a `Get-NetRoute | ConvertTo-Json` dump.
pub fn parse_routes(file: &str, text: &str) -> Result<Vec<Route>, DumpError> {
    records(file, text)?
        .iter()
        .enumerate()
        .map(|(n, record)| {
            let r = Record::new(file, n + 1, record)?;
            let destination: IpNet = r.parsed("DestinationPrefix", &["DestinationPrefix"])?;
            let next_hop: IpAddr = r.parsed("NextHop", &["NextHop"])?;
            Ok(Route {
                destination,
                next_hop: (!next_hop.is_unspecified()).then_some(next_hop),
                interface: Luid(u64::from(r.index()?)),
                metric: r.number("RouteMetric", &["RouteMetric"])?,
            })
        })
        .collect()
}

/// Reads a `Get-NetIPInterface | ConvertTo-Json` dump.
pub fn parse_ip_interfaces(file: &str, text: &str) -> Result<Vec<IpInterfaceRow>, DumpError> {
    records(file, text)?
        .iter()
        .enumerate()
        .map(|(n, record)| {
            let r = Record::new(file, n + 1, record)?;
            Ok(IpInterfaceRow {
                index: r.index()?,
                alias: r.string("InterfaceAlias", &["InterfaceAlias", "ifAlias"])?,
                family: r.family()?,
                metric: r.number("InterfaceMetric", &["InterfaceMetric"])?,
                connected: r.enumerated("ConnectionState", |v| match v {
                    Enum::Number(0) => Some(false),
                    Enum::Number(1) => Some(true),
                    Enum::Name(s) if s.eq_ignore_ascii_case("Disconnected") => Some(false),
                    Enum::Name(s) if s.eq_ignore_ascii_case("Connected") => Some(true),
                    _ => None,
                })?,
            })
        })
        .collect()
}

/// Reads a `Get-NetIPAddress | ConvertTo-Json` dump. `SkipAsSource` and the origins may be
/// missing (then `false` and `Other`); present but malformed, they are errors.
pub fn parse_addresses(file: &str, text: &str) -> Result<Vec<UnicastAddress>, DumpError> {
    records(file, text)?
        .iter()
        .enumerate()
        .map(|(n, record)| {
            let r = Record::new(file, n + 1, record)?;
            // Link-local addresses carry their zone ("fe80::1%12"): the index is elsewhere.
            let text = r.string("IPAddress", &["IPAddress", "IPv4Address", "IPv6Address"])?;
            let bare = text.split('%').next().unwrap_or_default();
            let address: IpAddr = bare
                .parse()
                .map_err(|_| r.error("IPAddress", format!("`{text}` is not an IP address")))?;
            let prefix_length: u8 = r.number("PrefixLength", &["PrefixLength"])?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            if prefix_length > max {
                return Err(r.error("PrefixLength", format!("{prefix_length} exceeds {max}")));
            }
            Ok(UnicastAddress {
                address,
                prefix_length,
                interface: Luid(u64::from(r.index()?)),
                state: r.enumerated("AddressState", |v| match v {
                    Enum::Number(n) => AddressState::from_number(n),
                    Enum::Name(s) => name_in(
                        s,
                        &[
                            ("Invalid", AddressState::Invalid),
                            ("Tentative", AddressState::Tentative),
                            ("Duplicate", AddressState::Duplicate),
                            ("Deprecated", AddressState::Deprecated),
                            ("Preferred", AddressState::Preferred),
                        ],
                    ),
                    Enum::Bool(_) => None,
                })?,
                skip_as_source: r.optional("SkipAsSource", false, |v| match v {
                    Enum::Bool(b) => Some(b),
                    Enum::Number(n) => Some(n != 0),
                    Enum::Name(s) => name_in(s, &[("True", true), ("False", false)]),
                })?,
                prefix_origin: r.optional("PrefixOrigin", PrefixOrigin::Other, |v| match v {
                    Enum::Number(n) => PrefixOrigin::from_number(n),
                    Enum::Name(s) => name_in(
                        s,
                        &[
                            ("Other", PrefixOrigin::Other),
                            ("Manual", PrefixOrigin::Manual),
                            ("WellKnown", PrefixOrigin::WellKnown),
                            ("Dhcp", PrefixOrigin::Dhcp),
                            ("RouterAdvertisement", PrefixOrigin::RouterAdvertisement),
                        ],
                    ),
                    Enum::Bool(_) => None,
                })?,
                suffix_origin: r.optional("SuffixOrigin", SuffixOrigin::Other, |v| match v {
                    Enum::Number(n) => SuffixOrigin::from_number(n),
                    Enum::Name(s) => name_in(
                        s,
                        &[
                            ("Other", SuffixOrigin::Other),
                            ("Manual", SuffixOrigin::Manual),
                            ("WellKnown", SuffixOrigin::WellKnown),
                            ("Dhcp", SuffixOrigin::Dhcp),
                            ("Link", SuffixOrigin::LinkLayerAddress),
                            ("LinkLayerAddress", SuffixOrigin::LinkLayerAddress),
                            ("Random", SuffixOrigin::Random),
                        ],
                    ),
                    Enum::Bool(_) => None,
                })?,
            })
        })
        .collect()
}

/// Joins the per-family `Get-NetIPInterface` rows into interfaces. An interface counts as up
/// when any of its rows says Connected: `ConnectionState` is the media state, the same for
/// both families, and a family that is not listed at all stays disabled.
pub fn interfaces_from_rows(rows: &[IpInterfaceRow]) -> Vec<Interface> {
    let mut interfaces: Vec<Interface> = Vec::new();
    for row in rows {
        let at = match interfaces.iter().position(|i| i.index == row.index) {
            Some(at) => at,
            None => {
                interfaces.push(Interface {
                    luid: Luid(u64::from(row.index)),
                    index: row.index,
                    alias: row.alias.clone(),
                    status: OperStatus::Down,
                    ipv4_metric: None,
                    ipv6_metric: None,
                });
                interfaces.len() - 1
            }
        };
        let interface = &mut interfaces[at];
        if row.connected {
            interface.status = OperStatus::Up;
        }
        let slot = match row.family {
            Family::V4 => &mut interface.ipv4_metric,
            Family::V6 => &mut interface.ipv6_metric,
        };
        slot.get_or_insert(row.metric);
    }
    interfaces
}

/// Reads all three dumps, each given as (file name, text), into one snapshot.
pub fn host_tables(
    routes: (&str, &str),
    interfaces: (&str, &str),
    addresses: (&str, &str),
) -> Result<HostTables, DumpError> {
    Ok(HostTables {
        routes: parse_routes(routes.0, routes.1)?,
        interfaces: interfaces_from_rows(&parse_ip_interfaces(interfaces.0, interfaces.1)?),
        addresses: Some(parse_addresses(addresses.0, addresses.1)?),
    })
}

/// The objects of a dump: an array, a single object, or 5.1's `{"value": [...]}` wrapper.
fn records(file: &str, text: &str) -> Result<Vec<Value>, DumpError> {
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        // `ConvertTo-Json` of nothing writes nothing: an empty table.
        return Ok(Vec::new());
    }
    let root: Value = serde_json::from_str(text).map_err(|e| DumpError {
        file: file.to_owned(),
        location: Location::File,
        field: "(document)".to_owned(),
        problem: format!("not JSON: {e}"),
    })?;
    Ok(match root {
        Value::Array(items) => items,
        Value::Object(ref map) => match get(map, "value") {
            Some(Value::Array(items)) if get(map, "Count").is_some() => items.clone(),
            _ => vec![root],
        },
        Value::Null => Vec::new(),
        _ => {
            return Err(DumpError {
                file: file.to_owned(),
                location: Location::File,
                field: "(document)".to_owned(),
                problem: "expected an object or an array of objects".to_owned(),
            })
        }
    })
}

/// A case-insensitive property lookup.
fn get<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// An enum value as PowerShell wrote it.
enum Enum<'a> {
    Number(u64),
    Name(&'a str),
    Bool(bool),
}

fn name_in<T: Copy>(name: &str, table: &[(&str, T)]) -> Option<T> {
    table
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// One object of a dump, with the context its errors need.
struct Record<'a> {
    file: &'a str,
    n: usize,
    map: &'a Map<String, Value>,
}

impl<'a> Record<'a> {
    fn new(file: &'a str, n: usize, value: &'a Value) -> Result<Record<'a>, DumpError> {
        match value {
            Value::Object(map) => Ok(Record { file, n, map }),
            _ => Err(DumpError {
                file: file.to_owned(),
                location: Location::Record(n),
                field: "(record)".to_owned(),
                problem: "not an object".to_owned(),
            }),
        }
    }

    fn error(&self, field: &str, problem: impl Into<String>) -> DumpError {
        DumpError {
            file: self.file.to_owned(),
            location: Location::Record(self.n),
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    /// The first non-null property among `names`.
    fn value(&self, names: &[&str]) -> Option<&'a Value> {
        names
            .iter()
            .filter_map(|n| get(self.map, n))
            .find(|v| !v.is_null())
    }

    fn required(&self, field: &str, names: &[&str]) -> Result<&'a Value, DumpError> {
        self.value(names)
            .ok_or_else(|| self.error(field, "missing"))
    }

    fn string(&self, field: &str, names: &[&str]) -> Result<String, DumpError> {
        match self.required(field, names)? {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.error(field, format!("expected a string, found {other}"))),
        }
    }

    fn parsed<T: std::str::FromStr>(&self, field: &str, names: &[&str]) -> Result<T, DumpError> {
        let text = self.string(field, names)?;
        text.trim()
            .parse()
            .map_err(|_| self.error(field, format!("cannot read `{text}`")))
    }

    fn number<T: TryFrom<u64>>(&self, field: &str, names: &[&str]) -> Result<T, DumpError> {
        let value = self.required(field, names)?;
        let n = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.and_then(|n| T::try_from(n).ok()).ok_or_else(|| {
            self.error(
                field,
                format!("expected a non-negative number in range, found {value}"),
            )
        })
    }

    fn index(&self) -> Result<u32, DumpError> {
        self.number("ifIndex", &["ifIndex", "InterfaceIndex"])
    }

    fn family(&self) -> Result<Family, DumpError> {
        self.enumerated("AddressFamily", |v| match v {
            Enum::Number(2) => Some(Family::V4),
            Enum::Number(23) => Some(Family::V6),
            Enum::Name(s) => name_in(
                s,
                &[
                    ("IPv4", Family::V4),
                    ("InterNetwork", Family::V4),
                    ("IPv6", Family::V6),
                    ("InterNetworkV6", Family::V6),
                ],
            ),
            _ => None,
        })
    }

    /// An enum written as a number, a name or a boolean, mapped by `map`.
    fn enumerated<T>(
        &self,
        field: &str,
        map: impl Fn(Enum<'_>) -> Option<T>,
    ) -> Result<T, DumpError> {
        let value = self.required(field, &[field])?;
        let e = match value {
            Value::Number(n) => n.as_u64().map(Enum::Number),
            Value::String(s) => Some(match s.trim().parse::<u64>() {
                Ok(n) => Enum::Number(n),
                Err(_) => Enum::Name(s.trim()),
            }),
            Value::Bool(b) => Some(Enum::Bool(*b)),
            _ => None,
        };
        e.and_then(map)
            .ok_or_else(|| self.error(field, format!("unknown value {value}")))
    }

    fn optional<T>(
        &self,
        field: &str,
        default: T,
        map: impl Fn(Enum<'_>) -> Option<T>,
    ) -> Result<T, DumpError> {
        match self.value(&[field]) {
            None => Ok(default),
            Some(_) => self.enumerated(field, map),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_an_array_and_the_value_wrapper_give_the_same_routes() {
        let one = r#"{"ifIndex": 12, "DestinationPrefix": "0.0.0.0/0", "NextHop": "192.0.2.1", "RouteMetric": 0}"#;
        let expected = vec![Route {
            destination: "0.0.0.0/0".parse().unwrap(),
            next_hop: Some("192.0.2.1".parse().unwrap()),
            interface: Luid(12),
            metric: 0,
        }];
        assert_eq!(parse_routes("r.json", one).unwrap(), expected);
        assert_eq!(
            parse_routes("r.json", &format!("[{one}]")).unwrap(),
            expected
        );
        let wrapped = format!(r#"{{"value": [{one}], "Count": 1}}"#);
        assert_eq!(parse_routes("r.json", &wrapped).unwrap(), expected);
        assert_eq!(
            parse_routes("r.json", &format!("\u{feff}{one}")).unwrap(),
            expected
        );
        assert_eq!(parse_routes("r.json", "").unwrap(), vec![]);
    }

    #[test]
    fn on_link_next_hops_become_none() {
        let text = r#"[{"InterfaceIndex": 3, "DestinationPrefix": "fe80::/64", "NextHop": "::", "RouteMetric": 256}]"#;
        assert_eq!(parse_routes("r.json", text).unwrap()[0].next_hop, None);
    }

    #[test]
    fn enums_as_numbers_and_as_names_agree() {
        let numbers = r#"{"ifIndex": 7, "InterfaceAlias": "Wi-Fi", "AddressFamily": 23, "InterfaceMetric": 45, "ConnectionState": 1}"#;
        let names = r#"{"ifIndex": 7, "InterfaceAlias": "Wi-Fi", "AddressFamily": "IPv6", "InterfaceMetric": 45, "ConnectionState": "Connected"}"#;
        assert_eq!(
            parse_ip_interfaces("i.json", numbers).unwrap(),
            parse_ip_interfaces("i.json", names).unwrap()
        );
        let a_numbers = r#"{"IPAddress": "fe80::1%7", "ifIndex": 7, "PrefixLength": 64, "AddressState": 4, "SkipAsSource": false, "PrefixOrigin": 2, "SuffixOrigin": 5}"#;
        let a_names = r#"{"IPAddress": "fe80::1%7", "ifIndex": 7, "PrefixLength": 64, "AddressState": "Preferred", "SkipAsSource": false, "PrefixOrigin": "WellKnown", "SuffixOrigin": "Random"}"#;
        let a = parse_addresses("a.json", a_numbers).unwrap();
        assert_eq!(a, parse_addresses("a.json", a_names).unwrap());
        assert_eq!(a[0].address, "fe80::1".parse::<IpAddr>().unwrap());
        assert!(a[0].is_temporary());
    }

    #[test]
    fn errors_name_file_record_and_field() {
        let text = r#"[{"ifIndex": 1, "DestinationPrefix": "0.0.0.0/0", "NextHop": "0.0.0.0", "RouteMetric": 0},
                       {"ifIndex": 1, "DestinationPrefix": "nonsense", "NextHop": "0.0.0.0", "RouteMetric": 0}]"#;
        let e = parse_routes("R.json", text).unwrap_err();
        assert_eq!(e.location, Location::Record(2));
        assert_eq!(e.field, "DestinationPrefix");
        assert!(e
            .to_string()
            .starts_with("R.json: record 2: field `DestinationPrefix`"));

        let e = parse_routes("R.json", r#"{"DestinationPrefix": "0.0.0.0/0"}"#).unwrap_err();
        assert_eq!(e.field, "NextHop");
        let e = parse_ip_interfaces(
            "I.json",
            r#"{"ifIndex": 1, "InterfaceAlias": "x", "AddressFamily": 99, "InterfaceMetric": 1, "ConnectionState": 1}"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "AddressFamily");
        let e = parse_addresses(
            "A.json",
            r#"{"IPAddress": "192.0.2.1", "ifIndex": 1, "PrefixLength": 40, "AddressState": 4}"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "PrefixLength");
        let e = parse_routes("R.json", "[1, 2").unwrap_err();
        assert_eq!(
            (e.location, e.field.as_str()),
            (Location::File, "(document)")
        );
        let e = parse_routes("R.json", "[1]").unwrap_err();
        assert_eq!(e.location, Location::Record(1));
    }

    #[test]
    fn rows_join_into_interfaces_per_family() {
        let rows = [
            IpInterfaceRow {
                index: 5,
                alias: "Ethernet".into(),
                family: Family::V6,
                metric: 25,
                connected: false,
            },
            IpInterfaceRow {
                index: 5,
                alias: "Ethernet".into(),
                family: Family::V4,
                metric: 35,
                connected: true,
            },
        ];
        let interfaces = interfaces_from_rows(&rows);
        assert_eq!(interfaces.len(), 1);
        assert_eq!(interfaces[0].status, OperStatus::Up);
        assert_eq!(interfaces[0].ipv4_metric, Some(35));
        assert_eq!(interfaces[0].ipv6_metric, Some(25));
    }
}
