//! The command line's errors: one line naming what failed and what to do, and an exit code
//! that follows [`keel::ErrorKind`].

use std::path::PathBuf;

use keel::ErrorKind;
use keel_supervisor::SupervisorError;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A keel call failed.
    #[error("{source}{detail}", detail = detail(source))]
    Keel {
        /// The failed call's error.
        #[from]
        source: keel::Error,
    },

    /// A keel call failed, with a next step that fits the command better than the error kind's.
    #[error("{source}{}; {hint}", containerd_message(source))]
    KeelWithHint {
        /// The failed call's error.
        source: keel::Error,
        /// The next step for the user.
        hint: String,
    },

    /// The container has no task, which the command needs. No command creates a task for an
    /// existing container except `keel restore`.
    #[error(
        "{command} failed for container {container_id}: the container has no task; remove it with \
         `keel rm {container_id}` and create it again with `keel run`, or start its task from a \
         checkpoint with `keel restore {container_id} DIR`"
    )]
    NoTask {
        /// The command's name, such as "stats".
        command: &'static str,
        /// The container.
        container_id: String,
    },

    /// keel's own containerd could not be started or adopted.
    #[error("{}", supervisor_message(source))]
    Supervisor {
        /// The supervisor's error.
        #[from]
        source: SupervisorError,
    },

    /// The command line requests something keel cannot do.
    #[error("{message}")]
    Usage {
        /// The problem and its fix.
        message: String,
    },

    /// A file or terminal operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// The operation, such as "write to".
        action: &'static str,
        /// The file or device.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::Usage {
            message: message.into(),
        }
    }

    pub(crate) fn with_hint(source: keel::Error, hint: impl Into<String>) -> Self {
        Self::KeelWithHint {
            source,
            hint: hint.into(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Returns the process exit code: a fixed number per [`ErrorKind`], listed in
    /// `docs/cli.md`.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Keel { source } | Self::KeelWithHint { source, .. } => {
                exit_code_of(source.kind())
            }
            Self::NoTask { .. } => exit_code_of(ErrorKind::NotFound),
            Self::Supervisor {
                source: SupervisorError::InvalidPath { .. },
            } => exit_code_of(ErrorKind::InvalidArgument),
            Self::Supervisor { .. } => exit_code_of(ErrorKind::Unavailable),
            Self::Usage { .. } => exit_code_of(ErrorKind::InvalidArgument),
            Self::Io { .. } => exit_code_of(ErrorKind::Internal),
        }
    }
}

/// Maps an error kind to the exit code of a failed command.
pub fn exit_code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidArgument => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::AlreadyExists => 4,
        ErrorKind::FailedPrecondition => 5,
        ErrorKind::Unavailable => 6,
        ErrorKind::TimedOut => 7,
        ErrorKind::Cancelled => 8,
        // Shells report a missing executable with 127.
        ErrorKind::ExecutableNotFound => 127,
        _ => 1,
    }
}

/// Returns the text after keel's message: containerd's own message when containerd rejected
/// the request, and the next step for the user. keel's own rejections already end with the
/// next step, so they get nothing.
fn detail(error: &keel::Error) -> String {
    match error {
        keel::Error::Rejected { .. } => String::new(),
        keel::Error::Containerd { .. } => {
            format!("{}; {}", containerd_message(error), hint(error.kind()))
        }
        keel::Error::Io { source, .. } => format!(
            ": {source}; check that the folder can be written, or choose another one (keel's \
             own folders with --state-dir)"
        ),
        _ => format!("; {}", hint(error.kind())),
    }
}

/// Returns containerd's own message in parentheses, with a leading space, when containerd
/// rejected the request with one; otherwise nothing.
fn containerd_message(error: &keel::Error) -> String {
    match error {
        keel::Error::Containerd { source, .. } if !source.message().is_empty() => {
            format!(" ({})", source.message())
        }
        _ => String::new(),
    }
}

/// Returns the message of a supervisor error with the operating system's error, where there is
/// one, and a next step that a user of this command line can take.
fn supervisor_message(error: &SupervisorError) -> String {
    match error {
        SupervisorError::Io {
            action,
            path,
            source,
        } => format!(
            "failed to {action} {}: {source}; choose another state folder with --state-dir",
            path.display()
        ),
        SupervisorError::Spawn { binary, source } => format!(
            "failed to start {}: {source}; install containerd, or name its binary with \
             KEEL_CONTAINERD",
            binary.display()
        ),
        SupervisorError::BinaryNotFound { binary } => format!(
            "containerd binary {} not found: install containerd, or name its binary with \
             KEEL_CONTAINERD",
            binary.display()
        ),
        SupervisorError::AdoptedNotServing {
            pid,
            pidfile,
            socket,
        } => format!(
            "keel's containerd (pid {pid}, from {}) runs but does not serve on {}; {}",
            pidfile.display(),
            socket.display(),
            hung_containerd_hint(*pid)
        ),
        SupervisorError::Process {
            action,
            pid,
            source,
        } => format!("failed to {action} containerd (pid {pid}): {source}"),
        SupervisorError::StartTimedOut {
            pid,
            socket,
            timeout_ms,
            log,
        } => format!(
            "containerd (pid {pid}) did not serve on {} within {timeout_ms}ms; see {log}, then \
             try again",
            socket.display()
        ),
        SupervisorError::InvalidPath { .. } => {
            format!("{error} (keel's run folder is DIR/run for --state-dir DIR)")
        }
        other => other.to_string(),
    }
}

/// Returns the next step for a containerd that runs but does not serve: resume it when a
/// signal stopped it, or else kill it so the next command starts a new one.
fn hung_containerd_hint(pid: u32) -> String {
    if is_stopped_by_signal(pid) {
        return format!(
            "it is stopped by a signal: resume it with `kill -CONT {pid}` and try again"
        );
    }
    format!(
        "wait and try again, or kill it with `kill -9 {pid}` so the next command starts a new \
         one (its containers keep running)"
    )
}

/// Reports whether the process is in the stopped state (`T` in `/proc/<pid>/stat`), as after
/// SIGSTOP.
fn is_stopped_by_signal(pid: u32) -> bool {
    keel_supervisor::process_state(pid) == Some('T')
}

/// Returns the next step for the user after an error of `kind`.
fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "see with `keel ps` whether the container and its task still exist",
        ErrorKind::AlreadyExists => "choose another id, or remove the old one with `keel rm -f`",
        ErrorKind::InvalidArgument => "fix the argument and try again",
        ErrorKind::FailedPrecondition => {
            "the container is in the wrong state: see `keel ps`, stop it with `keel stop`, or use `keel rm -f`"
        }
        ErrorKind::Unavailable => {
            "check that containerd runs (`keel containerd`) and that --address names its socket"
        }
        ErrorKind::TimedOut => {
            "containerd or the container's shim is slow or hung; try again, or see `keel ps` for the container's state"
        }
        ErrorKind::Cancelled => "the request was cancelled; try again",
        ErrorKind::ExecutableNotFound => "check the command's path inside the container",
        _ => "run again with --debug for details",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_differ_per_kind() {
        let kinds = [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::FailedPrecondition,
            ErrorKind::Unavailable,
            ErrorKind::TimedOut,
            ErrorKind::Cancelled,
            ErrorKind::ExecutableNotFound,
            ErrorKind::Internal,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|kind| exit_code_of(*kind)).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0));
    }

    #[test]
    fn supervisor_io_error_names_cause_and_fix() {
        let error = CliError::from(SupervisorError::Io {
            action: "create directory",
            path: PathBuf::from("/tmp/afile/run"),
            source: std::io::Error::from_raw_os_error(nix::libc::ENOTDIR),
        });
        let text = error.to_string();
        assert!(text.contains("/tmp/afile/run"), "{text}");
        assert!(text.contains("Not a directory"), "{text}");
        assert!(text.contains("--state-dir"), "{text}");
        assert_eq!(error.exit_code(), 6);
    }

    #[test]
    fn supervisor_invalid_path_is_invalid_argument() {
        let error = CliError::from(SupervisorError::InvalidPath {
            field: "socket path",
            path: PathBuf::from("/tmp/long/run/containerd.sock"),
            reason: "is 129 bytes, more than containerd's limit of 104".to_owned(),
        });
        let text = error.to_string();
        assert!(text.contains("--state-dir"), "{text}");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn hung_containerd_hint_names_commands() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = sleeper.id();
        let running_hint = hung_containerd_hint(pid);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits")),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("stop sleep");
        let mut stopped_hint = String::new();
        for _ in 0..100 {
            stopped_hint = hung_containerd_hint(pid);
            if stopped_hint.contains("kill -CONT") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        sleeper.kill().expect("kill sleep");
        sleeper.wait().expect("reap sleep");

        assert!(
            running_hint.contains(&format!("kill -9 {pid}")),
            "{running_hint}"
        );
        assert!(
            stopped_hint.contains(&format!("kill -CONT {pid}")),
            "{stopped_hint}"
        );
    }

    #[test]
    fn keel_error_names_id_and_hint() {
        let error = CliError::from(keel::Error::InvalidArgument {
            field: "container id",
            value: "bad id".to_owned(),
            reason: "must match [A-Za-z0-9_.-]+".to_owned(),
        });
        let text = error.to_string();
        assert!(text.contains("\"bad id\""), "{text}");
        assert!(text.contains("fix the argument"), "{text}");
        assert_eq!(error.exit_code(), 2);
    }
}
