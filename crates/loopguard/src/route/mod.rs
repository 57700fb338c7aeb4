//! The portable route model and the rules that pick, for a destination, the path Windows would
//! take if our tunnel did not exist.
//!
//! Everything here is plain data and pure functions, so the rules are tested on every OS with
//! synthetic tables. The types mirror the Windows IP Helper tables one to one, so a Windows
//! layer fills them without translation:
//!
//! | type | filled from |
//! |---|---|
//! | [`Interface`] | `GetAdaptersAddresses` (LUID, index, alias, `OperStatus`) and `GetIpInterfaceEntry` per family (`Metric`) |
//! | [`Route`] | `GetIpForwardTable2` (`DestinationPrefix`, `NextHop`, `InterfaceLuid`, `Metric`) |
//! | [`UnicastAddress`] | `GetUnicastIpAddressTable` (`Address`, `OnLinkPrefixLength`, `DadState`, `SkipAsSource`, origins) |
//!
//! [`select`] applies the rules and returns a [`Decision`] that keeps every candidate route and
//! why it lost; [`path_for`] is the adapter a Windows [`Strategy`](crate::Strategy) calls from
//! `resolve`. The [`dump`] parsers (feature `route-dumps`) read the same tables from what users
//! paste into bug reports.
//!
//! The other systems' offline models live next to it: [`scoped`] (macOS `netstat -rn`, the
//! route a socket held to one interface with `IP_BOUND_IF` uses) and [`policy`] (Linux policy
//! rules and tables, evaluated in the kernel's order).

#[cfg(feature = "route-dumps")]
#[cfg_attr(docsrs, doc(cfg(feature = "route-dumps")))]
pub mod dump;
pub mod policy;
pub mod scoped;
mod select;
mod source;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

pub use select::{path_for, select, Candidate, Decision, LossReason, Unreachable, Verdict};
pub use source::choose_source;

/// A network interface's locally unique identifier (`NET_LUID`), the identity that survives a
/// rename. Dumps that carry no LUID (PowerShell's and `route print`'s) put the interface index
/// in its place: within one snapshot both are unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Luid(pub u64);

impl fmt::Display for Luid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (`AF_INET`, PowerShell's `2` / `IPv4`).
    V4,
    /// IPv6 (`AF_INET6`, PowerShell's `23` / `IPv6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An interface's operational status (`IF_OPER_STATUS`). Only [`OperStatus::Up`] carries
/// traffic: an unplugged adapter keeps its routes but must never be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperStatus {
    /// `IfOperStatusUp` (1): passes packets.
    Up,
    /// `IfOperStatusDown` (2).
    Down,
    /// `IfOperStatusTesting` (3).
    Testing,
    /// `IfOperStatusUnknown` (4), and any value this crate does not know.
    Unknown,
    /// `IfOperStatusDormant` (5): waiting for an external event (for example a dial-up).
    Dormant,
    /// `IfOperStatusNotPresent` (6): a component is missing.
    NotPresent,
    /// `IfOperStatusLowerLayerDown` (7): the layer below is down (cable unplugged).
    LowerLayerDown,
}

impl OperStatus {
    /// Maps the numeric `IF_OPER_STATUS` of `IP_ADAPTER_ADDRESSES.OperStatus`.
    pub fn from_if_oper_status(value: u32) -> OperStatus {
        match value {
            1 => OperStatus::Up,
            2 => OperStatus::Down,
            3 => OperStatus::Testing,
            5 => OperStatus::Dormant,
            6 => OperStatus::NotPresent,
            7 => OperStatus::LowerLayerDown,
            _ => OperStatus::Unknown,
        }
    }
}

impl fmt::Display for OperStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperStatus::Up => "up",
            OperStatus::Down => "down",
            OperStatus::Testing => "testing",
            OperStatus::Unknown => "unknown",
            OperStatus::Dormant => "dormant",
            OperStatus::NotPresent => "not present",
            OperStatus::LowerLayerDown => "lower layer down",
        })
    }
}

/// One interface: its identity, whether it is up, and its metric for each address family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Identity; the tunnel is recognised by this, never by name.
    pub luid: Luid,
    /// Interface index (`ifIndex`), what sockets are pinned with (`IP_UNICAST_IF`, PKTINFO).
    /// `0` (`NET_IFINDEX_UNSPECIFIED`) when the source of the tables did not say.
    pub index: u32,
    /// Friendly name ("Ethernet", "Wi-Fi"); for display only, since users can rename it.
    pub alias: String,
    /// Operational status.
    pub status: OperStatus,
    /// `MIB_IPINTERFACE_ROW.Metric` for IPv4; `None` when IPv4 is not enabled on it.
    pub ipv4_metric: Option<u32>,
    /// `MIB_IPINTERFACE_ROW.Metric` for IPv6; `None` when IPv6 is not enabled on it.
    pub ipv6_metric: Option<u32>,
}

impl Interface {
    /// The interface metric for `family`, `None` when the family is not enabled here.
    pub fn metric(&self, family: Family) -> Option<u32> {
        match family {
            Family::V4 => self.ipv4_metric,
            Family::V6 => self.ipv6_metric,
        }
    }
}

/// One route of the forwarding table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix; its family is the route's family.
    pub destination: IpNet,
    /// Gateway; `None` for an on-link route (Windows writes `0.0.0.0` / `::` or "On-link").
    pub next_hop: Option<IpAddr>,
    /// The interface the route leaves through.
    pub interface: Luid,
    /// Route metric (`MIB_IPFORWARD_ROW2.Metric`), without the interface metric.
    pub metric: u32,
}

impl Route {
    /// The route's address family.
    pub fn family(&self) -> Family {
        match self.destination {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

/// Duplicate address detection state of a unicast address (`NL_DAD_STATE`, PowerShell's
/// `AddressState`). Only [`AddressState::Preferred`] addresses are used as sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressState {
    /// `Invalid` (0).
    Invalid,
    /// `Tentative` (1): duplicate address detection still running.
    Tentative,
    /// `Duplicate` (2): another host has it.
    Duplicate,
    /// `Deprecated` (3): still valid, but new traffic should not start from it.
    Deprecated,
    /// `Preferred` (4): usable.
    Preferred,
}

impl AddressState {
    /// Maps the numeric `NL_DAD_STATE`; `None` for a value Windows does not define.
    pub fn from_number(value: u64) -> Option<AddressState> {
        Some(match value {
            0 => AddressState::Invalid,
            1 => AddressState::Tentative,
            2 => AddressState::Duplicate,
            3 => AddressState::Deprecated,
            4 => AddressState::Preferred,
            _ => return None,
        })
    }
}

/// Where the host part of an address came from (`NL_SUFFIX_ORIGIN`, PowerShell's
/// `SuffixOrigin`). [`SuffixOrigin::Random`] marks an IPv6 temporary (privacy) address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuffixOrigin {
    /// `Other` (0).
    Other,
    /// `Manual` (1).
    Manual,
    /// `WellKnown` (2), for example `::1`.
    WellKnown,
    /// `Dhcp` (3).
    Dhcp,
    /// `Link` (4): derived from the link-layer address (EUI-64).
    LinkLayerAddress,
    /// `Random` (5): a temporary or opaque random address.
    Random,
}

impl SuffixOrigin {
    /// Maps the numeric `NL_SUFFIX_ORIGIN`; `None` for a value Windows does not define.
    pub fn from_number(value: u64) -> Option<SuffixOrigin> {
        Some(match value {
            0 => SuffixOrigin::Other,
            1 => SuffixOrigin::Manual,
            2 => SuffixOrigin::WellKnown,
            3 => SuffixOrigin::Dhcp,
            4 => SuffixOrigin::LinkLayerAddress,
            5 => SuffixOrigin::Random,
            _ => return None,
        })
    }
}

/// Where the network part of an address came from (`NL_PREFIX_ORIGIN`, PowerShell's
/// `PrefixOrigin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrefixOrigin {
    /// `Other` (0).
    Other,
    /// `Manual` (1).
    Manual,
    /// `WellKnown` (2).
    WellKnown,
    /// `Dhcp` (3).
    Dhcp,
    /// `RouterAdvertisement` (4).
    RouterAdvertisement,
}

impl PrefixOrigin {
    /// Maps the numeric `NL_PREFIX_ORIGIN`; `None` for a value Windows does not define.
    pub fn from_number(value: u64) -> Option<PrefixOrigin> {
        Some(match value {
            0 => PrefixOrigin::Other,
            1 => PrefixOrigin::Manual,
            2 => PrefixOrigin::WellKnown,
            3 => PrefixOrigin::Dhcp,
            4 => PrefixOrigin::RouterAdvertisement,
            _ => return None,
        })
    }
}

/// One unicast address of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnicastAddress {
    /// The address.
    pub address: IpAddr,
    /// On-link prefix length.
    pub prefix_length: u8,
    /// The interface that holds it.
    pub interface: Luid,
    /// Duplicate address detection state.
    pub state: AddressState,
    /// Set by an administrator so the stack never picks this address as a source.
    pub skip_as_source: bool,
    /// Origin of the network part.
    pub prefix_origin: PrefixOrigin,
    /// Origin of the host part; [`SuffixOrigin::Random`] means temporary.
    pub suffix_origin: SuffixOrigin,
}

impl UnicastAddress {
    /// Whether this is an IPv6 temporary (privacy) address, which can rotate away mid-flow.
    pub fn is_temporary(&self) -> bool {
        self.address.is_ipv6() && self.suffix_origin == SuffixOrigin::Random
    }
}

/// A snapshot of a host's routing state: what [`select`] decides on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTables {
    /// All interfaces, including the tunnel's.
    pub interfaces: Vec<Interface>,
    /// The active forwarding table, both families.
    pub routes: Vec<Route>,
    /// All unicast addresses; `None` when the tables came from a dump that does not list them
    /// (the `Get-NetRoute` text table): selection then skips the source rule and leaves
    /// [`Decision::source`] empty. A live snapshot always has `Some`.
    pub addresses: Option<Vec<UnicastAddress>>,
}

impl HostTables {
    /// The interface with this LUID.
    pub fn interface(&self, luid: Luid) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.luid == luid)
    }
}

/// The tunnel's identity: the LUID (or LUIDs, when a text dump splits one adapter by family)
/// whose routes never count, and the name it was found by, if any (so a strategy can find it
/// again after a restart gave it a new LUID).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    luids: Vec<Luid>,
    name: Option<String>,
}

impl Tunnel {
    /// The tunnel with this LUID.
    pub fn new(luid: Luid) -> Tunnel {
        Tunnel {
            luids: vec![luid],
            name: None,
        }
    }

    /// A tunnel made of several LUIDs; none at all means "no tunnel".
    pub fn from_luids(luids: impl IntoIterator<Item = Luid>) -> Tunnel {
        let mut luids: Vec<Luid> = luids.into_iter().collect();
        luids.sort();
        luids.dedup();
        Tunnel { luids, name: None }
    }

    /// What [`find`](Self::find) found the tunnel by (alias, index or address), if it was.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether every LUID of the tunnel is an interface of `host`. A tunnel that is not (it
    /// was deleted, or restarted with a new LUID) cannot be excluded from `host`'s routes:
    /// a strategy must fail closed rather than pick a path. "No tunnel" is always present.
    pub fn is_present_in(&self, host: &HostTables) -> bool {
        self.luids
            .iter()
            .all(|&luid| host.interfaces.iter().any(|i| i.luid == luid))
    }

    /// A readable identity for messages: the name if known, else the LUIDs.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("`{name}`"),
            None => {
                let luids: Vec<String> = self.luids.iter().map(|l| format!("{:#x}", l.0)).collect();
                format!("with LUID {}", luids.join(", "))
            }
        }
    }

    /// Whether `luid` belongs to the tunnel.
    pub fn contains(&self, luid: Luid) -> bool {
        self.luids.contains(&luid)
    }

    /// The tunnel's LUIDs.
    pub fn luids(&self) -> &[Luid] {
        &self.luids
    }

    /// Finds the tunnel in `host` by what a user knows: its alias (case-insensitive, as
    /// Windows compares them), its index, or one of its addresses. The result is a LUID, so a
    /// later rename does not matter.
    pub fn find(host: &HostTables, name: &str) -> Result<Tunnel, TunnelNotFound> {
        let name = name.trim();
        let named = |tunnel: Tunnel| Tunnel {
            name: Some(name.to_owned()),
            ..tunnel
        };
        let by_alias: Vec<Luid> = host
            .interfaces
            .iter()
            .filter(|i| !i.alias.is_empty() && i.alias.eq_ignore_ascii_case(name))
            .map(|i| i.luid)
            .collect();
        if !by_alias.is_empty() {
            return Ok(named(Tunnel::from_luids(by_alias)));
        }
        if let Ok(index) = name.parse::<u32>() {
            let found: Vec<Luid> = host
                .interfaces
                .iter()
                .filter(|i| i.index == index && index != 0)
                .map(|i| i.luid)
                .collect();
            if !found.is_empty() {
                return Ok(named(Tunnel::from_luids(found)));
            }
        }
        if let Ok(address) = name.parse::<IpAddr>() {
            let found: Vec<Luid> = host
                .addresses
                .iter()
                .flatten()
                .filter(|a| a.address == address)
                .map(|a| a.interface)
                .collect();
            if !found.is_empty() {
                return Ok(named(Tunnel::from_luids(found)));
            }
        }
        Err(TunnelNotFound {
            name: name.to_owned(),
        })
    }
}

/// No interface has the alias, index or address the tunnel was named by.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no interface is called `{name}` (looked for an alias, an index and an address)")]
pub struct TunnelNotFound {
    /// What the tunnel was named by.
    pub name: String,
}
