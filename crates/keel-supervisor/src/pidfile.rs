//! The pidfile of the supervised containerd, and the checks a process must pass before a
//! supervisor adopts it.
//!
//! A pidfile can outlive its process, and the pid can then name anything. A process is adopted
//! only when `/proc/<pid>/exe` is the configured containerd binary and its command line passes
//! our generated config file. The caller then also checks that our socket serves. The pidfd is
//! opened before the checks, so the process checked is the one later watched.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::SupervisorError;

/// How often [`wait_until_dead`] checks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Returns the pid in `pidfile`, or `None` when the file is missing or contains no pid.
pub(crate) fn read(pidfile: &Path) -> Option<u32> {
    let text = fs::read_to_string(pidfile).ok()?;
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

/// Writes `pid` to `pidfile` through a temporary file and a rename, so a reader never sees a
/// half-written pid.
pub(crate) fn write(pidfile: &Path, pid: u32) -> Result<(), SupervisorError> {
    let temporary = pidfile.with_extension("pid.tmp");
    fs::write(&temporary, format!("{pid}\n"))
        .map_err(|error| SupervisorError::io("write", &temporary, error))?;
    fs::rename(&temporary, pidfile).map_err(|error| SupervisorError::io("rename", pidfile, error))
}

/// Removes `pidfile` if it still names `pid`.
pub(crate) fn remove_if(pidfile: &Path, pid: u32) {
    if read(pidfile) != Some(pid) {
        return;
    }
    if let Err(error) = fs::remove_file(pidfile)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(pidfile = %pidfile.display(), %error, "failed to remove pidfile");
    }
}

/// Opens a pidfd of `pid` if it is a live containerd started from `binary` with
/// `--config <config_file>`. Returns `None` for a dead process, a zombie, or anything else.
pub(crate) fn open_if_ours(pid: u32, binary: &Path, config_file: &Path) -> Option<OwnedFd> {
    let raw = i32::try_from(pid).ok()?;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(raw)?,
        rustix::process::PidfdFlags::empty(),
    )
    .ok()?;
    let is_ours =
        is_process_alive(pid) && runs_binary(pid, binary) && passes_config(pid, config_file);
    is_ours.then_some(pidfd)
}

/// Reports whether `pid` names a process that still runs.
///
/// A zombie counts as dead, because it runs no code and its parent may never reap it. A shim's
/// parent, for one, is pid 1 or the nearest subreaper, not the process that started containerd.
pub fn is_process_alive(pid: u32) -> bool {
    !matches!(process_state(pid), None | Some('Z' | 'X' | 'x'))
}

/// Returns the state letter of `pid` from `/proc/<pid>/stat`, such as `R`, `S`, `T` (stopped
/// by a signal) or `Z`, or `None` when the process is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state letter follows the command name, which is in parentheses and may contain ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Waits until `pid` is dead (see [`is_process_alive`]), for at most `timeout`. Returns whether
/// it died. Blocks the calling thread.
pub(crate) fn wait_until_dead(pid: u32, timeout: Duration) -> bool {
    let started = Instant::now();
    while is_process_alive(pid) {
        if started.elapsed() >= timeout {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
    true
}

/// Lists the pids in `/proc`.
pub(crate) fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// Returns the arguments of `pid`, program first, or `None` when the process is gone. A zombie
/// has none.
pub(crate) fn command_args(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args = raw
        .split(|&byte| byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    Some(args)
}

/// Reports whether `/proc/<pid>/exe` is `binary`, comparing resolved paths.
fn runs_binary(pid: u32, binary: &Path) -> bool {
    let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let expected = fs::canonicalize(binary).unwrap_or_else(|_| binary.to_owned());
    exe == expected
}

/// Reports whether the command line of `pid` contains `--config <config_file>`.
fn passes_config(pid: u32, config_file: &Path) -> bool {
    let Some(args) = command_args(pid) else {
        return false;
    };
    let config = config_file.to_string_lossy();
    let joined = format!("--config={config}");
    args.windows(2)
        .any(|pair| pair[0] == "--config" && pair[1] == config.as_ref())
        || args.contains(&joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_round_trips() -> Result<(), SupervisorError> {
        let folder = std::env::temp_dir().join(format!("keel-pidfile-{}", std::process::id()));
        fs::create_dir_all(&folder)
            .map_err(|error| SupervisorError::io("create", &folder, error))?;
        let pidfile = folder.join("containerd.pid");

        write(&pidfile, 4242)?;
        let written = read(&pidfile);
        remove_if(&pidfile, 1);
        let kept = pidfile.exists();
        remove_if(&pidfile, 4242);
        let removed = !pidfile.exists();
        let _ = fs::remove_dir_all(&folder);

        assert_eq!(written, Some(4242));
        assert!(kept);
        assert!(removed);
        Ok(())
    }

    #[test]
    fn own_process_is_not_containerd() {
        let pid = std::process::id();
        assert!(is_process_alive(pid));
        let adopted = open_if_ours(
            pid,
            Path::new("/usr/bin/containerd"),
            Path::new("/tmp/keel-x/containerd.toml"),
        );
        assert!(adopted.is_none());
    }

    #[test]
    fn command_args_of_child_are_split() -> io::Result<()> {
        let mut child = std::process::Command::new("/bin/sleep")
            .args(["60", "61"])
            .spawn()?;

        // Until the exec finishes, the kernel shows an empty command line or the test
        // binary's own, so the read is repeated until it shows the new program.
        let expected = ["/bin/sleep", "60", "61"].map(String::from).to_vec();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut args = command_args(child.id());
        while args.as_ref() != Some(&expected) && Instant::now() < deadline {
            thread::sleep(POLL_INTERVAL);
            args = command_args(child.id());
        }
        child.kill()?;
        child.wait()?;

        assert_eq!(args, Some(expected));
        Ok(())
    }

    #[test]
    fn killed_child_is_dead_once_reaped() -> io::Result<()> {
        let mut child = std::process::Command::new("/bin/sleep").arg("60").spawn()?;
        let pid = child.id();
        assert!(is_process_alive(pid));

        child.kill()?;
        child.wait()?;

        assert!(wait_until_dead(pid, Duration::from_secs(2)));
        Ok(())
    }

    #[test]
    fn all_pids_contains_own_pid() {
        assert!(all_pids().contains(&std::process::id()));
    }

    #[test]
    fn missing_pidfile_has_no_pid() {
        assert_eq!(
            read(Path::new("/nonexistent-keel-folder/containerd.pid")),
            None
        );
    }
}
