//! Linux, two strategies:
//! - [`LinuxMark`]: `SO_MARK` on every socket, and policy rules that send unmarked traffic to
//!   the tunnel's own table;
//! - [`PinOutside`]: no marks and no policy rules; each destination's best route outside
//!   the tunnel is chosen from the `main` table read over netlink ([`NetlinkHost`]), then
//!   datagrams carry that interface in their packet info and streams are bound to it
//!   ([`BindToDevice`]).

mod config;
mod mark;
mod netlink_host;
mod pin;
mod route_get;
mod route_resolver;
pub(crate) mod routes;
pub(crate) mod udp_send;

pub use config::{ConfigError, GuardConfig, GuardConfigBuilder};
pub use mark::LinuxMark;
pub use netlink_host::NetlinkHost;
pub use pin::{BindToDevice, PinOutside, PinOutsideError};
pub use route_get::{route_get, KernelRoute};
pub use route_resolver::RouteResolver;
pub use routes::{
    interface_index, interface_name, restore_sysctls, ApplyReport, DoctorReport, Family, Finding,
    InstalledRoute, InstalledRule, OtherRule, Owner, PathCheck, PathEnd, Piece, RemoveReport,
    RoutesError, RoutesGuard, RoutesState, Severity, SysctlChange, TunnelRoutes,
    LOOPGUARD_PROTOCOL,
};
