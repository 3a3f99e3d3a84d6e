//! The error type of the test kit: each variant names the binary, path or process involved and,
//! where one exists, the fix.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

/// A failure to set up, drive or inspect a private containerd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// containerd and runc need root, and the process is not root.
    #[error(
        "private containerd needs root, but the effective uid is {euid}: run the tests as root"
    )]
    NotRoot {
        /// The effective user id of this process.
        euid: u32,
    },

    /// A required program is missing.
    #[error("{program} not found {location}: {remedy}")]
    ProgramNotFound {
        /// The program's name, such as `containerd`.
        program: &'static str,
        /// The place searched, such as "on PATH" or "at /bin/busybox".
        location: String,
        /// The fix, such as the `apt-get install` command.
        remedy: String,
    },

    /// A path given in an environment variable does not name an executable file.
    #[error(
        "{path} (from {env_var}) is not an executable file: point {env_var} at the {program} binary"
    )]
    InvalidOverride {
        /// The program the variable overrides.
        program: &'static str,
        /// The environment variable.
        env_var: &'static str,
        /// The path the variable contains.
        path: PathBuf,
    },

    /// busybox needs shared libraries, which the busybox root filesystem does not contain.
    #[error(
        "{path} is dynamically linked, but the busybox root filesystem has no shared libraries: \
         install it with `apt-get install busybox-static` or point KEEL_BUSYBOX at a static busybox"
    )]
    BusyboxNotStatic {
        /// The busybox binary.
        path: PathBuf,
    },

    /// A file system operation failed.
    #[error("failed to {action} {path}")]
    Io {
        /// The operation, such as "create directory".
        action: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The error the operating system returned.
        #[source]
        source: io::Error,
    },

    /// A program could not be started.
    #[error("failed to start {program}")]
    Spawn {
        /// The program's path.
        program: PathBuf,
        /// The error the operating system returned.
        #[source]
        source: io::Error,
    },

    /// A helper command ran but failed.
    #[error("`{command}` failed with {status}: {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },

    /// containerd exited before it served gRPC requests.
    #[error(
        "containerd (pid {pid}) exited with {status} before serving on {socket}; \
         last lines of {log}:\n{log_tail}"
    )]
    ExitedEarly {
        /// containerd's pid.
        pid: u32,
        /// Its exit status.
        status: ExitStatus,
        /// The gRPC socket it was configured to serve on.
        socket: PathBuf,
        /// containerd's log file.
        log: PathBuf,
        /// The last lines of the log file.
        log_tail: String,
    },

    /// containerd did not serve gRPC requests within the start-up timeout.
    #[error(
        "containerd (pid {pid}) did not serve on {socket} within {timeout_ms} ms; \
         last lines of {log}:\n{log_tail}"
    )]
    StartTimedOut {
        /// containerd's pid.
        pid: u32,
        /// The gRPC socket it was configured to serve on.
        socket: PathBuf,
        /// The start-up timeout in milliseconds.
        timeout_ms: u128,
        /// containerd's log file.
        log: PathBuf,
        /// The last lines of the log file.
        log_tail: String,
    },

    /// A gRPC connection to containerd failed.
    #[error("failed to connect to containerd on {socket}")]
    Connect {
        /// containerd's gRPC socket.
        socket: PathBuf,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },

    /// The call needs a running containerd, but it was killed and not restarted.
    #[error("containerd is not running: call restart() after kill()")]
    NotRunning,

    /// A fault hook refused to signal a process that does not belong to this instance.
    #[error("pid {pid} is not {expected} of this private containerd; it was left alone")]
    NotOwned {
        /// The process the caller named.
        pid: u32,
        /// What the process had to be, such as "a shim".
        expected: &'static str,
    },

    /// Waiting for a child process failed.
    #[error("failed to wait for pid {pid}")]
    Wait {
        /// The child process.
        pid: u32,
        /// The error the operating system returned.
        #[source]
        source: io::Error,
    },

    /// Sending a signal to a process failed.
    #[error("failed to send {signal} to pid {pid}")]
    Signal {
        /// The signal.
        signal: Signal,
        /// The process.
        pid: u32,
        /// The error the operating system returned.
        #[source]
        source: nix::Error,
    },
}

impl TestkitError {
    /// Builds an [`TestkitError::Io`] for `action` on `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
