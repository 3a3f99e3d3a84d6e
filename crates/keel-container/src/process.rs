//! A container actor's record of one process, and the rules that report each change exactly
//! once, whichever source (event stream, reply, reconciliation) reports it first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use keel_types::{ContainerId, Error, ExitStatus, ProcessId};
use ractor::RpcReplyPort;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::stdio::FifoSet;

/// Numbers every process record of every container actor, so a number names one process even
/// after its exec id or its container's task is used again.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// The process a handle was made for. Each request from a handle carries it, so a handle never
/// reaches a newer process that took the same exec id or the container's next task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessRef {
    /// The process's place in the task: the init process or an exec id.
    pub process: ProcessId,
    /// The number the container actor gave the process's record.
    pub generation: u64,
    /// The host pid the handle stores, or 0 before the process started.
    pub pid: u32,
}

/// One process of a task: the init process or an exec.
#[derive(Debug)]
pub(crate) struct ProcessState {
    /// The number handles of this process carry, unique among all process records.
    pub(crate) generation: u64,
    /// Set when keel found the process in containerd instead of creating it. A handle made
    /// before, by an actor this one replaced, carries another generation, so it is matched by
    /// pid.
    pub(crate) adopted: bool,
    /// The host pid, once containerd reported it.
    pub(crate) pid: Option<u32>,
    created_reported: bool,
    started_reported: bool,
    exit: Option<ReportedExit>,
    /// The FIFOs keel made for this process.
    pub(crate) fifos: FifoSet,
    /// The state the caller's stdio streams of this process share with the record.
    pub(crate) links: StdioLinks,
    /// The caller closed stdin before the process existed in the shim; sent at start.
    pub(crate) close_stdin_pending: bool,
    /// The terminal size the caller set before the shim made the process's terminal, as
    /// width and height; sent at start.
    pub(crate) resize_pending: Option<(u32, u32)>,
    /// Set when keel deleted the process from containerd after its exit.
    pub(crate) deleted: bool,
    /// The order in which the process was marked deleted, so the task forgets the oldest
    /// deleted execs first.
    pub(crate) deleted_order: Option<u64>,
    waiters: Vec<(WaitUntil, RpcReplyPort<Result<ExitStatus, Error>>)>,
}

/// The state a process's record shares with the stdio streams handed out for it. A container
/// actor that replaces a failed one takes it over from [`StdioLinkTable`], so streams handed
/// out before still end at the process's exit.
#[derive(Clone, Debug)]
pub(crate) struct StdioLinks {
    /// How many of the caller's output streams are still open.
    pub(crate) streams_open: Arc<watch::Sender<usize>>,
    /// Cancelled once the process can no longer read its stdin: it exited, was deleted, or
    /// keel forgot it. A write to its [`crate::StdinStream`] then fails instead of waiting.
    pub(crate) stdin_reader_gone: CancellationToken,
    /// Cancelled when keel stops serving the output streams handed out so far: the process
    /// was deleted or forgotten, or its FIFOs were opened again for an attach. The background
    /// reads of dropped output streams end then, so they never take output from a new reader.
    pub(crate) drains_end: CancellationToken,
}

impl StdioLinks {
    pub(crate) fn new() -> Self {
        Self {
            streams_open: Arc::new(watch::channel(0).0),
            stdin_reader_gone: CancellationToken::new(),
            drains_end: CancellationToken::new(),
        }
    }

    /// Returns true once keel stopped serving these streams for good or for an attach, which
    /// hands out new links.
    fn is_released(&self) -> bool {
        self.drains_end.is_cancelled()
    }
}

/// The stdio links of the processes of every container of a client. They live outside the
/// container actors, so an actor that replaces a failed one finds the links its predecessor
/// handed out with the caller's streams.
#[derive(Debug, Default)]
pub(crate) struct StdioLinkTable(DashMap<ContainerId, HashMap<ProcessId, StdioLinks>>);

impl StdioLinkTable {
    /// Records the links of a process whose streams were handed out, and drops the released
    /// links of the container's other processes.
    pub(crate) fn record(
        &self,
        container_id: &ContainerId,
        process: &ProcessId,
        links: &StdioLinks,
    ) {
        let mut processes = self.0.entry(container_id.clone()).or_default();
        processes.retain(|_, links| !links.is_released());
        processes.insert(process.clone(), links.clone());
    }

    /// Returns the links of `process` that are still in use.
    pub(crate) fn find(
        &self,
        container_id: &ContainerId,
        process: &ProcessId,
    ) -> Option<StdioLinks> {
        let processes = self.0.get(container_id)?;
        processes
            .get(process)
            .filter(|links| !links.is_released())
            .cloned()
    }

    /// Drops every link of a container that is deleted or no longer tracked.
    pub(crate) fn forget(&self, container_id: &ContainerId) {
        self.0.remove(container_id);
    }
}

/// An exit that a container reported to the backend.
#[derive(Clone, Debug)]
struct BackendExit {
    process: ProcessId,
    pid: u32,
    status: ExitStatus,
}

/// The exits each container of a client reported to the backend for its current task. They
/// live outside the container actors, so an actor that replaces a failed one reports none of
/// them again, and still returns their codes to the waits and handles of processes that are
/// gone.
#[derive(Debug, Default)]
pub(crate) struct ReportedExitTable(DashMap<ContainerId, VecDeque<BackendExit>>);

impl ReportedExitTable {
    /// Records that the exit of `process` with host pid `pid` was reported, forgetting the
    /// container's oldest record beyond the bound of [`RetiredProcesses`].
    pub(crate) fn record(
        &self,
        container_id: &ContainerId,
        process: &ProcessId,
        pid: u32,
        status: ExitStatus,
    ) {
        let mut exits = self.0.entry(container_id.clone()).or_default();
        if exits.len() == REMEMBERED_RETIRED_PROCESSES {
            exits.pop_front();
        }
        exits.push_back(BackendExit {
            process: process.clone(),
            pid,
            status,
        });
    }

    /// Returns the reported exit of `process` with host pid `pid`. A pid of 0, which a process
    /// that never started has, matches nothing, because an exec id can be used again.
    pub(crate) fn find(
        &self,
        container_id: &ContainerId,
        process: &ProcessId,
        pid: u32,
    ) -> Option<ExitStatus> {
        if pid == 0 {
            return None;
        }
        let exits = self.0.get(container_id)?;
        exits
            .iter()
            .rev()
            .find(|exit| exit.process == *process && exit.pid == pid)
            .map(|exit| exit.status)
    }

    /// Drops the records of a container whose task is gone, so a later task whose process
    /// gets the same pid is reported in full.
    pub(crate) fn forget(&self, container_id: &ContainerId) {
        self.0.remove(container_id);
    }
}

/// The moment a wait for a process's exit returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitUntil {
    /// As soon as the exit is known.
    Exited,
    /// Once the exit is known and every output stream handed out for the process is closed,
    /// so a caller that reads the output has all of it when the wait returns.
    OutputClosed,
}

#[derive(Clone, Copy, Debug)]
struct ReportedExit {
    pid: u32,
    status: ExitStatus,
}

/// The exit of a process that keel no longer tracks: an exec whose id a newer exec took, or a
/// process of a deleted task. Its handles' `wait` and `delete` still return the exit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetiredProcess {
    generation: u64,
    adopted: bool,
    pid: Option<u32>,
    status: ExitStatus,
}

impl RetiredProcess {
    /// Returns true when `handle` was made for this process. An adopted process also matches
    /// by pid, but only by a known one, since the slot it held may belong to another now.
    pub(crate) fn is_for(&self, handle: &ProcessRef) -> bool {
        if self.generation == handle.generation {
            return true;
        }
        self.adopted && handle.pid != 0 && self.pid == Some(handle.pid)
    }
}

/// How many retired processes a container remembers. The oldest are forgotten first, so a
/// container that runs execs with ever new ids, such as health checks, uses bounded memory.
const REMEMBERED_RETIRED_PROCESSES: usize = 256;

/// The exits of the processes that a container's handles may still request, newest last.
#[derive(Debug, Default)]
pub(crate) struct RetiredProcesses(VecDeque<RetiredProcess>);

impl RetiredProcesses {
    /// Remembers `process`, forgetting the oldest one beyond the bound.
    pub(crate) fn push(&mut self, process: RetiredProcess) {
        if self.0.len() == REMEMBERED_RETIRED_PROCESSES {
            self.0.pop_front();
        }
        self.0.push_back(process);
    }

    /// Returns true when a retired process had the host pid `pid`.
    pub(crate) fn has_pid(&self, pid: u32) -> bool {
        pid != 0 && self.0.iter().any(|process| process.pid == Some(pid))
    }

    /// Returns the exit of the retired process `handle` was made for.
    pub(crate) fn exit_of(&self, handle: &ProcessRef) -> Option<ExitStatus> {
        self.0
            .iter()
            .rev()
            .find(|process| process.is_for(handle))
            .map(|process| process.status)
    }
}

impl ProcessState {
    /// Makes the record of a process keel found in containerd or learned of from an event.
    pub(crate) fn new(fifos: FifoSet) -> Self {
        Self {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            adopted: true,
            pid: None,
            created_reported: false,
            started_reported: false,
            exit: None,
            fifos,
            links: StdioLinks::new(),
            close_stdin_pending: false,
            resize_pending: None,
            deleted: false,
            deleted_order: None,
            waiters: Vec::new(),
        }
    }

    /// Makes the record of a process keel creates, whose handles all carry its generation.
    pub(crate) fn created(fifos: FifoSet) -> Self {
        let mut process = Self::new(fifos);
        process.adopted = false;
        process
    }

    /// Returns the reference a new handle of this process carries.
    pub(crate) fn handle_ref(&self, process: ProcessId) -> ProcessRef {
        ProcessRef {
            process,
            generation: self.generation,
            pid: self.pid.unwrap_or(0),
        }
    }

    /// Returns true when `handle` was made for this process: it carries the process's
    /// generation, or the process was adopted and the handle's pid does not contradict it.
    pub(crate) fn is_for(&self, handle: &ProcessRef) -> bool {
        if self.generation == handle.generation {
            return true;
        }
        if !self.adopted {
            return false;
        }
        handle.pid == 0 || self.pid.is_none_or(|pid| pid == 0 || pid == handle.pid)
    }

    /// Returns the record that outlives this one, when an exit is known.
    pub(crate) fn retire(&self) -> Option<RetiredProcess> {
        let status = self.exit_status()?;
        let pid = self.exit.map(|exit| exit.pid).filter(|pid| *pid != 0);
        Some(RetiredProcess {
            generation: self.generation,
            adopted: self.adopted,
            pid: pid.or(self.pid),
            status,
        })
    }

    /// Fails waiting and later writes to the process's stdin and ends the background reads of
    /// its dropped output streams, once keel no longer serves the process's stdio.
    ///
    /// Dropping the record does not do this, because a failed actor's records are dropped too
    /// while the process runs on and the actor that replaces it serves the caller's streams.
    pub(crate) fn release_stdio(&self) {
        self.links.stdin_reader_gone.cancel();
        self.links.drains_end.cancel();
    }

    /// Records creation; returns true when it is news.
    pub(crate) fn mark_created(&mut self, pid: u32) -> bool {
        self.pid.get_or_insert(pid);
        !std::mem::replace(&mut self.created_reported, true)
    }

    /// Returns true once the backend received the process's `Created` event.
    pub(crate) fn created_reported(&self) -> bool {
        self.created_reported
    }

    /// Records the start; returns true when it is news.
    pub(crate) fn mark_started(&mut self, pid: u32) -> bool {
        if pid != 0 {
            self.pid = Some(pid);
        }
        !std::mem::replace(&mut self.started_reported, true)
    }

    /// Returns true once a start was recorded.
    pub(crate) fn has_started(&self) -> bool {
        self.started_reported
    }

    /// Returns the recorded exit status.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        self.exit.map(|exit| exit.status)
    }

    /// Records an exit; returns true when it is news.
    ///
    /// An exit is a repeat when one is already recorded for this process, unless both carry a
    /// pid and the pids differ. Timestamps are never compared: containerd's synthetic exit for a
    /// dead shim carries a different time than the real one.
    pub(crate) fn mark_exited(&mut self, pid: u32, status: ExitStatus) -> bool {
        if let Some(previous) = self.exit
            && (previous.pid == pid || previous.pid == 0 || pid == 0)
        {
            return false;
        }
        self.exit = Some(ReportedExit { pid, status });
        self.links.stdin_reader_gone.cancel();
        true
    }

    /// Replies to `waiter` once the exit is known and the caller's output streams are closed.
    pub(crate) fn add_waiter(
        &mut self,
        until: WaitUntil,
        waiter: RpcReplyPort<Result<ExitStatus, Error>>,
        tracker: &TaskTracker,
    ) {
        self.waiters.push((until, waiter));
        self.answer_waiters(tracker);
    }

    /// Replies to every waiter when the exit is known: at once, or once the output streams
    /// are closed, as each waiter requested.
    pub(crate) fn answer_waiters(&mut self, tracker: &TaskTracker) {
        let Some(status) = self.exit_status() else {
            return;
        };
        let (at_exit, after_output): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(until, _)| *until == WaitUntil::Exited);
        for (_, waiter) in at_exit {
            let _ = waiter.send(Ok(status));
        }
        if after_output.is_empty() {
            return;
        }
        let mut streams_open = self.links.streams_open.subscribe();
        tracker.spawn(async move {
            let _ = streams_open.wait_for(|open| *open == 0).await;
            for (_, waiter) in after_output {
                let _ = waiter.send(Ok(status));
            }
        });
    }

    /// Fails every waiter with `error`, for a process that can no longer report an exit.
    pub(crate) fn fail_waiters(&mut self, error: impl Fn() -> Error) {
        for (_, waiter) in self.waiters.drain(..) {
            let _ = waiter.send(Err(error()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn status(code: u32, seconds: u64) -> ExitStatus {
        ExitStatus {
            code,
            exited_at: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
        }
    }

    #[test]
    fn exit_reported_once_per_pid() {
        let mut process = ProcessState::new(FifoSet::default());
        assert!(process.mark_exited(10, status(3, 1)));
        assert!(!process.mark_exited(10, status(3, 1)));
        assert!(
            !process.mark_exited(10, status(255, 2)),
            "a later time is still a repeat"
        );
        assert!(
            !process.mark_exited(0, status(255, 3)),
            "an exit without pid is a repeat"
        );
        assert_eq!(process.exit_status().map(|exit| exit.code), Some(3));
    }

    #[test]
    fn exit_of_new_pid_is_news() {
        let mut process = ProcessState::new(FifoSet::default());
        assert!(process.mark_exited(10, status(0, 1)));
        assert!(process.mark_exited(11, status(1, 2)));
    }

    #[test]
    fn handle_matches_only_its_own_process() {
        let first = ProcessState::created(FifoSet::default());
        let second = ProcessState::created(FifoSet::default());
        let handle = first.handle_ref(ProcessId::Init);
        assert!(first.is_for(&handle));
        assert!(!second.is_for(&handle), "a newer process in the same slot");
    }

    #[test]
    fn adopted_process_matches_earlier_handle_by_pid() {
        let mut adopted = ProcessState::new(FifoSet::default());
        adopted.mark_started(10);
        let earlier = |pid| ProcessRef {
            process: ProcessId::Init,
            generation: 0,
            pid,
        };
        assert!(adopted.is_for(&earlier(10)));
        assert!(!adopted.is_for(&earlier(11)), "another pid");
        assert!(
            adopted.is_for(&earlier(0)),
            "a handle that never learned its pid"
        );
    }

    #[test]
    fn retired_exit_found_by_generation_and_bounded() {
        let mut retired = RetiredProcesses::default();
        let mut handles = Vec::new();
        for code in 0..REMEMBERED_RETIRED_PROCESSES as u32 + 1 {
            let mut process = ProcessState::created(FifoSet::default());
            process.mark_exited(100 + code, status(code, 1));
            handles.push(process.handle_ref(ProcessId::Init));
            retired.push(process.retire().expect("an exited process retires"));
        }
        assert_eq!(retired.0.len(), REMEMBERED_RETIRED_PROCESSES);
        assert!(
            retired.exit_of(&handles[0]).is_none(),
            "the oldest is forgotten"
        );
        let last = handles.last().expect("handles");
        let code = retired.exit_of(last).map(|status| status.code);
        assert_eq!(code, Some(REMEMBERED_RETIRED_PROCESSES as u32));
    }

    #[test]
    fn running_process_does_not_retire() {
        assert!(ProcessState::created(FifoSet::default()).retire().is_none());
    }

    #[test]
    fn created_and_started_reported_once() {
        let mut process = ProcessState::new(FifoSet::default());
        assert!(process.mark_created(7));
        assert!(!process.mark_created(7));
        assert!(process.mark_started(7));
        assert!(!process.mark_started(7));
        assert_eq!(process.pid, Some(7));
    }
}
