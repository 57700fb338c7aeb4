//! [`TunnelRoutes`]: a tunnel's routes in their own table, the policy rules that send only
//! unmarked traffic there, and what strict reverse-path filtering needs, all over netlink.

mod check;
mod doctor;
mod guard;
// The keeper (`crate::keeper`) takes the lock and drives the repairs from above.
pub(crate) mod lock;
mod nft;
mod plan;
pub(crate) mod repair;
mod sysctl;

use ipnet::IpNet;
use netlink_packet_route::AddressFamily;

pub use check::{Finding, PathCheck, PathEnd, Severity};
pub use doctor::{DoctorReport, Owner};
pub use guard::RoutesGuard;
pub use repair::Piece;
pub use sysctl::{restore_sysctls, SysctlChange};

pub(crate) use super::rtnl::Rtnl;
use super::GuardConfig;
pub use super::RoutesError;
use crate::route::Family;
use plan::{ObservedRoute, ObservedRule, WantedRule};

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
    /// A last-resort `unreachable` route (no device, highest metric): what keeps unmarked
    /// traffic for the tunnel out of `main` once the tunnel's device is gone.
    pub terminal: bool,
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
    /// Other programs' rules, in the kernel's order (the kernel's own `local`, `main` and
    /// `default` rules left out).
    pub other_rules: Vec<OtherRule>,
}

/// A policy rule that is not loopguard's, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherRule {
    /// The rule's priority.
    pub priority: u32,
    /// Its address family.
    pub family: Family,
    /// Selector and action as `ip rule` prints them.
    pub selector: String,
    /// The table it looks up.
    pub table: u32,
    /// The program recognised by its numbers, if any.
    pub owner: Option<Owner>,
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
    /// Where the kernel sends a marked and an unmarked packet, per family, checked after
    /// installing (`RTM_GETROUTE` with and without the mark).
    pub paths: Vec<PathCheck>,
    /// What the check found that is not an error (errors fail `apply`): marked traffic
    /// leaving by another program's table, unmarked traffic not entering the tunnel.
    pub findings: Vec<Finding>,
}

/// What [`TunnelRoutes::remove`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveReport {
    /// Rules deleted.
    pub rules_removed: usize,
    /// Routes deleted.
    pub routes_removed: usize,
    /// Whether the nftables table existed and was deleted (for [`TunnelRoutes::remove_all`]:
    /// whether any was).
    pub conntrack_table_removed: bool,
    /// The nftables tables (family `inet`) deleted.
    pub conntrack_tables: Vec<String>,
}

/// A tunnel's routes in table `config.table()`, reached through the rules
/// `priority: lookup main suppress_prefixlength 0` and
/// `priority + 1: not fwmark MARK/MASK lookup TABLE`, for each address family that has
/// prefixes.
///
/// The table also holds, per prefix, a last-resort `unreachable` route with the highest
/// metric (4294967295) and no device (`unreachable default` for `0.0.0.0/0` and `::/0`).
/// The kernel deletes every route through a device with the device, so when a client's
/// non-persistent TUN disappears with its process (a crash, SIGKILL) the table would
/// otherwise be empty and `not fwmark ... lookup TABLE` would fall through to `main`:
/// unmarked traffic for the tunnel would leave in the clear. With the last-resort routes it
/// is refused (`ENETUNREACH`) for as long as the rules exist; destinations outside the
/// prefixes (a split tunnel) still fall through to `main`.
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
    /// Idempotent, and everything or nothing: when a step fails while installing, what this
    /// call added (routes, rules, the nftables table) is removed again and the sysctls it set
    /// are put back, if nobody changed them since; stale leftovers it deleted stay deleted.
    /// Input is checked before anything changes: an unknown device is
    /// [`RoutesError::NoSuchDevice`], a device that is not up [`RoutesError::DeviceDown`], an
    /// empty list [`RoutesError::NoPrefixes`], a route of somebody else where one of ours
    /// must go [`RoutesError::ForeignRoute`], a priority whose rules would come after an
    /// unconditional `lookup main` [`RoutesError::PriorityCannotWork`].
    ///
    /// After installing it checks its work: the kernel's rule order
    /// ([`RoutesError::RuleOrderBroken`]), then, per family, where a marked and an unmarked
    /// packet to an address inside the prefixes go (`RTM_GETROUTE`, in
    /// [`ApplyReport::paths`]). A marked packet entering `dev` is
    /// [`RoutesError::MarkedEntersTunnel`], naming the rule and table that captured it;
    /// traffic leaving by another program's table is a warning in
    /// [`ApplyReport::findings`].
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
        if prefixes.iter().any(|p| p.addr().is_ipv6()) && repair::ipv6_disabled_on(dev) {
            // The kernel would refuse the IPv6 routes (EACCES) after the IPv4 ones, the
            // sysctls and the nftables table were in place: refuse before changing anything.
            return Err(RoutesError::Ipv6DisabledOnDevice(dev.to_owned()));
        }
        let table = self.config.table();

        // Plan everything first, so a conflict is reported before anything changes.
        let all = self.all_rules(&mut nl).await?;
        if let Some(other) = plan::priority_holder(&all, &self.config, self.protocol) {
            return Err(RoutesError::PriorityTaken {
                priority: other.priority,
                table: other.table,
                rule: other.selector(),
            });
        }
        // Somebody else's table of our name is never replaced; whether it is there at all
        // decides what a failed run removes again.
        let conntrack_table_created = match nft::state(&self.conntrack_table()).await? {
            nft::TableState::Foreign(info) => {
                return Err(nft::foreign(&self.conntrack_table(), info))
            }
            state => state == nft::TableState::Absent,
        };
        let rules = self.our_rules(&mut nl).await?;
        let observed: Vec<ObservedRule> = rules.iter().map(|(o, _)| o.clone()).collect();
        let wanted = WantedRule::for_families(&self.config, &families);
        let rule_plan = plan::plan_rules(&observed, &wanted, &self.config, self.protocol);
        let routes = self.table_routes(&mut nl).await?;
        let observed: Vec<ObservedRoute> = routes.iter().map(|(o, _)| o.clone()).collect();
        let route_plan = plan::plan_routes(&observed, &prefixes, oif, table, self.protocol)?;
        // Refuse priorities that cannot capture, in the order the kernel would have.
        let stale: Vec<&ObservedRule> = rule_plan.delete.iter().map(|&i| &rules[i].0).collect();
        let kept: Vec<ObservedRule> = all.iter().filter(|r| !stale.contains(r)).cloned().collect();
        let future = plan::order_after_adding(&kept, &rule_plan.add, self.protocol);
        for family in &families {
            let w = WantedRule::for_families(&self.config, &[*family]);
            if let Some(problem) = plan::order_problem(&future, &w, self.protocol) {
                return Err(RoutesError::PriorityCannotWork(problem));
            }
        }

        let mut report = ApplyReport {
            conntrack_table: self.conntrack_table(),
            ..Default::default()
        };
        // Everything or nothing: what this run adds is recorded, and removed again if a
        // later step fails (what it deleted as stale stays deleted).
        let mut undo = Undo {
            conntrack_table_created,
            ..Undo::default()
        };
        let installed: Result<(), RoutesError> = async {
            for (key, value) in sysctl::wanted() {
                report.sysctls.push(sysctl::set(key, value)?);
            }
            nft::install(
                &report.conntrack_table,
                self.config.mark(),
                self.config.mask(),
            )
            .await?;
            // Routes before rules: when the rules appear, the table is already complete.
            // New routes before stale ones go: moving the tunnel to another device never
            // leaves a prefix without a route (it would fall through to `main` meanwhile).
            let (added, removed) = install_routes(
                &mut nl,
                &routes,
                &route_plan,
                RouteTarget {
                    dev,
                    oif,
                    table,
                    protocol: self.protocol,
                },
                &mut undo.routes,
            )
            .await?;
            report.routes_added += added;
            report.routes_removed += removed;
            let (added, removed) = self
                .install_rules(&mut nl, &rules, &rule_plan, &mut undo.rules)
                .await?;
            report.rules_added += added;
            report.rules_removed += removed;
            Ok(())
        }
        .await;
        if let Err(e) = installed {
            self.roll_back(&mut nl, undo, &report).await;
            return Err(e);
        }
        // Check the work: the real rule order, then where packets really go.
        let all = self.all_rules(&mut nl).await?;
        for family in &families {
            let w = WantedRule::for_families(&self.config, &[*family]);
            if let Some(problem) = plan::order_problem(&all, &w, self.protocol) {
                return Err(RoutesError::RuleOrderBroken(problem));
            }
        }
        for family in &families {
            let Some(dst) = check::probe_destination(&prefixes, *family) else {
                continue;
            };
            let path = PathCheck {
                family: *family,
                destination: dst,
                mark: self.config.mark(),
                marked: path_end(&mut nl, dst, Some(self.config.mark())).await?,
                unmarked: path_end(&mut nl, dst, None).await?,
            };
            let findings = check::judge(&path, dev, oif, table, &all);
            if let Some(e) = findings.iter().find(|f| f.severity == Severity::Error) {
                return Err(RoutesError::MarkedEntersTunnel(e.message.clone()));
            }
            report.findings.extend(findings);
            report.paths.push(path);
        }
        tracing::debug!(?report, "tunnel routes applied");
        Ok(report)
    }

    /// A live check of this namespace's policy routing as it concerns sockets guarded with
    /// this configuration: other programs' rules it recognises, rules that capture marked
    /// traffic, loopguard's rule order and routes, strict `rp_filter` without
    /// `src_valid_mark`, mark collisions, and where a marked and an unmarked packet go for
    /// each family (judged against `tunnel` when given). Changes nothing.
    pub async fn doctor(&self, tunnel: Option<&str>) -> Result<DoctorReport, RoutesError> {
        let mut nl = Rtnl::connect()?;
        let tunnel = match tunnel {
            Some(name) => Some((name.to_owned(), nl.link(name).await?.0)),
            None => None,
        };
        let mut inputs = doctor::Inputs {
            rules: self.all_rules(&mut nl).await?,
            tunnel,
            ..Default::default()
        };
        for af in [AddressFamily::Inet, AddressFamily::Inet6] {
            inputs.routes.extend(
                nl.dump_routes(af)
                    .await?
                    .iter()
                    .filter_map(ObservedRoute::from_message),
            );
        }
        let all = sysctl::read("net.ipv4.conf.all.rp_filter")?
            .parse()
            .unwrap_or(0);
        let mut interfaces = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc/sys/net/ipv4/conf") {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = format!("net.ipv4.conf.{name}.rp_filter");
                if let Ok(v) = sysctl::read(&key) {
                    interfaces.push((name, v.parse().unwrap_or(0)));
                }
            }
        }
        interfaces.sort();
        inputs.rp_filter = doctor::strict_interface(all, &interfaces);
        inputs.src_valid_mark = sysctl::read("net.ipv4.conf.all.src_valid_mark")?
            .parse()
            .ok();
        // Look up inside loopguard's own prefixes when it has some, else anywhere.
        let mut prefixes: Vec<IpNet> = inputs
            .routes
            .iter()
            .filter(|r| r.table == self.config.table() && r.protocol == self.protocol)
            .map(|r| r.prefix)
            .collect();
        prefixes.sort_by_key(|p| p.prefix_len());
        prefixes.extend([
            "0.0.0.0/0".parse::<IpNet>().unwrap(),
            "::/0".parse().unwrap(),
        ]);
        let mut families = vec![Family::V4];
        if sysctl::ipv6_available() {
            families.push(Family::V6);
        }
        for family in families {
            let Some(dst) = check::probe_destination(&prefixes, family) else {
                continue;
            };
            inputs.paths.push(PathCheck {
                family,
                destination: dst,
                mark: self.config.mark(),
                marked: path_end(&mut nl, dst, Some(self.config.mark())).await?,
                unmarked: path_end(&mut nl, dst, None).await?,
            });
        }
        Ok(doctor::diagnose(&inputs, &self.config, self.protocol))
    }

    /// Every rule of both families, in the order the kernel evaluates them.
    async fn all_rules(&self, nl: &mut Rtnl) -> Result<Vec<ObservedRule>, RoutesError> {
        let mut out = Vec::new();
        for af in [AddressFamily::Inet, AddressFamily::Inet6] {
            out.extend(
                nl.dump_rules(af)
                    .await?
                    .iter()
                    .filter_map(ObservedRule::from_message),
            );
        }
        Ok(out)
    }

    /// Deletes our rules, our routes in our table and the nftables table; nothing else.
    /// Nothing installed is not an error. Sysctls are left as they are: other programs may
    /// rely on them; the values from before `apply` are in its report, and
    /// [`restore_sysctls`] puts them back on request.
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
        // Only ours: a table of this name without loopguard's comment is somebody else's.
        if nft::state(&table).await? == nft::TableState::Ours {
            nft::remove(&table).await?;
            report.conntrack_table_removed = true;
            report.conntrack_tables.push(table);
        }
        Ok(report)
    }

    /// Deletes everything loopguard installed, whatever configuration installed it: every
    /// rule and every route (in any table) carrying this tag, and every nftables table
    /// `inet loopguard_*`. Nothing else. For a clean-up that does not know which mark, table
    /// or priority was used; [`remove`](Self::remove) deletes one configuration only.
    pub async fn remove_all(&self) -> Result<RemoveReport, RoutesError> {
        let mut nl = Rtnl::connect()?;
        let mut report = RemoveReport::default();
        for af in [AddressFamily::Inet, AddressFamily::Inet6] {
            for m in nl.dump_rules(af).await? {
                let Some(o) = ObservedRule::from_message(&m) else {
                    continue;
                };
                if o.protocol == self.protocol {
                    let op = format!("deleting {} rule priority {}", o.family, o.priority);
                    nl.del_rule(m, &op).await?;
                    report.rules_removed += 1;
                }
            }
            // Rules first: while routes go, no rule points at a half-emptied table.
            for m in nl.dump_routes(af).await? {
                let Some(o) = ObservedRoute::from_message(&m) else {
                    continue;
                };
                if o.protocol == self.protocol {
                    let op = format!("deleting route {} table {}", o.prefix, o.table);
                    nl.del_route(m, &op).await?;
                    report.routes_removed += 1;
                }
            }
        }
        for table in nft::our_tables().await? {
            nft::remove(&table).await?;
            report.conntrack_table_removed = true;
            report.conntrack_tables.push(table);
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
                terminal: o.is_terminal(o.table, self.protocol),
            });
        }
        let table = self.conntrack_table();
        state.conntrack_table =
            (nft::state(&table).await? == nft::TableState::Ours).then_some(table);
        for o in self.all_rules(&mut nl).await? {
            if plan::is_our_rule(&o, &self.config, self.protocol) || plan::is_kernel_default(&o) {
                continue;
            }
            state.other_rules.push(OtherRule {
                priority: o.priority,
                family: o.family,
                selector: o.selector(),
                table: o.table,
                owner: doctor::owner_of(&o),
            });
        }
        Ok(state)
    }

    /// This configuration's rules ([`plan::our_rules_among`]), both families, sorted by
    /// priority.
    async fn our_rules(
        &self,
        nl: &mut Rtnl,
    ) -> Result<Vec<(ObservedRule, netlink_packet_route::rule::RuleMessage)>, RoutesError> {
        let mut all = Vec::new();
        for af in [AddressFamily::Inet, AddressFamily::Inet6] {
            for m in nl.dump_rules(af).await? {
                if let Some(o) = ObservedRule::from_message(&m) {
                    all.push((o, m));
                }
            }
        }
        let observed: Vec<ObservedRule> = all.iter().map(|(o, _)| o.clone()).collect();
        let ours = plan::our_rules_among(&observed, &self.config, self.protocol);
        let mut out: Vec<_> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| ours.contains(i))
            .map(|(_, r)| r)
            .collect();
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

/// Where [`install_routes`] puts the device's routes.
#[derive(Clone, Copy, Debug)]
struct RouteTarget<'a> {
    dev: &'a str,
    oif: u32,
    table: u32,
    protocol: u8,
}

/// What one `apply` added, to remove again if a later step fails.
#[derive(Debug, Default)]
struct Undo {
    routes: Vec<netlink_packet_route::route::RouteMessage>,
    rules: Vec<netlink_packet_route::rule::RuleMessage>,
    /// The nftables table did not exist before.
    conntrack_table_created: bool,
}

impl TunnelRoutes {
    /// Carries out a rule plan: stale rules of ours go, missing ones are added (each pushed
    /// to `added`). Returns how many were added and deleted.
    async fn install_rules(
        &self,
        nl: &mut Rtnl,
        observed: &[(ObservedRule, netlink_packet_route::rule::RuleMessage)],
        plan: &plan::RulePlan,
        added: &mut Vec<netlink_packet_route::rule::RuleMessage>,
    ) -> Result<(usize, usize), RoutesError> {
        for &i in &plan.delete {
            let (o, m) = &observed[i];
            let op = format!("deleting stale {} rule priority {}", o.family, o.priority);
            nl.del_rule(m.clone(), &op).await?;
        }
        for w in &plan.add {
            let op = format!("adding rule priority {}", w.priority());
            nl.add_rule(w.message(self.protocol), &op).await?;
            added.push(w.message(self.protocol));
        }
        Ok((plan.add.len(), plan.delete.len()))
    }

    /// Removes what a failed `apply` added (rules, routes, the nftables table if it created
    /// it) and puts back the sysctls it changed, if nobody changed them since. Best effort:
    /// a step that fails is logged and the others still run.
    async fn roll_back(&self, nl: &mut Rtnl, undo: Undo, report: &ApplyReport) {
        for m in undo.rules.into_iter().rev() {
            if let Err(e) = nl.del_rule(m, "rolling back an added rule").await {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "apply failed and an added rule stays"
                );
            }
        }
        for m in undo.routes.into_iter().rev() {
            if let Err(e) = nl.del_route(m, "rolling back an added route").await {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "apply failed and an added route stays"
                );
            }
        }
        if undo.conntrack_table_created {
            if let Err(e) = nft::remove(&report.conntrack_table).await {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "apply failed and its nftables table stays"
                );
            }
        }
        if let Err(e) = restore_sysctls(&report.sysctls) {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "apply failed and a sysctl it set stays"
            );
        }
    }
}

/// Carries out `plan` on the target's table: last-resort routes first, then the device's
/// routes (beside a stale route of the same prefix when one is being replaced), and only
/// then deletes the stale routes. Every route added is pushed to `added`. Returns how many
/// routes were added and deleted.
async fn install_routes(
    nl: &mut Rtnl,
    observed: &[(ObservedRoute, netlink_packet_route::route::RouteMessage)],
    plan: &plan::RoutePlan,
    target: RouteTarget<'_>,
    added: &mut Vec<netlink_packet_route::route::RouteMessage>,
) -> Result<(usize, usize), RoutesError> {
    let RouteTarget {
        dev,
        oif,
        table,
        protocol,
    } = target;
    let (before, mut removed) = (added.len(), 0);
    for prefix in &plan.add_terminal {
        let op = format!("adding last-resort route unreachable {prefix} table {table}");
        let message = plan::terminal_message(prefix, table, protocol);
        nl.add_route(message.clone(), &op).await?;
        added.push(message);
    }
    let replaced: std::collections::HashSet<IpNet> =
        plan.delete.iter().map(|&i| observed[i].0.prefix).collect();
    for prefix in &plan.add {
        let op = format!("adding route {prefix} dev {dev} table {table}");
        let message = plan::route_message(prefix, oif, table, protocol);
        if replaced.contains(prefix) {
            nl.add_route_beside(message.clone(), &op).await?;
        } else {
            nl.add_route(message.clone(), &op).await?;
        }
        added.push(message);
    }
    for &i in &plan.delete {
        let (o, m) = &observed[i];
        let op = format!("deleting stale route {} table {table}", o.prefix);
        nl.del_route(m.clone(), &op).await?;
        removed += 1;
    }
    Ok((added.len() - before, removed))
}

/// Where the kernel sends a packet to `dst` with `mark`; "no route" is an answer, other
/// failures are errors.
async fn path_end(
    nl: &mut Rtnl,
    dst: std::net::IpAddr,
    mark: Option<u32>,
) -> Result<PathEnd, RoutesError> {
    match super::route_get::lookup(nl, dst, mark).await {
        Ok(r) => Ok(PathEnd {
            interface: r.interface,
            interface_index: r.interface_index,
            table: r.table,
            error: None,
        }),
        Err(RoutesError::Unreachable { reason, .. }) => Ok(PathEnd {
            interface: None,
            interface_index: None,
            table: None,
            error: Some(reason),
        }),
        Err(e) => Err(e),
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
