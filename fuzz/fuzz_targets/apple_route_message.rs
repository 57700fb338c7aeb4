//! Replies read from a Darwin routing socket: any bytes must parse or give an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopguard::fuzzing::parse_route_message;

fuzz_target!(|data: &[u8]| {
    let _ = parse_route_message(data);
});
