//! Route, interface and address change notifications (`NotifyRouteChange2`,
//! `NotifyIpInterfaceChange`, `NotifyUnicastIpAddressChange`) that invalidate cached paths.
//!
//! The API is small so the network monitor's Windows backend can use it:
//! [`ChangeNotifications::register`] takes a callback, [`ChangeNotifications::register_detailed`]
//! one that also receives what the changed row says ([`Notification`]: interface, prefix or
//! address, metric). Changes of the tunnel's own interface are ignored. This module knows
//! neither the monitor nor the socket factory: what wires a callback to them lives above.
//!
//! Windows fills only the key fields of the row it hands to a callback ("NotifyRouteChange2",
//! "NotifyIpInterfaceChange", "NotifyUnicastIpAddressChange", Win32 docs): prefix, next hop,
//! LUID and index for routes; family, LUID and index for interfaces; address, LUID and index
//! for addresses. Only those are read there, through raw pointers (a row's `BOOL` fields hold
//! whatever was in memory, which a Rust `bool` must not); the rest (metrics, `Connected`, the
//! on-link prefix length) is queried afterwards with the key, on our own thread.
//!
//! User callbacks never run on the IP Helper thread: the system callback posts to a channel
//! and returns, and a thread of ours runs them, so a callback can block
//! or drop its own registration without deadlocking `CancelMibChangeNotify2`, and a panic is
//! caught there instead of unwinding into Windows.
//!
//! Under Wine the registrations succeed but never fire; a factory's path cache then still
//! recovers through send errors and explicit resets.

use std::ffi::c_void;
use std::io;
use std::mem::MaybeUninit;
use std::ptr::{addr_of, addr_of_mut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipnet::IpNet;

use windows_sys::Win32::Foundation::{HANDLE, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    CancelMibChangeNotify2, GetIpForwardEntry2, GetIpInterfaceEntry, GetUnicastIpAddressEntry,
    MibAddInstance, MibDeleteInstance, NotifyIpInterfaceChange, NotifyRouteChange2,
    NotifyUnicastIpAddressChange, MIB_IPFORWARD_ROW2, MIB_IPINTERFACE_ROW, MIB_NOTIFICATION_TYPE,
    MIB_UNICASTIPADDRESS_ROW,
};
use windows_sys::Win32::NetworkManagement::Ndis::NET_LUID_LH;
use windows_sys::Win32::Networking::WinSock::{ADDRESS_FAMILY, AF_UNSPEC, SOCKADDR_INET};

use super::mib::{from_sockaddr_inet, to_sockaddr_inet, win32};
use super::wine;
use crate::os::callback_thread::{CallbackThread, Poster};
use crate::route::{Luid, Tunnel};

/// Which table a notification is about. (The monitor's portable change kind is decided from
/// this and the [`Action`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationKind {
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
    pub kind: NotificationKind,
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
    // Routes, interfaces: `metric` and `connected` are not in the row Windows passes; they
    // are queried by key after the callback. Addresses: `prefix` carries the queried on-link
    // length, or the host length when the query fails (a deleted address).
}

impl Notification {
    fn new(kind: NotificationKind, action: MIB_NOTIFICATION_TYPE) -> Self {
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

/// What the IP Helper callback posts: the notification with its key fields, and the keys
/// needed to query the rest.
struct Posted {
    notification: Notification,
    family: ADDRESS_FAMILY,
    next_hop: Option<SOCKADDR_INET>,
    address: Option<SOCKADDR_INET>,
}

/// What the IP Helper callbacks see: the tunnel to ignore and where to post.
struct Context {
    ignore: Tunnel,
    tx: Poster<Posted>,
}

impl Context {
    /// Runs on the IP Helper thread: never blocks, never calls back into the user.
    fn post(&self, posted: Posted) {
        let n = &posted.notification;
        if n.luid.is_some_and(|l| self.ignore.contains(l)) {
            return;
        }
        self.tx.post(posted);
    }
}

/// Live registrations; dropping it cancels them (and waits for running callbacks).
pub struct ChangeNotifications {
    handles: Vec<HANDLE>,
    context: *mut Context,
    fired: Arc<AtomicU64>,
    callbacks: Option<CallbackThread<Posted>>,
}

// SAFETY: the handles are only passed to CancelMibChangeNotify2, which any thread may call;
// the context holds a `Tunnel` and an mpsc `Sender`, both `Send + Sync`.
unsafe impl Send for ChangeNotifications {}
// SAFETY: as above; `&self` only reads atomic counters.
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
    /// on a thread of ours for every change not on `ignore`'s interfaces.
    pub fn register(
        ignore: Tunnel,
        on_change: impl Fn(NotificationKind) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        Self::register_detailed(ignore, move |n| on_change(n.kind))
    }

    /// Like [`register`](Self::register), the callback receiving what the changed row says.
    pub fn register_detailed(
        ignore: Tunnel,
        on_change: impl Fn(&Notification) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let fired = Arc::new(AtomicU64::new(0));
        let counted = fired.clone();
        let callbacks = CallbackThread::spawn("loopguard-ip-helper", move |posted: Posted| {
            let notification = complete(posted);
            counted.fetch_add(1, Ordering::Relaxed);
            on_change(&notification);
        })?;
        let context = Box::into_raw(Box::new(Context {
            ignore,
            tx: callbacks.poster(),
        }));
        let mut this = ChangeNotifications {
            handles: Vec::with_capacity(3),
            context,
            fired,
            callbacks: Some(callbacks),
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
        self.fired.load(Ordering::Relaxed)
    }

    /// How many user callbacks panicked (each caught; later changes are still delivered).
    pub fn callback_panics(&self) -> u64 {
        self.callbacks.as_ref().map_or(0, CallbackThread::panics)
    }
}

impl Drop for ChangeNotifications {
    fn drop(&mut self) {
        for handle in self.handles.drain(..) {
            // SAFETY: a handle a Notify*Change call returned, cancelled once; the call
            // returns after callbacks in progress have finished (they only post, so this
            // cannot wait on a user callback, even when dropped from inside one).
            let rc = unsafe { CancelMibChangeNotify2(handle) };
            if rc != NO_ERROR {
                tracing::warn!(error = %win32("CancelMibChangeNotify2", rc), "change notification not cancelled; leaking its context");
                // The context must outlive a registration that may still call back; the
                // callback thread is still stopped (and joined) as the fields drop.
                return;
            }
        }
        // SAFETY: allocated in `register`; no registration can call back any more.
        drop(unsafe { Box::from_raw(self.context) });
        // Joins the callback thread after the changes already posted (unless this runs on it).
        self.callbacks.take();
    }
}

/// Fills in what the row's key does not carry, by querying with the key (on our thread,
/// never under Wine, where `GetIpInterfaceEntry` kills the process; Wine never notifies
/// anyway). A row already deleted has nothing to query: those fields stay `None`.
fn complete(posted: Posted) -> Notification {
    let mut n = posted.notification;
    let Some(luid) = n.luid else {
        return n;
    };
    if wine::is_wine() || n.action == Action::Deleted {
        if n.kind == NotificationKind::Address {
            n.prefix = n.prefix.map(|p| host_prefix(p.addr()));
        }
        return n;
    }
    match n.kind {
        NotificationKind::Interface => {
            if let Some((metric, connected)) = interface_state(luid, posted.family) {
                n.metric = Some(metric);
                n.connected = Some(connected);
            }
        }
        NotificationKind::Route => {
            if let (Some(prefix), Some(next_hop)) = (n.prefix, posted.next_hop) {
                n.metric = route_metric(luid, prefix, next_hop);
            }
        }
        NotificationKind::Address => {
            if let (Some(prefix), Some(address)) = (n.prefix, posted.address) {
                n.prefix = Some(
                    on_link_prefix_length(luid, address)
                        .and_then(|len| IpNet::new(prefix.addr(), len).ok())
                        .unwrap_or_else(|| host_prefix(prefix.addr())),
                );
            }
        }
    }
    n
}

/// An address as a host prefix, when its on-link prefix length is unknown.
fn host_prefix(addr: std::net::IpAddr) -> IpNet {
    IpNet::from(addr)
}

/// `Metric` and `Connected` of an interface, by its key (family, LUID). The row is read
/// through raw pointers: `Connected` is a BOOLEAN byte, read as `u8`, any non-zero value
/// meaning true.
fn interface_state(luid: Luid, family: ADDRESS_FAMILY) -> Option<(u32, bool)> {
    let mut row = MaybeUninit::<MIB_IPINTERFACE_ROW>::zeroed();
    let p = row.as_mut_ptr();
    // SAFETY: `p` points to a zeroed row we own; the key fields are written, the API fills
    // the rest, and fields are read back by raw pointer, never as a typed `bool`.
    unsafe {
        addr_of_mut!((*p).Family).write(family);
        addr_of_mut!((*p).InterfaceLuid).write(NET_LUID_LH { Value: luid.0 });
        if GetIpInterfaceEntry(p) != NO_ERROR {
            return None;
        }
        let metric = addr_of!((*p).Metric).read();
        let connected = addr_of!((*p).Connected).cast::<u8>().read() != 0;
        Some((metric, connected))
    }
}

/// A route's `Metric`, by its key (destination prefix, next hop, LUID).
fn route_metric(luid: Luid, prefix: IpNet, next_hop: SOCKADDR_INET) -> Option<u32> {
    let mut row = MaybeUninit::<MIB_IPFORWARD_ROW2>::zeroed();
    let p = row.as_mut_ptr();
    // SAFETY: as in `interface_state`.
    unsafe {
        addr_of_mut!((*p).InterfaceLuid).write(NET_LUID_LH { Value: luid.0 });
        addr_of_mut!((*p).DestinationPrefix.Prefix).write(to_sockaddr_inet(prefix.addr()));
        addr_of_mut!((*p).DestinationPrefix.PrefixLength).write(prefix.prefix_len());
        addr_of_mut!((*p).NextHop).write(next_hop);
        if GetIpForwardEntry2(p) != NO_ERROR {
            return None;
        }
        Some(addr_of!((*p).Metric).read())
    }
}

/// An address's `OnLinkPrefixLength`, by its key (address, LUID).
fn on_link_prefix_length(luid: Luid, address: SOCKADDR_INET) -> Option<u8> {
    let mut row = MaybeUninit::<MIB_UNICASTIPADDRESS_ROW>::zeroed();
    let p = row.as_mut_ptr();
    // SAFETY: as in `interface_state`.
    unsafe {
        addr_of_mut!((*p).InterfaceLuid).write(NET_LUID_LH { Value: luid.0 });
        addr_of_mut!((*p).Address).write(address);
        if GetUnicastIpAddressEntry(p) != NO_ERROR {
            return None;
        }
        Some(addr_of!((*p).OnLinkPrefixLength).read())
    }
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
    let mut n = Notification::new(NotificationKind::Route, action);
    let mut next_hop = None;
    let mut family = AF_UNSPEC;
    if !row.is_null() {
        // SAFETY: `row` is a valid row for the duration of the callback; only its key fields
        // (prefix, next hop, LUID, index) are read, each by raw pointer, all plain integers.
        unsafe {
            n.luid = Some(Luid(addr_of!((*row).InterfaceLuid.Value).read()));
            n.interface_index = Some(addr_of!((*row).InterfaceIndex).read());
            let p = addr_of!((*row).DestinationPrefix.Prefix).read();
            let len = addr_of!((*row).DestinationPrefix.PrefixLength).read();
            n.prefix = prefix(from_sockaddr_inet(&p), len).map(|p| p.trunc());
            family = p.si_family;
            next_hop = Some(addr_of!((*row).NextHop).read());
        }
    }
    if let Some(c) = context(ctx) {
        c.post(Posted {
            notification: n,
            family,
            next_hop,
            address: None,
        });
    }
}

unsafe extern "system" fn on_interface(
    ctx: *const c_void,
    row: *const MIB_IPINTERFACE_ROW,
    action: MIB_NOTIFICATION_TYPE,
) {
    let mut n = Notification::new(NotificationKind::Interface, action);
    let mut family = AF_UNSPEC;
    if !row.is_null() {
        // SAFETY: as in `on_route`; the key is family, LUID and index. `Metric` and
        // `Connected` are not filled here and are queried later.
        unsafe {
            family = addr_of!((*row).Family).read();
            n.luid = Some(Luid(addr_of!((*row).InterfaceLuid.Value).read()));
            n.interface_index = Some(addr_of!((*row).InterfaceIndex).read());
        }
    }
    if let Some(c) = context(ctx) {
        c.post(Posted {
            notification: n,
            family,
            next_hop: None,
            address: None,
        });
    }
}

unsafe extern "system" fn on_address(
    ctx: *const c_void,
    row: *const MIB_UNICASTIPADDRESS_ROW,
    action: MIB_NOTIFICATION_TYPE,
) {
    let mut n = Notification::new(NotificationKind::Address, action);
    let mut address = None;
    let mut family = AF_UNSPEC;
    if !row.is_null() {
        // SAFETY: as in `on_route`; the key is address, LUID and index. The on-link prefix
        // length is not filled here and is queried later.
        unsafe {
            n.luid = Some(Luid(addr_of!((*row).InterfaceLuid.Value).read()));
            n.interface_index = Some(addr_of!((*row).InterfaceIndex).read());
            let a = addr_of!((*row).Address).read();
            family = a.si_family;
            n.prefix = from_sockaddr_inet(&a).map(host_prefix);
            address = Some(a);
        }
    }
    if let Some(c) = context(ctx) {
        c.post(Posted {
            notification: n,
            family,
            next_hop: None,
            address,
        });
    }
}
