//! Linux: `SO_MARK` on every socket, and policy rules that send unmarked traffic to the
//! tunnel's own table.

mod config;
mod mark;
mod route_get;
mod route_resolver;
mod routes;

pub use config::{ConfigError, GuardConfig, GuardConfigBuilder};
pub use mark::LinuxMark;
pub use route_get::{route_get, KernelRoute};
pub use route_resolver::RouteResolver;
pub use routes::{
    interface_index, interface_name, restore_sysctls, ApplyReport, DoctorReport, Family, Finding,
    InstalledRoute, InstalledRule, KeepOptions, OtherRule, Owner, PathCheck, PathEnd, RemoveReport,
    RouteKeeper, RoutesError, RoutesGuard, RoutesState, Severity, SysctlChange, TunnelRoutes,
    LOOPGUARD_PROTOCOL,
};
