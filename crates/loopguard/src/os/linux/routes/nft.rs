//! The conntrack mark rules, programmed as nf_tables netlink messages.
//!
//! Written by hand over `netlink-sys` rather than with `rustables` (GPL-3.0, needs libclang
//! to build) or `nftnl` (needs the C libnftnl and libmnl): the handful of messages needed
//! here is small, and this keeps the crate pure Rust under its own licence.
//!
//! The table `inet loopguard_<table>` holds two chains:
//! - `prerouting` (filter hook, priority mangle -150, after conntrack at -200):
//!   `ct mark & MASK == MARK  meta mark set meta mark & ~MASK | MARK`: replies of guarded
//!   flows get the mark back before the reverse-path check and the routing decision.
//! - `output` (filter hook, priority mangle -150):
//!   `meta mark & MASK == MARK  ct mark set ct mark & ~MASK | MARK`: guarded sockets' flows
//!   remember their mark in conntrack.
//!
//! The table carries the comment `loopguard` (user data in libnftnl's format, so `nft list`
//! prints `comment "loopguard"`): a table of that name without it belongs to somebody else
//! and is never replaced or deleted.
//!
//! Only the mask's bits are written, in both directions: the other bits of a packet's mark
//! and of its conntrack mark belong to other programs (kube-proxy, Tailscale, firewalls) and
//! are kept.

use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;

use super::RoutesError;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_INET: u8 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_TABLE_OWNER: u16 = 7;
/// `NFT_TABLE_F_OWNER`: the table belongs to the netlink socket that created it.
const NFT_TABLE_F_OWNER: u32 = 2;
/// libnftnl's `NFTNL_UDATA_TABLE_COMMENT`: the type of a table comment in its user data.
const UDATA_TABLE_COMMENT: u8 = 0;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_SREG: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_META_MARK: u32 = 3;
const NFT_CT_MARK: u32 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_ACCEPT: u32 = 1;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
/// `NF_IP_PRI_MANGLE`: after conntrack (-200), before the routing decision.
const PRIORITY_MANGLE: i32 = -150;

const F_REQUEST: u16 = 1;
const F_ACK: u16 = 4;
const F_CREATE: u16 = 0x400;
const F_APPEND: u16 = 0x800;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
const F_DUMP: u16 = 0x300;

/// How long to wait for the kernel's answers.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What every nftables table loopguard creates is called, before the routing table's number.
pub(crate) const TABLE_PREFIX: &str = "loopguard_";

/// The name of the nftables table for a routing table.
pub(crate) fn table_name(table: u32) -> String {
    format!("{TABLE_PREFIX}{table}")
}

/// The comment every table loopguard creates carries.
const COMMENT: &str = "loopguard";

/// The table's user data: [`COMMENT`] as a libnftnl comment (type, length, text and NUL).
fn our_userdata() -> Vec<u8> {
    let mut v = vec![UDATA_TABLE_COMMENT, (COMMENT.len() + 1) as u8];
    v.extend_from_slice(COMMENT.as_bytes());
    v.push(0);
    v
}

/// What a table message says about the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableInfo {
    pub name: Option<String>,
    /// The comment in its user data, if it has one in libnftnl's format.
    pub comment: Option<String>,
    /// The netlink port id of the socket owning it (`NFT_TABLE_F_OWNER`), if owned.
    pub owner: Option<u32>,
}

impl TableInfo {
    /// Whether loopguard created it: our comment and no owner. A kernel that keeps no table
    /// user data (before Linux 5.13) shows no comment on any table, so there a table without
    /// a comment counts as ours, as before comments were used.
    pub(crate) fn is_ours(&self, kernel_keeps_comments: bool) -> bool {
        self.owner.is_none()
            && match self.comment.as_deref() {
                Some(c) => c == COMMENT,
                None => !kernel_keeps_comments,
            }
    }
}

/// Whether the running kernel keeps a table's user data (`NFTA_TABLE_USERDATA`, Linux 5.13
/// and later); read once from `uname`.
fn kernel_keeps_comments() -> bool {
    static KEEPS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KEEPS.get_or_init(|| {
        // SAFETY: an all-zero utsname is valid; uname only writes it.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `u` is valid for writes for the duration of the call.
        if unsafe { libc::uname(&mut u) } != 0 {
            return true;
        }
        // SAFETY: uname NUL-terminates `release`.
        let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
        release_at_least(&release.to_string_lossy(), (5, 13))
    })
}

/// Whether a kernel release string (`6.1.0-18-amd64`) is at least `major.minor`; an
/// unreadable one counts as new.
fn release_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true,
    }
}

/// Whether the table of a name is there, and whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TableState {
    Absent,
    Ours,
    /// Somebody else's table of that name: never replaced nor deleted.
    Foreign(TableInfo),
}

/// The names of every `inet` nftables table loopguard created (name starting with
/// [`TABLE_PREFIX`], our comment), for any routing table.
pub(crate) async fn our_tables() -> Result<Vec<String>, RoutesError> {
    let mut w = Writer::default();
    w.message(
        NFT_MSG_GETTABLE | (NFNL_SUBSYS_NFTABLES << 8),
        F_REQUEST | F_DUMP,
        1,
        NFPROTO_INET,
        0,
        |_| {},
    );
    let mut names = Vec::new();
    let op = "listing nftables tables".to_owned();
    exchange_with(&w.buf, &[(1, op)], &mut |kind, body| {
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE {
            let info = table_info(body);
            if let (Some(name), true) = (&info.name, info.is_ours(kernel_keeps_comments())) {
                if name.starts_with(TABLE_PREFIX) {
                    names.push(name.clone());
                }
            }
        }
    })
    .await?;
    names.sort();
    names.dedup();
    Ok(names)
}

/// The name, comment and owner of a table message body (after `struct nfgenmsg`); what is
/// malformed is left out.
fn table_info(body: &[u8]) -> TableInfo {
    let mut info = TableInfo::default();
    let mut flags = 0;
    let mut owner = None;
    let mut attrs = body.get(4..).unwrap_or_default();
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match kind {
            NFTA_TABLE_NAME => info.name = c_string(value),
            // Numbers in nf_tables attributes are big-endian.
            NFTA_TABLE_FLAGS if value.len() == 4 => {
                flags = u32::from_be_bytes([value[0], value[1], value[2], value[3]])
            }
            NFTA_TABLE_OWNER if value.len() == 4 => {
                owner = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))
            }
            NFTA_TABLE_USERDATA => info.comment = comment_of(value),
            _ => {}
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    info.owner = owner.filter(|_| flags & NFT_TABLE_F_OWNER != 0);
    info
}

/// The text up to the first NUL, if it is UTF-8.
fn c_string(value: &[u8]) -> Option<String> {
    let value = value.split(|b| *b == 0).next().unwrap_or(value);
    String::from_utf8(value.to_vec()).ok()
}

/// The comment among libnftnl user data (type-length-value records).
fn comment_of(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], usize::from(udata[1]));
        let value = udata.get(2..2 + len)?;
        if kind == UDATA_TABLE_COMMENT {
            return c_string(value);
        }
        udata = &udata[2 + len..];
    }
    None
}

/// Creates (or re-creates, atomically) the table with the save and restore rules.
pub(crate) async fn install(table: &str, mark: u32, mask: u32) -> Result<(), RoutesError> {
    let mut b = Batch::new();
    // "add, delete, add with contents" in one transaction: idempotent, and never a moment
    // without the rules when they were there already.
    b.msg(
        NFT_MSG_NEWTABLE,
        F_CREATE,
        format!("creating nftables table inet {table}"),
        |m| m.str(NFTA_TABLE_NAME, table),
    );
    b.msg(
        NFT_MSG_DELTABLE,
        0,
        format!("flushing nftables table inet {table}"),
        |m| m.str(NFTA_TABLE_NAME, table),
    );
    b.msg(
        NFT_MSG_NEWTABLE,
        F_CREATE,
        format!("creating nftables table inet {table}"),
        |m| {
            m.str(NFTA_TABLE_NAME, table);
            m.attr(NFTA_TABLE_USERDATA, &our_userdata());
        },
    );
    for (chain, hook) in [
        ("prerouting", NF_INET_PRE_ROUTING),
        ("output", NF_INET_LOCAL_OUT),
    ] {
        b.msg(
            NFT_MSG_NEWCHAIN,
            F_CREATE,
            format!("creating nftables chain {table} {chain}"),
            |m| {
                m.str(NFTA_CHAIN_TABLE, table);
                m.str(NFTA_CHAIN_NAME, chain);
                m.nest(NFTA_CHAIN_HOOK, |m| {
                    m.be32(NFTA_HOOK_HOOKNUM, hook);
                    m.be32(NFTA_HOOK_PRIORITY, PRIORITY_MANGLE as u32);
                });
                m.be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
                m.str(NFTA_CHAIN_TYPE, "filter");
            },
        );
    }
    let rule = |b: &mut Batch, chain: &str, what: &str, exprs: &dyn Fn(&mut Writer)| {
        b.msg(
            NFT_MSG_NEWRULE,
            F_CREATE | F_APPEND,
            format!("adding nftables rule {table} {chain} ({what})"),
            |m| {
                m.str(NFTA_RULE_TABLE, table);
                m.str(NFTA_RULE_CHAIN, chain);
                m.nest(NFTA_RULE_EXPRESSIONS, exprs);
            },
        )
    };
    rule(&mut b, "prerouting", "restore mark from conntrack", &|m| {
        ct_load(m, NFT_CT_MARK);
        and_eq(m, mask, mark);
        meta_load(m, NFT_META_MARK);
        set_masked_bits(m, mask, mark);
        meta_set(m, NFT_META_MARK);
    });
    rule(&mut b, "output", "save mark in conntrack", &|m| {
        meta_load(m, NFT_META_MARK);
        and_eq(m, mask, mark);
        ct_load(m, NFT_CT_MARK);
        set_masked_bits(m, mask, mark);
        ct_set(m, NFT_CT_MARK);
    });
    b.run().await
}

/// Deletes the table if it exists.
pub(crate) async fn remove(table: &str) -> Result<(), RoutesError> {
    let mut b = Batch::new();
    // Creating first makes the delete succeed whether or not the table was there.
    b.msg(
        NFT_MSG_NEWTABLE,
        F_CREATE,
        format!("creating nftables table inet {table}"),
        |m| m.str(NFTA_TABLE_NAME, table),
    );
    b.msg(
        NFT_MSG_DELTABLE,
        0,
        format!("deleting nftables table inet {table}"),
        |m| m.str(NFTA_TABLE_NAME, table),
    );
    b.run().await
}

/// Whether the table is there, and whether loopguard created it.
pub(crate) async fn state(table: &str) -> Result<TableState, RoutesError> {
    let mut w = Writer::default();
    let op = format!("looking up nftables table inet {table}");
    w.message(
        NFT_MSG_GETTABLE | (NFNL_SUBSYS_NFTABLES << 8),
        F_REQUEST | F_ACK,
        1,
        NFPROTO_INET,
        0,
        |m| m.str(NFTA_TABLE_NAME, table),
    );
    let mut info = None;
    let answer = exchange_with(&w.buf, &[(1, op)], &mut |kind, body| {
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE {
            info = Some(table_info(body));
        }
    })
    .await;
    match answer {
        Ok(()) => Ok(match info {
            Some(i) if !i.is_ours(kernel_keeps_comments()) => TableState::Foreign(i),
            _ => TableState::Ours,
        }),
        Err(RoutesError::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            Ok(TableState::Absent)
        }
        Err(e) => Err(e),
    }
}

/// The refusal for somebody else's table of our name.
pub(crate) fn foreign(table: &str, info: TableInfo) -> RoutesError {
    RoutesError::ForeignConntrackTable {
        table: table.to_owned(),
        comment: info.comment,
        owner: info.owner,
    }
}

fn meta_load(m: &mut Writer, key: u32) {
    expr(m, "meta", |m| {
        m.be32(NFTA_META_DREG, NFT_REG_1);
        m.be32(NFTA_META_KEY, key);
    });
}

fn meta_set(m: &mut Writer, key: u32) {
    expr(m, "meta", |m| {
        m.be32(NFTA_META_KEY, key);
        m.be32(NFTA_META_SREG, NFT_REG_1);
    });
}

fn ct_load(m: &mut Writer, key: u32) {
    expr(m, "ct", |m| {
        m.be32(NFTA_CT_DREG, NFT_REG_1);
        m.be32(NFTA_CT_KEY, key);
    });
}

fn ct_set(m: &mut Writer, key: u32) {
    expr(m, "ct", |m| {
        m.be32(NFTA_CT_KEY, key);
        m.be32(NFTA_CT_SREG, NFT_REG_1);
    });
}

/// `reg1 & mask == value`, else the rule stops here.
fn and_eq(m: &mut Writer, mask: u32, value: u32) {
    // Marks live in registers in host byte order, so data values are native-endian.
    bitwise(m, mask, 0);
    expr(m, "cmp", |m| {
        m.be32(NFTA_CMP_SREG, NFT_REG_1);
        m.be32(NFTA_CMP_OP, NFT_CMP_EQ);
        m.nest(NFTA_CMP_DATA, |m| {
            m.attr(NFTA_DATA_VALUE, &value.to_ne_bytes())
        });
    });
}

/// `reg1 = reg1 & !mask ^ value`: the mask's bits become `value` (which has no bits outside
/// the mask, so the XOR is an OR), every other bit stays.
fn set_masked_bits(m: &mut Writer, mask: u32, value: u32) {
    bitwise(m, !mask, value & mask);
}

/// `reg1 = reg1 & and ^ xor` (nft_bitwise, boolean form).
fn bitwise(m: &mut Writer, and: u32, xor: u32) {
    expr(m, "bitwise", |m| {
        m.be32(NFTA_BITWISE_SREG, NFT_REG_1);
        m.be32(NFTA_BITWISE_DREG, NFT_REG_1);
        m.be32(NFTA_BITWISE_LEN, 4);
        m.nest(NFTA_BITWISE_MASK, |m| {
            m.attr(NFTA_DATA_VALUE, &and.to_ne_bytes())
        });
        m.nest(NFTA_BITWISE_XOR, |m| {
            m.attr(NFTA_DATA_VALUE, &xor.to_ne_bytes())
        });
    });
}

fn expr(m: &mut Writer, name: &str, data: impl FnOnce(&mut Writer)) {
    m.nest(NFTA_LIST_ELEM, |m| {
        m.str(NFTA_EXPR_NAME, name);
        m.nest(NFTA_EXPR_DATA, data);
    });
}

/// Netlink message and attribute encoding.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn message(
        &mut self,
        kind: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
        body: impl FnOnce(&mut Writer),
    ) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]); // length, patched below
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // struct nfgenmsg: family, version 0, resource id in network order.
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        body(self);
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn str(&mut self, kind: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    fn be32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn nest(&mut self, kind: u16, inner: impl FnOnce(&mut Writer)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 2]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        inner(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// One nf_tables transaction: every message is applied, or none.
struct Batch {
    w: Writer,
    ops: Vec<(u32, String)>,
    seq: u32,
}

impl Batch {
    fn new() -> Self {
        let mut w = Writer::default();
        w.message(
            NFNL_MSG_BATCH_BEGIN,
            F_REQUEST,
            0,
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        Batch {
            w,
            ops: Vec::new(),
            seq: 1,
        }
    }

    fn msg(&mut self, kind: u16, flags: u16, op: String, body: impl FnOnce(&mut Writer)) {
        let seq = self.seq;
        self.seq += 1;
        self.w.message(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            F_REQUEST | F_ACK | flags,
            seq,
            NFPROTO_INET,
            0,
            body,
        );
        self.ops.push((seq, op));
    }

    async fn run(mut self) -> Result<(), RoutesError> {
        let seq = self.seq;
        self.w.message(
            NFNL_MSG_BATCH_END,
            F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        exchange(&self.w.buf, &self.ops).await
    }
}

/// Sends `request` and waits for one acknowledgement per entry of `ops` (sequence number,
/// operation); the first error is returned with the operation it belongs to.
async fn exchange(request: &[u8], ops: &[(u32, String)]) -> Result<(), RoutesError> {
    exchange_with(request, ops, &mut |_, _| {}).await
}

/// [`exchange`], handing every data answer (type, body after the netlink header) to
/// `on_data`; a dump's `NLMSG_DONE` completes its entry of `ops`.
async fn exchange_with(
    request: &[u8],
    ops: &[(u32, String)],
    on_data: &mut (dyn FnMut(u16, &[u8]) + Send),
) -> Result<(), RoutesError> {
    let first_op = ops.first().map(|(_, op)| op.as_str()).unwrap_or("nftables");
    let os = |e: io::Error| RoutesError::os(first_op, e);
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(os)?;
    socket.bind_auto().map_err(os)?;
    socket.set_non_blocking(true).map_err(os)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(os)?;
    // SAFETY: the netlink socket owns its descriptor, keeps it open until dropped (which
    // happens with the AsyncFd) and always reports the same one from `as_raw_fd`.
    let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| os(e.into_parts().1))?;
    loop {
        let mut guard = fd.writable().await.map_err(os)?;
        match guard.try_io(|s| s.get_ref().send(request, 0)) {
            Ok(r) => {
                r.map_err(os)?;
                break;
            }
            Err(_would_block) => continue,
        }
    }
    let mut pending: Vec<&(u32, String)> = ops.iter().collect();
    let mut first_error = None;
    let mut buf = vec![0u8; 65536];
    let read = async {
        while !pending.is_empty() {
            let mut guard = fd.readable().await.map_err(os)?;
            let n = match guard.try_io(|s| s.get_ref().recv(&mut &mut buf[..], 0)) {
                Ok(r) => r.map_err(os)?,
                Err(_would_block) => continue,
            };
            for (kind, seq, code, body) in parse_messages(&buf[..n]) {
                if kind != NLMSG_ERROR && kind != NLMSG_DONE {
                    on_data(kind, body);
                    continue; // a data answer (GETTABLE); its acknowledgement follows
                }
                if let Some(i) = pending.iter().position(|(s, _)| *s == seq) {
                    let (_, op) = pending.remove(i);
                    if code != 0 && first_error.is_none() {
                        first_error = Some(RoutesError::os(
                            op.clone(),
                            io::Error::from_raw_os_error(-code),
                        ));
                    }
                }
            }
        }
        Ok::<(), RoutesError>(())
    };
    match tokio::time::timeout(TIMEOUT, read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(RoutesError::os(
                first_op,
                io::Error::new(io::ErrorKind::TimedOut, "the kernel did not answer"),
            ))
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// `(type, sequence, error code)` of each netlink message in `buf`; the code is 0 unless the
/// message is an `NLMSG_ERROR` carrying an error.
#[cfg(test)]
fn parse_answers(buf: &[u8]) -> Vec<(u16, u32, i32)> {
    parse_messages(buf)
        .into_iter()
        .map(|(kind, seq, code, _)| (kind, seq, code))
        .collect()
}

/// [`parse_answers`] with each message's body (after the 16-byte header).
fn parse_messages(mut buf: &[u8]) -> Vec<(u16, u32, i32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let code = if kind == NLMSG_ERROR && len >= 20 {
            i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]])
        } else {
            0
        };
        out.push((kind, seq, code, &buf[16..len]));
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `bitwise` expression as `include/uapi/linux/netfilter/nf_tables.h` lays it out:
    /// `NFTA_LIST_ELEM { NFTA_EXPR_NAME "bitwise", NFTA_EXPR_DATA { SREG 1, DREG 1, LEN 4,
    /// MASK { VALUE and }, XOR { VALUE xor } } }`, register numbers big-endian, data in host
    /// order (nft_bitwise_eval works on the register's bytes as the mark is stored).
    #[test]
    fn masked_bits_are_set_keeping_every_other_bit() {
        let mut w = Writer::default();
        set_masked_bits(&mut w, 0x0000_30ff, 0x3047);
        let b = &w.buf;
        let attr = |at: usize| {
            (
                u16::from_ne_bytes([b[at], b[at + 1]]),
                u16::from_ne_bytes([b[at + 2], b[at + 3]]),
            )
        };
        assert_eq!(attr(0), (b.len() as u16, NFTA_LIST_ELEM | NLA_F_NESTED));
        assert_eq!(attr(4), (12, NFTA_EXPR_NAME));
        assert_eq!(&b[8..16], b"bitwise\0");
        assert_eq!(attr(16).1, NFTA_EXPR_DATA | NLA_F_NESTED);
        let data = &b[20..];
        // SREG, DREG, LEN: 8 bytes each, big-endian values.
        for (i, (kind, value)) in [
            (NFTA_BITWISE_SREG, 1u32),
            (NFTA_BITWISE_DREG, 1),
            (NFTA_BITWISE_LEN, 4),
        ]
        .into_iter()
        .enumerate()
        {
            let at = i * 8;
            assert_eq!(u16::from_ne_bytes([data[at + 2], data[at + 3]]), kind);
            assert_eq!(data[at + 4..at + 8], value.to_be_bytes());
        }
        // MASK { VALUE !mask } and XOR { VALUE mark }: 12 bytes each.
        let (mask, xor) = (&data[24..36], &data[36..48]);
        assert_eq!(
            u16::from_ne_bytes([mask[2], mask[3]]),
            NFTA_BITWISE_MASK | NLA_F_NESTED
        );
        assert_eq!(mask[8..12], 0xffff_cf00u32.to_ne_bytes());
        assert_eq!(
            u16::from_ne_bytes([xor[2], xor[3]]),
            NFTA_BITWISE_XOR | NLA_F_NESTED
        );
        assert_eq!(xor[8..12], 0x3047u32.to_ne_bytes());
        assert_eq!(data.len(), 48);
    }

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        for (release, new_enough) in [
            ("6.18.44-fc-v657", true),
            ("5.13.0", true),
            ("5.10.0-28-amd64", false),
            ("4.19.325", false),
            ("weird", true),
        ] {
            assert_eq!(release_at_least(release, (5, 13)), new_enough, "{release}");
        }
    }

    #[test]
    fn attributes_are_padded_and_nests_measured() {
        let mut w = Writer::default();
        w.nest(7, |w| w.str(1, "ab"));
        // nest header 4 + attr header 4 + "ab\0" 3 + 1 padding
        assert_eq!(w.buf.len(), 12);
        assert_eq!(u16::from_ne_bytes([w.buf[0], w.buf[1]]), 12);
        assert_eq!(u16::from_ne_bytes([w.buf[2], w.buf[3]]), 7 | NLA_F_NESTED);
        assert_eq!(u16::from_ne_bytes([w.buf[4], w.buf[5]]), 7);
    }

    #[test]
    fn answers_are_split_and_errors_read() {
        let mut buf = Vec::new();
        // An acknowledgement (error 0) for sequence 4, then ENOENT for sequence 5.
        for (seq, code) in [(4u32, 0i32), (5, -libc::ENOENT)] {
            buf.extend_from_slice(&20u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&code.to_ne_bytes());
        }
        assert_eq!(
            parse_answers(&buf),
            vec![(NLMSG_ERROR, 4, 0), (NLMSG_ERROR, 5, -libc::ENOENT)]
        );
        assert!(parse_answers(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn table_names_comments_and_owners_are_read_from_a_table_message_body() {
        let mut w = Writer::default();
        w.buf.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]); // struct nfgenmsg
        w.be32(NFTA_TABLE_FLAGS, 0);
        w.str(NFTA_TABLE_NAME, "loopguard_51820");
        w.attr(NFTA_TABLE_USERDATA, &our_userdata());
        let info = table_info(&w.buf);
        assert_eq!(info.name.as_deref(), Some("loopguard_51820"));
        assert_eq!(info.comment.as_deref(), Some("loopguard"));
        assert!(info.is_ours(true));
        // libnftnl's layout: type 0 (comment), length 10, "loopguard" and its NUL.
        assert_eq!(our_userdata()[..2], [0, 10]);
        assert_eq!(&our_userdata()[2..], b"loopguard\0");

        // Another program's table of the same name: no comment, or another one, or owned.
        let mut bare = Writer::default();
        bare.buf.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
        bare.str(NFTA_TABLE_NAME, "loopguard_51820");
        assert!(!table_info(&bare.buf).is_ours(true));
        // Before Linux 5.13 no table has a comment: a bare one is taken as ours.
        assert!(table_info(&bare.buf).is_ours(false));
        let mut owned = Writer::default();
        owned.buf.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
        owned.str(NFTA_TABLE_NAME, "loopguard_51820");
        owned.be32(NFTA_TABLE_FLAGS, NFT_TABLE_F_OWNER);
        owned.be32(NFTA_TABLE_OWNER, 4242);
        owned.attr(NFTA_TABLE_USERDATA, &our_userdata());
        let info = table_info(&owned.buf);
        assert_eq!(info.owner, Some(4242));
        assert!(!info.is_ours(true));
        assert!(!info.is_ours(false));
        // Several user data records, the comment second; and truncated input.
        let udata = [1, 2, 9, 9, 0, 4, b'f', b'w', b'd', 0];
        assert_eq!(comment_of(&udata).as_deref(), Some("fwd"));
        assert_eq!(comment_of(&[0, 9, b'x']), None);
        assert_eq!(table_info(&w.buf[..6]), TableInfo::default());
        assert_eq!(
            table_info(&[0, 0, 0, 0, 200, 0, 1, 0]),
            TableInfo::default()
        );
    }
}
