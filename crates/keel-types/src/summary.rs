//! Summaries of the containers of a namespace, as one listing returns them.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::{ContainerId, ProcessStatus};

/// One container of a namespace, whichever client created it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerSummary {
    /// The container's id.
    pub id: ContainerId,
    /// The image reference containerd recorded; empty for a container made from a root
    /// folder, as keel makes them.
    pub image: String,
    /// The runtime's name, for example `io.containerd.runc.v2`.
    pub runtime: String,
    /// The container's labels.
    pub labels: HashMap<String, String>,
    /// When containerd created the container, if it recorded the time. Serialized as an
    /// RFC 3339 time.
    #[serde(with = "humantime_serde")]
    pub created_at: Option<SystemTime>,
    /// The container's task; `None` when it has none.
    pub task: Option<TaskSummary>,
}

/// The init process of a container's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskSummary {
    /// The init process's pid on the host.
    pub pid: u32,
    /// The init process's state, with the exit status once it stopped.
    pub status: ProcessStatus,
}
