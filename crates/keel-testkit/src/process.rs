//! Signals, liveness checks and waiting for processes, all by pid.

use std::fs;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::TestkitError;

/// How long containerd may take to exit after SIGTERM before it gets SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// How often a wait loop checks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Returns the parent pid of `pid`, or `None` when the process is gone.
pub(crate) fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name come the state letter and then the parent pid.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `signal` to `pid`.
pub(crate) fn send_signal(pid: u32, signal: Signal) -> Result<(), TestkitError> {
    let error = |source| TestkitError::Signal {
        signal,
        pid,
        source,
    };
    let raw = i32::try_from(pid).map_err(|_| error(Errno::ESRCH))?;
    kill(Pid::from_raw(raw), signal).map_err(error)
}

/// Waits until every thread of `pid` is stopped by a signal (state `T` in
/// `/proc/<pid>/task/<tid>/stat`), for at most `timeout`. Returns whether they all are.
pub(crate) fn wait_until_stopped(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if all_threads_stopped(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn all_threads_stopped(pid: u32) -> bool {
    let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.filter_map(Result::ok).all(|thread| {
        let stat = fs::read_to_string(thread.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        state == Some('T')
    })
}

/// Stops a child process: SIGCONT (in case it is frozen), SIGTERM, up to five seconds of grace,
/// then SIGKILL. Reaps the child and returns its exit status.
pub(crate) fn terminate(child: &mut Child) -> Result<ExitStatus, TestkitError> {
    let pid = child.id();
    if let Some(status) = try_wait(child)? {
        return Ok(status);
    }

    // A stopped process does not act on SIGTERM until it is continued.
    send_signal(pid, Signal::SIGCONT)?;
    send_signal(pid, Signal::SIGTERM)?;
    if let Some(status) = wait_child(child, TERMINATE_GRACE)? {
        return Ok(status);
    }

    tracing::warn!(
        pid,
        grace_ms = TERMINATE_GRACE.as_millis(),
        "SIGTERM ignored, sending SIGKILL"
    );
    kill_child(child)
}

/// Sends SIGKILL to a child process, reaps it and returns its exit status.
pub(crate) fn kill_child(child: &mut Child) -> Result<ExitStatus, TestkitError> {
    let pid = child.id();
    if let Some(status) = try_wait(child)? {
        return Ok(status);
    }
    send_signal(pid, Signal::SIGKILL)?;
    child
        .wait()
        .map_err(|source| TestkitError::Wait { pid, source })
}

/// Waits for a child to exit, for at most `timeout`. Returns its exit status, or `None` if it
/// still runs.
fn wait_child(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, TestkitError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = try_wait(child)? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Returns the exit status of a child that has exited (reaping it), or `None` if it still runs.
pub(crate) fn try_wait(child: &mut Child) -> Result<Option<ExitStatus>, TestkitError> {
    let pid = child.id();
    child
        .try_wait()
        .map_err(|source| TestkitError::Wait { pid, source })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use keel_supervisor::is_process_alive;

    use super::*;

    #[test]
    fn terminate_reaps_child() -> Result<(), TestkitError> {
        let mut child = Command::new("/bin/sleep")
            .arg("60")
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                program: "/bin/sleep".into(),
                source,
            })?;
        let pid = child.id();
        assert!(is_process_alive(pid));

        let status = terminate(&mut child)?;

        assert!(!status.success());
        assert!(!is_process_alive(pid));
        Ok(())
    }

    #[test]
    fn parent_pid_of_own_process_is_parent() {
        assert_eq!(
            parent_pid(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }
}
