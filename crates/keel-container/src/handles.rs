//! Matching each handle's request to the process the handle was made for.
//!
//! An exec id is free again once its process exited, and a container gets a new task after a
//! task delete, so a handle's exec id or container id alone may name a newer process. Each
//! handle carries a [`ProcessRef`], and a request reaches a process only when that reference
//! matches it. The exits of processes keel stopped tracking stay in a bounded record, so a
//! handle's `wait` and `delete` still return them.

use keel_types::{Error, ErrorKind, ExitStatus, Operation, ProcessId};

use crate::actor::ContainerState;
use crate::process::{ProcessRef, ProcessState};
use crate::task::TaskState;

impl ContainerState {
    /// Returns the tracked record of the process `handle` was made for.
    pub(crate) fn process_of(&self, handle: &ProcessRef) -> Option<&ProcessState> {
        self.task
            .as_ref()
            .and_then(|task| task.process(&handle.process))
            .filter(|state| state.is_for(handle))
    }

    /// Returns the tracked record of the process `handle` was made for, to change it.
    pub(crate) fn process_of_mut(&mut self, handle: &ProcessRef) -> Option<&mut ProcessState> {
        self.task
            .as_mut()
            .and_then(|task| task.process_mut(&handle.process))
            .filter(|state| state.is_for(handle))
    }

    /// Fails with not found unless keel tracks the process `handle` was made for.
    pub(crate) fn check_handle(
        &self,
        handle: &ProcessRef,
        operation: Operation,
    ) -> Result<(), Error> {
        if self.process_of(handle).is_some() {
            return Ok(());
        }
        Err(self.gone(handle, operation))
    }

    /// Returns the not found error for a request about a process keel no longer tracks, or
    /// about an exec that failed to start, which keel tracks only to ignore its late events.
    pub(crate) fn gone(&self, handle: &ProcessRef, operation: Operation) -> Error {
        let reason = match &handle.process {
            ProcessId::Exec(_) if self.process_of(handle).is_some() => "the exec failed to start",
            ProcessId::Init => {
                "the task this handle was made for was deleted; get a handle on the current task \
                 with Container::task"
            }
            ProcessId::Exec(_) if self.retired_exit(handle).is_some() => {
                "the process this handle was made for has exited and was deleted"
            }
            ProcessId::Exec(_) => "no such process; it exited or its task was deleted",
        };
        self.rejected_for(operation, &handle.process, ErrorKind::NotFound, reason)
    }

    /// Returns the exit of the process `handle` was made for, when keel no longer tracks the
    /// process but remembers its exit.
    pub(crate) fn retired_exit(&self, handle: &ProcessRef) -> Option<ExitStatus> {
        if self.process_of(handle).is_some() {
            return None;
        }
        // An actor that replaced a failed one finds the exits its predecessor reported in the
        // registry.
        self.retired.exit_of(handle).or_else(|| {
            self.registry
                .exits
                .find(&self.container_id, &handle.process, handle.pid)
        })
    }

    /// Returns the reference of the current task's init process, adopting the task containerd
    /// has when keel tracks none.
    pub(crate) async fn init_ref(&mut self) -> Result<ProcessRef, Error> {
        self.adopt_untracked_task().await?;
        let init = self
            .task
            .as_ref()
            .map(|task| &task.init)
            .filter(|init| init.pid.is_some());
        match init {
            Some(init) => Ok(init.handle_ref(ProcessId::Init)),
            None => Err(self.no_task(Operation::Status)),
        }
    }

    /// Remembers the exits of a task's processes as it is dropped, and releases their stdio.
    pub(crate) fn retire_task(&mut self, task: &TaskState) {
        task.release_stdio();
        self.registry.exits.forget(&self.container_id);
        let execs = task.execs.values().filter_map(ProcessState::retire);
        for process in execs {
            self.retired.push(process);
        }
        if let Some(init) = task.init.retire() {
            self.retired.push(init);
        }
    }
}
