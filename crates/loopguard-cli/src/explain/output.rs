//! What `route explain` prints, the same for every OS: one JSON object per destination
//! (`--json`) or a decision table made from it, and warnings that stay short whatever the
//! input.

use std::path::Path;

use loopguard::route::dump::{TextDump, UnreadLine};
use serde_json::Value;

/// How many unread lines of one file are printed; the rest are counted.
pub const SHOWN_UNREAD: usize = 5;

/// How many characters of pasted text one warning shows.
const SHOWN_CHARS: usize = 120;

/// `text` made safe to print on a terminal: control characters, bidirectional overrides and
/// other invisible format characters are escaped (`\u{202e}`), and long text is cut with `…`.
/// Pasted dumps are untrusted and may hold anything.
pub fn escape(text: &str) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == SHOWN_CHARS {
            out.push('…');
            break;
        }
        let invisible = matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            | '\u{feff}' | '\u{2028}' | '\u{2029}');
        if c.is_control() || invisible {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Says which lines of a text dump were skipped, so nobody trusts an answer built on half a
/// table without knowing: the first [`SHOWN_UNREAD`], escaped, then how many more.
pub fn warn_unread(path: &Path, dump: &TextDump) {
    warn_lines(path, &dump.unread, dump.unread_total);
}

/// [`warn_unread`] for any reader: the kept lines and the total count.
pub fn warn_lines(path: &Path, unread: &[UnreadLine], total: usize) {
    for line in warnings_for_unread(path, unread, total) {
        eprintln!("{line}");
    }
}

/// The lines [`warn_lines`] prints.
pub fn warnings_for_unread(path: &Path, unread: &[UnreadLine], total: usize) -> Vec<String> {
    let file = escape(&path.display().to_string());
    let mut lines: Vec<String> = unread
        .iter()
        .take(SHOWN_UNREAD)
        .map(|u| {
            format!(
                "warning: {file}: line {}: could not read: {}",
                u.line,
                escape(u.text.trim())
            )
        })
        .collect();
    let shown = lines.len();
    if total > shown {
        lines.push(format!(
            "warning: {file}: {} more lines could not be read ({total} in all)",
            total - shown
        ));
    }
    lines
}

/// A short list of names for an error message: the first `limit`, escaped, then a count.
pub fn short_list(items: &[String], limit: usize) -> String {
    let mut shown: Vec<String> = items.iter().take(limit).map(|i| escape(i)).collect();
    if items.len() > limit {
        shown.push(format!("and {} more", items.len() - limit));
    }
    shown.join(", ")
}

#[cfg(test)]
/// The keys every destination's object has, whatever the OS (Linux adds `rule` and `table`).
pub const REPORT_KEYS: [&str; 13] = [
    "destination",
    "error",
    "message",
    "interface",
    "interface_index",
    "interface_alias",
    "source",
    "next_hop",
    "route",
    "effective_metric",
    "enters_tunnel",
    "candidates",
    "notes",
];

#[cfg(test)]
/// The keys every candidate's object has, whatever the OS.
pub const CANDIDATE_KEYS: [&str; 12] = [
    "destination_prefix",
    "next_hop",
    "interface",
    "interface_index",
    "interface_alias",
    "route_metric",
    "interface_metric",
    "effective_metric",
    "source",
    "chosen",
    "reason",
    "why",
];

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => escape(s),
        other => other.to_string(),
    }
}

fn hop(v: &Value) -> String {
    if v.is_null() {
        "on-link".to_owned()
    } else {
        s(v)
    }
}

/// The decision table for one destination.
pub fn text(r: &Value) -> String {
    let mut out = if r["error"].is_null() {
        let alias = if r["interface_alias"].is_null() {
            String::new()
        } else {
            format!(" ({})", s(&r["interface_alias"]))
        };
        format!(
            "{} -> interface {}{alias}, source {}, next hop {}, route {} (effective metric {})\n",
            s(&r["destination"]),
            s(&r["interface"]),
            s(&r["source"]),
            hop(&r["next_hop"]),
            s(&r["route"]),
            s(&r["effective_metric"]),
        )
    } else {
        format!(
            "{} -> {}: {}\n",
            s(&r["destination"]),
            s(&r["error"]),
            s(&r["message"])
        )
    };
    if !r["rule"].is_null() {
        out += &format!(
            "  decided by rule {} ({}), table {}\n",
            s(&r["rule"]["priority"]),
            s(&r["rule"]["text"]),
            s(&r["table"])
        );
    }
    if r["enters_tunnel"] == Value::Bool(true) {
        out += "  ENTERS THE TUNNEL: a guarded socket would loop\n";
    }
    for note in r["notes"].as_array().map(Vec::as_slice).unwrap_or_default() {
        out += &format!("  note: {}\n", s(note));
    }
    let rows: Vec<[String; 8]> = r["candidates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            [
                s(&c["destination_prefix"]),
                hop(&c["next_hop"]),
                s(&c["interface"]),
                s(&c["interface_alias"]),
                s(&c["route_metric"]),
                s(&c["interface_metric"]),
                s(&c["effective_metric"]),
                s(&c["why"]),
            ]
        })
        .collect();
    let header = [
        "prefix",
        "next hop",
        "if",
        "alias",
        "route",
        "if-metric",
        "effective",
        "verdict",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::from(" ");
        for (cell, w) in cells.iter().zip(widths) {
            l += &format!(" {cell:<w$}");
        }
        l.trim_end().to_owned() + "\n"
    };
    if rows.is_empty() {
        out += "  (no route contains this destination)\n";
    } else {
        out += &line(&header.map(String::from));
        for row in &rows {
            out += &line(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopguard::route::dump::UnreadLine;

    #[test]
    fn escape_makes_control_and_bidi_characters_visible_and_cuts_long_text() {
        assert_eq!(escape("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape("Auf Verbindung"), "Auf Verbindung");
        let long = "x".repeat(500);
        assert_eq!(escape(&long).chars().count(), SHOWN_CHARS + 1);
    }

    #[test]
    fn unread_warnings_are_capped_with_a_count() {
        let dump = TextDump {
            unread: (1..=20)
                .map(|line| UnreadLine {
                    line,
                    text: "1.2.3.4 \u{7}".into(),
                })
                .collect(),
            unread_total: 30_089,
            ..TextDump::default()
        };
        let lines = warnings_for_unread(Path::new("junk.bin"), &dump.unread, dump.unread_total);
        assert_eq!(lines.len(), SHOWN_UNREAD + 1);
        assert!(lines[0].contains("\\u{7}"), "{}", lines[0]);
        assert_eq!(
            lines[SHOWN_UNREAD],
            "warning: junk.bin: 30084 more lines could not be read (30089 in all)"
        );
    }

    #[test]
    fn short_lists_say_how_many_were_left_out() {
        let items: Vec<String> = (0..15).map(|i| i.to_string()).collect();
        assert_eq!(short_list(&items[..2], 10), "0, 1");
        assert!(short_list(&items, 10).ends_with("9, and 5 more"));
    }
}
