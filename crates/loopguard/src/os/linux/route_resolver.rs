//! [`RouteResolver`]: `ip route get` lookups over one open netlink socket, synchronously.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::route_get::{answer, operation, request};
use super::KernelRoute;
use super::RoutesError;

/// How long one answer may take before the lookup fails (the kernel answers route queries
/// at once; this only bounds a lookup that would otherwise hang).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks the kernel how it would route packets, over one rtnetlink socket kept open.
///
/// [`route_get`](super::route_get) opens a socket (and drives it on tokio) per lookup. A
/// strategy that resolves a path on every cache miss keeps a resolver instead: a lookup is
/// then one request and one answer on a blocking socket, a few microseconds, and works from
/// synchronous code such as [`Strategy::resolve`](crate::Strategy::resolve) (wrap it in a
/// `Mutex` to share it: lookups need `&mut self`).
///
/// The socket belongs to the network namespace of the thread that called
/// [`new`](Self::new).
pub struct RouteResolver {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

impl fmt::Debug for RouteResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteResolver")
            .field("fd", &self.socket.as_raw_fd())
            .finish_non_exhaustive()
    }
}

impl RouteResolver {
    /// Opens the netlink socket.
    pub fn new() -> Result<Self, RoutesError> {
        let op = "opening a rtnetlink socket";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| RoutesError::os(op, e))?;
        socket.bind_auto().map_err(|e| RoutesError::os(op, e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| RoutesError::os(op, e))?;
        set_receive_timeout(&socket, ANSWER_TIMEOUT).map_err(|e| RoutesError::os(op, e))?;
        Ok(RouteResolver {
            socket,
            sequence: 0,
            buf: Vec::with_capacity(32 * 1024),
        })
    }

    /// The route to `destination` for packets carrying `mark` (`None`: unmarked), as
    /// [`route_get`](super::route_get) reports it, with the interface's name (a second
    /// request).
    pub fn route_get(
        &mut self,
        destination: IpAddr,
        mark: Option<u32>,
    ) -> Result<KernelRoute, RoutesError> {
        let mut route = self.lookup(destination, mark)?;
        if let Some(index) = route.interface_index {
            // The device may vanish between the two requests; the index still says where.
            route.interface = self.link_name(index).ok();
        }
        Ok(route)
    }

    /// One `RTM_GETROUTE` exchange: like [`route_get`](Self::route_get) but without the
    /// interface's name (`interface` is `None`; `interface_index` says where). What a
    /// strategy needs per cache miss: the source and the interface index.
    pub fn lookup(
        &mut self,
        destination: IpAddr,
        mark: Option<u32>,
    ) -> Result<KernelRoute, RoutesError> {
        let op = operation(destination, mark);
        let answers = self.exchange(
            RouteNetlinkMessage::GetRoute(request(destination, mark)),
            &op,
        );
        answer(destination, answers)
    }

    fn link_name(&mut self, index: u32) -> Result<String, RoutesError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        let op = format!("looking up device index {index}");
        self.exchange(RouteNetlinkMessage::GetLink(m), &op)?
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                }),
                _ => None,
            })
            .ok_or(RoutesError::NoSuchDeviceIndex(index))
    }

    /// Sends one request and collects its answers (kernel errors become
    /// [`RoutesError::Netlink`] named by `op`).
    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, RoutesError> {
        self.exchange_with(message, NLM_F_REQUEST, op)
    }

    /// A dump request (`NLM_F_DUMP`): every object of the kind `message` names, all parts
    /// of the multipart answer.
    pub(crate) fn dump(
        &mut self,
        message: RouteNetlinkMessage,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, RoutesError> {
        self.exchange_with(message, NLM_F_REQUEST | NLM_F_DUMP, op)
    }

    fn exchange_with(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, RoutesError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut request = NetlinkMessage::from(message);
        request.header.flags = flags;
        request.header.sequence_number = self.sequence;
        request.finalize();
        self.buf.clear();
        self.buf.resize(request.buffer_len(), 0);
        request.serialize(&mut self.buf);
        self.socket
            .send(&self.buf, 0)
            .map_err(|e| RoutesError::os(op, e))?;
        let mut out = Vec::new();
        loop {
            self.buf.clear();
            self.socket
                .recv(&mut self.buf, 0)
                .map_err(|e| RoutesError::os(op, e))?;
            let mut offset = 0;
            let mut more = false;
            while offset < self.buf.len() {
                let message =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..])
                        .map_err(|e| RoutesError::os(op, io::Error::other(e.to_string())))?;
                let length = message.header.length as usize;
                offset += length.max(1).next_multiple_of(4);
                // An answer to an earlier request that timed out: not ours.
                if message.header.sequence_number != self.sequence {
                    more = true;
                    continue;
                }
                more = message.header.flags & NLM_F_MULTIPART != 0;
                match message.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(RoutesError::os(
                                op,
                                io::Error::from_raw_os_error(-code.get()),
                            )),
                            None => Ok(out),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
            }
            if !more {
                return Ok(out);
            }
        }
    }
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: `tv` is a valid timeval for the duration of the call and the length matches.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback always has a route, in every namespace, without privileges.
    #[tokio::test(flavor = "current_thread")]
    async fn one_resolver_answers_many_lookups_like_route_get() {
        let mut resolver = RouteResolver::new().unwrap();
        let dst: IpAddr = "127.0.0.1".parse().unwrap();
        let fresh = super::super::route_get(dst, None).await.unwrap();
        for _ in 0..3 {
            let reused = resolver.route_get(dst, Some(0x4c47)).unwrap();
            assert_eq!(reused.interface.as_deref(), Some("lo"));
            assert_eq!(reused, fresh);
            let bare = resolver.lookup(dst, Some(0x4c47)).unwrap();
            assert_eq!(bare.interface, None);
            assert_eq!(bare.interface_index, fresh.interface_index);
            assert_eq!(bare.source, fresh.source);
        }
        let v6: IpAddr = "::1".parse().unwrap();
        // A host may run without IPv6: then the answer is an error, never a hang or a panic;
        // that part is skipped (and in CI, where nothing may skip, it fails).
        match resolver.lookup(v6, None) {
            Ok(r) => assert_eq!(r.destination, v6),
            Err(e) => {
                loopguard_lab::skip_because(
                    "one_resolver_answers_many_lookups_like_route_get (IPv6)",
                    &format!("no IPv6 loopback here: {e}"),
                );
            }
        }
    }

    /// A destination without a route is a typed "unreachable" naming it, and the resolver
    /// keeps answering afterwards. In a namespace of its own, with nothing but loopback.
    #[test]
    fn no_route_is_unreachable_and_the_socket_stays_usable() {
        if loopguard_lab::skip_unprivileged("route_resolver_no_route") {
            return;
        }
        let ns = loopguard_lab::Netns::create(&loopguard_lab::unique_name("resolver")).unwrap();
        ns.run(|| {
            let mut resolver = RouteResolver::new().unwrap();
            let dst: IpAddr = "192.0.2.1".parse().unwrap();
            for _ in 0..2 {
                match resolver.lookup(dst, Some(0x4c47)) {
                    Err(RoutesError::Unreachable { destination, .. }) => {
                        assert_eq!(destination, dst)
                    }
                    other => panic!("expected unreachable, got {other:?}"),
                }
                let lo = resolver
                    .route_get("127.0.0.1".parse().unwrap(), None)
                    .unwrap();
                assert_eq!(lo.interface.as_deref(), Some("lo"));
            }
        })
        .unwrap();
    }
}
