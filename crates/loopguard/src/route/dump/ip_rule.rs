//! `ip rule` / `ip -6 rule`, as text or `-j` JSON, into [`PolicyRule`]s.
//!
//! Text lines are `PRIORITY:<tab>SELECTOR ACTION` as iproute2's `print_rule()` (ip/iprule.c)
//! writes them: `0:\tfrom all lookup local`, `32765:\tnot from all fwmark 0xca6c lookup 51820`,
//! `1000:\tfrom all lookup [l3mdev-table]`, `100:\tfrom all goto 200`,
//! `5:\tfrom all to 192.0.2.0/24 prohibit`. JSON objects carry the same fields under the keys
//! that function prints (`priority`, `not`, `src`/`srclen`, `dst`/`dstlen`, `fwmark`/`fwmask`,
//! `iif`, `oif`, `l3mdev`, `uid_start`, `ipproto`, `sport`, `dport`, `table`,
//! `suppress_prefixlen`, `suppress_ifgroup`, `goto`, `nop`, `action`).
//!
//! Neither form says the family. A file may hold `ip rule` then `ip -6 rule`: a list ends where
//! the priorities start again (each list is printed sorted), or at the next JSON array; the
//! first list is IPv4 and the second IPv6, unless a rule's addresses say otherwise. A file
//! given as `ip -6 rule` alone is read with [`parse_family`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::{DumpError, Location, Unread, UnreadLine};
use crate::route::policy::{table_name, PolicyRule, RuleAction};
use crate::route::Family;

/// The rules read, with the lines that could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleDump {
    /// Rules in the order printed.
    pub rules: Vec<PolicyRule>,
    /// The first lines that looked like rules but could not be read.
    pub unread: Vec<UnreadLine>,
    /// How many such lines in all.
    pub unread_total: usize,
}

/// Reads `ip rule` output (text or JSON), telling the family as the module says.
pub fn parse(file: &str, text: &str) -> Result<RuleDump, DumpError> {
    parse_with(file, text, None)
}

/// Reads rules all of one family (`ip -6 rule` alone).
pub fn parse_family(file: &str, text: &str, family: Family) -> Result<RuleDump, DumpError> {
    parse_with(file, text, Some(family))
}

fn parse_with(file: &str, text: &str, family: Option<Family>) -> Result<RuleDump, DumpError> {
    let text = text.trim_start_matches('\u{feff}');
    let lists = if text.trim_start().starts_with(['[', '{']) {
        json_lists(file, text)?
    } else {
        text_lists(text)
    };
    let mut dump = RuleDump::default();
    let mut unread = Unread::default();
    for (n, list) in lists.into_iter().enumerate() {
        let mut rules = Vec::new();
        for item in list {
            match item {
                Ok(rule) => rules.push(rule),
                Err((line, text)) => unread.push(line, &text),
            }
        }
        let list_family = family.unwrap_or_else(|| {
            rules
                .iter()
                .find_map(|r: &PolicyRule| r.from.or(r.to))
                .map(|net| Family::of(net.addr()))
                .unwrap_or(if n == 0 { Family::V4 } else { Family::V6 })
        });
        for mut rule in rules {
            rule.family = list_family;
            dump.rules.push(rule);
        }
    }
    (dump.unread, dump.unread_total) = unread.finish();
    Ok(dump)
}

type Item = Result<PolicyRule, (usize, String)>;

fn text_lists(text: &str) -> Vec<Vec<Item>> {
    let mut lists: Vec<Vec<Item>> = vec![Vec::new()];
    let mut last: Option<u32> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        let priority = trimmed
            .split_once(':')
            .and_then(|(p, rest)| Some((p.trim().parse::<u32>().ok()?, rest)));
        let Some((priority, rest)) = priority else {
            // Every line of `ip rule` output is a rule: none is skipped silently.
            if !trimmed.is_empty() && !super::is_command_line(trimmed) {
                if let Some(list) = lists.last_mut() {
                    list.push(Err((n + 1, line.to_owned())));
                }
            }
            continue;
        };
        if last.is_some_and(|l| priority < l) && lists.len() < 2 {
            lists.push(Vec::new());
        }
        last = Some(priority);
        let item = text_rule(priority, rest).ok_or_else(|| (n + 1, line.to_owned()));
        if let Some(list) = lists.last_mut() {
            list.push(item);
        }
    }
    lists
}

/// A prefix as `ip` prints it: `all`, an address (a host), or `address/len`.
fn prefix(text: &str) -> Option<Option<IpNet>> {
    if text == "all" {
        return Some(None);
    }
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(Some(net));
    }
    text.parse::<IpAddr>().ok().map(|a| Some(IpNet::from(a)))
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn fwmark(text: &str) -> Option<(u32, u32)> {
    let (mark, mask) = match text.split_once('/') {
        Some((m, k)) => (m, Some(k)),
        None => (text, None),
    };
    let mark = u32::try_from(number(mark)?).ok()?;
    let mask = match mask {
        Some(k) => u32::try_from(number(k)?).ok()?,
        None => u32::MAX,
    };
    Some((mark, mask))
}

fn empty_rule(priority: u32, text: String) -> PolicyRule {
    PolicyRule {
        family: Family::V4,
        priority,
        invert: false,
        from: None,
        to: None,
        fwmark: None,
        iif: None,
        oif: None,
        l3mdev: false,
        tos: 0,
        tun_id: 0,
        unknowable: Vec::new(),
        action: RuleAction::Lookup(String::new()),
        suppress_prefixlen: None,
        suppress_ifgroup: None,
        text,
    }
}

fn text_rule(priority: u32, rest: &str) -> Option<PolicyRule> {
    let mut rule = empty_rule(priority, format!("{priority}: {}", rest.trim()));
    let mut action = None;
    let t: Vec<&str> = rest.split_whitespace().collect();
    let mut i = 0;
    let next = |i: &mut usize| -> Option<&str> {
        *i += 1;
        t.get(*i).copied()
    };
    while i < t.len() {
        match t[i] {
            "not" => rule.invert = true,
            "from" => rule.from = prefix(next(&mut i)?)?,
            "to" => rule.to = prefix(next(&mut i)?)?,
            "tos" | "dsfield" => rule.tos = u8::try_from(number(next(&mut i)?)?).ok()?,
            "fwmark" => rule.fwmark = Some(fwmark(next(&mut i)?)?),
            "iif" | "oif" => {
                let which = t[i];
                let name = next(&mut i)?.to_owned();
                let detached = t.get(i + 1) == Some(&"[detached]");
                if detached {
                    i += 1;
                }
                if which == "iif" {
                    rule.iif = Some((name, detached));
                } else {
                    rule.oif = Some((name, detached));
                }
            }
            "lookup" | "table" => {
                let table = next(&mut i)?;
                if table == "[l3mdev-table]" {
                    rule.l3mdev = true;
                    action = Some(RuleAction::L3mdevTable);
                } else {
                    action = Some(RuleAction::Lookup(table_name(table)));
                }
            }
            "suppress_prefixlength" => {
                rule.suppress_prefixlen = Some(u8::try_from(number(next(&mut i)?)?).ok()?)
            }
            "suppress_ifgroup" => rule.suppress_ifgroup = Some(next(&mut i)?.to_owned()),
            "goto" => {
                let target = next(&mut i)?;
                action = Some(RuleAction::Goto(if target == "none" {
                    None
                } else {
                    Some(u32::try_from(number(target)?).ok()?)
                }));
            }
            "[unresolved]" => {}
            "nop" => action = Some(RuleAction::Nop),
            "unreachable" => action = Some(RuleAction::Unreachable),
            "prohibit" => action = Some(RuleAction::Prohibit),
            "blackhole" => action = Some(RuleAction::Blackhole),
            "tun_id" => rule.tun_id = number(next(&mut i)?)?,
            // Attributes that do not change the match for our flow.
            "proto" | "protocol" | "realms" => {
                next(&mut i)?;
            }
            word @ ("uidrange" | "ipproto" | "sport" | "dport" | "map-to") => {
                rule.unknowable.push(word.to_owned());
                next(&mut i)?;
            }
            word => rule.unknowable.push(word.to_owned()),
        }
        i += 1;
    }
    rule.action = action?;
    Some(rule)
}

fn json_lists(file: &str, text: &str) -> Result<Vec<Vec<Item>>, DumpError> {
    let mut lists = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    for value in stream {
        let value = value.map_err(|e| DumpError {
            file: file.to_owned(),
            location: Location::File,
            field: "(document)".to_owned(),
            problem: format!("not JSON: {e}"),
        })?;
        let items = match value {
            Value::Array(items) => items,
            object @ Value::Object(_) => vec![object],
            _ => {
                return Err(DumpError {
                    file: file.to_owned(),
                    location: Location::File,
                    field: "(document)".to_owned(),
                    problem: "expected an array of rules".to_owned(),
                })
            }
        };
        let list = items
            .iter()
            .enumerate()
            .map(|(n, item)| {
                item.as_object()
                    .and_then(json_rule)
                    .ok_or_else(|| (n + 1, item.to_string()))
            })
            .collect();
        lists.push(list);
    }
    Ok(lists)
}

fn json_prefix(map: &Map<String, Value>, key: &str, len_key: &str) -> Option<Option<IpNet>> {
    let Some(text) = map.get(key) else {
        return Some(None);
    };
    let text = text.as_str()?;
    if text == "all" {
        return Some(None);
    }
    let address: IpAddr = if text == "0" {
        // `from 0/LEN` (an address attribute absent but a length set).
        "0.0.0.0".parse().ok()?
    } else {
        text.parse().ok()?
    };
    let full = if address.is_ipv4() { 32 } else { 128 };
    let len = match map.get(len_key) {
        Some(v) => u8::try_from(v.as_u64()?).ok()?,
        None => full,
    };
    IpNet::new(address, len).ok().map(Some)
}

fn json_number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => number(s),
        _ => None,
    }
}

fn json_rule(map: &Map<String, Value>) -> Option<PolicyRule> {
    let priority = u32::try_from(json_number(map.get("priority")?)?).ok()?;
    let mut rule = empty_rule(priority, Value::Object(map.clone()).to_string());
    rule.invert = map.contains_key("not");
    rule.from = json_prefix(map, "src", "srclen")?;
    rule.to = json_prefix(map, "dst", "dstlen")?;
    if let Some(tos) = map.get("tos").or_else(|| map.get("dsfield")) {
        rule.tos = u8::try_from(json_number(tos)?).ok()?;
    }
    if let Some(mark) = map.get("fwmark") {
        let mark = u32::try_from(json_number(mark)?).ok()?;
        let mask = match map.get("fwmask") {
            Some(m) => u32::try_from(json_number(m)?).ok()?,
            None => u32::MAX,
        };
        rule.fwmark = Some((mark, mask));
    }
    let name = |key: &str, detached: &str| -> Option<Option<(String, bool)>> {
        match map.get(key) {
            None => Some(None),
            Some(v) => Some(Some((v.as_str()?.to_owned(), map.contains_key(detached)))),
        }
    };
    rule.iif = name("iif", "iif_detached")?;
    rule.oif = name("oif", "oif_detached")?;
    rule.l3mdev = map.contains_key("l3mdev");
    if let Some(id) = map.get("tun_id") {
        rule.tun_id = json_number(id)?;
    }
    for key in [
        "uid_start",
        "ipproto",
        "sport",
        "sport_start",
        "dport",
        "dport_start",
        "nat_gateway",
        "masquerade",
    ] {
        if map.contains_key(key) {
            rule.unknowable.push(key.to_owned());
        }
    }
    if let Some(len) = map.get("suppress_prefixlen") {
        // -1 means unset; iproute2 omits it then, but accept it.
        rule.suppress_prefixlen = u8::try_from(json_number(len).unwrap_or(u64::MAX)).ok();
    }
    if let Some(group) = map.get("suppress_ifgroup") {
        rule.suppress_ifgroup = Some(group.as_str().map_or(group.to_string(), str::to_owned));
    }
    rule.action = if rule.l3mdev {
        RuleAction::L3mdevTable
    } else if let Some(target) = map.get("goto") {
        RuleAction::Goto(json_number(target).and_then(|t| u32::try_from(t).ok()))
    } else if map.contains_key("nop") {
        RuleAction::Nop
    } else if let Some(action) = map.get("action") {
        match action.as_str()? {
            "unreachable" => RuleAction::Unreachable,
            "prohibit" => RuleAction::Prohibit,
            "blackhole" => RuleAction::Blackhole,
            _ => return None,
        }
    } else {
        let table = map.get("table")?;
        RuleAction::Lookup(table_name(
            &table.as_str().map_or(table.to_string(), str::to_owned),
        ))
    };
    Some(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WG_QUICK: &str = "\
0:\tfrom all lookup local
32764:\tfrom all lookup main suppress_prefixlength 0
32765:\tnot from all fwmark 0xca6c lookup 51820
32766:\tfrom all lookup main
32767:\tfrom all lookup default
";

    #[test]
    fn wg_quick_text_rules() {
        let dump = parse("r", WG_QUICK).unwrap();
        assert!(dump.unread.is_empty());
        let r = &dump.rules;
        assert_eq!(r.len(), 5);
        assert_eq!(r[1].suppress_prefixlen, Some(0));
        assert!(r[2].invert);
        assert_eq!(r[2].fwmark, Some((0xca6c, u32::MAX)));
        assert_eq!(r[2].action, RuleAction::Lookup("51820".into()));
        assert!(r.iter().all(|r| r.family == Family::V4));
    }

    #[test]
    fn two_lists_in_one_file_are_ipv4_then_ipv6() {
        let dump = parse("r", &format!("{WG_QUICK}{WG_QUICK}")).unwrap();
        assert_eq!(dump.rules.len(), 10);
        assert_eq!(dump.rules[4].family, Family::V4);
        assert_eq!(dump.rules[5].family, Family::V6);
        let six = parse_family("r", WG_QUICK, Family::V6).unwrap();
        assert!(six.rules.iter().all(|r| r.family == Family::V6));
    }

    #[test]
    fn every_selector_and_action_of_the_text_form() {
        let text = "\
5:\tfrom all to 192.0.2.0/24 prohibit
10:\tfrom 198.51.100.7 iif lo oif eth1 [detached] goto 20
11:\tfrom all fwmark 0x3047/0x30ff lookup 19527 proto 76
12:\tfrom all lookup [l3mdev-table]
13:\tfrom all uidrange 1000-2000 lookup 7
14:\tfrom all nop
15:\tfrom all goto 30 [unresolved]
16:\tfrom all tos 0x10 blackhole
17:\tfrom all lookup main suppress_ifgroup 2
";
        let r = parse("r", text).unwrap().rules;
        assert_eq!(r.len(), 9);
        assert_eq!(r[0].action, RuleAction::Prohibit);
        assert_eq!(r[0].to, Some("192.0.2.0/24".parse().unwrap()));
        assert_eq!(r[1].from, Some("198.51.100.7/32".parse().unwrap()));
        assert_eq!(r[1].iif, Some(("lo".into(), false)));
        assert_eq!(r[1].oif, Some(("eth1".into(), true)));
        assert_eq!(r[1].action, RuleAction::Goto(Some(20)));
        assert_eq!(r[2].fwmark, Some((0x3047, 0x30ff)));
        assert!(r[2].unknowable.is_empty());
        assert!(r[3].l3mdev);
        assert_eq!(r[4].unknowable, ["uidrange"]);
        assert_eq!(r[5].action, RuleAction::Nop);
        assert_eq!(r[6].action, RuleAction::Goto(Some(30)));
        assert_eq!((r[7].tos, &r[7].action), (0x10, &RuleAction::Blackhole));
        assert_eq!(r[8].suppress_ifgroup.as_deref(), Some("2"));
    }

    #[test]
    fn json_rules_with_the_keys_iproute2_prints() {
        // Shape from iproute2's print_rule() (ip/iprule.c); the values are made up.
        let text = r#"[{"priority":0,"src":"all","table":"local"},
{"priority":5250,"src":"all","fwmark":"0x80000","fwmask":"0xff0000","action":"unreachable"},
{"priority":31000,"src":"192.0.2.0","srclen":24,"table":"main","suppress_prefixlen":0},
{"priority":32765,"not":null,"src":"all","fwmark":"0xca6c","table":"51820"},
{"priority":32766,"src":"all","table":"main"}]
[{"priority":0,"src":"all","table":"local"},{"priority":32766,"src":"all","table":"main"}]"#;
        let dump = parse("r.json", text).unwrap();
        let r = &dump.rules;
        assert_eq!(r.len(), 7);
        assert_eq!(r[1].fwmark, Some((0x80000, 0xff0000)));
        assert_eq!(r[1].action, RuleAction::Unreachable);
        assert_eq!(r[2].from, Some("192.0.2.0/24".parse().unwrap()));
        assert_eq!(r[2].suppress_prefixlen, Some(0));
        assert!(r[3].invert);
        assert_eq!(r[3].fwmark, Some((0xca6c, u32::MAX)));
        assert_eq!(r[5].family, Family::V6);
        assert!(parse("r.json", "[{\"priority\": 1").is_err());
    }

    #[test]
    fn damaged_lines_are_reported_not_guessed() {
        let dump = parse(
            "r",
            "0:\tfrom all lookup local\n32766:\tfrom all fwmark zz lookup main\n",
        )
        .unwrap();
        assert_eq!(dump.rules.len(), 1);
        assert_eq!(dump.unread_total, 1);
        assert_eq!(dump.unread[0].line, 2);
    }
}
