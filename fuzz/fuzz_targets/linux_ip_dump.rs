//! `ip rule` and `ip route show table all`, text or JSON, pasted into bug reports: any bytes
//! must parse (reporting unreadable lines) or give an error naming the file, never panic, and
//! evaluating what was read must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopguard::route::dump::{decode_text, ip_route, ip_rule};
use loopguard::route::policy::{evaluate, Flow, PolicyTables};

fuzz_target!(|data: &[u8]| {
    let text = decode_text(data);
    let rules = ip_rule::parse("f", &text).map(|d| d.rules).unwrap_or_default();
    let routes = ip_route::parse("f", &text).ok().map(|d| d.routes);
    let tables = PolicyTables { rules, routes };
    for destination in ["198.51.100.7", "2001:db8::7"] {
        let flow = Flow {
            destination: destination.parse().unwrap(),
            mark: 0x3047,
            source: None,
        };
        let _ = evaluate(&tables, flow);
    }
});
