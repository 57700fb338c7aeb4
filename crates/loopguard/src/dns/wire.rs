//! DNS messages: building a query and judging an answer. Pure, so every odd answer a server
//! or an attacker can send is tested without a network.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// CNAME links followed inside one answer before giving up (loops, absurd chains).
const MAX_CNAME_CHAIN: usize = 8;

/// What one answer says about one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Addresses, and the smallest TTL among the records used (seconds).
    Addresses(Vec<IpAddr>, u32),
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// The name exists but has no record of this type.
    NoData,
    /// The answer did not fit in a datagram: ask again over TCP.
    Truncated,
    /// The server could not answer (SERVFAIL, REFUSED, ...): ask another.
    ServerError(ResponseCode),
}

/// The wire form of a recursive query for `name`/`kind` with message id `id`.
pub(crate) fn query(id: u16, name: &Name, kind: RecordType) -> Result<Vec<u8>, String> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), kind));
    m.to_vec().map_err(|e| e.to_string())
}

/// Judges a reply; `None` when it is not a reply to this question (another id, another
/// question, not a response, or not DNS at all): such datagrams are ignored, never trusted.
pub(crate) fn judge(reply: &[u8], id: u16, name: &Name, kind: RecordType) -> Option<Answer> {
    let m = Message::from_vec(reply).ok()?;
    if m.id() != id || m.message_type() != MessageType::Response {
        return None;
    }
    let q = m.queries().first()?;
    if q.name() != name || q.query_type() != kind {
        return None;
    }
    if m.truncated() {
        return Some(Answer::Truncated);
    }
    match m.response_code() {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Some(Answer::NoSuchName),
        other => return Some(Answer::ServerError(other)),
    }
    let mut current = name.clone();
    let mut ttl = u32::MAX;
    for _ in 0..MAX_CNAME_CHAIN {
        let mut found = Vec::new();
        let mut next = None;
        for r in m.answers().iter().filter(|r| r.name() == &current) {
            match (r.data(), kind) {
                (RData::A(a), RecordType::A) => found.push((IpAddr::V4(a.0), r.ttl())),
                (RData::AAAA(a), RecordType::AAAA) => found.push((IpAddr::V6(a.0), r.ttl())),
                (RData::CNAME(c), _) => next = Some((c.0.clone(), r.ttl())),
                _ => {}
            }
        }
        if !found.is_empty() {
            ttl = found.iter().map(|(_, t)| *t).fold(ttl, u32::min);
            return Some(Answer::Addresses(
                found.into_iter().map(|(ip, _)| ip).collect(),
                ttl,
            ));
        }
        match next {
            Some((target, t)) => {
                ttl = ttl.min(t);
                current = target;
            }
            None => break,
        }
    }
    Some(Answer::NoData)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::Record;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn reply(id: u16, q: &str, kind: RecordType, answers: Vec<Record>) -> Message {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Response)
            .add_query(Query::query(name(q), kind));
        m.add_answers(answers);
        m
    }

    #[test]
    fn a_query_round_trips() {
        let bytes = query(7, &name("control.lg.example."), RecordType::AAAA).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.id(), 7);
        assert!(m.recursion_desired());
        assert_eq!(m.queries()[0].query_type(), RecordType::AAAA);
    }

    #[test]
    fn addresses_follow_cnames_and_keep_the_smallest_ttl() {
        let n = name("control.lg.example.");
        let answers = vec![
            Record::from_rdata(
                n.clone(),
                300,
                RData::CNAME(CNAME(name("edge.lg.example."))),
            ),
            Record::from_rdata(
                name("edge.lg.example."),
                60,
                RData::A(A("198.51.100.2".parse().unwrap())),
            ),
            Record::from_rdata(
                name("other.lg.example."),
                1,
                RData::A(A("192.0.2.66".parse().unwrap())),
            ),
        ];
        let bytes = reply(9, "control.lg.example.", RecordType::A, answers)
            .to_vec()
            .unwrap();
        assert_eq!(
            judge(&bytes, 9, &n, RecordType::A),
            Some(Answer::Addresses(vec!["198.51.100.2".parse().unwrap()], 60))
        );
    }

    #[test]
    fn foreign_and_broken_replies_are_ignored() {
        let n = name("control.lg.example.");
        let aaaa = Record::from_rdata(
            n.clone(),
            60,
            RData::AAAA(AAAA("2001:db8:2::2".parse().unwrap())),
        );
        let good = reply(9, "control.lg.example.", RecordType::AAAA, vec![aaaa])
            .to_vec()
            .unwrap();
        assert!(matches!(
            judge(&good, 9, &n, RecordType::AAAA),
            Some(Answer::Addresses(..))
        ));
        assert_eq!(judge(&good, 10, &n, RecordType::AAAA), None, "another id");
        assert_eq!(
            judge(&good, 9, &name("evil.lg.example."), RecordType::AAAA),
            None
        );
        assert_eq!(judge(&good, 9, &n, RecordType::A), None, "another type");
        for junk in [&[][..], &[0xff; 3][..], &good[..good.len() - 3]] {
            assert_eq!(judge(junk, 9, &n, RecordType::AAAA), None);
        }
        // A query echoed back is not an answer.
        let q = query(9, &n, RecordType::AAAA).unwrap();
        assert_eq!(judge(&q, 9, &n, RecordType::AAAA), None);
    }

    #[test]
    fn codes_truncation_and_cname_loops() {
        let n = name("x.lg.example.");
        let mut m = reply(1, "x.lg.example.", RecordType::A, vec![]);
        m.set_response_code(ResponseCode::NXDomain);
        assert_eq!(
            judge(&m.to_vec().unwrap(), 1, &n, RecordType::A),
            Some(Answer::NoSuchName)
        );
        m.set_response_code(ResponseCode::ServFail);
        assert_eq!(
            judge(&m.to_vec().unwrap(), 1, &n, RecordType::A),
            Some(Answer::ServerError(ResponseCode::ServFail))
        );
        m.set_response_code(ResponseCode::NoError)
            .set_truncated(true);
        assert_eq!(
            judge(&m.to_vec().unwrap(), 1, &n, RecordType::A),
            Some(Answer::Truncated)
        );
        let looped = vec![Record::from_rdata(
            n.clone(),
            5,
            RData::CNAME(CNAME(n.clone())),
        )];
        let bytes = reply(1, "x.lg.example.", RecordType::A, looped)
            .to_vec()
            .unwrap();
        assert_eq!(judge(&bytes, 1, &n, RecordType::A), Some(Answer::NoData));
    }
}
