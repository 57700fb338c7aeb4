//! Notifications read from a Darwin routing socket: any bytes must give a change, nothing,
//! or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopguard::os::apple::route_events;

fuzz_target!(|data: &[u8]| {
    let _ = route_events::parse_change(data);
});
