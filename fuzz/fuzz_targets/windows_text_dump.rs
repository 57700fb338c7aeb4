//! `route print`, the `Get-NetRoute` table and netsh's route and interface tables, pasted into bug reports in any language and
//! code page: any bytes must parse (reporting unreadable lines), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopguard::route::dump::{decode_text, netroute_table, netsh, route_print};

fuzz_target!(|data: &[u8]| {
    let text = decode_text(data);
    let _ = route_print::parse(&text);
    let _ = netroute_table::parse(&text);
    let _ = netsh::parse(&text);
});
