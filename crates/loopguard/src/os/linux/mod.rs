//! Linux, two strategies:
//! - [`LinuxMark`]: `SO_MARK` on every socket, and policy rules that send unmarked traffic to
//!   the tunnel's own table (installed by [`TunnelRoutes`], feature `linux-routes`, or by
//!   tooling of your own);
//! - [`PinOutside`]: no marks and no policy rules; each destination's best route outside
//!   the tunnel is chosen from the `main` table read over netlink ([`NetlinkHost`]), then
//!   datagrams carry that interface in their packet info and streams are bound to it
//!   ([`BindToDevice`]).

mod config;
mod error;
mod mark;
mod netlink_host;
mod pin;
mod route_get;
mod route_resolver;
#[cfg(feature = "linux-routes")]
pub(crate) mod routes;
mod rtnl;
pub(crate) mod udp_send;

pub use config::{ConfigError, GuardConfig, GuardConfigBuilder};
pub use error::RoutesError;
pub use mark::LinuxMark;
pub use netlink_host::NetlinkHost;
pub use pin::{BindToDevice, PinOutside, PinOutsideError};
pub use route_get::{route_get, KernelRoute};
pub use route_resolver::RouteResolver;
#[cfg(feature = "linux-routes")]
#[cfg_attr(docsrs, doc(cfg(feature = "linux-routes")))]
pub use routes::{
    restore_sysctls, ApplyReport, DoctorReport, Finding, InstalledRoute, InstalledRule, OtherRule,
    Owner, PathCheck, PathEnd, Piece, RemoveReport, RoutesGuard, RoutesState, Severity,
    SysctlChange, TunnelRoutes, LOOPGUARD_PROTOCOL,
};
pub(crate) use rtnl::Rtnl;
pub use rtnl::{interface_index, interface_name};
