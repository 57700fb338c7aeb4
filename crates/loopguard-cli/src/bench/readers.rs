//! The `route print` reader on a 50 MB dump (what a host with a huge routing table, or a
//! paste repeated many times, gives `route explain`): its time, and the time to merely split
//! the same text into lines, measured in the same rounds, so the ratio says what the reading
//! itself costs.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use loopguard::route::dump::route_print;
use serde_json::{json, Value};

use super::stats::{median, round, Ratio};

/// Size of the generated dump: 50 MB, or 5 MB in an unoptimised build (the smoke test's),
/// whose figures mean nothing anyway.
const DUMP_BYTES: usize = if cfg!(debug_assertions) {
    5 << 20
} else {
    50 << 20
};

/// A valid English `route print` of about [`DUMP_BYTES`]: the interface list, then IPv4 rows
/// over 10.0.0.0/8 on two interfaces (10.x are never sent to: the text is only parsed).
fn dump() -> String {
    let mut text = String::with_capacity(DUMP_BYTES + 4096);
    text.push_str(
        "===========================================================================\n\
         Interface List\n 24...........................loopguard Tunnel\n \
         12...f6 d1 22 33 44 55 ......Intel(R) Ethernet Connection (7) I219-LM\n  \
         1...........................Software Loopback Interface 1\n\
         ===========================================================================\n\n\
         IPv4 Route Table\n\
         ===========================================================================\n\
         Active Routes:\n\
         Network Destination        Netmask          Gateway       Interface  Metric\n",
    );
    let mut i: u32 = 0;
    while text.len() < DUMP_BYTES {
        let [_, b, c, d] = (0x0a00_0000 | (i & 0x00ff_ffff)).to_be_bytes();
        let interface = if i.is_multiple_of(2) {
            "192.0.2.10"
        } else {
            "203.0.113.2"
        };
        let _ = writeln!(
            text,
            "{:>17} {:>16} {:>16} {:>16} {:>6}",
            format!("10.{b}.{c}.{d}"),
            "255.255.255.255",
            "On-link",
            interface,
            281 + i % 50
        );
        i += 1;
    }
    text.push_str("===========================================================================\n");
    text
}

/// `rounds` alternations of reading the dump and splitting it into lines.
pub fn run(rounds: usize) -> Value {
    let text = dump();
    let (mut read, mut split) = (Vec::new(), Vec::new());
    let mut routes = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let dump = black_box(route_print::parse(black_box(&text)));
        read.push(started.elapsed().as_secs_f64());
        routes = dump.tables.routes.len();
        drop(dump);
        let started = Instant::now();
        black_box(black_box(&text).lines().count());
        split.push(started.elapsed().as_secs_f64());
    }
    let ratio = Ratio::of(&read, &split);
    json!({
        "bytes": text.len(),
        "routes": routes,
        "seconds": round(median(&read), 3),
        "lines_only_seconds": round(median(&split), 4),
        "ratio_to_lines": round(ratio.median, 1),
        "ratio_spread": [round(ratio.min, 1), round(ratio.max, 1)],
    })
}
