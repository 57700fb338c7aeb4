//! Route, interface and address change notifications (`NotifyRouteChange2`,
//! `NotifyIpInterfaceChange`, `NotifyUnicastIpAddressChange`) that invalidate cached paths.
//!
//! The API is small so the roaming monitor can reuse it: [`ChangeNotifications::register`]
//! takes a callback, [`ChangeNotifications::register_detailed`] one that also receives what
//! the changed row says ([`Notification`]: interface, prefix or address, metric), which the
//! Windows [`Monitor`](crate::monitor::Monitor) uses; [`reset_on_change`] wires it to a factory's
//! [`reset`](crate::SocketFactory::reset) (a generation bump: cheap, so bursts need no
//! debounce here). Changes of the tunnel's own interface are ignored (DESIGN §3.10).
//!
//! Under Wine the registrations succeed but never fire (DESIGN §6); the cache then still
//! recovers through send errors and [`reset`](crate::SocketFactory::reset).

use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;

use windows_sys::Win32::Foundation::{HANDLE, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    CancelMibChangeNotify2, MibAddInstance, MibDeleteInstance, NotifyIpInterfaceChange,
    NotifyRouteChange2, NotifyUnicastIpAddressChange, MIB_IPFORWARD_ROW2, MIB_IPINTERFACE_ROW,
    MIB_NOTIFICATION_TYPE, MIB_UNICASTIPADDRESS_ROW,
};
use windows_sys::Win32::Networking::WinSock::AF_UNSPEC;

use super::mib::{from_sockaddr_inet, win32};
use crate::route::{Luid, Tunnel};
use crate::{SocketFactory, Strategy};

/// Which table changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A route was added, removed or changed.
    Route,
    /// An interface's parameters (metric, connectivity) changed.
    Interface,
    /// A unicast address was added, removed or changed.
    Address,
}

/// What happened to the row (`MIB_NOTIFICATION_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `MibAddInstance`: the row was added.
    Added,
    /// `MibDeleteInstance`: the row was deleted.
    Deleted,
    /// `MibParameterNotification` (or any other type): a parameter of the row changed.
    Changed,
}

impl Action {
    fn from_raw(kind: MIB_NOTIFICATION_TYPE) -> Action {
        if kind == MibAddInstance {
            Action::Added
        } else if kind == MibDeleteInstance {
            Action::Deleted
        } else {
            Action::Changed
        }
    }
}

/// One notification with what its row says. Fields the row does not carry (or a null row,
/// which Windows passes when many rows changed at once) are `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Notification {
    /// Which table changed.
    pub kind: ChangeKind,
    /// What happened to the row.
    pub action: Action,
    /// The interface's LUID.
    pub luid: Option<Luid>,
    /// The interface's index.
    pub interface_index: Option<u32>,
    /// Routes: the destination prefix. Addresses: the address with its on-link prefix length.
    pub prefix: Option<IpNet>,
    /// Routes: the route metric. Interfaces: the interface metric.
    pub metric: Option<u32>,
    /// Interfaces: whether the interface is connected (has media).
    pub connected: Option<bool>,
}

impl Notification {
    fn new(kind: ChangeKind, action: MIB_NOTIFICATION_TYPE) -> Self {
        Notification {
            kind,
            action: Action::from_raw(action),
            luid: None,
            interface_index: None,
            prefix: None,
            metric: None,
            connected: None,
        }
    }
}

type Callback = Box<dyn Fn(&Notification) + Send + Sync>;

struct Context {
    ignore: Tunnel,
    on_change: Callback,
    fired: AtomicU64,
}

impl Context {
    fn deliver(&self, notification: Notification) {
        if notification.luid.is_some_and(|l| self.ignore.contains(l)) {
            return;
        }
        self.fired.fetch_add(1, Ordering::Relaxed);
        (self.on_change)(&notification);
    }
}

/// Live registrations; dropping it cancels them (and waits for running callbacks).
pub struct ChangeNotifications {
    handles: Vec<HANDLE>,
    context: *mut Context,
}

// SAFETY: the handles are only passed to CancelMibChangeNotify2, which any thread may call;
// the context is `Sync` data (atomics and a `Send + Sync` callback).
unsafe impl Send for ChangeNotifications {}
// SAFETY: as above; `&self` only reads the atomic counter.
unsafe impl Sync for ChangeNotifications {}

impl std::fmt::Debug for ChangeNotifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeNotifications")
            .field("registrations", &self.handles.len())
            .field("fired", &self.fired())
            .finish()
    }
}

impl ChangeNotifications {
    /// Registers for route, interface and address changes of both families; `on_change` runs
    /// on a system thread for every change not on `ignore`'s interfaces.
    pub fn register(
        ignore: Tunnel,
        on_change: impl Fn(ChangeKind) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        Self::register_detailed(ignore, move |n| on_change(n.kind))
    }

    /// Like [`register`](Self::register), the callback receiving what the changed row says.
    pub fn register_detailed(
        ignore: Tunnel,
        on_change: impl Fn(&Notification) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let context = Box::into_raw(Box::new(Context {
            ignore,
            on_change: Box::new(on_change),
            fired: AtomicU64::new(0),
        }));
        let mut this = ChangeNotifications {
            handles: Vec::with_capacity(3),
            context,
        };
        let ctx = context as *const c_void;
        let mut handle: HANDLE = std::ptr::null_mut();
        // SAFETY: the callbacks match the API's signatures; `ctx` stays valid until every
        // registration is cancelled (in Drop, also when a later registration fails here).
        let rc = unsafe { NotifyRouteChange2(AF_UNSPEC, Some(on_route), ctx, false, &mut handle) };
        this.keep("NotifyRouteChange2", rc, handle)?;
        // SAFETY: as above.
        let rc = unsafe {
            NotifyIpInterfaceChange(AF_UNSPEC, Some(on_interface), ctx, false, &mut handle)
        };
        this.keep("NotifyIpInterfaceChange", rc, handle)?;
        // SAFETY: as above.
        let rc = unsafe {
            NotifyUnicastIpAddressChange(AF_UNSPEC, Some(on_address), ctx, false, &mut handle)
        };
        this.keep("NotifyUnicastIpAddressChange", rc, handle)?;
        Ok(this)
    }

    fn keep(&mut self, call: &str, rc: u32, handle: HANDLE) -> io::Result<()> {
        if rc != NO_ERROR {
            return Err(win32(call, rc));
        }
        self.handles.push(handle);
        Ok(())
    }

    /// How many registrations are live (3 once registered).
    pub fn registrations(&self) -> usize {
        self.handles.len()
    }

    /// How many changes were delivered so far (changes of the ignored tunnel not counted).
    pub fn fired(&self) -> u64 {
        // SAFETY: `context` is valid until Drop.
        unsafe { &*self.context }.fired.load(Ordering::Relaxed)
    }
}

impl Drop for ChangeNotifications {
    fn drop(&mut self) {
        for handle in self.handles.drain(..) {
            // SAFETY: a handle a Notify*Change call returned, cancelled once; the call
            // returns after callbacks in progress have finished.
            let rc = unsafe { CancelMibChangeNotify2(handle) };
            if rc != NO_ERROR {
                tracing::warn!(error = %win32("CancelMibChangeNotify2", rc), "change notification not cancelled; leaking its context");
                return;
            }
        }
        // SAFETY: allocated in `register`; no registration can call back any more.
        drop(unsafe { Box::from_raw(self.context) });
    }
}

/// Resets `factory`'s cached paths on every route, interface or address change outside the
/// tunnel. Keep the returned value alive as long as the factory is used.
pub fn reset_on_change<S: Strategy>(
    factory: &SocketFactory<S>,
    tunnel: Tunnel,
) -> io::Result<ChangeNotifications> {
    let factory = factory.clone();
    ChangeNotifications::register(tunnel, move |kind| {
        tracing::debug!(?kind, "network change: forgetting cached paths");
        factory.reset();
    })
}

fn context<'a>(ctx: *const c_void) -> Option<&'a Context> {
    // SAFETY: `ctx` is the context registered with the callback, valid until cancelled.
    (!ctx.is_null()).then(|| unsafe { &*ctx.cast::<Context>() })
}

fn prefix(addr: Option<std::net::IpAddr>, len: u8) -> Option<IpNet> {
    addr.and_then(|a| IpNet::new(a, len).ok())
}

unsafe extern "system" fn on_route(
    ctx: *const c_void,
    row: *const MIB_IPFORWARD_ROW2,
    action: MIB_NOTIFICATION_TYPE,
) {
    let mut n = Notification::new(ChangeKind::Route, action);
    // SAFETY: `row` is null or a valid row for the duration of the callback; the LUID union
    // holds plain integers.
    if let Some(r) = unsafe { row.as_ref() } {
        // SAFETY: as above.
        n.luid = Some(Luid(unsafe { r.InterfaceLuid.Value }));
        n.interface_index = Some(r.InterfaceIndex);
        n.metric = Some(r.Metric);
        let p = &r.DestinationPrefix;
        n.prefix = prefix(from_sockaddr_inet(&p.Prefix), p.PrefixLength).map(|p| p.trunc());
    }
    if let Some(c) = context(ctx) {
        c.deliver(n);
    }
}

unsafe extern "system" fn on_interface(
    ctx: *const c_void,
    row: *const MIB_IPINTERFACE_ROW,
    action: MIB_NOTIFICATION_TYPE,
) {
    let mut n = Notification::new(ChangeKind::Interface, action);
    // SAFETY: as in `on_route`.
    if let Some(r) = unsafe { row.as_ref() } {
        // SAFETY: as in `on_route`.
        n.luid = Some(Luid(unsafe { r.InterfaceLuid.Value }));
        n.interface_index = Some(r.InterfaceIndex);
        n.metric = Some(r.Metric);
        n.connected = Some(r.Connected);
    }
    if let Some(c) = context(ctx) {
        c.deliver(n);
    }
}

unsafe extern "system" fn on_address(
    ctx: *const c_void,
    row: *const MIB_UNICASTIPADDRESS_ROW,
    action: MIB_NOTIFICATION_TYPE,
) {
    let mut n = Notification::new(ChangeKind::Address, action);
    // SAFETY: as in `on_route`.
    if let Some(r) = unsafe { row.as_ref() } {
        // SAFETY: as in `on_route`.
        n.luid = Some(Luid(unsafe { r.InterfaceLuid.Value }));
        n.interface_index = Some(r.InterfaceIndex);
        n.prefix = prefix(from_sockaddr_inet(&r.Address), r.OnLinkPrefixLength);
    }
    if let Some(c) = context(ctx) {
        c.deliver(n);
    }
}
