//! Windows backend: the IP Helper change notifications of
//! [`notify`](crate::os::windows::notify), each turned into a [`Change`]; and
//! [`reset_on_change`], the same notifications wired straight to a factory's reset.

use std::io;

use tokio::sync::mpsc::UnboundedSender;

use super::{Change, ChangeKind, Reset};
use crate::os::windows::notify::{Action, ChangeNotifications, Notification, NotificationKind};
use crate::route::Tunnel;

/// Registers the notifications of every interface: [`Monitor::new`](super::Monitor::new).
pub(super) fn start(tx: UnboundedSender<Change>) -> io::Result<Vec<tokio::task::AbortHandle>> {
    start_for(Tunnel::default(), tx)
}

/// Registers the notifications (none on `tunnel`'s interfaces) and spawns the task that
/// keeps them alive until the monitor is dropped.
pub(super) fn start_for(
    tunnel: Tunnel,
    tx: UnboundedSender<Change>,
) -> io::Result<Vec<tokio::task::AbortHandle>> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        io::Error::other("the network monitor must be started inside a tokio runtime")
    })?;
    let sender = tx.clone();
    let registrations = ChangeNotifications::register_detailed(tunnel, move |n| {
        // The monitor may be gone; the keeper task then cancels the registrations.
        let _ = sender.send(to_change(n));
    })?;
    let keeper = runtime.spawn(async move {
        // Dropping `registrations` (here, or when the task is aborted) cancels them.
        let _registrations = registrations;
        tx.closed().await;
    });
    Ok(vec![keeper.abort_handle()])
}

/// Resets `target` (a [`SocketFactory`](crate::SocketFactory), or anything else that caches
/// paths) on every route, interface or address change outside `tunnel`, without a
/// [`Monitor`](super::Monitor): no debounce (a reset is a generation bump, cheap even in
/// bursts) and no report of which destinations moved; [`Roaming`](super::Roaming) does both.
/// Keep the returned value alive as long as `target` is used.
pub fn reset_on_change(
    target: impl Reset + 'static,
    tunnel: Tunnel,
) -> io::Result<ChangeNotifications> {
    ChangeNotifications::register(tunnel, move |kind| {
        tracing::debug!(?kind, "network change: forgetting cached paths");
        target.reset();
    })
}

/// The monitor's view of one notification.
///
/// - Routes: added, removed, changed (a metric change, for one); the destination prefix and
///   the metric.
/// - Addresses: added or removed, with the address and its on-link prefix length. A
///   parameter change (duplicate address detection completing, a lifetime renewed) is
///   reported as added: the address may just have become usable.
/// - Interfaces: added or changed while connected is [`ChangeKind::LinkUp`] with the
///   interface metric (Windows reports metric changes this way), not connected is
///   [`ChangeKind::LinkDown`], deleted is [`ChangeKind::LinkRemoved`].
///
/// No interface names: the rows carry none, so filter the tunnel by LUID (the `tunnel` of
/// [`Monitor::for_tunnel`](super::Monitor::for_tunnel)) or by index.
pub(super) fn to_change(n: &Notification) -> Change {
    let kind = match (n.kind, n.action) {
        (NotificationKind::Route, Action::Added) => ChangeKind::RouteAdded,
        (NotificationKind::Route, Action::Deleted) => ChangeKind::RouteRemoved,
        (NotificationKind::Route, Action::Changed) => ChangeKind::RouteChanged,
        (NotificationKind::Address, Action::Deleted) => ChangeKind::AddressRemoved,
        (NotificationKind::Address, _) => ChangeKind::AddressAdded,
        (NotificationKind::Interface, Action::Deleted) => ChangeKind::LinkRemoved,
        (NotificationKind::Interface, _) if n.connected == Some(false) => ChangeKind::LinkDown,
        (NotificationKind::Interface, _) => ChangeKind::LinkUp,
    };
    let mut change = Change::new(kind);
    if let Some(index) = n.interface_index {
        change = change.with_interface(index, None);
    }
    if let Some(prefix) = n.prefix {
        change = change.with_subject(prefix);
    }
    if let Some(metric) = n.metric {
        change = change.with_priority(metric);
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Luid;

    fn row(kind: NotificationKind, action: Action) -> Notification {
        Notification {
            kind,
            action,
            luid: Some(Luid(7)),
            interface_index: Some(12),
            prefix: None,
            metric: None,
            connected: None,
        }
    }

    #[tokio::test]
    async fn the_monitor_registers_and_dropping_it_cancels() {
        let monitor = super::super::Monitor::new(super::super::MonitorConfig::default())
            .expect("the three notifications register (also under Wine)");
        assert_eq!(monitor.tasks.len(), 1);
        let keeper = monitor.tasks[0].clone();
        drop(monitor);
        // The keeper task ends (its registrations cancelled) once the monitor is gone.
        for _ in 0..100 {
            if keeper.is_finished() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the registrations outlived the monitor");
    }

    #[test]
    fn reset_on_change_registers_the_three_notifications() {
        struct Ignored;
        impl Reset for Ignored {
            fn reset(&self) {}
        }
        let registrations = reset_on_change(Ignored, Tunnel::default())
            .expect("the three notifications register (also under Wine)");
        assert_eq!(registrations.registrations(), 3);
    }

    #[test]
    fn routes_carry_prefix_and_metric() {
        let mut n = row(NotificationKind::Route, Action::Changed);
        n.prefix = Some("0.0.0.0/0".parse().unwrap());
        n.metric = Some(25);
        let c = to_change(&n);
        assert_eq!(c.kind, ChangeKind::RouteChanged);
        assert_eq!(c.interface_index, Some(12));
        assert_eq!(c.subject, n.prefix);
        assert_eq!(c.priority, Some(25));
        n.action = Action::Added;
        assert_eq!(to_change(&n).kind, ChangeKind::RouteAdded);
        n.action = Action::Deleted;
        assert_eq!(to_change(&n).kind, ChangeKind::RouteRemoved);
    }

    #[test]
    fn addresses_and_interfaces_map_by_action_and_connectivity() {
        let mut a = row(NotificationKind::Address, Action::Added);
        a.prefix = Some("192.0.2.10/24".parse().unwrap());
        assert_eq!(to_change(&a).kind, ChangeKind::AddressAdded);
        assert_eq!(to_change(&a).subject, a.prefix);
        a.action = Action::Changed;
        assert_eq!(to_change(&a).kind, ChangeKind::AddressAdded);
        a.action = Action::Deleted;
        assert_eq!(to_change(&a).kind, ChangeKind::AddressRemoved);

        let mut i = row(NotificationKind::Interface, Action::Changed);
        i.connected = Some(false);
        assert_eq!(to_change(&i).kind, ChangeKind::LinkDown);
        i.connected = Some(true);
        i.metric = Some(35);
        assert_eq!(to_change(&i).kind, ChangeKind::LinkUp);
        assert_eq!(to_change(&i).priority, Some(35));
        i.action = Action::Deleted;
        assert_eq!(to_change(&i).kind, ChangeKind::LinkRemoved);
        // A null row (many changes at once): a change with nothing else known.
        let bare = Notification {
            interface_index: None,
            luid: None,
            ..row(NotificationKind::Route, Action::Changed)
        };
        assert_eq!(to_change(&bare), Change::new(ChangeKind::RouteChanged));
    }
}
