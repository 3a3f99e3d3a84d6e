//! Typed events, as the backend receives them.

use std::fmt;
use std::time::SystemTime;

use crate::{ContainerId, ExecId};

/// A process inside a container: the init process, or an exec process.
///
/// containerd marks the init process with an empty exec id; keel turns that into
/// [`ProcessId::Init`] at the edge, so an empty string never means anything inside keel.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ProcessId {
    /// The container's first process, whose exit ends the task.
    Init,
    /// A process added with exec.
    Exec(ExecId),
}

impl ProcessId {
    /// Returns the exec id, or `None` for the init process.
    pub fn exec_id(&self) -> Option<&ExecId> {
        match self {
            Self::Init => None,
            Self::Exec(exec_id) => Some(exec_id),
        }
    }
}

impl fmt::Debug for ProcessId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Init => formatter.write_str("init"),
            Self::Exec(exec_id) => write!(formatter, "exec {exec_id}"),
        }
    }
}

/// The exit of a process: its code and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitStatus {
    /// The exit code; 128 plus the signal number when a signal killed the process.
    pub code: u32,
    /// When the process exited, as containerd recorded it. Serialized as an RFC 3339 time.
    #[serde(with = "humantime_serde")]
    pub exited_at: SystemTime,
}

/// The reason keel reported an exit that no process reported itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SyntheticReason {
    /// The task vanished from containerd, for example because its shim died while containerd
    /// was down.
    TaskVanished,
    /// The exec process did not report before its container's init process exited.
    ContainerExited,
}

impl SyntheticReason {
    /// The exit code keel reports with a synthetic exit: 255, the code containerd itself uses
    /// when a shim dies without reporting its processes.
    pub const EXIT_CODE: u32 = 255;
}

/// Something that happened to a container's task or processes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// The task was created; its init process exists but has not started.
    Created {
        /// The init process's pid on the host.
        pid: u32,
    },
    /// The init process started.
    Started {
        /// The init process's pid on the host.
        pid: u32,
    },
    /// An exec process was added to the task.
    ExecAdded {
        /// The new process.
        exec_id: ExecId,
    },
    /// An exec process started.
    ExecStarted {
        /// The started process.
        exec_id: ExecId,
        /// Its pid on the host.
        pid: u32,
    },
    /// A process exited. keel reports each exit exactly once.
    Exited {
        /// The process that exited.
        process: ProcessId,
        /// Its pid on the host, or 0 when keel never learned it.
        pid: u32,
        /// Its exit code and time.
        status: ExitStatus,
        /// Set when no process reported this exit and keel inferred it.
        synthetic: Option<SyntheticReason>,
    },
    /// The kernel's out-of-memory killer hit the container; one event per kill.
    OutOfMemory,
    /// The task was paused.
    Paused,
    /// The task was resumed.
    Resumed,
    /// The task was checkpointed.
    Checkpointed,
    /// The task was deleted from containerd.
    Deleted {
        /// The init process's pid on the host.
        pid: u32,
        /// The init process's exit status; `None` when it never started or its exit is not
        /// known.
        status: Option<ExitStatus>,
    },
}

/// An event together with the container it belongs to and when containerd stamped it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerEvent {
    /// The container the event belongs to.
    pub container_id: ContainerId,
    /// What happened.
    pub event: Event,
    /// containerd's timestamp, or the time keel produced the event when it inferred it.
    /// Serialized as an RFC 3339 time.
    #[serde(with = "humantime_serde")]
    pub timestamp: SystemTime,
}

/// What a namespace-wide event subscription yields.
///
/// Unlike a [`Backend`](../keel/trait.Backend.html), a subscription receives the events of every
/// container of the namespace as containerd publishes them, including containers the client
/// does not track, and gets no inferred events: an exit containerd never published while the
/// stream was down is not recovered here. A gap tells the subscriber where that may have
/// happened, so it can list the containers again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum NamespaceEvent {
    /// An event containerd published.
    Event(ContainerEvent),
    /// containerd may have published events that this subscription did not see: the event
    /// stream broke and a new one is live, or containerd stopped responding for a while.
    Gap,
    /// The subscriber fell behind and this many events were dropped for it.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn event_times_serialize_as_rfc3339() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_709_251_200, 123_456_789);
        let event = ContainerEvent {
            container_id: ContainerId::new("web").unwrap(),
            event: Event::Exited {
                process: ProcessId::Init,
                pid: 42,
                status: ExitStatus {
                    code: 3,
                    exited_at: at,
                },
                synthetic: None,
            },
            timestamp: at,
        };

        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["timestamp"], "2024-03-01T00:00:00.123456789Z");
        assert_eq!(
            json["event"]["Exited"]["status"]["exited_at"],
            "2024-03-01T00:00:00.123456789Z"
        );

        let parsed: ContainerEvent = serde_json::from_value(json).unwrap();
        assert_eq!(parsed, event);
    }
}
