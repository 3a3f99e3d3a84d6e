//! Events, exits and reconciliation in the container actor.
//!
//! Every source of a process's fate (the event stream, a request's reply, the task delete
//! reply, reconciliation) goes through the `record_*` methods, which report a change only
//! when it is news, so the backend sees each event once.

use std::sync::Arc;
use std::time::SystemTime;

use containerd_client::services::v1::{DeleteTaskRequest, GetRequest};
use containerd_client::types::v1::Status as TaskStatus;
use keel_types::{
    ContainerEvent, Error, ErrorKind, Event, ExecId, ExitStatus, Operation, ProcessId,
    SyntheticReason,
};
use ractor::ActorRef;

use crate::actor::{ContainerMsg, ContainerState, exec_id_text, system_time};
use crate::folders::remove_fifos_in;
use crate::process::ProcessState;
use crate::stdio::FifoSet;
use crate::task::{HeldExit, TaskState};

impl ContainerState {
    /// Applies one event from containerd's stream.
    pub(crate) async fn apply_event(
        &mut self,
        myself: &ActorRef<ContainerMsg>,
        event: ContainerEvent,
    ) {
        let timestamp = event.timestamp;
        match event.event {
            // A restore's create event carries no pid, because runc restores the process only
            // at start. Without a task here the restore failed and was discarded; when one
            // succeeds, or another client restores, the start reports the task with its pid.
            Event::Created { pid: 0 } if self.task.is_none() => {
                tracing::debug!(container_id = %self.container_id, "create event without a pid ignored");
            }
            // The stream can deliver a task's create or start after keel deleted the task, for
            // example after a failed start. Such an event must not bring the task back.
            Event::Created { pid } | Event::Started { pid }
                if self.task.is_none() && self.retired.has_pid(pid) =>
            {
                tracing::debug!(container_id = %self.container_id, pid, "event of a deleted task ignored");
            }
            Event::Created { pid } => {
                let task = self
                    .task
                    .get_or_insert_with(|| TaskState::new(FifoSet::default()));
                if task.init.mark_created(pid) {
                    self.deliver(Event::Created { pid }, timestamp).await;
                }
            }
            Event::Started { pid } => self.record_start(myself, pid, timestamp).await,
            Event::ExecAdded { exec_id } => self.record_exec_added(exec_id, timestamp).await,
            Event::ExecStarted { exec_id, pid } => {
                self.record_exec_started(exec_id, pid, timestamp).await;
            }
            Event::Exited {
                process,
                pid,
                status,
                synthetic,
            } => {
                self.record_exit(process, pid, status, synthetic, timestamp)
                    .await;
                self.hold_or_release_init_exit(myself).await;
            }
            Event::Deleted { .. } if self.task.is_none() => {}
            Event::Deleted { pid, status } if self.is_current_init(pid) => {
                self.forget_deleted_task(pid, status, timestamp).await;
            }
            Event::Deleted { pid, .. } => {
                tracing::debug!(container_id = %self.container_id, pid, "delete event of an earlier task ignored");
            }
            Event::Paused => {
                if let Some(task) = self.task.as_mut() {
                    task.paused = true;
                }
                self.deliver(Event::Paused, timestamp).await;
            }
            Event::Resumed => {
                if let Some(task) = self.task.as_mut() {
                    task.paused = false;
                }
                self.deliver(Event::Resumed, timestamp).await;
            }
            Event::OutOfMemory => self.record_out_of_memory(timestamp).await,
            other => self.deliver(other, timestamp).await,
        }
    }

    /// Reports one out-of-memory event per kill.
    ///
    /// The kernel signals the same kill several times (11 events for one kill were seen with
    /// cgroup v1 on Linux 6.1). The first event of a task is reported; a later one only when
    /// the cgroup's kill counter shows more kills than keel reported.
    async fn record_out_of_memory(&mut self, timestamp: SystemTime) {
        let reported = self.oom_reported;
        let kills = match self.stats().await {
            Ok(stats) => Some(stats.memory.oom_kills),
            Err(_) => None,
        };
        let is_news = reported == 0 || kills.is_some_and(|kills| kills > reported);
        if !is_news {
            return;
        }
        self.oom_reported = kills.unwrap_or(0).max(reported + 1);
        self.deliver(Event::OutOfMemory, timestamp).await;
    }

    /// Reports an out-of-memory kill that no event reported before the init exit.
    ///
    /// containerd 1.6's runc shim watches a task's cgroup for OOM only once the task has
    /// started, so a process killed before that produces no event; the cgroup's kill counter
    /// still shows the kill until the task is deleted.
    async fn report_silent_out_of_memory(&mut self, exit_code: u32) {
        const KILLED_BY_SIGKILL: u32 = 128 + 9;
        if exit_code != KILLED_BY_SIGKILL || self.oom_reported > 0 {
            return;
        }
        let Ok(stats) = self.stats().await else {
            return;
        };
        if stats.memory.oom_kills == 0 {
            return;
        }
        self.oom_reported = stats.memory.oom_kills;
        self.deliver(Event::OutOfMemory, SystemTime::now()).await;
    }

    pub(crate) async fn record_start(
        &mut self,
        myself: &ActorRef<ContainerMsg>,
        pid: u32,
        at: SystemTime,
    ) {
        let task = self
            .task
            .get_or_insert_with(|| TaskState::new(FifoSet::default()));
        let created = task.init.mark_created(pid);
        let started = task.init.mark_started(pid);
        if created {
            self.deliver(Event::Created { pid }, at).await;
        }
        if started {
            self.deliver(Event::Started { pid }, at).await;
        }
        self.hold_or_release_init_exit(myself).await;
    }

    async fn record_exec_added(&mut self, exec_id: ExecId, at: SystemTime) {
        let Some(task) = self.task.as_mut() else {
            return;
        };
        let exec = task
            .execs
            .entry(exec_id.clone())
            .or_insert_with(|| ProcessState::new(FifoSet::default()));
        if exec.deleted {
            return;
        }
        if exec.mark_created(0) {
            self.deliver(Event::ExecAdded { exec_id }, at).await;
        }
    }

    pub(crate) async fn record_exec_started(&mut self, exec_id: ExecId, pid: u32, at: SystemTime) {
        self.record_exec_added(exec_id.clone(), at).await;
        let Some(exec) = self
            .task
            .as_mut()
            .and_then(|task| task.execs.get_mut(&exec_id))
        else {
            return;
        };
        if exec.deleted {
            return;
        }
        if exec.mark_started(pid) {
            self.deliver(Event::ExecStarted { exec_id, pid }, at).await;
        }
    }

    /// Records an exit from any source and reports it if it is news. The init exit is only
    /// stored here; [`Self::hold_or_release_init_exit`] decides when it goes out. An exec's
    /// exit is reported at once, and the exec is then deleted from containerd.
    pub(crate) async fn record_exit(
        &mut self,
        process: ProcessId,
        pid: u32,
        status: ExitStatus,
        synthetic: Option<SyntheticReason>,
        at: SystemTime,
    ) {
        let tracker = self.tracker.clone();
        let registry = Arc::clone(&self.registry);
        let Some(task) = self.task.as_mut() else {
            return;
        };
        if let ProcessId::Exec(exec_id) = &process
            && !task.execs.contains_key(exec_id)
        {
            task.execs
                .insert(exec_id.clone(), ProcessState::new(FifoSet::default()));
        }
        let Some(state) = task.process_mut(&process) else {
            return;
        };
        // An event of an earlier process in this slot (the previous task of the container, or
        // an exec id used again) can arrive after the new one started. Its pid differs.
        if pid != 0 && state.pid.is_some_and(|known| known != 0 && known != pid) {
            tracing::debug!(container_id = %self.container_id, %process, pid, "exit of an earlier process ignored");
            return;
        }
        let pid = if pid == 0 {
            state.pid.unwrap_or(0)
        } else {
            pid
        };
        if !state.mark_exited(pid, status) {
            return;
        }
        // An actor that replaced a failed one finds the exits its predecessor reported. It
        // returns them to the waits but does not report them again.
        if registry
            .exits
            .find(&self.container_id, &process, pid)
            .is_some()
        {
            state.answer_waiters(&tracker);
            if let ProcessId::Exec(exec_id) = process
                && synthetic.is_none()
            {
                self.clean_up_exited_exec(&exec_id).await;
            }
            return;
        }
        let ProcessId::Exec(exec_id) = process else {
            task.held_init_exit = Some(HeldExit {
                pid,
                status,
                synthetic,
            });
            return;
        };
        state.answer_waiters(&tracker);
        let process = ProcessId::Exec(exec_id.clone());
        self.registry
            .exits
            .record(&self.container_id, &process, pid, status);
        let event = Event::Exited {
            process,
            pid,
            status,
            synthetic,
        };
        self.deliver(event, at).await;
        if synthetic.is_none() {
            self.clean_up_exited_exec(&exec_id).await;
        }
    }

    /// Reports a held init exit once no exec is left running; otherwise schedules
    /// [`ContainerMsg::ReleaseInitExit`] after the hold bound.
    pub(crate) async fn hold_or_release_init_exit(&mut self, myself: &ActorRef<ContainerMsg>) {
        let Some(task) = self.task.as_ref() else {
            return;
        };
        if task.held_init_exit.is_none() {
            return;
        }
        if task.running_execs().is_empty() {
            self.release_init_exit(false).await;
            return;
        }
        myself.send_after(self.options.init_exit_hold, || {
            ContainerMsg::ReleaseInitExit
        });
    }

    /// Reports the held init exit. With `force`, execs still without an exit get a synthetic
    /// one first, so exec exits always precede their container's exit.
    pub(crate) async fn release_init_exit(&mut self, force: bool) {
        let Some(task) = self.task.as_mut() else {
            return;
        };
        let Some(held) = task.held_init_exit else {
            return;
        };
        let unfinished = task.running_execs();
        if !unfinished.is_empty() && !force {
            return;
        }
        for exec_id in unfinished {
            let synthetic = ExitStatus {
                code: SyntheticReason::EXIT_CODE,
                exited_at: held.status.exited_at,
            };
            let process = ProcessId::Exec(exec_id);
            let reason = Some(SyntheticReason::ContainerExited);
            self.record_exit(process, 0, synthetic, reason, SystemTime::now())
                .await;
        }
        self.report_silent_out_of_memory(held.status.code).await;
        let tracker = self.tracker.clone();
        let Some(task) = self.task.as_mut() else {
            return;
        };
        task.held_init_exit = None;
        task.init.answer_waiters(&tracker);
        self.registry
            .exits
            .record(&self.container_id, &ProcessId::Init, held.pid, held.status);
        let event = Event::Exited {
            process: ProcessId::Init,
            pid: held.pid,
            status: held.status,
            synthetic: held.synthetic,
        };
        self.deliver(event, held.status.exited_at).await;
    }

    /// Asks containerd for the state of every process that has not reported an exit, and
    /// reports the exits that happened while no event stream was open.
    ///
    /// The init process is checked even after its exit, because containerd may have deleted
    /// the task meanwhile: its shim died, or a delete whose reply was lost went through. keel
    /// then drops the task as if the delete event had arrived. A container without a task in
    /// keel adopts the one containerd may have created for a request whose reply was lost.
    pub(crate) async fn reconcile(&mut self, myself: &ActorRef<ContainerMsg>) {
        let Some(task) = self.task.as_ref() else {
            if let Err(error) = self.adopt_untracked_task().await {
                tracing::warn!(container_id = %self.container_id, %error, "cannot look for an untracked task");
            }
            return;
        };
        let init_pid = task.init.pid.unwrap_or(0);
        let pending: Vec<ProcessId> = task
            .execs
            .iter()
            .filter(|(_, exec)| exec.exit_status().is_none() && !exec.deleted)
            .map(|(exec_id, _)| ProcessId::Exec(exec_id.clone()))
            .collect();
        for process in pending {
            self.reconcile_process(process).await;
        }
        let task_vanished = self.reconcile_process(ProcessId::Init).await;
        if task_vanished {
            self.forget_deleted_task(init_pid, None, SystemTime::now())
                .await;
            return;
        }
        self.hold_or_release_init_exit(myself).await;
    }

    /// Records what containerd reports about one process; returns true when containerd has
    /// no such process.
    async fn reconcile_process(&mut self, process: ProcessId) -> bool {
        let request = GetRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id_text(&process),
        };
        let mut tasks = self.services.tasks();
        let now = SystemTime::now();
        match self
            .call_for(Operation::Status, &process, tasks.get(request))
            .await
        {
            Ok(response) => {
                let Some(info) = response.process else {
                    return false;
                };
                // An exec whose start got no reply, or whose start event fell in the gap, is
                // reported started before its exit.
                if let ProcessId::Exec(exec_id) = &process
                    && info.status != TaskStatus::Created as i32
                    && info.pid != 0
                {
                    self.record_exec_started(exec_id.clone(), info.pid, now)
                        .await;
                }
                if info.status != TaskStatus::Stopped as i32 {
                    return false;
                }
                let status = ExitStatus {
                    code: info.exit_status,
                    exited_at: system_time(info.exited_at),
                };
                tracing::debug!(container_id = %self.container_id, %process, code = status.code, "exit status from reconciliation");
                self.record_exit(process, info.pid, status, None, now).await;
                false
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {
                let status = ExitStatus {
                    code: SyntheticReason::EXIT_CODE,
                    exited_at: now,
                };
                tracing::debug!(container_id = %self.container_id, %process, "process not found by reconciliation");
                let reason = Some(SyntheticReason::TaskVanished);
                self.record_exit(process, 0, status, reason, now).await;
                true
            }
            Err(error) => {
                tracing::warn!(container_id = %self.container_id, %process, %error, "cannot reconcile process");
                false
            }
        }
    }

    /// Drops the task after containerd deleted it: reports the init exit (from `status`, the
    /// delete event's, when no other source reported it), removes the FIFOs, fails the waiters
    /// of execs that never reported, and reports the delete.
    pub(crate) async fn forget_deleted_task(
        &mut self,
        pid: u32,
        status: Option<ExitStatus>,
        at: SystemTime,
    ) {
        let exit_unreported = self
            .task
            .as_ref()
            .is_some_and(|task| task.init.has_started() && task.init.exit_status().is_none());
        if let Some(status) = status
            && exit_unreported
        {
            self.record_exit(ProcessId::Init, pid, status, None, at)
                .await;
        }
        self.release_init_exit(true).await;
        let status = self.task.as_ref().and_then(|task| task.init.exit_status());
        let Some(mut task) = self.task.take() else {
            return;
        };
        remove_fifos_in(&self.bundle_dir);
        self.retire_task(&task);
        for (exec_id, mut exec) in task.execs.drain() {
            let process = ProcessId::Exec(exec_id);
            exec.fail_waiters(|| {
                self.rejected_for(
                    Operation::Wait,
                    &process,
                    ErrorKind::NotFound,
                    "the task was deleted",
                )
            });
        }
        task.init.fail_waiters(|| {
            self.rejected(Operation::Wait, ErrorKind::NotFound, "the task was deleted")
        });
        self.deliver(Event::Deleted { pid, status }, at).await;
    }

    /// Forgets a task that keel tracks but containerd no longer has, after `error` said so.
    /// Returns the init exit status, recording a synthetic one first when no source reported
    /// the exit; returns `error` when keel tracks no task.
    pub(crate) async fn forget_vanished_task(&mut self, error: Error) -> Result<ExitStatus, Error> {
        let Some(task) = self.task.as_ref() else {
            return Err(error);
        };
        let pid = task.init.pid.unwrap_or(0);
        let now = SystemTime::now();
        if task.init.exit_status().is_none() {
            let status = ExitStatus {
                code: SyntheticReason::EXIT_CODE,
                exited_at: now,
            };
            let reason = Some(SyntheticReason::TaskVanished);
            self.record_exit(ProcessId::Init, 0, status, reason, now)
                .await;
        }
        let status = self.task.as_ref().and_then(|task| task.init.exit_status());
        self.forget_deleted_task(pid, None, now).await;
        status.ok_or(error)
    }

    /// Returns true when keel tracks a task whose init process has `pid`, or whose pid is not
    /// known; a delete event with pid 0 matches any task.
    fn is_current_init(&self, pid: u32) -> bool {
        let Some(task) = self.task.as_ref() else {
            return false;
        };
        match task.init.pid {
            Some(known) if known != 0 && pid != 0 => known == pid,
            _ => true,
        }
    }

    /// Deletes what containerd keeps for a task it cannot report, when keel tracks no task.
    ///
    /// containerd 1.6.20 killed while it creates a task can come back with the task's shim in
    /// its task list but no process in the shim: a status request returns not found, a create
    /// with the same id returns already exists, and the shim keeps running. A task delete
    /// removes that entry, the shim and its bundle folder; for a container without a task it
    /// returns not found, which counts as success.
    ///
    /// # Errors
    ///
    /// Returns containerd's error other than not found.
    pub(crate) async fn delete_leftover_task(&mut self) -> Result<(), Error> {
        if self.task.is_some() {
            return Ok(());
        }
        let request = DeleteTaskRequest {
            container_id: self.container_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        match self
            .call(Operation::DeleteTask, tasks.delete(request))
            .await
        {
            Ok(_) => {
                tracing::warn!(container_id = %self.container_id, "deleted a task entry that containerd could not report");
                Ok(())
            }
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Starts tracking the task containerd has for this container when keel tracks none. Such
    /// a task comes from a create or start whose reply was lost because containerd died, or
    /// whose clean-up after a failed start could not reach containerd. Its creation and start
    /// are reported as news, and so is its exit when it already stopped.
    ///
    /// # Errors
    ///
    /// Returns containerd's error other than not found.
    pub(crate) async fn adopt_untracked_task(&mut self) -> Result<(), Error> {
        if self.task.is_some() {
            return Ok(());
        }
        let request = GetRequest {
            container_id: self.container_id.to_string(),
            exec_id: String::new(),
        };
        let mut tasks = self.services.tasks();
        let process = match self.call(Operation::Status, tasks.get(request)).await {
            Ok(response) => response.process,
            Err(error) if error.kind() == ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        let Some(process) = process else {
            return Ok(());
        };
        let pid = process.pid;
        tracing::warn!(container_id = %self.container_id, pid, "adopting a task that keel did not track");
        let now = SystemTime::now();
        let task = self.task.insert(TaskState::new(FifoSet::default()));
        task.paused = process.status == TaskStatus::Paused as i32;
        task.init.mark_created(pid);
        self.deliver(Event::Created { pid }, now).await;
        if process.status == TaskStatus::Created as i32 {
            return Ok(());
        }
        if let Some(task) = self.task.as_mut() {
            task.init.mark_started(pid);
        }
        self.deliver(Event::Started { pid }, now).await;
        if process.status == TaskStatus::Stopped as i32 {
            let status = ExitStatus {
                code: process.exit_status,
                exited_at: system_time(process.exited_at),
            };
            self.record_exit(ProcessId::Init, pid, status, None, now)
                .await;
            self.release_init_exit(true).await;
        }
        Ok(())
    }
}
