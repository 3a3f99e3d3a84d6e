//! A container actor's record of one process, and the rules that report each change exactly
//! once, whichever source (event stream, reply, reconciliation) reports it first.

use std::sync::Arc;

use keel_types::{Error, ExitStatus};
use ractor::RpcReplyPort;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::stdio::FifoSet;

/// One process of a task: the init process or an exec.
#[derive(Debug)]
pub(crate) struct ProcessState {
    /// The host pid, once containerd reported it.
    pub(crate) pid: Option<u32>,
    created_reported: bool,
    started_reported: bool,
    exit: Option<ReportedExit>,
    /// The FIFOs keel made for this process.
    pub(crate) fifos: FifoSet,
    /// How many of the caller's output streams are still open.
    pub(crate) streams_open: Arc<watch::Sender<usize>>,
    /// Cancelled once the process can no longer read its stdin: it exited, was deleted, or
    /// keel forgot it. A write to its [`crate::StdinStream`] then fails instead of waiting.
    pub(crate) stdin_reader_gone: CancellationToken,
    /// Cancelled when keel stops serving the output streams handed out so far: the process
    /// was deleted or forgotten, or its FIFOs were opened again for an attach. The background
    /// reads of dropped output streams end then, so they never take output from a new reader.
    pub(crate) drains_end: CancellationToken,
    /// The caller closed stdin before the process existed in the shim; sent at start.
    pub(crate) close_stdin_pending: bool,
    /// Set when keel deleted the process from containerd after its exit.
    pub(crate) deleted: bool,
    /// The order in which the process was marked deleted, so the task forgets the oldest
    /// deleted execs first.
    pub(crate) deleted_order: Option<u64>,
    waiters: Vec<RpcReplyPort<Result<ExitStatus, Error>>>,
}

#[derive(Clone, Copy, Debug)]
struct ReportedExit {
    pid: u32,
    status: ExitStatus,
}

impl ProcessState {
    pub(crate) fn new(fifos: FifoSet) -> Self {
        Self {
            pid: None,
            created_reported: false,
            started_reported: false,
            exit: None,
            fifos,
            streams_open: Arc::new(watch::channel(0).0),
            stdin_reader_gone: CancellationToken::new(),
            drains_end: CancellationToken::new(),
            close_stdin_pending: false,
            deleted: false,
            deleted_order: None,
            waiters: Vec::new(),
        }
    }

    /// Records creation; returns true when it is news.
    pub(crate) fn mark_created(&mut self, pid: u32) -> bool {
        self.pid.get_or_insert(pid);
        !std::mem::replace(&mut self.created_reported, true)
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
        self.stdin_reader_gone.cancel();
        true
    }

    /// Replies to `waiter` once the exit is known and the caller's output streams are closed.
    pub(crate) fn add_waiter(
        &mut self,
        waiter: RpcReplyPort<Result<ExitStatus, Error>>,
        tracker: &TaskTracker,
    ) {
        self.waiters.push(waiter);
        self.answer_waiters(tracker);
    }

    /// Replies to every waiter when the exit is known.
    pub(crate) fn answer_waiters(&mut self, tracker: &TaskTracker) {
        let Some(status) = self.exit_status() else {
            return;
        };
        if self.waiters.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut self.waiters);
        let mut streams_open = self.streams_open.subscribe();
        tracker.spawn(async move {
            let _ = streams_open.wait_for(|open| *open == 0).await;
            for waiter in waiters {
                let _ = waiter.send(Ok(status));
            }
        });
    }

    /// Fails every waiter with `error`, for a process that can no longer report an exit.
    pub(crate) fn fail_waiters(&mut self, error: impl Fn() -> Error) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(error()));
        }
    }
}

impl Drop for ProcessState {
    fn drop(&mut self) {
        self.stdin_reader_gone.cancel();
        self.drains_end.cancel();
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
    fn created_and_started_reported_once() {
        let mut process = ProcessState::new(FifoSet::default());
        assert!(process.mark_created(7));
        assert!(!process.mark_created(7));
        assert!(process.mark_started(7));
        assert!(!process.mark_started(7));
        assert_eq!(process.pid, Some(7));
    }
}
