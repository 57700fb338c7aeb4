//! Detects Wine, which lacks parts of the IP Helper API: `GetIpInterfaceEntry`
//! is missing (calling it kills the process), `GetBestRoute2` always fails with
//! `ERROR_NOT_SUPPORTED`, change notifications register but never fire, and the source of
//! an `IP_PKTINFO` on send is ignored.

use std::ffi::CStr;
use std::sync::OnceLock;

use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};

/// The Wine version when running under Wine (ntdll exports `wine_get_version`), else `None`.
pub fn version() -> Option<&'static str> {
    static VERSION: OnceLock<Option<String>> = OnceLock::new();
    VERSION.get_or_init(detect).as_deref()
}

/// Whether this process runs under Wine.
pub fn is_wine() -> bool {
    version().is_some()
}

fn detect() -> Option<String> {
    let ntdll: Vec<u16> = "ntdll.dll\0".encode_utf16().collect();
    // SAFETY: a NUL-terminated UTF-16 name; ntdll is loaded in every process.
    let module = unsafe { GetModuleHandleW(ntdll.as_ptr()) };
    if module.is_null() {
        return None;
    }
    // SAFETY: a valid module handle and a NUL-terminated ANSI name.
    let proc = unsafe { GetProcAddress(module, c"wine_get_version".as_ptr().cast()) }?;
    // SAFETY: Wine's `const char * CDECL wine_get_version(void)`, no arguments; on x86-64
    // cdecl and the system ABI are the same.
    let get: unsafe extern "C" fn() -> *const std::ffi::c_char =
        unsafe { std::mem::transmute(proc) };
    // SAFETY: calling it as declared above.
    let text = unsafe { get() };
    if text.is_null() {
        return Some(String::from("unknown"));
    }
    // SAFETY: Wine returns a static NUL-terminated string.
    Some(
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned(),
    )
}
