//! The sysctls strict reverse-path filtering and kernel-generated replies need.

use std::path::PathBuf;

use super::RoutesError;

/// One sysctl loopguard set, with the value it had before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlChange {
    /// The sysctl, e.g. `net.ipv4.fwmark_reflect`.
    pub key: String,
    /// Its value before `apply`.
    pub previous: String,
    /// Its value now.
    pub value: String,
}

/// `src_valid_mark` lets the reverse-path check use the (restored) mark of a reply;
/// `fwmark_reflect` makes the kernel's own replies (RST, ICMP errors) carry the mark of the
/// packet they answer, so they leave by the main table rather than the tunnel.
pub(crate) const IPV4: [(&str, &str); 2] = [
    ("net.ipv4.conf.all.src_valid_mark", "1"),
    ("net.ipv4.fwmark_reflect", "1"),
];
/// The IPv6 counterpart (IPv6 has no reverse-path sysctl).
pub(crate) const IPV6: [(&str, &str); 1] = [("net.ipv6.fwmark_reflect", "1")];

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// Whether IPv6 is available in the current network namespace.
pub(crate) fn ipv6_available() -> bool {
    path("net.ipv6").is_dir()
}

/// Reads a sysctl of the current network namespace.
pub(crate) fn read(key: &str) -> Result<String, RoutesError> {
    std::fs::read_to_string(path(key))
        .map(|s| s.trim().to_owned())
        .map_err(|source| RoutesError::Sysctl {
            key: key.to_owned(),
            source,
        })
}

/// Sets a sysctl of the current network namespace, writing only when it differs.
pub(crate) fn set(key: &str, value: &str) -> Result<SysctlChange, RoutesError> {
    let previous = read(key)?;
    if previous != value {
        std::fs::write(path(key), value).map_err(|source| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                RoutesError::PermissionDenied {
                    operation: format!("setting sysctl {key}"),
                }
            } else {
                RoutesError::Sysctl {
                    key: key.to_owned(),
                    source,
                }
            }
        })?;
    }
    Ok(SysctlChange {
        key: key.to_owned(),
        previous,
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_paths() {
        assert_eq!(
            path("net.ipv4.conf.all.src_valid_mark"),
            PathBuf::from("/proc/sys/net/ipv4/conf/all/src_valid_mark")
        );
        assert!(matches!(
            read("net.ipv4.no_such_key"),
            Err(RoutesError::Sysctl { .. })
        ));
    }
}
