//! The portable vocabulary of network changes: what the OS backends report and the monitor
//! debounces. Below both, so an OS adapter can produce changes without knowing the monitor;
//! re-exported as `loopguard::monitor::{Change, ChangeKind}`.

use std::fmt;

use ipnet::IpNet;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ChangeKind {
    /// An interface became operational (up and carrier), or appeared up.
    LinkUp,
    /// An interface stopped being operational.
    LinkDown,
    /// An interface was deleted.
    LinkRemoved,
    /// An address was added to an interface.
    AddressAdded,
    /// An address was removed from an interface.
    AddressRemoved,
    /// A route was added.
    RouteAdded,
    /// A route was replaced in place.
    RouteChanged,
    /// A route was removed.
    RouteRemoved,
    /// A policy rule was added.
    RuleAdded,
    /// A policy rule was removed.
    RuleRemoved,
    /// Notifications were lost (the kernel's queue overflowed): assume anything changed.
    Resync,
}

impl ChangeKind {
    /// The kind as a `snake_case` word, as `loopguard watch --json` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::LinkUp => "link_up",
            ChangeKind::LinkDown => "link_down",
            ChangeKind::LinkRemoved => "link_removed",
            ChangeKind::AddressAdded => "address_added",
            ChangeKind::AddressRemoved => "address_removed",
            ChangeKind::RouteAdded => "route_added",
            ChangeKind::RouteChanged => "route_changed",
            ChangeKind::RouteRemoved => "route_removed",
            ChangeKind::RuleAdded => "rule_added",
            ChangeKind::RuleRemoved => "rule_removed",
            ChangeKind::Resync => "resync",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change, or several of the same kind on the same interface merged by the debouncer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The interface's index, when the change concerns one (routes: the output interface).
    pub interface_index: Option<u32>,
    /// The interface's name, when known.
    pub interface: Option<String>,
    /// The address (with prefix length) for address changes, the destination prefix for
    /// route changes. For merged changes, the first one's.
    pub subject: Option<IpNet>,
    /// The routing table of a route, or the table a rule looks up.
    pub table: Option<u32>,
    /// A rule's priority, or a route's metric.
    pub priority: Option<u32>,
    /// The route or rule protocol (tag), when the kernel reported one.
    pub protocol: Option<u8>,
    /// How many raw notifications this change stands for (1 before debouncing).
    pub count: u32,
}

impl Change {
    /// A change of `kind` with nothing else known.
    pub fn new(kind: ChangeKind) -> Self {
        Change {
            kind,
            interface_index: None,
            interface: None,
            subject: None,
            table: None,
            priority: None,
            protocol: None,
            count: 1,
        }
    }

    /// Names the interface.
    pub fn with_interface(mut self, index: u32, name: Option<String>) -> Self {
        self.interface_index = Some(index);
        self.interface = name;
        self
    }

    /// Sets the address or route prefix.
    pub fn with_subject(mut self, subject: IpNet) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Sets the table.
    pub fn with_table(mut self, table: u32) -> Self {
        self.table = Some(table);
        self
    }

    /// Sets the rule priority or route metric.
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the protocol (tag).
    pub fn with_protocol(mut self, protocol: u8) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Whether the monitor's debouncer merges `other` into this change: same kind, interface, table.
    pub(crate) fn merges_with(&self, other: &Change) -> bool {
        self.kind == other.kind
            && self.interface_index == other.interface_index
            && self.interface == other.interface
            && self.table == other.table
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match (&self.interface, self.interface_index) {
            (Some(name), _) => write!(f, " {name}")?,
            (None, Some(i)) => write!(f, " if#{i}")?,
            (None, None) => {}
        }
        if let Some(s) = self.subject {
            write!(f, " {s}")?;
        }
        if let Some(t) = self.table {
            write!(f, " table {t}")?;
        }
        if let Some(p) = self.priority {
            let what = if matches!(self.kind, ChangeKind::RuleAdded | ChangeKind::RuleRemoved) {
                "priority"
            } else {
                "metric"
            };
            write!(f, " {what} {p}")?;
        }
        if self.count > 1 {
            write!(f, " (x{})", self.count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_print_what_and_where() {
        let c = Change::new(ChangeKind::RouteRemoved)
            .with_interface(2, Some("eth0".into()))
            .with_subject("0.0.0.0/0".parse().unwrap())
            .with_table(254)
            .with_priority(100);
        assert_eq!(
            c.to_string(),
            "route_removed eth0 0.0.0.0/0 table 254 metric 100"
        );
        let r = Change::new(ChangeKind::RuleRemoved).with_priority(32001);
        assert_eq!(r.to_string(), "rule_removed priority 32001");
    }
}
