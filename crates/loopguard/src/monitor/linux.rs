//! Linux backend: rtnetlink multicast notifications (`ip monitor`'s source), no daemon.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use futures::StreamExt;
use ipnet::IpNet;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage};
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::AsyncSocket;
use rtnetlink::MulticastGroup;
use tokio::sync::mpsc::UnboundedSender;

use super::{Change, ChangeKind};

/// `NLM_F_REPLACE`: a new route that replaced one in place.
const NLM_F_REPLACE: u16 = 0x100;

/// The receive buffer asked for: a burst of a few thousand notifications fits, and an
/// overflow is reported as [`ChangeKind::Resync`] rather than lost silently.
const RECEIVE_BUFFER: usize = 4 << 20;

const GROUPS: [MulticastGroup; 7] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
    MulticastGroup::Ipv4Rule,
    MulticastGroup::Ipv6Rule,
];

/// Subscribes and spawns the tasks that turn notifications into [`Change`]s on `tx`.
pub(super) fn start(tx: UnboundedSender<Change>) -> io::Result<Vec<tokio::task::AbortHandle>> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        io::Error::other("the network monitor must be started inside a tokio runtime")
    })?;
    let (mut conn, handle, mut messages) = rtnetlink::new_multicast_connection(&GROUPS)?;
    if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(RECEIVE_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the netlink receive buffer");
    }
    let driver = runtime.spawn(conn);
    let reader = runtime.spawn(async move {
        let mut links = Links::default();
        // Names and states first, so the first notification about a link is judged against
        // what it was, and address and route changes carry interface names.
        let mut dump = handle.link().get().execute();
        while let Some(Ok(link)) = dump.next().await {
            links.observe(&link);
        }
        while let Some((message, _)) = messages.next().await {
            for change in links.convert(message) {
                if tx.send(change).is_err() {
                    return; // The monitor is gone.
                }
            }
        }
        tracing::warn!("the netlink notification stream ended");
    });
    Ok(vec![driver.abort_handle(), reader.abort_handle()])
}

/// What is known about each interface: its name and whether it is operational.
#[derive(Default, Debug)]
pub(super) struct Links {
    known: HashMap<u32, (Option<String>, bool)>,
}

impl Links {
    /// Records a link's state; returns its previous operational state, if it was known.
    fn observe(&mut self, link: &LinkMessage) -> Option<bool> {
        let name = link_name(link);
        let up = is_operational(link.header.flags);
        let entry = self.known.insert(link.header.index, (name, up));
        entry.map(|(_, was_up)| was_up)
    }

    fn name(&self, index: u32) -> Option<String> {
        self.known.get(&index).and_then(|(n, _)| n.clone())
    }

    fn on(&self, kind: ChangeKind, index: u32) -> Change {
        Change::new(kind).with_interface(index, self.name(index))
    }

    /// The changes one notification stands for (often none: statistics, unchanged flags).
    pub(super) fn convert(&mut self, message: NetlinkMessage<RouteNetlinkMessage>) -> Vec<Change> {
        let replace = message.header.flags & NLM_F_REPLACE != 0;
        let inner = match message.payload {
            NetlinkPayload::InnerMessage(m) => m,
            NetlinkPayload::Overrun(_) => return vec![Change::new(ChangeKind::Resync)],
            _ => return Vec::new(),
        };
        let change = match inner {
            RouteNetlinkMessage::NewLink(l) => {
                let index = l.header.index;
                let up = is_operational(l.header.flags);
                match self.observe(&l) {
                    Some(was) if was == up => None,
                    // A new link only matters once it carries traffic.
                    None if !up => None,
                    _ => Some(self.on(
                        if up {
                            ChangeKind::LinkUp
                        } else {
                            ChangeKind::LinkDown
                        },
                        index,
                    )),
                }
            }
            RouteNetlinkMessage::DelLink(l) => {
                let index = l.header.index;
                let change = Change::new(ChangeKind::LinkRemoved)
                    .with_interface(index, link_name(&l).or_else(|| self.name(index)));
                self.known.remove(&index);
                Some(change)
            }
            RouteNetlinkMessage::NewAddress(a) => Some(self.address(ChangeKind::AddressAdded, &a)),
            RouteNetlinkMessage::DelAddress(a) => {
                Some(self.address(ChangeKind::AddressRemoved, &a))
            }
            RouteNetlinkMessage::NewRoute(r) => {
                let kind = if replace {
                    ChangeKind::RouteChanged
                } else {
                    ChangeKind::RouteAdded
                };
                self.route(kind, &r)
            }
            RouteNetlinkMessage::DelRoute(r) => self.route(ChangeKind::RouteRemoved, &r),
            RouteNetlinkMessage::NewRule(r) => Some(rule(ChangeKind::RuleAdded, &r)),
            RouteNetlinkMessage::DelRule(r) => Some(rule(ChangeKind::RuleRemoved, &r)),
            _ => None,
        };
        change.into_iter().collect()
    }

    fn address(&self, kind: ChangeKind, a: &AddressMessage) -> Change {
        let mut change = self.on(kind, a.header.index);
        // IFA_LOCAL is the interface's own address on point-to-point links, where IFA_ADDRESS
        // is the peer's; elsewhere they are equal.
        let (mut local, mut address) = (None, None);
        for attr in &a.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Label(l) if change.interface.is_none() => {
                    change.interface = Some(l.clone())
                }
                _ => {}
            }
        }
        if let Some(net) = local
            .or(address)
            .and_then(|ip| net(ip, a.header.prefix_len))
        {
            change = change.with_subject(net);
        }
        change
    }

    fn route(&self, kind: ChangeKind, r: &RouteMessage) -> Option<Change> {
        // Cached clones (IPv6 PMTU and redirect entries) are not routing decisions.
        if r.header.flags.contains(RouteFlags::Cloned) {
            return None;
        }
        let mut change = Change::new(kind)
            .with_table(u32::from(r.header.table))
            .with_protocol(u8::from(r.header.protocol));
        let mut destination = None;
        for attr in &r.attributes {
            match attr {
                RouteAttribute::Oif(i) => {
                    change.interface_index = Some(*i);
                    change.interface = self.name(*i);
                }
                RouteAttribute::Table(t) => change.table = Some(*t),
                RouteAttribute::Priority(p) => change.priority = Some(*p),
                RouteAttribute::Destination(d) => destination = route_address(d),
                _ => {}
            }
        }
        let unspecified = match r.header.address_family {
            AddressFamily::Inet => IpAddr::from([0u8; 4]),
            AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
            _ => return None,
        };
        let prefix = net(
            destination.unwrap_or(unspecified),
            r.header.destination_prefix_length,
        );
        if let Some(prefix) = prefix {
            change = change.with_subject(prefix);
        }
        Some(change)
    }
}

fn rule(kind: ChangeKind, r: &RuleMessage) -> Change {
    let mut change = Change::new(kind).with_table(u32::from(r.header.table));
    for attr in &r.attributes {
        match attr {
            RuleAttribute::Priority(p) => change.priority = Some(*p),
            RuleAttribute::Table(t) => change.table = Some(*t),
            RuleAttribute::Protocol(p) => change.protocol = Some(u8::from(*p)),
            _ => {}
        }
    }
    change
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Up and running (carrier, and not dormant): what "can carry traffic" means to the kernel.
fn is_operational(flags: LinkFlags) -> bool {
    flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running)
}

fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// An address and prefix length; `None` when the kernel sent a length that does not fit.
fn net(ip: IpAddr, len: u8) -> Option<IpNet> {
    IpNet::new(ip, len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::route::RouteProtocol;

    fn message(inner: RouteNetlinkMessage, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = NetlinkMessage::from(inner);
        m.header.flags = flags;
        m
    }

    fn link(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.header.flags = flags;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        l
    }

    #[test]
    fn links_report_transitions_only() {
        let mut links = Links::default();
        let up = LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp;
        links.observe(&link(2, "eth0", up));
        // Same state again (statistics, an unrelated flag): nothing.
        let same = links.convert(message(
            RouteNetlinkMessage::NewLink(link(2, "eth0", up)),
            0,
        ));
        assert!(same.is_empty());
        // Carrier lost: down, named.
        let down = links.convert(message(
            RouteNetlinkMessage::NewLink(link(2, "eth0", LinkFlags::Up)),
            0,
        ));
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].kind, ChangeKind::LinkDown);
        assert_eq!(down[0].interface.as_deref(), Some("eth0"));
        // A new link that is down says nothing until it comes up.
        let new = links.convert(message(
            RouteNetlinkMessage::NewLink(link(3, "wlan0", LinkFlags::empty())),
            0,
        ));
        assert!(new.is_empty());
        let new_up = links.convert(message(
            RouteNetlinkMessage::NewLink(link(3, "wlan0", up)),
            0,
        ));
        assert_eq!(new_up[0].kind, ChangeKind::LinkUp);
        let gone = links.convert(message(
            RouteNetlinkMessage::DelLink(link(3, "wlan0", up)),
            0,
        ));
        assert_eq!(gone[0].kind, ChangeKind::LinkRemoved);
    }

    #[test]
    fn addresses_routes_and_rules_carry_their_details() {
        let mut links = Links::default();
        links.observe(&link(2, "eth0", LinkFlags::Up | LinkFlags::Running));

        let mut a = AddressMessage::default();
        a.header.family = AddressFamily::Inet;
        a.header.index = 2;
        a.header.prefix_len = 24;
        a.attributes
            .push(AddressAttribute::Address("192.0.2.2".parse().unwrap()));
        let c = links.convert(message(RouteNetlinkMessage::DelAddress(a), 0));
        assert_eq!(c[0].kind, ChangeKind::AddressRemoved);
        assert_eq!(c[0].subject, Some("192.0.2.2/24".parse().unwrap()));
        assert_eq!(c[0].interface.as_deref(), Some("eth0"));

        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.table = 254;
        r.header.protocol = RouteProtocol::Boot;
        r.attributes.push(RouteAttribute::Oif(2));
        r.attributes.push(RouteAttribute::Priority(100));
        let c = links.convert(message(
            RouteNetlinkMessage::NewRoute(r.clone()),
            NLM_F_REPLACE,
        ));
        assert_eq!(c[0].kind, ChangeKind::RouteChanged);
        assert_eq!(c[0].subject, Some("0.0.0.0/0".parse().unwrap()));
        assert_eq!((c[0].table, c[0].priority), (Some(254), Some(100)));
        assert_eq!(c[0].interface.as_deref(), Some("eth0"));

        r.header.flags = RouteFlags::Cloned;
        assert!(links
            .convert(message(RouteNetlinkMessage::DelRoute(r), 0))
            .is_empty());

        let mut rule_msg = RuleMessage::default();
        rule_msg.header.family = AddressFamily::Inet;
        rule_msg.attributes.push(RuleAttribute::Priority(32001));
        rule_msg.attributes.push(RuleAttribute::Table(19527));
        let c = links.convert(message(RouteNetlinkMessage::DelRule(rule_msg), 0));
        assert_eq!(c[0].kind, ChangeKind::RuleRemoved);
        assert_eq!((c[0].priority, c[0].table), (Some(32001), Some(19527)));
    }

    #[test]
    fn nonsense_is_ignored_and_overruns_resync() {
        let mut links = Links::default();
        // An address with an impossible prefix length: a change without a subject, no panic.
        let mut a = AddressMessage::default();
        a.header.index = 77;
        a.header.prefix_len = 200;
        a.attributes
            .push(AddressAttribute::Address("192.0.2.2".parse().unwrap()));
        let c = links.convert(message(RouteNetlinkMessage::NewAddress(a), 0));
        assert_eq!(c[0].subject, None);
        // A route of a family we do not handle.
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Unspec;
        assert!(links
            .convert(message(RouteNetlinkMessage::NewRoute(r), 0))
            .is_empty());
        let overrun =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::Overrun(vec![]));
        assert_eq!(links.convert(overrun)[0].kind, ChangeKind::Resync);
    }
}
