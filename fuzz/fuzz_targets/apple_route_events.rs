//! Notifications read from a Darwin routing socket: any bytes must give a change, nothing,
//! or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopguard::fuzzing::parse_route_event;

fuzz_target!(|data: &[u8]| {
    let _ = parse_route_event(data);
});
