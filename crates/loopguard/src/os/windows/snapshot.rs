//! [`IpHelper`]: the live [`HostTables`] from the IP Helper API.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use windows_sys::Win32::Foundation::{ERROR_NOT_FOUND, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetBestRoute2, GetIpForwardTable2, GetIpInterfaceEntry, GetUnicastIpAddressTable,
    MIB_IPFORWARD_ROW2, MIB_IPFORWARD_TABLE2, MIB_IPINTERFACE_ROW, MIB_UNICASTIPADDRESS_ROW,
    MIB_UNICASTIPADDRESS_TABLE,
};
use windows_sys::Win32::NetworkManagement::Ndis::NET_LUID_LH;
use windows_sys::Win32::Networking::WinSock::{
    ADDRESS_FAMILY, AF_INET, AF_INET6, AF_UNSPEC, SOCKADDR_INET,
};

use super::adapters::{adapters, Adapter};
use super::mib::{from_sockaddr_inet, to_sockaddr_inet, win32, MibTable};
use super::wine;
use crate::os::best_route::HostSnapshot;
use crate::os::mib_rows::mib_rows;
use crate::route::{
    AddressState, HostTables, Interface, Luid, PrefixOrigin, Route, SuffixOrigin, UnicastAddress,
};

/// Reads the host's routing state with the IP Helper API: adapters (`GetAdaptersAddresses`),
/// interface metrics (`GetIpInterfaceEntry`), routes (`GetIpForwardTable2`) and unicast
/// addresses (`GetUnicastIpAddressTable`); asks `GetBestRoute2`, restricted to the chosen
/// interface, for the source Windows itself would use.
///
/// Under Wine, which lacks `GetIpInterfaceEntry` (calling it kills the process), the
/// interface metrics come from the adapter list (`Ipv4Metric`, `Ipv6Metric`) instead.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpHelper {
    _private: (),
}

impl IpHelper {
    /// The live host.
    pub fn new() -> Self {
        IpHelper { _private: () }
    }
}

impl HostSnapshot for IpHelper {
    fn snapshot(&self) -> io::Result<HostTables> {
        let interfaces = adapters()?.iter().map(interface).collect();
        Ok(HostTables {
            interfaces,
            routes: routes()?,
            addresses: Some(unicast_addresses()?),
        })
    }

    fn best_source(
        &self,
        interface: &Interface,
        destination: IpAddr,
    ) -> io::Result<Option<IpAddr>> {
        best_source(interface.luid, destination).map(Some)
    }
}

/// An adapter with its metric per family: `GetIpInterfaceEntry` on a zeroed row (not
/// `InitializeIpInterfaceEntry`, which Wine lacks); `ERROR_NOT_FOUND` there means the family
/// is not enabled.
fn interface(a: &Adapter) -> Interface {
    let metric = |family: ADDRESS_FAMILY| -> Option<u32> {
        let enabled_in_list = if family == AF_INET {
            a.index != 0
        } else {
            a.ipv6_index != 0
        };
        let listed = if family == AF_INET {
            a.ipv4_metric
        } else {
            a.ipv6_metric
        };
        if wine::is_wine() {
            return enabled_in_list.then_some(listed);
        }
        match ip_interface_metric(a.luid, family) {
            Ok(metric) => metric,
            Err(e) => {
                tracing::debug!(luid = %a.luid, error = %e, "GetIpInterfaceEntry failed; using the adapter list's metric");
                enabled_in_list.then_some(listed)
            }
        }
    };
    Interface {
        luid: a.luid,
        index: a.index,
        alias: a.alias.clone(),
        status: a.status,
        ipv4_metric: metric(AF_INET),
        ipv6_metric: metric(AF_INET6),
    }
}

/// `MIB_IPINTERFACE_ROW.Metric` of `luid` for `family`; `Ok(None)` when the family is not
/// enabled there. Never call under Wine.
pub(super) fn ip_interface_metric(luid: Luid, family: ADDRESS_FAMILY) -> io::Result<Option<u32>> {
    let mut row = MIB_IPINTERFACE_ROW {
        Family: family,
        InterfaceLuid: NET_LUID_LH { Value: luid.0 },
        ..Default::default()
    };
    // SAFETY: a zeroed row with its key (family, LUID) set, as the API reads it.
    match unsafe { GetIpInterfaceEntry(&mut row) } {
        NO_ERROR => Ok(Some(row.Metric)),
        ERROR_NOT_FOUND => Ok(None),
        other => Err(win32("GetIpInterfaceEntry", other)),
    }
}

/// The forwarding table of both families. Each family is read on its own: Wine has IPv4
/// only, and a host without IPv6 is normal, so an IPv6 failure leaves IPv6 empty.
fn routes() -> io::Result<Vec<Route>> {
    let mut out = forward_table(AF_INET)?;
    match forward_table(AF_INET6) {
        Ok(v6) => out.extend(v6),
        Err(e) => tracing::debug!(error = %e, "no IPv6 forwarding table"),
    }
    Ok(out)
}

fn forward_table(family: ADDRESS_FAMILY) -> io::Result<Vec<Route>> {
    let mut table: *mut MIB_IPFORWARD_TABLE2 = std::ptr::null_mut();
    // SAFETY: the API allocates the table and stores it in `table`.
    let rc = unsafe { GetIpForwardTable2(family, &mut table) };
    let table = MibTable(table);
    if rc != NO_ERROR {
        return Err(win32("GetIpForwardTable2", rc));
    }
    if table.0.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: a table the API returned, alive until `table` drops at the end of this function.
    let rows: &[MIB_IPFORWARD_ROW2] = unsafe { mib_rows!(table.0) };
    Ok(rows.iter().filter_map(route).collect())
}

fn route(row: &MIB_IPFORWARD_ROW2) -> Option<Route> {
    let prefix = from_sockaddr_inet(&row.DestinationPrefix.Prefix)?;
    let destination = IpNet::new(prefix, row.DestinationPrefix.PrefixLength).ok()?;
    let next_hop = from_sockaddr_inet(&row.NextHop).filter(|h| !h.is_unspecified());
    Some(Route {
        destination: destination.trunc(),
        next_hop,
        // SAFETY: both union variants are plain integers.
        interface: Luid(unsafe { row.InterfaceLuid.Value }),
        metric: row.Metric,
    })
}

fn unicast_addresses() -> io::Result<Vec<UnicastAddress>> {
    let mut table: *mut MIB_UNICASTIPADDRESS_TABLE = std::ptr::null_mut();
    // SAFETY: the API allocates the table and stores it in `table`.
    let rc = unsafe { GetUnicastIpAddressTable(AF_UNSPEC, &mut table) };
    let table = MibTable(table);
    if rc != NO_ERROR {
        return Err(win32("GetUnicastIpAddressTable", rc));
    }
    if table.0.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: a table the API returned, alive until `table` drops.
    let rows: &[MIB_UNICASTIPADDRESS_ROW] = unsafe { mib_rows!(table.0) };
    Ok(rows
        .iter()
        .filter_map(|row| {
            Some(UnicastAddress {
                address: from_sockaddr_inet(&row.Address)?,
                prefix_length: row.OnLinkPrefixLength,
                // SAFETY: both union variants are plain integers.
                interface: Luid(unsafe { row.InterfaceLuid.Value }),
                state: AddressState::from_number(row.DadState as u64)
                    .unwrap_or(AddressState::Invalid),
                skip_as_source: row.SkipAsSource,
                prefix_origin: PrefixOrigin::from_number(row.PrefixOrigin as u64)
                    .unwrap_or(PrefixOrigin::Other),
                suffix_origin: SuffixOrigin::from_number(row.SuffixOrigin as u64)
                    .unwrap_or(SuffixOrigin::Other),
            })
        })
        .collect())
}

/// The source `GetBestRoute2` picks for `destination` on the interface `luid` only. Wine
/// answers `ERROR_NOT_SUPPORTED` (50); the caller then chooses from the address table.
pub(super) fn best_source(luid: Luid, destination: IpAddr) -> io::Result<IpAddr> {
    let luid = NET_LUID_LH { Value: luid.0 };
    let dst = to_sockaddr_inet(destination);
    let mut row = MIB_IPFORWARD_ROW2::default();
    let mut source = SOCKADDR_INET::default();
    // SAFETY: valid pointers to initialised inputs and writable outputs; no source given.
    let rc = unsafe { GetBestRoute2(&luid, 0, std::ptr::null(), &dst, 0, &mut row, &mut source) };
    if rc != NO_ERROR {
        return Err(win32("GetBestRoute2", rc));
    }
    from_sockaddr_inet(&source).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "GetBestRoute2 gave no source address",
        )
    })
}
