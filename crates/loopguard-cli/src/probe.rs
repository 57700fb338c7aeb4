//! `loopguard probe udp|tcp ADDR:PORT`: round trips to an echo server through a guarded socket.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::args::MarkArg;

/// Transport to probe with.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One datagram per round trip, echoed back by the server.
    Udp,
    /// One connection; each round trip writes a message and reads the echo.
    Tcp,
}

/// Arguments of `loopguard probe`.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Transport: udp or tcp
    #[arg(value_enum)]
    pub transport: Transport,
    /// Address of an echo server.
    #[arg(
        value_name = "ADDR:PORT",
        help = "Address of an echo server, e.g. 192.0.2.1:7 or [2001:db8::1]:7, or \
                HOST:PORT with --resolver"
    )]
    pub destination: String,
    /// Resolve a host name in ADDR:PORT through a guarded socket against this DNS server
    /// (IP or IP:PORT, port 53 by default); the system resolver is never asked
    #[arg(long, value_name = "ADDR", value_parser = parse_resolver)]
    pub resolver: Option<SocketAddr>,
    #[command(flatten)]
    pub mark: MarkArg,
    /// Guard with the pin strategy instead of the mark: the best route of `main` outside
    /// this tunnel device, no mark and no policy rules
    #[arg(long, value_name = "IFACE", conflicts_with_all = ["mark", "mask"])]
    pub pin_outside: Option<String>,
    /// Number of round trips
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// Bytes per message
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=65_507))]
    pub size: u32,
    /// How long to wait for each echo (and for the TCP connection), in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// One failed round trip.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Failure {
    /// Round number, from 1.
    pub round: u32,
    /// What went wrong.
    pub error: String,
}

/// What a probe found; printed as text or as JSON.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Report {
    /// `udp` or `tcp`.
    pub transport: Transport,
    /// The echo server.
    pub destination: SocketAddr,
    /// The mark the socket carried; `null` with `--pin-outside`.
    pub mark: Option<u32>,
    /// The tunnel device the pin strategy kept the socket out of; `null` with the mark.
    pub pin_outside: Option<String>,
    /// Bytes per message.
    pub size: u32,
    /// Round trips asked for.
    pub count: u32,
    /// Messages handed to the socket.
    pub sent: u32,
    /// Correct echoes received in time.
    pub received: u32,
    /// Round-trip time of each received echo, in milliseconds, in order.
    pub rtt_ms: Vec<f64>,
    /// Round trips that failed, with the reason.
    pub failures: Vec<Failure>,
    /// An error that stopped the probe (unreachable destination, protection refused), if any.
    pub error: Option<String>,
}

impl Report {
    /// Whether every round trip succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.received == self.count
    }

    fn text(&self) -> String {
        let guard = match (&self.pin_outside, self.mark) {
            (Some(tunnel), _) => format!("pinned outside {tunnel}"),
            (None, Some(mark)) => format!("with mark {mark:#x}"),
            (None, None) => "guarded".to_owned(),
        };
        let mut out = format!(
            "probe {} {} {guard}: {} round trip(s) of {} bytes\n",
            serde_json::to_value(self.transport)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            self.destination,
            self.count,
            self.size
        );
        let mut rtts = self.rtt_ms.iter();
        for round in 1..=self.count {
            if let Some(f) = self.failures.iter().find(|f| f.round == round) {
                out.push_str(&format!("  {round}: failed: {}\n", f.error));
            } else if let Some(rtt) = rtts.next() {
                out.push_str(&format!("  {round}: {rtt:.3} ms\n"));
            }
        }
        out.push_str(&format!(
            "{} sent, {} received, {} failed",
            self.sent,
            self.received,
            self.count - self.received
        ));
        if !self.rtt_ms.is_empty() {
            let min = self.rtt_ms.iter().copied().fold(f64::INFINITY, f64::min);
            let max = self.rtt_ms.iter().copied().fold(0.0, f64::max);
            let avg = self.rtt_ms.iter().sum::<f64>() / self.rtt_ms.len() as f64;
            out.push_str(&format!("; rtt min/avg/max {min:.3}/{avg:.3}/{max:.3} ms"));
        }
        out
    }
}

/// The payload of round `round`: every round differs, so a late echo of an earlier round is
/// never taken for the current one.
pub fn payload(round: u32, size: u32) -> Vec<u8> {
    let seed = round.wrapping_mul(0x9e37_79b9);
    (0..size)
        .map(|i| (seed.wrapping_add(i.wrapping_mul(31)) >> 3) as u8 ^ (round as u8))
        .collect()
}

/// A duration in milliseconds, rounded to the microsecond.
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs the probe; `Ok(true)` when every round trip succeeded.
#[cfg(target_os = "linux")]
pub async fn run(args: ProbeArgs) -> anyhow::Result<bool> {
    let config = args.mark.config()?;
    let report = match &args.pin_outside {
        None => {
            let factory = || loopguard::SocketFactory::new(loopguard::LinuxMark::new(config));
            let destination = match parse_destination(&args.destination)? {
                Some(addr) => addr,
                None => linux::resolve(&args, factory()).await?,
            };
            check_destination(destination)?;
            linux::probe(&args, destination, factory(), Some(config.mark())).await
        }
        Some(tunnel) => {
            use loopguard::os::linux::{PinOutside, PinOutsideError};
            let strategy = match PinOutside::for_tunnel_named(tunnel) {
                Ok(s) => std::sync::Arc::new(s),
                Err(e @ PinOutsideError::NoSuchTunnel(_)) => {
                    return Err(crate::UsageError(format!("--pin-outside: {e}")).into())
                }
                Err(e) => return Err(e.into()),
            };
            let factory = || loopguard::SocketFactory::new(strategy.clone());
            let destination = match parse_destination(&args.destination)? {
                Some(addr) => addr,
                None => linux::resolve(&args, factory()).await?,
            };
            check_destination(destination)?;
            linux::probe(&args, destination, factory(), None).await
        }
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!("{}", report.text());
    }
    if let Some(error) = &report.error {
        eprintln!("error: {error}");
    }
    Ok(report.ok())
}

/// Runs the probe: Linux only.
#[cfg(not(target_os = "linux"))]
pub async fn run(_args: ProbeArgs) -> anyhow::Result<bool> {
    Err(crate::linux_only("probe"))
}

/// Parses `--resolver`: an IP address, or an IP address and port.
pub fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{text}` is not an IP address or IP:PORT of a DNS server"))
}

/// The destination as an address, `None` for a host name. An IPv6 address may carry its zone
/// as an interface index or name (`[fe80::2%3]:7`, `[fe80::2%eth0]:7`); an unknown
/// interface name is a usage error naming it.
#[cfg(unix)]
pub fn parse_destination(text: &str) -> Result<Option<SocketAddr>, crate::UsageError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    let Some(inner) = text.strip_prefix('[') else {
        return Ok(None);
    };
    let bad = |why: String| crate::UsageError(format!("destination `{text}`: {why}"));
    let (inside, port) = inner
        .split_once("]:")
        .ok_or_else(|| bad("expected [ADDR%ZONE]:PORT".into()))?;
    let (ip, zone) = inside
        .split_once('%')
        .ok_or_else(|| bad(format!("`{inside}` is not an IPv6 address")))?;
    let ip: std::net::Ipv6Addr = ip
        .parse()
        .map_err(|_| bad(format!("`{ip}` is not an IPv6 address")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("`{port}` is not a port")))?;
    let scope = zone_index(zone).ok_or_else(|| {
        bad(format!(
            "zone `{zone}` is neither an interface index nor the name of an interface here"
        ))
    })?;
    Ok(Some(SocketAddr::V6(std::net::SocketAddrV6::new(
        ip, port, 0, scope,
    ))))
}

/// The index of the interface named `zone` (`if_nametoindex`), or `zone` itself if it is a
/// number.
#[cfg(unix)]
fn zone_index(zone: &str) -> Option<u32> {
    if let Ok(n) = zone.parse() {
        return Some(n);
    }
    let name = std::ffi::CString::new(zone).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Whether a datagram from `from` answers one sent to `to`: same address and port. The scope
/// of a link-local reply is the interface it arrived on, which a destination written without
/// a zone does not name, so scopes are compared only when the destination has one.
pub fn same_peer(from: SocketAddr, to: SocketAddr) -> bool {
    match (from, to) {
        (SocketAddr::V6(f), SocketAddr::V6(t)) => {
            f.ip() == t.ip()
                && f.port() == t.port()
                && (t.scope_id() == 0 || f.scope_id() == t.scope_id())
        }
        _ => from.ip() == to.ip() && from.port() == to.port(),
    }
}

/// Splits `HOST:PORT` (the host a name, not an address).
pub fn split_host_port(text: &str) -> Result<(&str, u16), crate::UsageError> {
    let bad = || {
        crate::UsageError(format!(
            "destination `{text}`: expected ADDR:PORT, or HOST:PORT with --resolver"
        ))
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() || host.contains(':') {
        return Err(bad());
    }
    Ok((host, port))
}

fn check_destination(destination: SocketAddr) -> anyhow::Result<()> {
    if destination.port() == 0 {
        return Err(crate::UsageError(format!(
            "destination {destination}: port 0 is not a port one can send to"
        ))
        .into());
    }
    if destination.ip().is_unspecified() {
        return Err(crate::UsageError(format!(
            "destination {destination}: the unspecified address is not a destination"
        ))
        .into());
    }
    Ok(())
}

/// Says what a library error means for the probe, in words a user can act on.
#[cfg(target_os = "linux")]
pub fn describe(error: &loopguard::Error, destination: SocketAddr) -> String {
    use loopguard::Error;
    match error {
        Error::HostUnreachable { destination } => {
            format!("{destination} is unreachable: no route outside the tunnel leads there (nothing was sent)")
        }
        Error::TunnelGone { destination } => {
            format!("{destination} not tried: the tunnel is not in the host's tables (deleted, or restarted under a new identity); nothing was sent")
        }
        Error::Protection(p) => format!(
            "protection failed, nothing was sent: {}",
            crate::out::with_sources(p)
        ),
        Error::Io(e) => match e.raw_os_error() {
            Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => {
                format!("{destination} is unreachable: {e}")
            }
            Some(libc::ECONNREFUSED) => {
                format!("{destination} refused: nothing listens there ({e})")
            }
            Some(libc::EMSGSIZE) => format!(
                "{destination}: the datagram is larger than the path MTU allows: guarded \
                 sockets set don't-fragment (IP_MTU_DISCOVER = IP_PMTUDISC_PROBE) unless \
                 asked otherwise (UdpSocket::set_fragmentation), so the kernel refuses it \
                 instead of fragmenting ({e})"
            ),
            _ => format!("{destination}: {e}"),
        },
        other => format!("{destination}: {other}"),
    }
}

/// The kernel's path MTU towards `destination` for sockets carrying `mark` (`IP_MTU` /
/// `IPV6_MTU` of a connected socket with that mark, so the lookup takes the guarded path),
/// when it can tell.
#[cfg(target_os = "linux")]
fn path_mtu(destination: SocketAddr, mark: u32) -> Option<u32> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(destination), Type::DGRAM, None).ok()?;
    socket.set_mark(mark).ok()?;
    socket.connect(&destination.into()).ok()?;
    let (level, name) = if destination.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the pointers describe `mtu` and `len`, alive for the call.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            level,
            name,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(mtu as u32)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::time::{Duration, Instant};

    use loopguard::{DatagramOut, SocketFactory, Strategy};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    use super::{describe, millis, payload, Failure, ProbeArgs, Report, Transport};

    /// Resolves `HOST:PORT` through a guarded resolver (never the system's).
    pub(super) async fn resolve<S: Strategy>(
        args: &ProbeArgs,
        factory: SocketFactory<S>,
    ) -> anyhow::Result<SocketAddr> {
        let (host, port) = super::split_host_port(&args.destination)?;
        let Some(server) = args.resolver else {
            return Err(crate::UsageError(format!(
                "destination `{}` is a host name: give --resolver ADDR (loopguard resolves \
                 through a guarded socket, never through the system resolver)",
                args.destination
            ))
            .into());
        };
        let resolver = loopguard::dns::GuardedResolver::new(factory, [server])?
            .with_timeout(Duration::from_millis(args.timeout_ms), 2);
        let addrs = resolver.lookup(host, port).await?;
        let first = *addrs
            .first()
            .ok_or_else(|| anyhow::anyhow!("{host} has no address"))?;
        eprintln!("{host} resolved through {server} (guarded): {first}");
        Ok(first)
    }

    pub(super) async fn probe<S: Strategy>(
        args: &ProbeArgs,
        destination: SocketAddr,
        factory: SocketFactory<S>,
        mark: Option<u32>,
    ) -> Report {
        let mut report = Report {
            transport: args.transport,
            destination,
            mark,
            pin_outside: args.pin_outside.clone(),
            size: args.size,
            count: args.count,
            sent: 0,
            received: 0,
            rtt_ms: Vec::new(),
            failures: Vec::new(),
            error: None,
        };
        let wait = Duration::from_millis(args.timeout_ms);
        match args.transport {
            Transport::Udp => udp(&factory, args, wait, &mut report).await,
            Transport::Tcp => tcp(&factory, args, wait, &mut report).await,
        }
        report
    }

    async fn udp<S: Strategy>(
        factory: &SocketFactory<S>,
        args: &ProbeArgs,
        wait: Duration,
        report: &mut Report,
    ) {
        let dst = report.destination;
        let local: SocketAddr = if dst.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = match factory.bind(local) {
            Ok(s) => s,
            Err(e) => {
                report.error = Some(describe(&e, dst));
                return;
            }
        };
        let mut buf = vec![0u8; 65_536];
        for round in 1..=args.count {
            let message = payload(round, args.size);
            let start = Instant::now();
            if let Err(e) = socket.send(&DatagramOut::new(dst, &message)).await {
                let fatal = e.is_fatal()
                    || matches!(
                        e,
                        loopguard::Error::HostUnreachable { .. }
                            | loopguard::Error::TunnelGone { .. }
                    );
                let mut text = describe(&e, dst);
                if let (loopguard::Error::Io(io), Some(mark)) = (&e, report.mark) {
                    if io.raw_os_error() == Some(libc::EMSGSIZE) {
                        if let Some(mtu) = super::path_mtu(dst, mark) {
                            text += &format!("; the path MTU towards {dst} is {mtu} bytes");
                        }
                    }
                }
                if fatal {
                    report.error = Some(text);
                    return;
                }
                report.failures.push(Failure { round, error: text });
                continue;
            }
            report.sent += 1;
            let deadline = start + wait;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match timeout(left, socket.recv_from(&mut buf)).await {
                    Err(_) => {
                        report.failures.push(Failure {
                            round,
                            error: format!("no echo within {} ms", args.timeout_ms),
                        });
                        break;
                    }
                    Ok(Err(e)) => {
                        report.failures.push(Failure {
                            round,
                            error: describe(&e, dst),
                        });
                        break;
                    }
                    Ok(Ok(meta)) => {
                        // Stale echoes of earlier rounds and strangers' datagrams are skipped.
                        let echoed = super::same_peer(meta.addr, dst)
                            && meta.datagrams(&buf).any(|d| d == message);
                        if echoed {
                            report.received += 1;
                            report.rtt_ms.push(millis(start.elapsed()));
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn tcp<S: Strategy>(
        factory: &SocketFactory<S>,
        args: &ProbeArgs,
        wait: Duration,
        report: &mut Report,
    ) {
        let dst = report.destination;
        let mut stream = match timeout(wait, factory.connect(dst)).await {
            Err(_) => {
                report.error = Some(format!(
                    "{dst}: no connection within {} ms",
                    args.timeout_ms
                ));
                return;
            }
            Ok(Err(e)) => {
                report.error = Some(describe(&e, dst));
                return;
            }
            Ok(Ok(s)) => s,
        };
        let mut buf = vec![0u8; args.size as usize];
        for round in 1..=args.count {
            let message = payload(round, args.size);
            let start = Instant::now();
            let result = timeout(wait, async {
                stream.write_all(&message).await?;
                report.sent += 1;
                stream.read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(())
            })
            .await;
            let error = match result {
                Ok(Ok(())) if buf == message => {
                    report.received += 1;
                    report.rtt_ms.push(millis(start.elapsed()));
                    continue;
                }
                Ok(Ok(())) => "the echo differs from what was sent".to_owned(),
                Ok(Err(e)) => describe(&loopguard::Error::Io(e), dst),
                Err(_) => format!("no echo within {} ms", args.timeout_ms),
            };
            // The stream's state is unknown after a failure: the remaining rounds fail too.
            for r in round..=args.count {
                report.failures.push(Failure {
                    round: r,
                    error: error.clone(),
                });
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_rounds_to_microseconds() {
        assert_eq!(millis(std::time::Duration::from_nanos(1_234_567)), 1.235);
    }

    #[test]
    fn payloads_differ_between_rounds_and_have_the_size() {
        assert_eq!(payload(1, 64).len(), 64);
        assert_eq!(payload(1, 1).len(), 1);
        assert_ne!(payload(1, 64), payload(2, 64));
        assert_eq!(payload(7, 100), payload(7, 100));
    }

    #[test]
    fn a_report_is_ok_only_when_every_round_came_back() {
        let mut r = Report {
            transport: Transport::Udp,
            destination: "192.0.2.1:7".parse().unwrap(),
            mark: Some(0x4c47),
            pin_outside: None,
            size: 64,
            count: 2,
            sent: 2,
            received: 2,
            rtt_ms: vec![0.5, 0.25],
            failures: vec![],
            error: None,
        };
        assert!(r.ok());
        let text = r.text();
        assert!(
            text.contains("  1: 0.500 ms") && text.contains("  2: 0.250 ms"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["transport"], "udp");
        assert_eq!(json["rtt_ms"], serde_json::json!([0.5, 0.25]));
        r.received = 1;
        r.rtt_ms.pop();
        r.failures.push(Failure {
            round: 2,
            error: "no echo within 1000 ms".into(),
        });
        assert!(!r.ok());
        assert!(r.text().contains("  2: failed: no echo within 1000 ms"));
    }

    #[test]
    fn host_names_and_resolvers_parse() {
        assert_eq!(
            split_host_port("control.lg.example:7").unwrap(),
            ("control.lg.example", 7)
        );
        for bad in ["control.lg.example", "host:port", ":7", "2001:db8::1:7"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_resolver("198.51.100.2").unwrap(),
            "198.51.100.2:53".parse().unwrap()
        );
        assert_eq!(
            parse_resolver("[2001:db8::53]:5353").unwrap(),
            "[2001:db8::53]:5353".parse().unwrap()
        );
        assert_eq!(
            parse_resolver("2001:db8::53").unwrap(),
            "[2001:db8::53]:53".parse().unwrap()
        );
        assert!(parse_resolver("dns.example")
            .unwrap_err()
            .contains("dns.example"));
    }

    #[cfg(unix)]
    #[test]
    fn zones_are_indexes_or_interface_names_and_bad_ones_are_named() {
        let with = |zone: u32| -> Option<SocketAddr> {
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                "fe80::2".parse().unwrap(),
                7,
                0,
                zone,
            )))
        };
        assert_eq!(parse_destination("[fe80::2%3]:7").unwrap(), with(3));
        assert_eq!(parse_destination("[fe80::2%lo]:7").unwrap(), with(1));
        assert_eq!(
            parse_destination("192.0.2.1:7").unwrap(),
            Some("192.0.2.1:7".parse().unwrap())
        );
        assert_eq!(parse_destination("echo.example:7").unwrap(), None);
        for (bad, named) in [
            ("[fe80::2%lg-nope]:7", "lg-nope"),
            ("[fe80::2%lo]", "[ADDR%ZONE]:PORT"),
            ("[fe80::zz%lo]:7", "fe80::zz"),
            ("[fe80::2%lo]:x", "`x`"),
        ] {
            let e = parse_destination(bad).unwrap_err().to_string();
            assert!(e.contains(named), "{bad}: {e}");
        }
    }

    #[test]
    fn a_link_local_reply_matches_a_destination_without_a_zone() {
        let v6 = |text: &str, scope: u32| {
            let mut a: std::net::SocketAddrV6 = text.parse().unwrap();
            a.set_scope_id(scope);
            SocketAddr::V6(a)
        };
        let reply = v6("[fe80::2]:7", 4);
        assert!(same_peer(reply, v6("[fe80::2]:7", 0)));
        assert!(same_peer(reply, v6("[fe80::2]:7", 4)));
        assert!(!same_peer(reply, v6("[fe80::2]:7", 5)));
        assert!(!same_peer(reply, v6("[fe80::2]:8", 0)));
        assert!(!same_peer(reply, v6("[fe80::3]:7", 0)));
        let v4: SocketAddr = "192.0.2.1:7".parse().unwrap();
        assert!(same_peer(v4, v4));
        assert!(!same_peer(v4, "192.0.2.1:8".parse().unwrap()));
    }

    #[test]
    fn port_zero_and_unspecified_destinations_are_usage_errors() {
        for bad in ["192.0.2.1:0", "0.0.0.0:7", "[::]:7"] {
            let e = check_destination(bad.parse().unwrap()).unwrap_err();
            assert!(e.downcast_ref::<crate::UsageError>().is_some(), "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(check_destination("192.0.2.1:7".parse().unwrap()).is_ok());
    }
}
