//! [`UnicastIf`]: holds a stream socket to one interface with `IP_UNICAST_IF` /
//! `IPV6_UNICAST_IF`, local to the socket (never per-destination host routes, which would
//! leak other programs' traffic to that address around the tunnel and outlive a crash).

use std::io;
use std::net::IpAddr;
use std::os::windows::io::AsRawSocket;

use windows_sys::Win32::Networking::WinSock::{
    setsockopt, IPPROTO_IP, IPPROTO_IPV6, IPV6_UNICAST_IF, IP_UNICAST_IF,
};

use crate::os::best_route::{unicast_if_value, StreamPin};

/// Pins with `IP_UNICAST_IF` (IPv4, index in network byte order) or `IPV6_UNICAST_IF`
/// (IPv6, host order).
#[derive(Clone, Copy, Debug, Default)]
pub struct UnicastIf;

impl StreamPin for UnicastIf {
    fn pin(&self, socket: &socket2::Socket, family_of: IpAddr, interface: u32) -> io::Result<()> {
        let (level, name) = match family_of {
            IpAddr::V4(_) => (IPPROTO_IP, IP_UNICAST_IF),
            IpAddr::V6(_) => (IPPROTO_IPV6, IPV6_UNICAST_IF),
        };
        let value = unicast_if_value(family_of, interface);
        // SAFETY: `value` lives across the call and its size is passed with it.
        let rc = unsafe {
            setsockopt(
                socket.as_raw_socket() as usize,
                level,
                name,
                (&value as *const u32).cast(),
                std::mem::size_of::<u32>() as i32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
