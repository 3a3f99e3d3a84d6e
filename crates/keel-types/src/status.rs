//! What containerd reports about a process and a task's cgroup.

use std::time::SystemTime;

use crate::{ExecId, ExitStatus};

/// The state of a task's init process or of an exec process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ProcessStatus {
    /// Created and not started.
    Created,
    /// Running.
    Running,
    /// Frozen by a pause.
    Paused,
    /// Being frozen.
    Pausing,
    /// Exited with this status.
    Stopped(ExitStatus),
    /// containerd could not tell.
    Unknown,
}

/// A process of a running task.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessInfo {
    /// The pid on the host.
    pub pid: u32,
    /// The exec id when keel or another client started the process with exec; `None` for the
    /// init process and for processes the container started itself.
    pub exec_id: Option<ExecId>,
}

/// Which cgroup hierarchy the statistics came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupVersion {
    /// The legacy hierarchy, one tree per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// Resource usage of a task's cgroup, decoded from containerd's metrics.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// When containerd collected the figures. Serialized as an RFC 3339 time.
    #[serde(with = "humantime_serde")]
    pub collected_at: SystemTime,
    /// The hierarchy they came from.
    pub cgroup: CgroupVersion,
    /// CPU time.
    pub cpu: CpuStats,
    /// Memory use.
    pub memory: MemoryStats,
    /// Process counts.
    pub pids: PidsStats,
    /// Block device traffic, one entry per device.
    pub block_io: Vec<BlockIoStats>,
}

/// CPU time of a cgroup, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuStats {
    /// Total CPU time.
    pub usage_ns: u64,
    /// CPU time in user mode.
    pub user_ns: u64,
    /// CPU time in kernel mode.
    pub system_ns: u64,
    /// Scheduler periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Time the cgroup spent throttled.
    pub throttled_ns: u64,
}

/// Memory use of a cgroup, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryStats {
    /// Current use, page cache included.
    pub usage_bytes: u64,
    /// The limit; `u64::MAX` or a very large value when unlimited.
    pub limit_bytes: u64,
    /// The highest use recorded.
    pub max_usage_bytes: u64,
    /// Page cache (v1 `cache`, v2 `file`).
    pub cache_bytes: u64,
    /// Anonymous memory (v1 `rss`, v2 `anon`).
    pub rss_bytes: u64,
    /// Swap in use (on cgroup v1, `memory.memsw` usage minus memory usage).
    pub swap_usage_bytes: u64,
    /// Processes the out-of-memory killer killed in this cgroup.
    pub oom_kills: u64,
}

/// Process counts of a cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PidsStats {
    /// Processes and threads in the cgroup.
    pub current: u64,
    /// The limit, 0 when unlimited.
    pub limit: u64,
}

/// Traffic to one block device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockIoStats {
    /// The device's major number.
    pub major: u64,
    /// The device's minor number.
    pub minor: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations.
    pub read_ops: u64,
    /// Write operations.
    pub write_ops: u64,
}
