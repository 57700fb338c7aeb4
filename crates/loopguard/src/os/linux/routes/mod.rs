//! [`TunnelRoutes`]: a tunnel's routes in their own table, the policy rules that send only
//! unmarked traffic there, and what strict reverse-path filtering needs, all over netlink.

mod error;
mod keeper;
mod nft;
mod plan;
mod rtnl;
mod sysctl;

use std::fmt;

use ipnet::IpNet;
use netlink_packet_route::AddressFamily;

pub use error::RoutesError;
pub use keeper::{KeepOptions, RouteKeeper};
pub use rtnl::{interface_index, interface_name};
pub use sysctl::SysctlChange;

use super::GuardConfig;
use plan::{ObservedRoute, ObservedRule, WantedRule};
pub(crate) use rtnl::Rtnl;

/// The route and rule protocol number (`rtm_protocol`, `FRA_PROTOCOL`) that tags everything
/// loopguard installs: 76 (`0x4c`, "L").
///
/// It is absent from iproute2's `rt_protos` (kernel values 0-4, gated 8 to keepalived 18,
/// babel 42, openr 99, FRR's bgp/isis/ospf/rip/eigrp 186-192) and from the numbers
/// systemd-networkd, NetworkManager, BIRD and wg-quick use, so a rule or route carrying it
/// is ours. `ip rule` / `ip route` print it as `proto 76`.
pub const LOOPGUARD_PROTOCOL: u8 = 76;

/// Protocol numbers owned by the kernel or well-known routing daemons, which must never be
/// used as loopguard's tag: deleting "our" routes would then delete theirs.
const RESERVED_PROTOCOLS: &[u8] = &[
    0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 42, 99, 186, 187, 188, 189, 192,
];

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        })
    }
}

/// A policy rule loopguard installed, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledRule {
    /// The rule's priority.
    pub priority: u32,
    /// Its address family.
    pub family: Family,
    /// Selector and action as `ip rule` prints them, e.g.
    /// `not from all fwmark 0x3047/0x30ff lookup 19527`.
    pub selector: String,
    /// The table it looks up.
    pub table: u32,
}

/// A route loopguard installed, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledRoute {
    /// The destination prefix.
    pub prefix: IpNet,
    /// The output device's name, when it still exists.
    pub device: Option<String>,
    /// The output device's index.
    pub device_index: Option<u32>,
    /// The table holding the route.
    pub table: u32,
}

/// Everything loopguard has installed for one configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutesState {
    /// Our tagged rules at our priorities or pointing at our table.
    pub rules: Vec<InstalledRule>,
    /// Our tagged routes in our table.
    pub routes: Vec<InstalledRoute>,
    /// The nftables table holding the conntrack mark rules (`inet NAME`), if present.
    pub conntrack_table: Option<String>,
}

/// What [`TunnelRoutes::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Rules added.
    pub rules_added: usize,
    /// Stale rules of ours removed (left by a killed run or another configuration).
    pub rules_removed: usize,
    /// Routes added.
    pub routes_added: usize,
    /// Stale routes of ours removed.
    pub routes_removed: usize,
    /// The sysctls set, with their previous values.
    pub sysctls: Vec<SysctlChange>,
    /// The nftables table holding the conntrack mark rules (family `inet`).
    pub conntrack_table: String,
}

/// What [`TunnelRoutes::remove`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveReport {
    /// Rules deleted.
    pub rules_removed: usize,
    /// Routes deleted.
    pub routes_removed: usize,
    /// Whether the nftables table existed and was deleted.
    pub conntrack_table_removed: bool,
}

/// A tunnel's routes in table `config.table()`, reached through the rules
/// `priority: lookup main suppress_prefixlength 0` and
/// `priority + 1: not fwmark MARK/MASK lookup TABLE`, for each address family that has
/// prefixes.
///
/// Everything it creates carries the tag [`LOOPGUARD_PROTOCOL`] (or the one given to
/// [`with_protocol`](Self::with_protocol)), so [`remove`](Self::remove) and the clean-up at
/// the start of [`apply`](Self::apply) delete only what loopguard created.
///
/// It also makes strict reverse-path filtering (`rp_filter=1`) accept replies to marked
/// sockets, and keeps the kernel's own replies to marked flows out of the tunnel: it sets
/// `net.ipv4.conf.all.src_valid_mark=1`, `net.ipv4.fwmark_reflect=1` and
/// `net.ipv6.fwmark_reflect=1`, and installs an nftables table `inet loopguard_<table>` that
/// saves the mark in conntrack on the way out and restores it on the way in.
///
/// Every call works in the network namespace of the calling thread and must run inside a
/// tokio runtime (a current-thread one is enough).
#[derive(Clone, Debug)]
pub struct TunnelRoutes {
    config: GuardConfig,
    protocol: u8,
}

impl TunnelRoutes {
    /// Routes for `config`, tagged with [`LOOPGUARD_PROTOCOL`].
    pub fn new(config: GuardConfig) -> Self {
        TunnelRoutes {
            config,
            protocol: LOOPGUARD_PROTOCOL,
        }
    }

    /// Uses another tag, for a system where 76 is taken. The kernel's and well-known
    /// daemons' numbers are refused.
    pub fn with_protocol(mut self, protocol: u8) -> Result<Self, RoutesError> {
        if RESERVED_PROTOCOLS.contains(&protocol) {
            return Err(RoutesError::ReservedProtocol(protocol));
        }
        self.protocol = protocol;
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// The tag (route and rule protocol number).
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// The nftables table name (family `inet`) holding the conntrack mark rules.
    pub fn conntrack_table(&self) -> String {
        nft::table_name(self.config.table())
    }

    /// Installs `prefixes` on `dev` in the tunnel's table and the rules for their families,
    /// removes what a killed run left, and sets up what strict `rp_filter` needs.
    ///
    /// Idempotent. Input is checked before anything changes: an unknown device is
    /// [`RoutesError::NoSuchDevice`], a device that is not up [`RoutesError::DeviceDown`], an
    /// empty list [`RoutesError::NoPrefixes`], a route of somebody else where one of ours
    /// must go [`RoutesError::ForeignRoute`].
    pub async fn apply(&self, dev: &str, prefixes: &[IpNet]) -> Result<ApplyReport, RoutesError> {
        let prefixes = plan::validate_prefixes(prefixes)?;
        let families = plan::families(&prefixes);
        if let Some(v6) = prefixes.iter().find(|p| p.addr().is_ipv6()) {
            if !sysctl::ipv6_available() {
                return Err(RoutesError::Ipv6Unavailable(*v6));
            }
        }
        let mut nl = Rtnl::connect()?;
        let (oif, up) = nl.link(dev).await?;
        if !up {
            // The kernel refuses routes through a down device, and by then the sysctls and
            // nftables table would already be in place: refuse before changing anything.
            return Err(RoutesError::DeviceDown(dev.to_owned()));
        }
        let table = self.config.table();

        // Plan everything first, so a conflict is reported before anything changes.
        let rules = self.our_rules(&mut nl).await?;
        let observed: Vec<ObservedRule> = rules.iter().map(|(o, _)| o.clone()).collect();
        let wanted = WantedRule::for_families(&self.config, &families);
        let rule_plan = plan::plan_rules(&observed, &wanted, &self.config, self.protocol);
        let routes = self.table_routes(&mut nl).await?;
        let observed: Vec<ObservedRoute> = routes.iter().map(|(o, _)| o.clone()).collect();
        let route_plan = plan::plan_routes(&observed, &prefixes, oif, table, self.protocol)?;

        let mut report = ApplyReport {
            conntrack_table: self.conntrack_table(),
            ..Default::default()
        };
        let mut keys: Vec<(&str, &str)> = sysctl::IPV4.to_vec();
        if sysctl::ipv6_available() {
            keys.extend(sysctl::IPV6);
        }
        for (key, value) in keys {
            report.sysctls.push(sysctl::set(key, value)?);
        }
        nft::install(
            &report.conntrack_table,
            self.config.mark(),
            self.config.mask(),
        )
        .await?;

        // Routes before rules: when the rules appear, the table is already complete.
        for i in route_plan.delete {
            let (o, m) = &routes[i];
            let op = format!("deleting stale route {} table {table}", o.prefix);
            nl.del_route(m.clone(), &op).await?;
            report.routes_removed += 1;
        }
        for prefix in &route_plan.add {
            let op = format!("adding route {prefix} dev {dev} table {table}");
            nl.add_route(plan::route_message(prefix, oif, table, self.protocol), &op)
                .await?;
            report.routes_added += 1;
        }
        for i in rule_plan.delete {
            let (o, m) = &rules[i];
            let op = format!("deleting stale {} rule priority {}", o.family, o.priority);
            nl.del_rule(m.clone(), &op).await?;
            report.rules_removed += 1;
        }
        for w in &rule_plan.add {
            let op = format!("adding rule priority {}", w.priority());
            nl.add_rule(w.message(self.protocol), &op).await?;
            report.rules_added += 1;
        }
        tracing::debug!(?report, "tunnel routes applied");
        Ok(report)
    }

    /// Deletes our rules, our routes in our table and the nftables table; nothing else.
    /// Nothing installed is not an error. Sysctls are left as they are: other programs may
    /// rely on them, and the values from before `apply` are in its report.
    pub async fn remove(&self) -> Result<RemoveReport, RoutesError> {
        let mut nl = Rtnl::connect()?;
        let mut report = RemoveReport::default();
        for (o, m) in self.our_rules(&mut nl).await? {
            let op = format!("deleting {} rule priority {}", o.family, o.priority);
            nl.del_rule(m, &op).await?;
            report.rules_removed += 1;
        }
        for (o, m) in self.table_routes(&mut nl).await? {
            if o.protocol != self.protocol {
                continue;
            }
            let op = format!("deleting route {} table {}", o.prefix, o.table);
            nl.del_route(m, &op).await?;
            report.routes_removed += 1;
        }
        let table = self.conntrack_table();
        if nft::exists(&table).await? {
            nft::remove(&table).await?;
            report.conntrack_table_removed = true;
        }
        Ok(report)
    }

    /// What is installed now: our rules, our routes, the nftables table.
    pub async fn show(&self) -> Result<RoutesState, RoutesError> {
        let mut nl = Rtnl::connect()?;
        let mut state = RoutesState::default();
        for (o, _) in self.our_rules(&mut nl).await? {
            state.rules.push(InstalledRule {
                priority: o.priority,
                family: o.family,
                selector: o.selector(),
                table: o.table,
            });
        }
        for (o, _) in self.table_routes(&mut nl).await? {
            if o.protocol != self.protocol {
                continue;
            }
            let device = match o.oif {
                Some(i) => nl.link_name(i).await.ok(),
                None => None,
            };
            state.routes.push(InstalledRoute {
                prefix: o.prefix,
                device,
                device_index: o.oif,
                table: o.table,
            });
        }
        let table = self.conntrack_table();
        state.conntrack_table = nft::exists(&table).await?.then_some(table);
        Ok(state)
    }

    /// Our rules (tag, and our priorities or table), both families, sorted by priority.
    async fn our_rules(
        &self,
        nl: &mut Rtnl,
    ) -> Result<Vec<(ObservedRule, netlink_packet_route::rule::RuleMessage)>, RoutesError> {
        let mut out = Vec::new();
        for af in [AddressFamily::Inet, AddressFamily::Inet6] {
            for m in nl.dump_rules(af).await? {
                if let Some(o) = ObservedRule::from_message(&m) {
                    if plan::is_our_rule(&o, &self.config, self.protocol) {
                        out.push((o, m));
                    }
                }
            }
        }
        out.sort_by_key(|(o, _)| (o.priority, o.family));
        Ok(out)
    }

    /// Every route in our table (ours and foreign), both families.
    async fn table_routes(
        &self,
        nl: &mut Rtnl,
    ) -> Result<Vec<(ObservedRoute, netlink_packet_route::route::RouteMessage)>, RoutesError> {
        let mut out = Vec::new();
        for af in [AddressFamily::Inet, AddressFamily::Inet6] {
            for m in nl.dump_routes(af).await? {
                if let Some(o) = ObservedRoute::from_message(&m) {
                    if o.table == self.config.table() {
                        out.push((o, m));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_tags_are_refused() {
        let r = TunnelRoutes::new(GuardConfig::default());
        assert_eq!(r.protocol(), LOOPGUARD_PROTOCOL);
        assert!(matches!(
            r.clone().with_protocol(4),
            Err(RoutesError::ReservedProtocol(4))
        ));
        assert_eq!(r.with_protocol(77).unwrap().protocol(), 77);
    }

    #[test]
    fn the_conntrack_table_is_named_after_the_routing_table() {
        let c = GuardConfig::new(1, 1, 1234, 100).unwrap();
        assert_eq!(TunnelRoutes::new(c).conntrack_table(), "loopguard_1234");
    }
}
