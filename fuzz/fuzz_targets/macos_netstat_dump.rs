//! macOS `netstat -rn` pasted into bug reports: any bytes must parse (reporting unreadable
//! lines), never panic, and selecting on what was read must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopguard::route::dump::{decode_text, netstat};
use loopguard::route::scoped::select_scoped;

fuzz_target!(|data: &[u8]| {
    let dump = netstat::parse(&decode_text(data));
    let tunnels = ["utun3".to_owned()];
    for destination in ["198.51.100.7", "2001:db8::7"] {
        let _ = select_scoped(&dump.routes, &tunnels, destination.parse().unwrap());
    }
});
