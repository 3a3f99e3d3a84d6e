//! One containerd process: started as a child or adopted from a pidfile, with a way to wait for
//! its death and to signal it.
//!
//! A child is watched through its exit status (`tokio::process`). An adopted process is not
//! our child, so it is watched through a pidfd, which becomes readable when the process exits,
//! and is signalled through `pidfd_send_signal`, so a reused pid is never hit. The pidfd is
//! polled every [`PIDFD_POLL_INTERVAL`], because registering it with tokio's reactor needs
//! `unsafe`, which this workspace forbids.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::config::{ContainerdOutput, SupervisorConfig};
use crate::error::SupervisorError;

/// How often an adopted process's pidfd is checked for its exit.
const PIDFD_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// A live containerd process.
#[derive(Debug)]
pub(crate) struct ContainerdProcess {
    pid: u32,
    kind: ProcessKind,
}

#[derive(Debug)]
enum ProcessKind {
    /// Started by this supervisor; the tasks forward its output to `tracing`.
    Child {
        child: Box<Child>,
        output: Vec<JoinHandle<()>>,
    },
    /// Found through the pidfile and checked to be ours.
    Adopted { pidfd: OwnedFd },
}

impl ContainerdProcess {
    /// Starts `binary` with the generated config file.
    pub(crate) fn spawn(config: &SupervisorConfig, binary: &Path) -> Result<Self, SupervisorError> {
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config.config_file())
            .current_dir(&config.run_dir)
            .stdin(Stdio::null())
            .kill_on_drop(false);
        if let Some(path) = &config.path_env {
            command.env("PATH", path);
        }
        if config.own_process_group {
            command.process_group(0);
        }
        match &config.output {
            ContainerdOutput::Tracing => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            ContainerdOutput::File(path) => {
                let log = open_log(path)?;
                let log_for_stderr = log
                    .try_clone()
                    .map_err(|error| SupervisorError::io("duplicate handle of", path, error))?;
                command.stdout(log).stderr(log_for_stderr);
            }
        }

        let mut child = command.spawn().map_err(|source| SupervisorError::Spawn {
            binary: binary.to_owned(),
            source,
        })?;
        let Some(pid) = child.id() else {
            return Err(SupervisorError::Spawn {
                binary: binary.to_owned(),
                source: std::io::Error::other("containerd exited at once"),
            });
        };
        let mut output = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            output.push(tokio::spawn(forward_lines(stdout, pid)));
        }
        if let Some(stderr) = child.stderr.take() {
            output.push(tokio::spawn(forward_lines(stderr, pid)));
        }
        Ok(Self {
            pid,
            kind: ProcessKind::Child {
                child: Box::new(child),
                output,
            },
        })
    }

    /// Wraps a process found through the pidfile, given an open pidfd of it.
    pub(crate) fn adopt(pid: u32, pidfd: OwnedFd) -> Self {
        Self {
            pid,
            kind: ProcessKind::Adopted { pidfd },
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Resolves when the process has exited. Returns its exit status for a child, and `None`
    /// for an adopted process, whose status goes to its own parent. Cancel-safe.
    pub(crate) async fn exited(&mut self) -> Option<ExitStatus> {
        match &mut self.kind {
            ProcessKind::Child { child, .. } => child.wait().await.ok(),
            ProcessKind::Adopted { pidfd } => {
                while !has_exited(pidfd) {
                    tokio::time::sleep(PIDFD_POLL_INTERVAL).await;
                }
                None
            }
        }
    }

    /// Sends `signal` to the process.
    pub(crate) fn signal(&self, signal: Signal) -> Result<(), SupervisorError> {
        let error = |source: std::io::Error| SupervisorError::Process {
            action: signal_action(signal),
            pid: self.pid,
            source,
        };
        match &self.kind {
            // The child is not reaped before `exited` returns, so its pid cannot be reused.
            ProcessKind::Child { .. } => {
                let raw = i32::try_from(self.pid)
                    .map_err(|_| error(std::io::Error::other("pid out of range")))?;
                nix::sys::signal::kill(Pid::from_raw(raw), signal)
                    .map_err(|errno| error(errno.into()))
            }
            ProcessKind::Adopted { pidfd } => {
                let signal = rustix::process::Signal::from_named_raw(signal as i32)
                    .ok_or_else(|| error(std::io::Error::other("unknown signal")))?;
                rustix::process::pidfd_send_signal(pidfd, signal)
                    .map_err(|errno| error(errno.into()))
            }
        }
    }
}

impl Drop for ContainerdProcess {
    fn drop(&mut self) {
        if let ProcessKind::Child { output, .. } = &self.kind {
            output.iter().for_each(JoinHandle::abort);
        }
    }
}

/// Reports whether the process of `pidfd` has exited: a pidfd is readable once it has. A
/// failed poll counts as not exited, so the next poll tries again.
fn has_exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&now)).is_ok_and(|ready| ready > 0)
}

/// Opens containerd's log file for appending, creating it with mode 0600.
fn open_log(path: &Path) -> Result<std::fs::File, SupervisorError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| SupervisorError::io("open", path, error))
}

fn signal_action(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGTERM => "send SIGTERM to",
        Signal::SIGKILL => "send SIGKILL to",
        Signal::SIGUSR1 => "send SIGUSR1 to",
        Signal::SIGCONT => "send SIGCONT to",
        _ => "signal",
    }
}

/// Forwards each line of containerd's output as a `tracing` event at the level containerd
/// gave it.
async fn forward_lines(stream: impl AsyncRead + Unpin, pid: u32) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match logrus_level(&line) {
            "error" | "fatal" | "panic" => {
                tracing::error!(target: "containerd", pid, line, "containerd output")
            }
            "warning" | "warn" => {
                tracing::warn!(target: "containerd", pid, line, "containerd output")
            }
            "debug" | "trace" => {
                tracing::debug!(target: "containerd", pid, line, "containerd output")
            }
            _ => tracing::info!(target: "containerd", pid, line, "containerd output"),
        }
    }
}

/// Returns the `level=` field of a logrus text line, such as
/// `time="..." level=info msg="..."`, or an empty string.
fn logrus_level(line: &str) -> &str {
    line.split(' ')
        .find_map(|field| field.strip_prefix("level="))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logrus_level_reads_level_field() {
        let line = r#"time="2026-01-01T00:00:00Z" level=warning msg="slow" plugin=x"#;
        assert_eq!(logrus_level(line), "warning");
        assert_eq!(logrus_level("panic: runtime error"), "");
    }
}
