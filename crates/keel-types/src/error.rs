//! The error type of every keel call, and the one place where gRPC status codes become kinds.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::{ContainerId, ExecId};

/// The category of a failure, as an engine acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The container, task or process does not exist.
    NotFound,
    /// An object with that id exists already.
    AlreadyExists,
    /// The caller passed a value that keel or containerd rejects.
    InvalidArgument,
    /// The object is in the wrong state for the request, such as deleting a running task.
    FailedPrecondition,
    /// containerd cannot be reached.
    Unavailable,
    /// The request did not finish within its deadline.
    TimedOut,
    /// The request was cancelled, or the client is stopping.
    Cancelled,
    /// The executable of a process does not exist in the container. Shells report this case
    /// with exit code 127; an engine that mimics them maps this kind to 127.
    ExecutableNotFound,
    /// Anything else: a bug in keel, or a reply that makes no sense.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::NotFound => "not found",
            Self::AlreadyExists => "already exists",
            Self::InvalidArgument => "invalid argument",
            Self::FailedPrecondition => "failed precondition",
            Self::Unavailable => "unavailable",
            Self::TimedOut => "timed out",
            Self::Cancelled => "cancelled",
            Self::ExecutableNotFound => "executable not found",
            Self::Internal => "internal error",
        };
        formatter.write_str(text)
    }
}

/// The request that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs, reason = "each variant is the request its name says")]
pub enum Operation {
    Connect,
    Version,
    CreateContainer,
    LoadContainer,
    DeleteContainer,
    CreateTask,
    StartTask,
    DeleteTask,
    Attach,
    Exec,
    StartExec,
    DeleteExec,
    Kill,
    Pause,
    Resume,
    CloseStdin,
    Resize,
    Update,
    Stats,
    ListProcesses,
    Status,
    Wait,
    Checkpoint,
    Restore,
    Subscribe,
    ListContainers,
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Connect => "connect",
            Self::Version => "version",
            Self::CreateContainer => "create container",
            Self::LoadContainer => "load container",
            Self::DeleteContainer => "delete container",
            Self::CreateTask => "create task",
            Self::StartTask => "start task",
            Self::DeleteTask => "delete task",
            Self::Attach => "attach",
            Self::Exec => "exec",
            Self::StartExec => "start exec",
            Self::DeleteExec => "delete exec",
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::CloseStdin => "close stdin",
            Self::Resize => "resize",
            Self::Update => "update",
            Self::Stats => "stats",
            Self::ListProcesses => "list processes",
            Self::Status => "status",
            Self::Wait => "wait",
            Self::Checkpoint => "checkpoint",
            Self::Restore => "restore",
            Self::Subscribe => "subscribe",
            Self::ListContainers => "list containers",
        };
        formatter.write_str(text)
    }
}

/// The object a failed request was about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// The connection to containerd itself.
    Containerd,
    /// A container and its init process.
    Container(ContainerId),
    /// An exec process inside a container.
    Exec(ContainerId, ExecId),
}

impl fmt::Display for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Containerd => formatter.write_str("containerd"),
            Self::Container(container_id) => write!(formatter, "container {container_id}"),
            Self::Exec(container_id, exec_id) => {
                write!(formatter, "exec {exec_id} in container {container_id}")
            }
        }
    }
}

/// The error of every keel call.
///
/// Match on [`Error::kind`] to decide what to do; the variants carry the detail for logs.
/// `Display` names the request, its object and the kind of failure. The cause, such as
/// containerd's message or the operating system's error, is the [`std::error::Error::source`]
/// of [`Error::Containerd`] and [`Error::Io`], so print the whole chain to show it, for
/// example with anyhow's `{:#}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value passed by the caller breaks a rule; nothing was created.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidArgument {
        /// The name of the argument, such as "container id".
        field: &'static str,
        /// The rejected value.
        value: String,
        /// The rule the value breaks.
        reason: String,
    },

    /// containerd rejected the request or could not be reached.
    #[error("{operation} failed for {target}: {kind}")]
    Containerd {
        /// The failed request.
        operation: Operation,
        /// The object of the request.
        target: Target,
        /// The category of the failure.
        kind: ErrorKind,
        /// containerd's reply.
        #[source]
        source: tonic::Status,
    },

    /// keel rejected the request because of the state it tracks for the object.
    #[error("{operation} failed for {target}: {kind}: {reason}")]
    Rejected {
        /// The refused request.
        operation: Operation,
        /// The object of the request.
        target: Target,
        /// The category of the refusal.
        kind: ErrorKind,
        /// The reason the request cannot proceed, and what to do instead.
        reason: String,
    },

    /// The request did not finish within its deadline.
    #[error("{operation} timed out for {target} after {}ms", timeout.as_millis())]
    TimedOut {
        /// The request that ran out of time.
        operation: Operation,
        /// The object of the request.
        target: Target,
        /// The deadline that passed.
        timeout: Duration,
    },

    /// A file operation on keel's own folders failed.
    #[error("{operation} failed for {target} on {}", path.display())]
    Io {
        /// The request that needed the file.
        operation: Operation,
        /// The object of the request.
        target: Target,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The actor that serves the request has stopped, usually because the client was closed.
    #[error("{operation} failed for {target}: the keel client is stopped")]
    Stopped {
        /// The request that could not be sent.
        operation: Operation,
        /// The object of the request.
        target: Target,
    },
}

impl Error {
    /// Returns the category of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Self::Containerd { kind, .. } | Self::Rejected { kind, .. } => *kind,
            Self::TimedOut { .. } => ErrorKind::TimedOut,
            Self::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                _ => ErrorKind::Internal,
            },
            Self::Stopped { .. } => ErrorKind::Cancelled,
        }
    }

    /// Builds the error for a failed gRPC call, classifying it with [`kind_of_status`].
    pub fn from_status(operation: Operation, target: Target, source: tonic::Status) -> Self {
        let kind = kind_of_status(&source);
        Self::Containerd {
            operation,
            target,
            kind,
            source,
        }
    }
}

/// Maps containerd's reply to an [`ErrorKind`].
///
/// The gRPC code decides, except for replies where containerd 1.6 and 1.7 send `Unknown` and
/// only the message distinguishes the case: pausing or resuming a task that is not running, exec
/// into a stopped task, and a plain delete of a running task become failed precondition; a
/// missing executable becomes executable not found. A resource value that runc or the kernel
/// rejects, such as a cpuset naming an offline CPU, becomes invalid argument. A status that tonic made from a failed
/// connection (containerd died or reset it under the request) is unavailable whatever its
/// code, because containerd never answered.
pub fn kind_of_status(status: &tonic::Status) -> ErrorKind {
    use tonic::Code;

    if is_transport_failure(status) {
        return ErrorKind::Unavailable;
    }
    match status.code() {
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::TimedOut,
        Code::Cancelled | Code::Aborted => ErrorKind::Cancelled,
        Code::Unknown => kind_of_unknown_status(status.message()),
        _ => ErrorKind::Internal,
    }
}

/// Returns true when tonic built `status` from a transport error instead of a reply. tonic
/// 0.14 reports a connection reset under an in-flight request as `Unknown` "transport error".
fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some_and(|source| source.is::<tonic::transport::Error>())
}

/// Classifies the `Unknown` replies that containerd sends for wrong-state requests.
fn kind_of_unknown_status(message: &str) -> ErrorKind {
    // runc's reply when the process's executable is missing, at task create or exec start:
    // `exec: "nope": executable file not found in $PATH`, or for an absolute path
    // `exec: "/nope": stat /nope: no such file or directory`.
    let names_exec = message.contains("exec: \"");
    if names_exec
        && (message.contains("executable file not found")
            || message.contains("no such file or directory"))
    {
        return ErrorKind::ExecutableNotFound;
    }
    if is_wrong_state_message(message) {
        return ErrorKind::FailedPrecondition;
    }
    if is_rejected_cgroup_value(message) {
        return ErrorKind::InvalidArgument;
    }
    if message.contains("not found") || message.contains("does not exist") {
        return ErrorKind::NotFound;
    }
    ErrorKind::Internal
}

/// Returns true for containerd's and runc's replies to a request the process's state does not
/// allow, such as resuming a stopped task or an exec into a paused one.
fn is_wrong_state_message(message: &str) -> bool {
    // runc's replies to pause or resume of a task that is not running (containerd 1.6, 1.7).
    const RUNC_MESSAGES: [&str; 4] = [
        "container not running",
        "container not paused",
        "is not running",
        "is paused",
    ];
    // The runc shim's state machine rejects a request with "cannot <verb> a <state> process",
    // "a <state> container", "in a <state> state" or "task in created state".
    const SHIM_STATES: [&str; 5] = ["created", "running", "paused", "stopped", "deleted"];
    if RUNC_MESSAGES
        .iter()
        .any(|fragment| message.contains(fragment))
    {
        return true;
    }
    message.contains("cannot ")
        && SHIM_STATES.iter().any(|state| {
            message.contains(&format!(" a {state} "))
                || message.contains(&format!(" {state} state"))
        })
}

/// Returns true for runc's replies to a resource value that it or the kernel rejects, at task
/// create or update. These are a cgroup file write failing with `EINVAL`, `ERANGE` or `ENOSPC`
/// (an empty cpuset), and a control file this kernel lacks, such as a block I/O weight without
/// the BFQ scheduler. runc's own range checks of CPU shares and memory swappiness count too.
fn is_rejected_cgroup_value(message: &str) -> bool {
    const RUNC_RANGE_CHECKS: [&str; 3] = [
        "the maximum allowed cpu-shares",
        "the minimum allowed cpu-shares",
        "invalid memory swappiness",
    ];
    const REJECTED_WRITES: [&str; 3] = [
        ": invalid argument",
        ": numerical result out of range",
        ": no space left on device",
    ];
    let write_rejected = message.contains("write /sys/fs/cgroup/")
        && REJECTED_WRITES
            .iter()
            .any(|fragment| message.contains(fragment));
    let missing_control =
        message.contains("/sys/fs/cgroup/") && message.contains(": no such file or directory");
    write_rejected
        || missing_control
        || RUNC_RANGE_CHECKS
            .iter()
            .any(|fragment| message.contains(fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_kinds() {
        let cases = [
            (tonic::Code::NotFound, ErrorKind::NotFound),
            (tonic::Code::AlreadyExists, ErrorKind::AlreadyExists),
            (tonic::Code::InvalidArgument, ErrorKind::InvalidArgument),
            (
                tonic::Code::FailedPrecondition,
                ErrorKind::FailedPrecondition,
            ),
            (tonic::Code::Unavailable, ErrorKind::Unavailable),
            (tonic::Code::DeadlineExceeded, ErrorKind::TimedOut),
            (tonic::Code::Cancelled, ErrorKind::Cancelled),
            (tonic::Code::Internal, ErrorKind::Internal),
        ];
        for (code, kind) in cases {
            assert_eq!(
                kind_of_status(&tonic::Status::new(code, "x")),
                kind,
                "{code:?}"
            );
        }
    }

    #[test]
    fn unknown_status_messages_map_to_kinds() {
        let cases = [
            ("container not running", ErrorKind::FailedPrecondition),
            (
                "cannot exec in a stopped state: unknown",
                ErrorKind::FailedPrecondition,
            ),
            (
                "cannot delete a running task",
                ErrorKind::FailedPrecondition,
            ),
            (
                "cannot resume a stopped container: unknown",
                ErrorKind::FailedPrecondition,
            ),
            (
                "cannot exec in a paused state: unknown",
                ErrorKind::FailedPrecondition,
            ),
            (
                "cannot pause task in created state",
                ErrorKind::FailedPrecondition,
            ),
            (
                "cannot update a deleted process",
                ErrorKind::FailedPrecondition,
            ),
            ("cannot open the log file", ErrorKind::Internal),
            ("process does not exist 42: not found", ErrorKind::NotFound),
            (
                "OCI runtime exec failed: exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown",
                ErrorKind::ExecutableNotFound,
            ),
            (
                "runc did not terminate successfully: exit status 1: failed to write \"0-4095\": write /sys/fs/cgroup/cpuset/ns/web/cpuset.cpus: numerical result out of range\n: unknown",
                ErrorKind::InvalidArgument,
            ),
            (
                "OCI runtime create failed: unable to apply cgroup configuration: failed to write \"7\": write /sys/fs/cgroup/cpuset/ns/web/cpuset.mems: invalid argument: unknown",
                ErrorKind::InvalidArgument,
            ),
            (
                "runc did not terminate successfully: exit status 1: the minimum allowed cpu-shares is 2\n: unknown",
                ErrorKind::InvalidArgument,
            ),
            (
                "error setting cgroup config for procHooks process: invalid memory swappiness value: 200 (valid range is 0-100): unknown",
                ErrorKind::InvalidArgument,
            ),
            (
                "runc did not terminate successfully: exit status 1: openat2 /sys/fs/cgroup/blkio/ns/web/blkio.bfq.weight: no such file or directory\n: unknown",
                ErrorKind::InvalidArgument,
            ),
            ("something else", ErrorKind::Internal),
        ];
        for (message, kind) in cases {
            let status = tonic::Status::unknown(message);
            assert_eq!(kind_of_status(&status), kind, "{message}");
        }
    }

    #[test]
    fn display_names_operation_and_target() {
        let container_id = ContainerId::new("web").expect("valid id");
        let error = Error::from_status(
            Operation::Kill,
            Target::Container(container_id),
            tonic::Status::not_found("task not found"),
        );
        assert_eq!(
            error.to_string(),
            "kill failed for container web: not found"
        );
        assert_eq!(error.kind(), ErrorKind::NotFound);
    }
}
