//! Readers for the routing state users paste into bug reports, turned into [`HostTables`].
//!
//! - [`powershell`]: `Get-NetRoute`, `Get-NetIPInterface` and `Get-NetIPAddress` piped to
//!   `ConvertTo-Json`, from Windows PowerShell 5.1 or PowerShell 7.
//! - [`route_print`]: the text of `route print`.
//! - [`netroute_table`]: the table `Get-NetRoute` prints by default.
//! - [`netsh`]: `netsh interface ipv4/ipv6 show route` with `show interfaces`.
//! - [`netstat`]: macOS `netstat -rn`, read into the [`scoped`](super::scoped) model.
//! - [`ip_rule`] and [`ip_route`]: Linux's `ip rule` and `ip route show table all`, text or
//!   JSON, read into the [`policy`](super::policy) model.
//!
//! Text is parsed by its structure, never by header words, because Windows prints headers in
//! the user's language; lines that look like data but fit no row are returned as
//! [`UnreadLine`]s rather than dropped silently. Parsers are pure (a file name and its text in,
//! tables out), never panic, and name the file and the field in every error.

pub mod ip_route;
pub mod ip_rule;
pub mod netroute_table;
pub mod netsh;
pub mod netstat;
pub mod powershell;
pub mod route_print;

use std::fmt;

use super::HostTables;

/// Where in a dump a problem sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole (for example not JSON at all).
    File,
    /// The n-th object of a JSON dump, counted from 1.
    Record(usize),
    /// A line of a text dump, counted from 1.
    Line(usize),
}

/// A dump that cannot be read: the file, where, the field, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {location}field `{field}`: {problem}")]
pub struct DumpError {
    /// The file name the dump was read from, as given to the parser.
    pub file: String,
    /// Where in the file.
    pub location: Location,
    /// The field (JSON property or table column) that is missing or malformed.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => Ok(()),
            Location::Record(n) => write!(f, "record {n}: "),
            Location::Line(n) => write!(f, "line {n}: "),
        }
    }
}

/// A line of a text dump that looked like data but fit no row shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadLine {
    /// Line number, counted from 1.
    pub line: usize,
    /// The line as it was.
    pub text: String,
}

/// Tables read from a text dump, with the lines that could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextDump {
    /// What was read.
    pub tables: HostTables,
    /// The first [`KEPT_UNREAD`] data-looking lines that fit no row.
    pub unread: Vec<UnreadLine>,
    /// How many such lines there were in all (at least `unread.len()`).
    pub unread_total: usize,
}

/// How many unread lines a text reader keeps with their text; the others are only counted,
/// so garbage input costs bounded memory and output whatever its size.
pub const KEPT_UNREAD: usize = 20;

/// How many characters of an unread line are kept.
const KEPT_CHARS: usize = 200;

/// Collects unread lines, keeping the first [`KEPT_UNREAD`] (cut to [`KEPT_CHARS`]).
#[derive(Debug, Default)]
pub(crate) struct Unread {
    kept: Vec<UnreadLine>,
    total: usize,
}

impl Unread {
    /// Records line `line` (counted from 1).
    pub(crate) fn push(&mut self, line: usize, text: &str) {
        self.total += 1;
        if self.kept.len() < KEPT_UNREAD {
            self.kept.push(UnreadLine {
                line,
                text: text.chars().take(KEPT_CHARS).collect(),
            });
        }
    }

    /// The kept lines and the total count.
    pub(crate) fn finish(self) -> (Vec<UnreadLine>, usize) {
        (self.kept, self.total)
    }
}

/// Turns a dump's bytes into text whatever the shell wrote: UTF-8 with or without a BOM, or
/// UTF-16 (Windows PowerShell 5.1's `>` writes UTF-16LE with a BOM). Anything else (an OEM
/// code page from `cmd`) is read lossily: only header words hold non-ASCII, and parsing does
/// not depend on them.
pub fn decode_text(bytes: &[u8]) -> String {
    let utf16 = |bytes: &[u8], little: bool| {
        let units = bytes.chunks_exact(2).map(|c| {
            if little {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect::<String>()
    };
    if let Some(rest) = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]) {
        return String::from_utf8_lossy(rest).into_owned();
    }
    if let Some(rest) = bytes.strip_prefix(&[0xff, 0xfe]) {
        return utf16(rest, true);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xfe, 0xff]) {
        return utf16(rest, false);
    }
    // UTF-16LE without a BOM: ASCII text has a zero in every odd byte.
    if bytes.len() >= 4 && bytes[1] == 0 && bytes[3] == 0 && bytes[0] != 0 {
        return utf16(bytes, true);
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether a token of a text line is data (a number, an address or a prefix) rather than a
/// header word, so a line holding one but fitting no row is reported, not skipped.
pub(crate) fn looks_like_data(token: &str) -> bool {
    token.parse::<u64>().is_ok()
        || token.parse::<std::net::IpAddr>().is_ok()
        || token.parse::<ipnet::IpNet>().is_ok()
        || (token.contains(['.', ':', '/']) && token.starts_with(|c: char| c.is_ascii_hexdigit()))
}

/// Whether a line of a pasted Linux dump is the command that made it (`$ ip -6 rule`,
/// `root@host:~# ip route show table all`) or a comment, not output: skipped silently.
pub(crate) fn is_command_line(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with(['$', '#'])
        || t.contains("ip rule")
        || t.contains("ip route")
        || t.contains("ip -")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_utf8_bom_and_utf16_with_and_without_bom() {
        assert_eq!(decode_text(b"\xef\xbb\xbf[1]"), "[1]");
        assert_eq!(decode_text(b"\xff\xfe[\x001\x00]\x00"), "[1]");
        assert_eq!(decode_text(b"\xfe\xff\x00[\x001\x00]"), "[1]");
        assert_eq!(decode_text(b"[\x001\x00]\x00"), "[1]");
        assert_eq!(decode_text(b"St\x84ndige"), "St\u{fffd}ndige");
        assert_eq!(decode_text(b""), "");
        assert_eq!(decode_text(b"\xff\xfe\x41"), "");
    }

    #[test]
    fn errors_name_file_location_and_field() {
        let e = DumpError {
            file: "routes.json".into(),
            location: Location::Record(3),
            field: "DestinationPrefix".into(),
            problem: "`x` is not an IP prefix".into(),
        };
        assert_eq!(
            e.to_string(),
            "routes.json: record 3: field `DestinationPrefix`: `x` is not an IP prefix"
        );
    }

    #[test]
    fn data_tokens_versus_header_words() {
        for data in [
            "12",
            "192.0.2.1",
            "2001:db8::/32",
            "fe80::1%12",
            "0.0.0.0/0",
        ] {
            assert!(looks_like_data(data), "{data}");
        }
        for word in [
            "IPv4",
            "Metric",
            "On-link",
            "Auf",
            "Verbindung",
            "Aktive",
            "===",
        ] {
            assert!(!looks_like_data(word), "{word}");
        }
    }
}

#[cfg(test)]
mod never_panic {
    //! Arbitrary input gives tables, unread lines or an error naming the file, never a panic.
    use proptest::prelude::*;

    use super::*;

    /// Text built from the pieces real dumps are made of, so the parsers get past their first
    /// checks, plus arbitrary characters.
    fn dumpish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(",".to_owned()),
            Just("\"ifIndex\": ".to_owned()),
            Just("\"DestinationPrefix\": ".to_owned()),
            Just("\"AddressFamily\": ".to_owned()),
            Just("\"0.0.0.0/0\"".to_owned()),
            Just("\"fe80::1%4\"".to_owned()),
            Just("===========".to_owned()),
            Just("\n".to_owned()),
            Just("  ".to_owned()),
            Just("255.255.255.0".to_owned()),
            Just("12...00 15 5d ......".to_owned()),
            Just("On-link".to_owned()),
            Just("32765:\tnot from all fwmark 0xca6c/0xff lookup ".to_owned()),
            Just("default via 192.0.2.1 dev eth0 table local metric ".to_owned()),
            Just("\tnexthop via fe80::1 dev ".to_owned()),
            Just("goto ".to_owned()),
            Just("4294967296".to_owned()),
            Just("-1".to_owned()),
            Just("/129".to_owned()),
            "[0-9a-f:./% ]{0,12}",
            any::<String>(),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in dumpish(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = powershell::parse_routes("f", &text);
            let _ = powershell::parse_ip_interfaces("f", &text);
            if let Err(e) = powershell::parse_addresses("f.json", &text) {
                prop_assert!(e.to_string().starts_with("f.json: "));
            }
            let _ = route_print::parse(&text);
            let _ = netroute_table::parse(&text);
            let _ = ip_rule::parse("f", &text);
            let _ = ip_route::parse("f", &text);
            let _ = netstat::parse(&text);
            let _ = netsh::parse(&text);
            let decoded = decode_text(&bytes);
            let _ = route_print::parse(&decoded);
        }
    }
}
