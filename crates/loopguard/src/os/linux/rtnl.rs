//! A thin rtnetlink client: one request, every answer, kernel errors named by operation.
//! Route lookups use its queries; the calls that change rules and routes exist for
//! [`TunnelRoutes`](super::TunnelRoutes) (feature `linux-routes`) only.

use std::io;

use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
#[cfg(feature = "linux-routes")]
use {
    netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL},
    netlink_packet_route::{route::RouteMessage, rule::RuleMessage, AddressFamily},
};

use super::RoutesError;

/// A rtnetlink connection of the network namespace of the calling thread.
pub(crate) struct Rtnl {
    handle: rtnetlink::Handle,
}

impl Rtnl {
    /// Opens the socket now, so it belongs to the caller's namespace, and drives it on the
    /// current tokio runtime (a current-thread runtime inside `Netns::run` works).
    pub(crate) fn connect() -> Result<Self, RoutesError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| RoutesError::NoRuntime("opening a rtnetlink socket"))?;
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| RoutesError::os("opening a rtnetlink socket", e))?;
        // The task ends by itself once the last handle is dropped.
        runtime.spawn(conn);
        Ok(Rtnl { handle })
    }

    /// Sends one request and collects the messages answering it.
    pub(crate) async fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        operation: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, RoutesError> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = flags;
        let mut answers = self
            .handle
            .request(request)
            .map_err(|e| RoutesError::os(operation, io::Error::other(e.to_string())))?;
        let mut out = Vec::new();
        while let Some(answer) = answers.next().await {
            match answer.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(RoutesError::os(
                            operation,
                            io::Error::from_raw_os_error(-code.get()),
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    #[cfg(feature = "linux-routes")]
    /// Every policy rule of `family`.
    pub(crate) async fn dump_rules(
        &mut self,
        family: AddressFamily,
    ) -> Result<Vec<RuleMessage>, RoutesError> {
        let mut m = RuleMessage::default();
        m.header.family = family;
        let op = format!("listing {} rules", family_name(family));
        let answers = self
            .request(
                RouteNetlinkMessage::GetRule(m),
                NLM_F_REQUEST | NLM_F_DUMP,
                &op,
            )
            .await?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    #[cfg(feature = "linux-routes")]
    /// Every route of `family`, all tables.
    pub(crate) async fn dump_routes(
        &mut self,
        family: AddressFamily,
    ) -> Result<Vec<RouteMessage>, RoutesError> {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        let op = format!("listing {} routes", family_name(family));
        let answers = self
            .request(
                RouteNetlinkMessage::GetRoute(m),
                NLM_F_REQUEST | NLM_F_DUMP,
                &op,
            )
            .await?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    #[cfg(feature = "linux-routes")]
    /// Adds a rule (duplicates of foreign rules are allowed, so no `NLM_F_EXCL`).
    pub(crate) async fn add_rule(
        &mut self,
        rule: RuleMessage,
        op: &str,
    ) -> Result<(), RoutesError> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
        self.request(RouteNetlinkMessage::NewRule(rule), flags, op)
            .await
            .map(drop)
    }

    #[cfg(feature = "linux-routes")]
    /// Deletes the rule described by `rule` (as dumped).
    pub(crate) async fn del_rule(
        &mut self,
        rule: RuleMessage,
        op: &str,
    ) -> Result<(), RoutesError> {
        self.request(
            RouteNetlinkMessage::DelRule(rule),
            NLM_F_REQUEST | NLM_F_ACK,
            op,
        )
        .await
        .map(drop)
    }

    #[cfg(feature = "linux-routes")]
    /// Adds a route; `NLM_F_EXCL` so an existing route is never silently replaced.
    pub(crate) async fn add_route(
        &mut self,
        route: RouteMessage,
        op: &str,
    ) -> Result<(), RoutesError> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        self.request(RouteNetlinkMessage::NewRoute(route), flags, op)
            .await
            .map(drop)
    }

    #[cfg(feature = "linux-routes")]
    /// Adds a route beside an existing one of the same prefix and metric (`NLM_F_CREATE`
    /// without `NLM_F_EXCL`; never `NLM_F_REPLACE`, so nothing is replaced): moving a prefix
    /// to another device adds the new route before the old one is deleted, and the table
    /// never has a gap. The kernel still refuses an identical route (`EEXIST`).
    pub(crate) async fn add_route_beside(
        &mut self,
        route: RouteMessage,
        op: &str,
    ) -> Result<(), RoutesError> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
        self.request(RouteNetlinkMessage::NewRoute(route), flags, op)
            .await
            .map(drop)
    }

    #[cfg(feature = "linux-routes")]
    /// Deletes the route described by `route` (as dumped).
    pub(crate) async fn del_route(
        &mut self,
        route: RouteMessage,
        op: &str,
    ) -> Result<(), RoutesError> {
        self.request(
            RouteNetlinkMessage::DelRoute(route),
            NLM_F_REQUEST | NLM_F_ACK,
            op,
        )
        .await
        .map(drop)
    }

    /// The index of the device called `name`.
    pub(crate) async fn link_index(&mut self, name: &str) -> Result<u32, RoutesError> {
        self.link(name).await.map(|(index, _)| index)
    }

    /// The index of the device called `name`, and whether it is administratively up.
    pub(crate) async fn link(&mut self, name: &str) -> Result<(u32, bool), RoutesError> {
        check_device_name(name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let op = format!("looking up device {name:?}");
        match self
            .request(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST, &op)
            .await
        {
            Ok(answers) => answers
                .into_iter()
                .find_map(|m| match m {
                    RouteNetlinkMessage::NewLink(l) => {
                        Some((l.header.index, l.header.flags.contains(LinkFlags::Up)))
                    }
                    _ => None,
                })
                .ok_or_else(|| RoutesError::NoSuchDevice(name.to_owned())),
            Err(RoutesError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Err(RoutesError::NoSuchDevice(name.to_owned()))
            }
            Err(e) => Err(e),
        }
    }

    /// The name of the device with index `index`.
    pub(crate) async fn link_name(&mut self, index: u32) -> Result<String, RoutesError> {
        self.link_state(index)
            .await?
            .map(|(name, _)| name)
            .ok_or(RoutesError::NoSuchDeviceIndex(index))
    }

    /// The name of the device with index `index` and whether it is administratively up;
    /// `None` when no device has that index.
    pub(crate) async fn link_state(
        &mut self,
        index: u32,
    ) -> Result<Option<(String, bool)>, RoutesError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        let op = format!("looking up device index {index}");
        match self
            .request(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST, &op)
            .await
        {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let up = l.header.flags.contains(LinkFlags::Up);
                    l.attributes.into_iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some((n, up)),
                        _ => None,
                    })
                }
                _ => None,
            })),
            Err(RoutesError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Rejects names the kernel could never hold, before asking it.
pub(crate) fn check_device_name(name: &str) -> Result<(), RoutesError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(RoutesError::BadDeviceName(name.to_owned()));
    }
    Ok(())
}

/// `IPv4` or `IPv6`, for messages.
#[cfg(feature = "linux-routes")]
fn family_name(family: AddressFamily) -> &'static str {
    match family {
        AddressFamily::Inet6 => "IPv6",
        _ => "IPv4",
    }
}

/// The index of the device called `name` in the current network namespace.
pub async fn interface_index(name: &str) -> Result<u32, RoutesError> {
    Rtnl::connect()?.link_index(name).await
}

/// The name of the device with index `index` in the current network namespace.
pub async fn interface_name(index: u32) -> Result<String, RoutesError> {
    Rtnl::connect()?.link_name(index).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_checked_before_asking_the_kernel() {
        assert!(check_device_name("lg-tun0").is_ok());
        for bad in ["", "a/b", "has space", "sixteen-bytes-xx"] {
            assert!(
                matches!(check_device_name(bad), Err(RoutesError::BadDeviceName(_))),
                "{bad}"
            );
        }
    }
}
