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

/// The sysctls `apply` sets and the keeper keeps, for the families available here.
pub(crate) fn wanted() -> Vec<(&'static str, &'static str)> {
    let mut keys: Vec<(&str, &str)> = IPV4.to_vec();
    if ipv6_available() {
        keys.extend(IPV6);
    }
    keys
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

/// What restoring `change` means now that the sysctl reads `current`: the value to write
/// back, or `None` when there is nothing to do (it was not changed) or somebody else has
/// changed it since (their value wins).
pub(crate) fn restore_plan(change: &SysctlChange, current: &str) -> Option<String> {
    (change.previous != change.value && current == change.value).then(|| change.previous.clone())
}

/// Puts back the values `apply` changed (from [`ApplyReport::sysctls`](super::ApplyReport)),
/// in the calling thread's network namespace, unless another program has changed them
/// since. Returns what was written back. Opt-in: other programs may rely on the values
/// `apply` set (strict `rp_filter` set-ups need `src_valid_mark=1`).
pub fn restore_sysctls(changes: &[SysctlChange]) -> Result<Vec<SysctlChange>, RoutesError> {
    let mut out = Vec::new();
    for change in changes {
        let current = read(&change.key)?;
        if let Some(previous) = restore_plan(change, &current) {
            let done = set(&change.key, &previous)?;
            out.push(done);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_changes_are_put_back() {
        let c = |previous: &str, value: &str| SysctlChange {
            key: "net.ipv4.fwmark_reflect".into(),
            previous: previous.into(),
            value: value.into(),
        };
        assert_eq!(restore_plan(&c("0", "1"), "1"), Some("0".into()));
        // Unchanged by apply: nothing to restore.
        assert_eq!(restore_plan(&c("1", "1"), "1"), None);
        // Changed by somebody else since: theirs stays.
        assert_eq!(restore_plan(&c("0", "1"), "2"), None);
    }

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
