//! DNS: host names looked up through guarded sockets.
//!
//! When the tunnel owns the system's DNS, a client that asks the system resolver for its
//! control plane's name either deadlocks (the tunnel is not up yet) or loops (the query enters
//! the tunnel it is trying to set up). [`GuardedResolver`] asks the upstream resolvers the
//! application names, over sockets from the application's [`SocketFactory`]: UDP first, TCP
//! when the answer is truncated, A and AAAA in parallel. Answers are cached for their TTL and
//! forgotten on every [`reset`](GuardedResolver::reset), which
//! [`Roaming`](crate::monitor::Roaming) calls on every network change.
//!
//! This is a small stub resolver built on hickory-proto's message types alone, for clients
//! that need a few names (a control plane, a relay) and not a full resolver: it adds no
//! dependency beyond hickory-proto, asks only the names as given (no search domains that
//! would send them to other servers), and tells a fatal [`Error::Protection`] apart from a
//! server's answer in its typed [`DnsError`]. Every query goes through
//! [`UdpSocket::send`](crate::UdpSocket::send) and [`SocketFactory::connect`]. For the whole
//! of hickory-resolver (DoT, DoH, system configuration, its caching rules) over guarded
//! sockets, use the `hickory` feature's `integrations::hickory` runtime instead.

mod wire;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode as WireCode;
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::monitor::Reset;
use crate::{DatagramOut, Error, SocketFactory, Strategy};
use wire::Answer;

/// Why a name could not be looked up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The resolver was given no upstream server.
    #[error("no upstream DNS server given")]
    NoServers,
    /// Not a valid host name.
    #[error("{name:?} is not a valid host name: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// Why.
        reason: String,
    },
    /// The name does not exist, or has no address.
    #[error("{name} has no address (the servers said {reason})")]
    NotFound {
        /// The name.
        name: String,
        /// `no such name` or `no address records`.
        reason: &'static str,
    },
    /// No server answered in time.
    #[error("no answer for {name} from {servers} within the time limit")]
    Timeout {
        /// The name.
        name: String,
        /// The servers asked, comma-separated.
        servers: String,
    },
    /// Every server that answered refused or failed.
    #[error("DNS servers could not answer for {name}: {code}")]
    Server {
        /// The name.
        name: String,
        /// The last server's response code.
        code: ResponseCode,
    },
    /// A server's answer over TCP could not be used: truncated even there, or not an answer
    /// to the question asked.
    #[error("the answer for {name} from {server} over TCP {problem}")]
    BadReply {
        /// The name.
        name: String,
        /// The server that sent it.
        server: SocketAddr,
        /// What was wrong with it.
        problem: &'static str,
    },
    /// A guarded socket failed: protection refused (fatal), or no path outside the tunnel
    /// to any server.
    #[error("guarded DNS socket")]
    Guard(#[from] Error),
}

/// A DNS response code that made a server's answer unusable (RFC 1035 section 4.1.1 and the
/// IANA registry of RFC 6895), so a caller can tell a server that refuses it from one that
/// failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseCode {
    /// `FORMERR` (1): the server could not read the query.
    FormErr,
    /// `SERVFAIL` (2): the server failed to answer, for example because its own upstream did
    /// not answer or DNSSEC validation failed.
    ServFail,
    /// `NOTIMP` (4): the server does not support this kind of query.
    NotImp,
    /// `REFUSED` (5): the server will not answer this client (for example, it resolves only
    /// for its own network).
    Refused,
    /// Any other code, by its number.
    Other(u16),
}

impl ResponseCode {
    /// The code's number on the wire.
    pub fn value(self) -> u16 {
        match self {
            ResponseCode::FormErr => 1,
            ResponseCode::ServFail => 2,
            ResponseCode::NotImp => 4,
            ResponseCode::Refused => 5,
            ResponseCode::Other(n) => n,
        }
    }

    fn of(code: WireCode) -> Self {
        match u16::from(code) {
            1 => ResponseCode::FormErr,
            2 => ResponseCode::ServFail,
            4 => ResponseCode::NotImp,
            5 => ResponseCode::Refused,
            n => ResponseCode::Other(n),
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseCode::FormErr => f.write_str("FORMERR"),
            ResponseCode::ServFail => f.write_str("SERVFAIL"),
            ResponseCode::NotImp => f.write_str("NOTIMP"),
            ResponseCode::Refused => f.write_str("REFUSED"),
            ResponseCode::Other(n) => write!(f, "response code {n}"),
        }
    }
}

/// Looks host names up over guarded sockets against named upstream servers. Cheap to clone;
/// clones share the cache.
pub struct GuardedResolver<S: Strategy> {
    inner: Arc<Inner<S>>,
}

impl<S: Strategy> Clone for GuardedResolver<S> {
    fn clone(&self) -> Self {
        GuardedResolver {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Strategy> fmt::Debug for GuardedResolver<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("servers", &self.inner.servers)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

struct Inner<S: Strategy> {
    factory: SocketFactory<S>,
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
    max_ttl: Duration,
    cache: Mutex<HashMap<Name, Cached>>,
    generation: AtomicU64,
}

#[derive(Clone, Debug)]
struct Cached {
    addresses: Vec<IpAddr>,
    until: Instant,
}

impl<S: Strategy> GuardedResolver<S> {
    /// A resolver asking `servers` in order, through sockets of `factory`. Defaults: 1.5 s
    /// per attempt, 2 rounds over the servers, TTLs capped at 5 minutes.
    pub fn new(
        factory: SocketFactory<S>,
        servers: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Self, DnsError> {
        let servers: Vec<SocketAddr> = servers.into_iter().collect();
        if servers.is_empty() {
            return Err(DnsError::NoServers);
        }
        Ok(GuardedResolver {
            inner: Arc::new(Inner {
                factory,
                servers,
                timeout: Duration::from_millis(1500),
                attempts: 2,
                max_ttl: Duration::from_secs(300),
                cache: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// Sets the time one query waits for its answer, and how many rounds over the servers a
    /// lookup makes. Call before cloning.
    pub fn with_timeout(mut self, per_attempt: Duration, attempts: u32) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.timeout = per_attempt;
            inner.attempts = attempts.max(1);
        }
        self
    }

    /// The upstream servers.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.inner.servers
    }

    /// Forgets every cached answer: the next lookup asks again (after roaming, the old
    /// network's answers may point at the wrong place, as with split-horizon DNS).
    pub fn reset(&self) {
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        cache.clear();
    }

    /// The addresses of `host`: IPv4 first, then IPv6. An IP literal is returned as is.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        let mut name = Name::from_utf8(host).map_err(|e| DnsError::BadName {
            name: host.to_owned(),
            reason: e.to_string(),
        })?;
        if host.is_empty() || name.is_root() {
            return Err(DnsError::BadName {
                name: host.to_owned(),
                reason: "empty".into(),
            });
        }
        // Names are asked as given, fully qualified: no search domains to leak them to.
        name.set_fqdn(true);
        let name = name.to_lowercase();
        let generation = self.inner.generation.load(Ordering::Acquire);
        if let Some(hit) = self.cached(&name) {
            return Ok(hit);
        }
        let (v4, v6) = tokio::join!(
            self.ask(&name, RecordType::A),
            self.ask(&name, RecordType::AAAA)
        );
        let (addresses, ttl) = match (v4, v6) {
            (Ok((mut a, t1)), Ok((b, t2))) => {
                a.extend(b);
                (a, t1.min(t2))
            }
            (Ok(found), Err(_)) | (Err(_), Ok(found)) => found,
            (Err(e), Err(_)) => return Err(e),
        };
        if addresses.is_empty() {
            return Err(DnsError::NotFound {
                name: name.to_string(),
                reason: "no address records",
            });
        }
        self.store(name, generation, &addresses, ttl);
        Ok(addresses)
    }

    /// `host`'s addresses with `port`, for connecting.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
        Ok(self
            .lookup_ip(host)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    fn cached(&self, name: &Name) -> Option<Vec<IpAddr>> {
        let cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(name)
            .filter(|c| c.until > Instant::now())
            .map(|c| c.addresses.clone())
    }

    fn store(&self, name: Name, generation: u64, addresses: &[IpAddr], ttl: u32) {
        let ttl = Duration::from_secs(u64::from(ttl)).min(self.inner.max_ttl);
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        // An answer that raced a reset belongs to the old network: returned, not kept.
        if self.inner.generation.load(Ordering::Acquire) != generation || ttl.is_zero() {
            return;
        }
        cache.insert(
            name,
            Cached {
                addresses: addresses.to_vec(),
                until: Instant::now() + ttl,
            },
        );
    }

    /// Asks the servers in order until one gives a definitive answer. "No data" is a
    /// definitive empty answer.
    async fn ask(&self, name: &Name, kind: RecordType) -> Result<(Vec<IpAddr>, u32), DnsError> {
        let mut last: Option<DnsError> = None;
        for _ in 0..self.inner.attempts {
            for &server in &self.inner.servers {
                let answer = match self.exchange(server, name, kind).await {
                    Ok(a) => a,
                    Err(DnsError::Guard(e)) if e.is_fatal() => return Err(DnsError::Guard(e)),
                    Err(e) => {
                        tracing::debug!(%server, %name, ?kind, error = %e, "DNS query failed");
                        last = Some(e);
                        continue;
                    }
                };
                match answer {
                    Answer::Addresses(a, ttl) => return Ok((a, ttl)),
                    Answer::NoData => return Ok((Vec::new(), 60)),
                    Answer::NoSuchName => {
                        return Err(DnsError::NotFound {
                            name: name.to_string(),
                            reason: "no such name",
                        })
                    }
                    Answer::ServerError(code) => {
                        last = Some(DnsError::Server {
                            name: name.to_string(),
                            code: ResponseCode::of(code),
                        })
                    }
                    // `exchange` retries truncated answers over TCP itself: this one was
                    // truncated there too.
                    Answer::Truncated => {
                        last = Some(DnsError::BadReply {
                            name: name.to_string(),
                            server,
                            problem: "was truncated",
                        })
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| self.timeout_error(name)))
    }

    /// One question to one server: UDP, then TCP if the answer was truncated.
    async fn exchange(
        &self,
        server: SocketAddr,
        name: &Name,
        kind: RecordType,
    ) -> Result<Answer, DnsError> {
        let id = random_id();
        let query = wire::query(id, name, kind).map_err(|reason| DnsError::BadName {
            name: name.to_string(),
            reason,
        })?;
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        match self
            .over_udp(server, &query, id, name, kind, deadline)
            .await?
        {
            Answer::Truncated => {
                self.over_tcp(server, &query, id, name, kind, deadline)
                    .await
            }
            other => Ok(other),
        }
    }

    async fn over_udp(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
        name: &Name,
        kind: RecordType,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, DnsError> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = self.inner.factory.bind(local)?;
        socket.send(&DatagramOut::new(server, query)).await?;
        let mut buf = vec![0u8; 65_535 * socket.gro_segments().max(1)];
        loop {
            let meta = match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                Err(_) => return Err(self.timeout_error(name)),
                Ok(Err(e)) => return Err(DnsError::Guard(e)),
                Ok(Ok(meta)) => meta,
            };
            // Only the server's own answer counts: anything else is ignored, not believed.
            if meta.addr.ip().to_canonical() != server.ip().to_canonical()
                || meta.addr.port() != server.port()
            {
                continue;
            }
            for datagram in meta.datagrams(&buf) {
                if let Some(answer) = wire::judge(datagram, id, name, kind) {
                    return Ok(answer);
                }
            }
        }
    }

    async fn over_tcp(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
        name: &Name,
        kind: RecordType,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, DnsError> {
        let exchange = async {
            let mut stream = self.inner.factory.connect(server).await?;
            let len = u16::try_from(query.len())
                .map_err(|_| Error::Io(std::io::Error::other("DNS query too long")))?;
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            stream.write_all(&framed).await.map_err(Error::Io)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.map_err(Error::Io)?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply).await.map_err(Error::Io)?;
            Ok::<_, Error>(reply)
        };
        let reply = match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => return Err(self.timeout_error(name)),
            Ok(r) => r?,
        };
        wire::judge(&reply, id, name, kind).ok_or_else(|| DnsError::BadReply {
            name: name.to_string(),
            server,
            problem: "did not answer the question",
        })
    }

    fn timeout_error(&self, name: &Name) -> DnsError {
        DnsError::Timeout {
            name: name.to_string(),
            servers: self
                .inner
                .servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl<S: Strategy> Reset for GuardedResolver<S> {
    fn reset(&self) {
        GuardedResolver::reset(self)
    }
}

/// A message id an off-path attacker cannot predict: std's hasher keys are random per
/// process, and a counter and the clock make every id differ. (The kernel's random source
/// port adds 16 more bits.)
fn random_id() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strategy that protects nothing, for tests on loopback only.
    struct Bare;

    impl Strategy for Bare {
        fn protect(&self, _: &socket2::Socket) -> Result<(), crate::ProtectionError> {
            Ok(())
        }
    }

    #[test]
    fn no_servers_is_an_error() {
        assert!(matches!(
            GuardedResolver::new(SocketFactory::new(Bare), []),
            Err(DnsError::NoServers)
        ));
    }

    #[tokio::test]
    async fn literals_pass_through_and_bad_names_are_refused() {
        let r = GuardedResolver::new(SocketFactory::new(Bare), ["127.0.0.1:53".parse().unwrap()])
            .unwrap();
        assert_eq!(
            r.lookup_ip("192.0.2.1").await.unwrap(),
            ["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.lookup_ip("[2001:db8::1]").await.unwrap(),
            ["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
        for bad in ["", ".", "a..b"] {
            assert!(
                matches!(r.lookup_ip(bad).await, Err(DnsError::BadName { .. })),
                "{bad:?}"
            );
        }
    }

    /// A loopback server that answers A queries with 192.0.2.7 (TTL 60), ignores AAAA
    /// queries after first sending garbage from the right address.
    async fn tiny_server() -> (SocketAddr, Arc<AtomicU64>) {
        use hickory_proto::op::{Message, MessageType};
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, Record};
        // IPv6 loopback: the Windows build of these tests runs under Wine, whose IPv4 UDP
        // sockets quinn-udp cannot set up.
        let socket = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&queries);
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = q.clone();
                reply.set_message_type(MessageType::Response);
                let _ = socket.send_to(b"\x00garbage", from).await;
                if q.queries()[0].query_type() == RecordType::A {
                    let name = q.queries()[0].name().clone();
                    reply.add_answer(Record::from_rdata(
                        name,
                        60,
                        RData::A(A("192.0.2.7".parse().unwrap())),
                    ));
                    let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
                } else {
                    let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
                }
            }
        });
        (addr, queries)
    }

    #[tokio::test]
    async fn answers_are_cached_until_a_reset() {
        let (server, queries) = tiny_server().await;
        let r = GuardedResolver::new(SocketFactory::new(Bare), [server]).unwrap();
        let a = r.lookup_ip("Control.LG.example").await.unwrap();
        assert_eq!(a, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(queries.load(Ordering::SeqCst), 2, "A and AAAA");
        r.lookup_ip("control.lg.example.").await.unwrap();
        assert_eq!(queries.load(Ordering::SeqCst), 2, "served from the cache");
        Reset::reset(&r);
        r.lookup_ip("control.lg.example").await.unwrap();
        assert_eq!(
            queries.load(Ordering::SeqCst),
            4,
            "asked again after the reset"
        );
    }

    /// A server that refuses every query is reported with its code, which a caller can match.
    #[tokio::test]
    async fn a_refusing_server_is_reported_by_its_code() {
        use hickory_proto::op::{Message, MessageType};
        let socket = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(mut reply) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                reply
                    .set_message_type(MessageType::Response)
                    .set_response_code(WireCode::Refused);
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        let r = GuardedResolver::new(SocketFactory::new(Bare), [addr])
            .unwrap()
            .with_timeout(Duration::from_secs(5), 1);
        let e = r.lookup_ip("control.lg.example").await.unwrap_err();
        assert!(
            matches!(
                e,
                DnsError::Server {
                    code: ResponseCode::Refused,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().ends_with(": REFUSED"), "{e}");
    }

    #[test]
    fn codes_keep_their_numbers() {
        assert_eq!(ResponseCode::of(WireCode::ServFail), ResponseCode::ServFail);
        assert_eq!(ResponseCode::of(WireCode::NotImp), ResponseCode::NotImp);
        assert_eq!(ResponseCode::of(WireCode::FormErr).to_string(), "FORMERR");
        // Extended codes (EDNS) keep their number.
        for n in [1u16, 2, 3, 4, 5, 6, 9, 16, 23, 4095] {
            assert_eq!(
                ResponseCode::of(<WireCode as From<u16>>::from(n)).value(),
                n
            );
        }
        assert_eq!(ResponseCode::Other(16).to_string(), "response code 16");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_naming_it() {
        let silent = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let r = GuardedResolver::new(SocketFactory::new(Bare), [addr])
            .unwrap()
            .with_timeout(Duration::from_millis(50), 1);
        let e = r.lookup_ip("control.lg.example").await.unwrap_err();
        assert!(matches!(e, DnsError::Timeout { .. }), "{e:?}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
