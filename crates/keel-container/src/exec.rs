//! Exec processes of the container actor.
//!
//! An exec id is taken while its process lives. After the exit is reported, keel deletes the
//! process from containerd and removes its FIFOs, so the id can be used again. The exit status
//! stays known for the handle's `wait` and `delete`, also after the id is used again, until
//! the bounded records of deleted and retired processes forget it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, StartRequest, WaitRequest,
};
use keel_connection::call_with_deadline;
use keel_types::{
    Error, ErrorKind, Event, ExecId, ExitStatus, Operation, ProcessId, ProcessStatus,
};

use crate::actor::{ContainerState, CreateExec, system_time};
use crate::process::{ProcessRef, ProcessState};
use crate::stdio::{FifoSet, ProcessIo};
use crate::task::{TaskState, is_unanswered};

/// How long a failed exec start waits for an exit of the init process that may have caused it.
const INIT_EXIT_GRACE: Duration = Duration::from_millis(200);

/// How many deleted execs a task remembers. A remembered exec returns its exit status to its handle's
/// `wait` and `delete` and keeps late events from bringing it back. The oldest are
/// forgotten first, so execs with ever new ids, such as health checks, use bounded memory.
const REMEMBERED_DELETED_EXECS: usize = 256;

/// Numbers the exec deletions of every task, in order.
static DELETIONS: AtomicU64 = AtomicU64::new(0);

/// The type URL containerd expects for an OCI process spec.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

impl ContainerState {
    pub(crate) async fn exec(
        &mut self,
        request: CreateExec,
    ) -> Result<(ProcessIo, ProcessRef), Error> {
        request.stdio.check()?;
        let process = ProcessId::Exec(request.exec_id.clone());
        let Some(task) = self.task.as_ref() else {
            return Err(self.no_task(Operation::Exec));
        };
        if let Some(existing) = task.execs.get(&request.exec_id)
            && !existing.deleted
        {
            return Err(self.rejected_for(
                Operation::Exec,
                &process,
                ErrorKind::AlreadyExists,
                "an exec with this id exists; wait for it to exit or pick another id",
            ));
        }
        let live_execs = task.execs.values().filter(|exec| !exec.deleted).count();
        if live_execs >= self.options.max_execs {
            if !std::mem::replace(&mut self.exec_limit_logged, true) {
                tracing::warn!(container_id = %self.container_id, max_execs = self.options.max_execs, "exec limit reached");
            }
            return Err(self.rejected_for(
                Operation::Exec,
                &process,
                ErrorKind::FailedPrecondition,
                "the task has the maximum number of exec processes; wait for one to exit or raise ContainerOptions::max_execs",
            ));
        }
        let prefix = format!("exec.{}", request.exec_id);
        let fifos = FifoSet::create(&self.bundle_dir, &prefix, request.stdio)
            .map_err(|source| self.io_error(Operation::Exec, source))?;
        let state = ProcessState::created(fifos.clone());
        self.record_links(&process, &state);
        let io = match fifos.open(&state) {
            Ok(io) => io,
            Err(source) => {
                fifos.remove();
                return Err(self.io_error(Operation::Exec, source));
            }
        };
        let [stdin, stdout, stderr] = fifos.request_paths();
        let exec = ExecProcessRequest {
            container_id: self.container_id.to_string(),
            stdin,
            stdout,
            stderr,
            terminal: request.stdio.terminal,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.to_owned(),
                value: request.process_json,
            }),
            exec_id: request.exec_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        if let Err(error) = self
            .call_for(Operation::Exec, &process, tasks.exec(exec))
            .await
        {
            drop(io);
            fifos.remove();
            return Err(self.exec_error(&process, Operation::Exec, error).await);
        }
        let mut state = state;
        state.mark_created(0);
        let handle = state.handle_ref(process);
        // The deleted exec that had this id leaves its exit for its own handles.
        let replaced = self
            .task
            .as_ref()
            .and_then(|task| task.execs.get(&request.exec_id))
            .and_then(ProcessState::retire);
        if let Some(replaced) = replaced {
            self.retired.push(replaced);
        }
        if let Some(task) = self.task.as_mut() {
            task.execs.insert(request.exec_id.clone(), state);
        }
        let event = Event::ExecAdded {
            exec_id: request.exec_id,
        };
        self.deliver(event, SystemTime::now()).await;
        Ok((io, handle))
    }

    /// Starts the exec `handle` names, which the caller checked is tracked.
    pub(crate) async fn start_exec(&mut self, handle: &ProcessRef) -> Result<u32, Error> {
        let process = handle.process.clone();
        let Some(exec_id) = process.exec_id().cloned() else {
            return Err(self.rejected_for(
                Operation::StartExec,
                &process,
                ErrorKind::InvalidArgument,
                "the init process starts with its task; use Task::start",
            ));
        };
        let (live, started) = self
            .process_of(handle)
            .map_or((false, false), |exec| (!exec.deleted, exec.has_started()));
        if live && started {
            return Err(self.rejected_for(
                Operation::StartExec,
                &process,
                ErrorKind::FailedPrecondition,
                "the exec has already started",
            ));
        }
        if !live {
            return Err(self.rejected_for(
                Operation::StartExec,
                &process,
                ErrorKind::NotFound,
                "no exec with this id is waiting to start",
            ));
        }
        let request = StartRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        let pid = match self
            .call_for(Operation::StartExec, &process, tasks.start(request))
            .await
        {
            Ok(response) => response.pid,
            // The shim may have started the process while containerd did not reply, so the exec
            // stays tracked: its start and exit events are reported when they arrive, and
            // reconciliation finds them after a gap.
            Err(error) if is_unanswered(&error) => {
                tracing::warn!(container_id = %self.container_id, %exec_id, %error, "exec start not confirmed; the exec stays tracked");
                return Err(error);
            }
            Err(error) => {
                self.discard_exec(&exec_id).await;
                return Err(self.exec_error(&process, Operation::StartExec, error).await);
            }
        };
        let now = SystemTime::now();
        self.record_exec_started(exec_id.clone(), pid, now).await;
        let (resize_pending, close_pending) = self
            .task
            .as_mut()
            .and_then(|task| task.execs.get_mut(&exec_id))
            .map_or((None, false), |exec| {
                (
                    exec.resize_pending.take(),
                    std::mem::take(&mut exec.close_stdin_pending),
                )
            });
        if let Some((width, height)) = resize_pending
            && let Err(error) = self.send_resize(&process, width, height).await
        {
            tracing::warn!(container_id = %self.container_id, %exec_id, %error, "cannot resize the terminal of started exec");
        }
        if close_pending && let Err(error) = self.send_close_io(&process).await {
            tracing::warn!(container_id = %self.container_id, %exec_id, %error, "cannot close stdin of started exec");
        }
        Ok(pid)
    }

    /// Turns the failed create or start of an exec into failed precondition when the task is
    /// paused or its init process has stopped, the kind of an exec into a stopped task. runc 1.1
    /// fails an exec racing its container's exit with one of several messages (it cannot join
    /// the namespaces of a dead process). A shim killed meanwhile fails it with a closed
    /// connection. All come with gRPC code `Unknown`, so containerd's state decides.
    async fn exec_error(&self, process: &ProcessId, operation: Operation, error: Error) -> Error {
        if error.kind() != ErrorKind::Internal {
            return error;
        }
        let error = self.paused_error(process, operation, error).await;
        if error.kind() != ErrorKind::Internal {
            return error;
        }
        if !self.init_has_exited().await {
            return error;
        }
        let detail = match &error {
            Error::Containerd { source, .. } => source.message().to_owned(),
            other => other.to_string(),
        };
        let step = match operation {
            Operation::Exec => "was added",
            _ => "started",
        };
        let reason = format!("the task stopped while the exec {step}: {detail}");
        self.rejected_for(operation, process, ErrorKind::FailedPrecondition, &reason)
    }

    /// Turns an internal error of an exec request into failed precondition when the task is
    /// paused.
    async fn paused_error(&self, process: &ProcessId, operation: Operation, error: Error) -> Error {
        let paused = |status: &ProcessStatus| {
            matches!(status, ProcessStatus::Paused | ProcessStatus::Pausing)
        };
        self.precondition_error(
            error,
            operation,
            process,
            paused,
            "the task is paused; resume it before running an exec",
        )
        .await
    }

    /// Returns true when the init process has exited or exits within [`INIT_EXIT_GRACE`]:
    /// the shim may record an exit a moment after runc saw the process die. When the wait
    /// itself fails, as it does once the task's shim died, containerd's status of the task
    /// decides: containerd 1.6.20 returns not found for a task whose shim is gone.
    async fn init_has_exited(&self) -> bool {
        let request = WaitRequest {
            container_id: self.container_id.to_string(),
            exec_id: String::new(),
        };
        let mut tasks = self.services.tasks();
        let wait = tasks.wait(request);
        match call_with_deadline(Operation::Wait, &self.target, INIT_EXIT_GRACE, wait).await {
            Ok(_) => true,
            Err(error) if error.kind() == ErrorKind::NotFound => true,
            Err(error) if error.kind() == ErrorKind::TimedOut => false,
            Err(_) => match self.status(&ProcessId::Init).await {
                Ok(status) => matches!(status, ProcessStatus::Stopped(_)),
                Err(error) => error.kind() == ErrorKind::NotFound,
            },
        }
    }

    /// Deletes an exec whose start failed, and its FIFOs.
    async fn discard_exec(&mut self, exec_id: &ExecId) {
        let _ = self.delete_exec_process(exec_id).await;
        let target = self.process_target(&ProcessId::Exec(exec_id.clone()));
        let Some(task) = self.task.as_mut() else {
            return;
        };
        // The exec stays, marked deleted, so that its add event, which containerd may send
        // after the failed start, does not bring it back as a process that never exits.
        if let Some(exec) = task.execs.get_mut(exec_id) {
            exec.fail_waiters(|| Error::Rejected {
                operation: Operation::Wait,
                target: target.clone(),
                kind: ErrorKind::NotFound,
                reason: "the exec failed to start".to_owned(),
            });
        }
        task.retire_exec(exec_id);
    }

    /// Deletes the exited exec `handle` names and returns its exit status, or the recorded
    /// status when keel deleted the exec already.
    pub(crate) async fn delete_exec(&mut self, handle: &ProcessRef) -> Result<ExitStatus, Error> {
        if let Some(status) = self.retired_exit(handle) {
            return Ok(status);
        }
        let (Some(exec), Some(exec_id)) = (self.process_of(handle), handle.process.exec_id())
        else {
            return Err(self.gone(handle, Operation::DeleteExec));
        };
        if let Some(status) = exec.exit_status()
            && exec.deleted
        {
            return Ok(status);
        }
        let exec_id = exec_id.clone();
        let response = self.delete_exec_process(&exec_id).await?;
        let status = ExitStatus {
            code: response.exit_status,
            exited_at: system_time(response.exited_at),
        };
        if let Some(task) = self.task.as_mut() {
            task.retire_exec(&exec_id);
        }
        Ok(status)
    }

    /// Deletes an exited exec from containerd and removes its FIFOs; called once its exit was
    /// reported, so the exec id is free again.
    pub(crate) async fn clean_up_exited_exec(&mut self, exec_id: &ExecId) {
        match self.delete_exec_process(exec_id).await {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(container_id = %self.container_id, %exec_id, %error, "cannot delete exited exec");
            }
        }
        if let Some(task) = self.task.as_mut() {
            task.retire_exec(exec_id);
        }
    }

    async fn delete_exec_process(
        &self,
        exec_id: &ExecId,
    ) -> Result<containerd_client::services::v1::DeleteResponse, Error> {
        let process = ProcessId::Exec(exec_id.clone());
        let request = DeleteProcessRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        self.call_for(
            Operation::DeleteExec,
            &process,
            tasks.delete_process(request),
        )
        .await
    }
}

impl TaskState {
    /// Marks an exec deleted and removes its FIFOs, then forgets the longest-deleted exec when
    /// more than [`REMEMBERED_DELETED_EXECS`] are remembered.
    pub(crate) fn retire_exec(&mut self, exec_id: &ExecId) {
        let Some(exec) = self.execs.get_mut(exec_id) else {
            return;
        };
        exec.fifos.remove();
        exec.release_stdio();
        if !exec.deleted {
            exec.deleted = true;
            exec.deleted_order = Some(DELETIONS.fetch_add(1, Ordering::Relaxed));
        }
        let deleted = self.execs.iter().filter(|(_, exec)| exec.deleted);
        if deleted.clone().count() <= REMEMBERED_DELETED_EXECS {
            return;
        }
        let oldest = deleted
            .min_by_key(|(_, exec)| exec.deleted_order)
            .map(|(exec_id, _)| exec_id.clone());
        if let Some(oldest) = oldest {
            self.execs.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_id(number: usize) -> ExecId {
        ExecId::new(format!("check-{number}")).expect("valid exec id")
    }

    #[test]
    fn retired_execs_are_bounded_oldest_first() {
        let mut task = TaskState::new(FifoSet::default());
        let total = REMEMBERED_DELETED_EXECS + 44;
        for number in 0..total {
            task.execs
                .insert(exec_id(number), ProcessState::new(FifoSet::default()));
            task.retire_exec(&exec_id(number));
        }
        assert_eq!(task.execs.len(), REMEMBERED_DELETED_EXECS);
        assert!(!task.execs.contains_key(&exec_id(0)));
        assert!(!task.execs.contains_key(&exec_id(43)));
        assert!(task.execs.contains_key(&exec_id(44)));
        assert!(task.execs.contains_key(&exec_id(total - 1)));
    }

    #[test]
    fn running_execs_are_never_forgotten() {
        let mut task = TaskState::new(FifoSet::default());
        task.execs
            .insert(exec_id(0), ProcessState::new(FifoSet::default()));
        for number in 1..=REMEMBERED_DELETED_EXECS + 10 {
            task.execs
                .insert(exec_id(number), ProcessState::new(FifoSet::default()));
            task.retire_exec(&exec_id(number));
        }
        assert!(
            task.execs
                .get(&exec_id(0))
                .is_some_and(|exec| !exec.deleted)
        );
        assert_eq!(task.execs.len(), REMEMBERED_DELETED_EXECS + 1);
    }
}
