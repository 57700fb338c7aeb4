//! The table `Get-NetRoute` prints by default (Format-Table), in any language:
//!
//! ```text
//! ifIndex DestinationPrefix    NextHop       RouteMetric ifMetric PolicyStore
//! ------- -----------------    -------       ----------- -------- -----------
//! 12      0.0.0.0/0            192.0.2.1               0 25       ActiveStore
//! ```
//!
//! Rows are recognised by shape: an index, a prefix, a next hop, the route metric, then
//! optionally the interface metric and the store. `PersistentStore` rows are configuration,
//! not state, and are skipped; a row without an interface metric leaves that family disabled
//! on its interface. The table lists no aliases, no states and no addresses: interfaces are
//! taken as up, named by index, and [`HostTables::addresses`](crate::route::HostTables) is
//! `None` unless the caller adds a `Get-NetIPAddress` dump. Columns PowerShell cut short with
//! `...` or `…` do not parse and are reported as unread.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{looks_like_data, TextDump, Unread};
use crate::route::{Family, HostTables, Interface, Luid, OperStatus, Route};

/// One row of the table.
struct Row {
    index: u32,
    destination: IpNet,
    next_hop: IpAddr,
    metric: u32,
    interface_metric: Option<u32>,
}

fn row(line: &str) -> Option<Row> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() < 4 || t.len() > 6 {
        return None;
    }
    let row = Row {
        index: t[0].parse().ok()?,
        destination: t[1].parse().ok()?,
        next_hop: t[2].parse().ok()?,
        metric: t[3].parse().ok()?,
        interface_metric: t.get(4).and_then(|m| m.parse().ok()),
    };
    // Only a store word may follow when the interface metric is missing.
    if t.len() == 6 && row.interface_metric.is_none() {
        return None;
    }
    let same_family = row.destination.addr().is_ipv4() == row.next_hop.is_ipv4();
    same_family.then_some(row)
}

/// Reads the text. It never fails as a whole: lines it cannot read come back in
/// [`TextDump::unread`].
pub fn parse(text: &str) -> TextDump {
    let mut tables = HostTables::default();
    let mut unread = Unread::default();
    // Interface index -> position in `tables.interfaces`, so big dumps stay linear.
    let mut positions = HashMap::new();
    for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.chars().all(|c| c == '-' || c == ' ') {
            continue;
        }
        if trimmed
            .split_whitespace()
            .any(|t| t.eq_ignore_ascii_case("PersistentStore"))
        {
            continue;
        }
        let Some(row) = row(trimmed) else {
            if trimmed.split_whitespace().any(looks_like_data) {
                unread.push(n + 1, line);
            }
            continue;
        };
        add(&mut tables, &mut positions, &row);
    }
    let (unread, unread_total) = unread.finish();
    TextDump {
        tables,
        unread,
        unread_total,
    }
}

fn add(tables: &mut HostTables, positions: &mut HashMap<u32, usize>, row: &Row) {
    let luid = Luid(u64::from(row.index));
    let at = match positions.get(&row.index) {
        Some(&at) => at,
        None => {
            positions.insert(row.index, tables.interfaces.len());
            tables.interfaces.push(Interface {
                luid,
                index: row.index,
                alias: String::new(),
                status: OperStatus::Up,
                ipv4_metric: None,
                ipv6_metric: None,
            });
            tables.interfaces.len() - 1
        }
    };
    let interface = &mut tables.interfaces[at];
    if let Some(metric) = row.interface_metric {
        let family = if row.destination.addr().is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let slot = match family {
            Family::V4 => &mut interface.ipv4_metric,
            Family::V6 => &mut interface.ipv6_metric,
        };
        slot.get_or_insert(metric);
    }
    tables.routes.push(Route {
        destination: row.destination,
        next_hop: (!row.next_hop.is_unspecified()).then_some(row.next_hop),
        interface: luid,
        metric: row.metric,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_persistent_rows_and_truncated_rows() {
        let text = "
ifIndex DestinationPrefix        NextHop      RouteMetric ifMetric PolicyStore
------- -----------------        -------      ----------- -------- -----------
12      0.0.0.0/0                192.0.2.1              0 25       ActiveStore
12      0.0.0.0/0                192.0.2.254            5          PersistentStore
7       ::/0                     fe80::1              256 45       ActiveStore
7       2001:db8:1234:5678:9a... ::                   256 45       ActiveStore
";
        let dump = parse(text);
        assert_eq!(dump.tables.routes.len(), 2);
        assert_eq!(dump.tables.interfaces.len(), 2);
        assert_eq!(dump.tables.interfaces[0].ipv4_metric, Some(25));
        assert_eq!(dump.tables.interfaces[1].ipv6_metric, Some(45));
        assert_eq!(dump.tables.addresses, None);
        assert_eq!(dump.unread.len(), 1);
        assert_eq!(dump.unread[0].line, 7);
    }
}
