//! What can go wrong while installing, removing or looking up routes.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;

/// Why [`TunnelRoutes`](super::TunnelRoutes) or [`route_get`](crate::os::linux::route_get)
/// failed. Every variant names what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoutesError {
    /// No network device has this name (in the current network namespace).
    #[error("no network device named {0:?}")]
    NoSuchDevice(String),
    /// The device exists but is not up; the kernel refuses routes through it.
    #[error("network device {0:?} is down: bring it up (ip link set {0} up) before adding routes")]
    DeviceDown(String),
    /// No network device has this index.
    #[error("no network device with index {0}")]
    NoSuchDeviceIndex(u32),
    /// A device name the kernel could never accept (empty, too long, or with `/`, spaces or
    /// NUL).
    #[error("invalid device name {0:?}: names are 1 to 15 bytes without '/', spaces or NUL")]
    BadDeviceName(String),
    /// `apply` was given no prefix: a tunnel without routes protects nothing.
    #[error("no prefixes given: the tunnel needs at least one route")]
    NoPrefixes,
    /// A prefix with bits set after its length, such as `192.0.2.1/24`; the kernel refuses
    /// those for IPv4, and guessing what was meant is worse than asking.
    #[error("prefix {prefix} has host bits set; did you mean {}?", prefix.trunc())]
    HostBitsSet {
        /// The prefix as given.
        prefix: IpNet,
    },
    /// The tunnel's table already holds a route for this prefix that loopguard did not
    /// create; it is never replaced or deleted.
    #[error(
        "table {table} already holds a route to {prefix} that loopguard did not create \
         (protocol {protocol}); remove it or choose another table"
    )]
    ForeignRoute {
        /// The prefix.
        prefix: IpNet,
        /// The tunnel's table.
        table: u32,
        /// The route protocol (tag) of the foreign route.
        protocol: u8,
    },
    /// IPv6 is disabled in this network namespace, but IPv6 prefixes were given.
    #[error("IPv6 is disabled here (no /proc/sys/net/ipv6), cannot route {0}")]
    Ipv6Unavailable(IpNet),
    /// Another loopguard configuration (another table) holds one of this configuration's
    /// priorities: the two would delete each other's rules. Nothing was changed.
    #[error(
        "nothing changed: priority {priority} is held by another loopguard configuration \
         (table {table}: {rule}); choose another priority, or remove that configuration first \
         (loopguard routes remove --table {table} with its priority)"
    )]
    PriorityTaken {
        /// The priority.
        priority: u32,
        /// The other configuration's table.
        table: u32,
        /// Its rule, as `ip rule` prints it.
        rule: String,
    },
    /// Another keeper already keeps this configuration (its table) in this network
    /// namespace: two would fight over every restore, and stopping one would remove what the
    /// other keeps.
    #[error(
        "another loopguard keeper{} already keeps table {table} in this network namespace \
         (lock {lock}): stop it first",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyKept {
        /// The table.
        table: u32,
        /// The holder's process id, when it could be read.
        pid: Option<u32>,
        /// The lock: an abstract Unix socket name, `@loopguard-keeper-table-N`.
        lock: String,
    },
    /// An nftables table of the name loopguard uses exists but was not created by
    /// loopguard (it lacks the comment `loopguard`, or a process owns it): it is never
    /// replaced or deleted.
    #[error(
        "nftables table inet {table} belongs to another program ({}): loopguard neither \
         replaces nor deletes it; choose another table, or delete it if it is a leftover \
         (nft delete table inet {table})",
        match (comment, owner) {
            (_, Some(p)) => format!("owned by netlink port {p}"),
            (Some(c), None) => format!("comment {c:?}"),
            (None, None) => "no loopguard comment".to_owned(),
        }
    )]
    ForeignConntrackTable {
        /// The table's name.
        table: String,
        /// Its comment, if any.
        comment: Option<String>,
        /// The netlink port id owning it, if owned.
        owner: Option<u32>,
    },
    /// IPv6 is disabled on the tunnel's device (`net.ipv6.conf.DEV.disable_ipv6=1`): the
    /// kernel has dropped its IPv6 routes and refuses new ones.
    #[error(
        "IPv6 is disabled on network device {0:?} (net.ipv6.conf.{0}.disable_ipv6=1, or \
         net.ipv6.conf.all.disable_ipv6=1 for every device): the kernel refuses its IPv6 routes"
    )]
    Ipv6DisabledOnDevice(String),
    /// The operation needs `CAP_NET_ADMIN`, which this process lacks.
    #[error("{operation}: permission denied: this needs CAP_NET_ADMIN (run as root)")]
    PermissionDenied {
        /// What was being done, e.g. `adding rule priority 32001`.
        operation: String,
    },
    /// The kernel refused a netlink request.
    #[error("{operation}")]
    Netlink {
        /// What was being done, e.g. `adding rule priority 32001`.
        operation: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Reading or writing a sysctl failed.
    #[error("sysctl {key}")]
    Sysctl {
        /// The sysctl, e.g. `net.ipv4.fwmark_reflect`.
        key: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The kernel has no route to the destination.
    #[error("{destination} is unreachable: {reason}")]
    Unreachable {
        /// The destination looked up.
        destination: IpAddr,
        /// The kernel's reason, e.g. `Network is unreachable (os error 101)`.
        reason: String,
    },
    /// A tag (protocol number) owned by the kernel or a well-known routing daemon.
    #[error("protocol {0} belongs to the kernel or a routing daemon; choose another tag")]
    ReservedProtocol(u8),
    /// The rules would not capture unmarked traffic at these priorities (found before
    /// anything changed), for example because an unconditional `lookup main` sits before
    /// them.
    #[error("nothing changed: the priority cannot work: {0}")]
    PriorityCannotWork(String),
    /// After installing, the kernel's rule order does not capture unmarked traffic (another
    /// program added or moved a rule meanwhile). What was installed stays; `remove` deletes
    /// it.
    #[error("the installed rules are out of order: {0}")]
    RuleOrderBroken(String),
    /// After installing, the kernel sends a marked packet into the tunnel: guarded sockets
    /// would loop. The message names the rule and table that captured it. What was installed
    /// stays (unmarked traffic is still captured); `remove` deletes it.
    #[error("{0}")]
    MarkedEntersTunnel(String),
    /// A netlink call was made outside a tokio runtime.
    #[error("{0}: must be called from inside a tokio runtime")]
    NoRuntime(&'static str),
}

impl RoutesError {
    /// Wraps an OS error from `operation`, turning a permission failure into
    /// [`RoutesError::PermissionDenied`].
    pub(crate) fn os(operation: impl Into<String>, source: io::Error) -> Self {
        let operation = operation.into();
        match source.raw_os_error() {
            // Only EPERM means a missing capability: netlink answers EACCES for other
            // refusals (an IPv6 route on a device with IPv6 disabled).
            Some(libc::EPERM) => RoutesError::PermissionDenied { operation },
            _ => RoutesError::Netlink { operation, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation_and_the_capability() {
        let e = RoutesError::os(
            "adding rule priority 32001",
            io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        );
        // The kernel's answer is the source, not repeated in the message.
        assert_eq!(e.to_string(), "adding rule priority 32001");
        let source = std::error::Error::source(&e).expect("the kernel's answer");
        assert!(source.to_string().starts_with("Operation not supported"));
        let e = RoutesError::os("adding route", io::Error::from_raw_os_error(libc::EPERM));
        assert!(matches!(e, RoutesError::PermissionDenied { .. }));
        assert!(e.to_string().contains("CAP_NET_ADMIN"));
        let e = RoutesError::HostBitsSet {
            prefix: "192.0.2.1/24".parse().unwrap(),
        };
        assert!(e.to_string().contains("192.0.2.0/24"));
    }
}
