//! Repair: put back, piece by piece, what [`TunnelRoutes::apply`] installed and something
//! took away, and a cheap probe that notices what the kernel takes away without telling.
//!
//! Each piece (sysctls, the nftables table, the routes of each family, the rules) is checked
//! and restored on its own: a piece that cannot be restored (the device is gone, IPv6 is
//! disabled on it) never keeps the others from being restored. While the device is gone or
//! down, the rules and the last-resort routes alone keep unmarked traffic for the tunnel out
//! of `main`.

use std::fmt;

use ipnet::IpNet;

use super::plan::{self, ObservedRoute, ObservedRule, WantedRule};
use super::{
    check, install_routes, nft, path_end, sysctl, Family, PathEnd, RouteTarget, RoutesError, Rtnl,
    TunnelRoutes,
};

/// The tunnel's device as the keeper follows it: by index first (a rename keeps the index),
/// then by name (a device deleted and created again gets a new index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Device {
    pub name: String,
    pub index: u32,
}

/// What the device looks like now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DeviceState {
    /// Present; `up` is the administrative state (carrier does not matter: a TUN nobody
    /// reads has none, and the kernel routes through it all the same).
    Present {
        device: Device,
        up: bool,
        ipv6_disabled: bool,
    },
    /// No device has the index or the name.
    Gone,
}

/// A piece of what `apply` installs, restored on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Piece {
    /// The sysctls strict reverse-path filtering needs.
    Sysctls,
    /// The nftables table that saves and restores the mark.
    ConntrackTable,
    /// The tunnel's routes of one family (device routes and last-resort routes).
    Routes(Family),
    /// The policy rules.
    Rules,
    /// The tunnel's device itself (renamed, recreated, gone or down).
    Device,
}

impl Piece {
    /// The piece as a `snake_case` word, as `routes apply --watch --json` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Piece::Sysctls => "sysctls",
            Piece::ConntrackTable => "nftables_table",
            Piece::Routes(Family::V4) => "ipv4_routes",
            Piece::Routes(Family::V6) => "ipv6_routes",
            Piece::Rules => "rules",
            Piece::Device => "device",
        }
    }
}

impl fmt::Display for Piece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Piece::Sysctls => f.write_str("sysctls"),
            Piece::ConntrackTable => f.write_str("nftables table"),
            Piece::Routes(Family::V4) => f.write_str("IPv4 routes"),
            Piece::Routes(Family::V6) => f.write_str("IPv6 routes"),
            Piece::Rules => f.write_str("rules"),
            Piece::Device => f.write_str("device"),
        }
    }
}

/// What one repair did.
#[derive(Debug, Default)]
pub(crate) struct Repair {
    /// Pieces put back, with how many things each needed (sysctls written, routes or rules
    /// added, 1 for the nftables table).
    pub restored: Vec<(Piece, usize)>,
    /// Pieces that could not be restored, with why.
    pub failed: Vec<(Piece, RoutesError)>,
    /// Where the device was found.
    pub device: Option<DeviceState>,
}

/// The cheap state the keeper polls: when it changes, something may need restoring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Probe {
    pub device: DeviceState,
    pub sysctls_ok: bool,
    pub conntrack_table: bool,
    /// Where an unmarked packet to the tunnel goes, per family.
    pub unmarked: Vec<PathEnd>,
}

/// Finds the device: by index, then by name.
pub(crate) async fn locate(nl: &mut Rtnl, last: &Device) -> Result<DeviceState, RoutesError> {
    let (device, up) = match nl.link_state(last.index).await? {
        Some((name, up)) => (
            Device {
                name,
                index: last.index,
            },
            up,
        ),
        None => match nl.link(&last.name).await {
            Ok((index, up)) => (
                Device {
                    name: last.name.clone(),
                    index,
                },
                up,
            ),
            Err(RoutesError::NoSuchDevice(_)) => return Ok(DeviceState::Gone),
            Err(e) => return Err(e),
        },
    };
    let ipv6_disabled = ipv6_disabled_on(&device.name);
    Ok(DeviceState::Present {
        device,
        up,
        ipv6_disabled,
    })
}

/// Whether IPv6 is off for this device (its own `disable_ipv6`, or IPv6 absent here). Read
/// from the file directly: a device name may contain dots, which a sysctl key cannot.
pub(crate) fn ipv6_disabled_on(name: &str) -> bool {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    std::fs::read_to_string(path).map_or(true, |v| v.trim() != "0")
}

impl TunnelRoutes {
    /// The cheap state of the tunnel's pieces: a few netlink requests and file reads.
    pub(crate) async fn probe(
        &self,
        nl: &mut Rtnl,
        last: &Device,
        prefixes: &[IpNet],
    ) -> Result<Probe, RoutesError> {
        let device = locate(nl, last).await?;
        let sysctls_ok = sysctl::wanted()
            .iter()
            .all(|(k, v)| sysctl::read(k).is_ok_and(|now| now == *v));
        let conntrack_table = nft::state(&self.conntrack_table()).await? == nft::TableState::Ours;
        let mut unmarked = Vec::new();
        for family in plan::families(prefixes) {
            if let Some(dst) = check::probe_destination(prefixes, family) {
                unmarked.push(path_end(nl, dst, None).await?);
            }
        }
        Ok(Probe {
            device,
            sysctls_ok,
            conntrack_table,
            unmarked,
        })
    }

    /// Checks every piece and restores what is missing, each piece on its own; `last` is
    /// updated to where the device is now (followed across a rename or a re-creation).
    pub(crate) async fn repair(
        &self,
        nl: &mut Rtnl,
        last: &mut Device,
        prefixes: &[IpNet],
    ) -> Repair {
        let mut out = Repair::default();
        match self.repair_sysctls() {
            Ok(0) => {}
            Ok(n) => out.restored.push((Piece::Sysctls, n)),
            Err(e) => out.failed.push((Piece::Sysctls, e)),
        }
        match self.repair_conntrack_table().await {
            Ok(false) => {}
            Ok(true) => out.restored.push((Piece::ConntrackTable, 1)),
            Err(e) => out.failed.push((Piece::ConntrackTable, e)),
        }
        let device = match locate(nl, last).await {
            Ok(d) => d,
            Err(e) => {
                out.failed.push((Piece::Device, e));
                DeviceState::Gone
            }
        };
        let usable = match &device {
            DeviceState::Present { device, up, .. } => {
                *last = device.clone();
                if !up {
                    out.failed
                        .push((Piece::Device, RoutesError::DeviceDown(device.name.clone())));
                }
                *up
            }
            DeviceState::Gone => {
                out.failed
                    .push((Piece::Device, RoutesError::NoSuchDevice(last.name.clone())));
                false
            }
        };
        for family in plan::families(prefixes) {
            let wanted: Vec<IpNet> = prefixes
                .iter()
                .filter(|p| Family::of(p.addr()) == family)
                .copied()
                .collect();
            let ipv6_off = matches!(
                device,
                DeviceState::Present {
                    ipv6_disabled: true,
                    ..
                }
            );
            let on_device = usable && !(family == Family::V6 && ipv6_off);
            if usable && !on_device {
                out.failed.push((
                    Piece::Routes(family),
                    RoutesError::Ipv6DisabledOnDevice(last.name.clone()),
                ));
            }
            let device = on_device.then_some(&*last);
            match self.repair_routes(nl, device, family, &wanted).await {
                Ok(0) => {}
                Ok(n) => out.restored.push((Piece::Routes(family), n)),
                Err(e) => out.failed.push((Piece::Routes(family), e)),
            }
        }
        match self.repair_rules(nl, &plan::families(prefixes)).await {
            Ok(0) => {}
            Ok(n) => out.restored.push((Piece::Rules, n)),
            Err(e) => out.failed.push((Piece::Rules, e)),
        }
        out.device = Some(device);
        out
    }

    /// Writes the sysctls that differ; how many did.
    fn repair_sysctls(&self) -> Result<usize, RoutesError> {
        let mut written = 0;
        for (key, value) in sysctl::wanted() {
            let change = sysctl::set(key, value)?;
            written += usize::from(change.previous != change.value);
        }
        Ok(written)
    }

    /// Installs the nftables table when it is missing; whether it was. Somebody else's table
    /// of the name is an error, never replaced.
    async fn repair_conntrack_table(&self) -> Result<bool, RoutesError> {
        let table = self.conntrack_table();
        match nft::state(&table).await? {
            nft::TableState::Ours => Ok(false),
            // Another program's table took the name: refused, and reported once.
            nft::TableState::Foreign(info) => Err(nft::foreign(&table, info)),
            nft::TableState::Absent => {
                nft::install(&table, self.config.mark(), self.config.mask()).await?;
                Ok(true)
            }
        }
    }

    /// Puts back the routes of one family: the last-resort routes always, the device's
    /// routes when `device` is usable (new ones before stale ones go). Without a usable
    /// device nothing is deleted: the kernel has already dropped what went through it.
    async fn repair_routes(
        &self,
        nl: &mut Rtnl,
        device: Option<&Device>,
        family: Family,
        wanted: &[IpNet],
    ) -> Result<usize, RoutesError> {
        let table = self.config.table();
        let routes: Vec<_> = self
            .table_routes(nl)
            .await?
            .into_iter()
            .filter(|(o, _)| Family::of(o.prefix.addr()) == family)
            .collect();
        let observed: Vec<ObservedRoute> = routes.iter().map(|(o, _)| o.clone()).collect();
        // Without a device, plan against an index no route has, and keep only the
        // last-resort part of the plan.
        let oif = device.map_or(0, |d| d.index);
        let mut route_plan = plan::plan_routes(&observed, wanted, oif, table, self.protocol)?;
        if device.is_none() {
            route_plan.add.clear();
            route_plan
                .delete
                .retain(|&i| observed[i].is_terminal(table, self.protocol));
        }
        let target = RouteTarget {
            dev: device.map_or("", |d| d.name.as_str()),
            oif,
            table,
            protocol: self.protocol,
        };
        let (added, _) = install_routes(nl, &routes, &route_plan, target, &mut Vec::new()).await?;
        Ok(added)
    }

    /// Puts back the rules of `families`; how many were added.
    async fn repair_rules(&self, nl: &mut Rtnl, families: &[Family]) -> Result<usize, RoutesError> {
        let rules = self.our_rules(nl).await?;
        let observed: Vec<ObservedRule> = rules.iter().map(|(o, _)| o.clone()).collect();
        let wanted = WantedRule::for_families(&self.config, families);
        let rule_plan = plan::plan_rules(&observed, &wanted, &self.config, self.protocol);
        let (added, _) = self
            .install_rules(nl, &rules, &rule_plan, &mut Vec::new())
            .await?;
        Ok(added)
    }
}
