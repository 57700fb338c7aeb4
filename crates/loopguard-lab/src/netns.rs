//! Named network namespaces that remove themselves, and running code inside them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::LabError;

/// Prefix of every namespace and link the lab creates, so leftovers are easy to recognise.
pub const PREFIX: &str = "lg-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace name unique to this process and call: `lg-<tag>-<pid>-<n>`. The pid lets
/// [`remove_leftovers`] tell a killed run's namespaces from those of a run still going.
/// (Namespace names are file names, not interface names, so the 15-byte limit of the latter
/// does not apply.)
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{tag}-{}-{n}", std::process::id())
}

/// The pid inside a name made by [`unique_name`].
fn owner_pid(name: &str) -> Option<u32> {
    let mut fields = name.rsplit('-');
    fields.next()?.parse::<u32>().ok()?;
    fields.next()?.parse().ok()
}

/// A network namespace created by the lab and deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` (removing a leftover of the same name first) and brings
    /// its loopback up.
    pub fn create(name: &str) -> Result<Self, LabError> {
        if !name.starts_with(PREFIX) {
            return Err(LabError::BadName(name.to_owned()));
        }
        // A leftover from a killed run would make `ip netns add` fail.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run_cmd("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// Runs any program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// Sets a sysctl inside the namespace, e.g. `net.ipv4.conf.all.rp_filter`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let setting = format!("{key}={value}");
        self.exec("sysctl", &["-q", "-w", &setting]).map(drop)
    }

    /// Runs `f` on a new thread whose network namespace is this one, and returns its result.
    /// Sockets, netlink connections and `/proc/sys/net` reads made by `f` belong to this
    /// namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T, LabError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = self.open()?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(&file)?;
                    Ok(f())
                })
                .join()
                .map_err(|_| LabError::Panicked(self.name.clone()))?
        })
    }

    /// Spawns a detached thread inside this namespace running `f`.
    pub fn spawn<F>(&self, f: F) -> Result<std::thread::JoinHandle<()>, LabError>
    where
        F: FnOnce() + Send + 'static,
    {
        let file = self.open()?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("in-{name}"))
            .spawn(move || {
                if let Err(e) = enter(&file) {
                    eprintln!("cannot enter namespace {name}: {e}");
                    return;
                }
                f()
            })
            .map_err(LabError::Io)
    }

    fn open(&self) -> Result<File, LabError> {
        File::open(format!("/var/run/netns/{}", self.name)).map_err(LabError::Io)
    }
}

fn enter(file: &File) -> Result<(), LabError> {
    // SAFETY: setns only reads the descriptor; it changes the namespace of this thread alone.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(LabError::Io(std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes every link inside it (veth peers included).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a command and returns its standard output, or an error carrying its standard error.
pub fn run_cmd(program: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LabError::Spawn(program.to_owned(), e))?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process may build a lab: root, and `ip` available.
pub fn lab_available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root to create network namespaces".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Err("needs the `ip` command (iproute2)".into());
    }
    Ok(())
}

/// Removes namespaces named `lg-<tag>...` whose creating process is gone: what killed runs
/// left. Those of a run still going are kept.
pub fn remove_leftovers(tag: &str) {
    let prefix = format!("{PREFIX}{tag}");
    if let Ok(list) = run_cmd("ip", &["netns", "list"]) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            // A namespace whose creator still runs is not a leftover (two demos at once).
            let orphaned = owner_pid(name)
                .is_none_or(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
            if name.starts_with(&prefix) && orphaned {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_carry_the_owner_pid() {
        let a = unique_name("demo-c");
        let b = unique_name("demo-c");
        assert_ne!(a, b);
        assert!(a.starts_with("lg-demo-c-"), "{a}");
        assert_eq!(owner_pid(&a), Some(std::process::id()));
        assert_eq!(owner_pid("lg-demo-c"), None);
        assert_eq!(owner_pid("lg-x-12-abc"), None);
    }
}
