//! The supervisor's error type: each variant names the binary, path or process involved.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// A failure to start, adopt or stop the supervised containerd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The containerd binary is missing.
    #[error(
        "containerd binary {binary} not found: install containerd or set the binary path in the supervisor config"
    )]
    BinaryNotFound {
        /// The configured binary.
        binary: PathBuf,
    },

    /// A folder or socket path of the configuration cannot work; nothing was made.
    #[error("invalid {field} {}: {reason}", path.display())]
    InvalidPath {
        /// The configuration field, such as "run folder".
        field: &'static str,
        /// The path.
        path: PathBuf,
        /// The rule it breaks, and what to do instead.
        reason: String,
    },

    /// A file system operation failed.
    #[error("failed to {action} {path}")]
    Io {
        /// The operation, such as "create directory".
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// containerd could not be started.
    #[error("failed to start {binary}")]
    Spawn {
        /// The containerd binary.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// containerd exited before it served.
    #[error("containerd (pid {pid}) exited with {status} before serving on {socket}; see {log}")]
    ExitedEarly {
        /// containerd's pid.
        pid: u32,
        /// Its exit status.
        status: ExitStatus,
        /// The socket it was to serve on.
        socket: PathBuf,
        /// The place of containerd's log, in the words of [`crate::ContainerdOutput::describe`].
        log: String,
    },

    /// containerd did not pass a health check within the start-up timeout.
    #[error(
        "containerd (pid {pid}) did not serve on {socket} within {timeout_ms}ms; see {log} or raise the start timeout"
    )]
    StartTimedOut {
        /// containerd's pid.
        pid: u32,
        /// The socket it was to serve on.
        socket: PathBuf,
        /// The start-up timeout.
        timeout_ms: u128,
        /// The place of containerd's log, in the words of [`crate::ContainerdOutput::describe`].
        log: String,
    },

    /// The pidfile names our containerd, which does not serve, and the hang policy forbids
    /// killing it.
    #[error(
        "containerd (pid {pid}) from {pidfile} runs but does not serve on {socket}; stop it or use the dump-and-restart policy"
    )]
    AdoptedNotServing {
        /// The adopted pid.
        pid: u32,
        /// The pidfile.
        pidfile: PathBuf,
        /// The socket.
        socket: PathBuf,
    },

    /// Signalling or watching containerd failed.
    #[error("failed to {action} containerd (pid {pid})")]
    Process {
        /// The operation, such as "send SIGTERM to".
        action: &'static str,
        /// containerd's pid.
        pid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The supervisor has stopped, so the request cannot be carried out.
    #[error("the containerd supervisor has stopped")]
    Stopped,
}

impl SupervisorError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
