//! `Get-NetRoute` / `Get-NetIPInterface` / `Get-NetIPAddress | ConvertTo-Json` dumps come from
//! users' machines: any bytes must give tables or an error naming the field, never a panic,
//! and whatever tables they give must be safe to decide on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopguard::route::dump::{decode_text, powershell};
use loopguard::route::{select, Tunnel};

fuzz_target!(|data: &[u8]| {
    let text = decode_text(data);
    let Ok(host) = powershell::host_tables(
        ("routes.json", &text),
        ("interfaces.json", &text),
        ("addresses.json", &text),
    ) else {
        return;
    };
    let tunnel = Tunnel::find(&host, "1").unwrap_or_else(|_| Tunnel::from_luids([]));
    for destination in ["192.0.2.7", "2001:db8::7", "fe80::1", "0.0.0.0"] {
        let _ = select(&host, &tunnel, destination.parse().unwrap());
    }
});
