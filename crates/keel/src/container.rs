//! The handle of one container.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel_container::{
    ContainerMsg, CreateTask, ProcessIo, ProcessRef, Registry, Reply, StdioRequest, WaitUntil,
};
use keel_types::{ContainerId, Error, ErrorKind, ExitStatus, Operation, Target};
use ractor::{ActorRef, ActorStatus};

use crate::process::Process;
use crate::request::{request, request_unbounded};
use crate::task::Task;

/// SIGKILL's number.
const SIGKILL: u32 = 9;

/// How long a forced delete waits between attempts to delete a task that is still dying.
const DELETE_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// The state the container handles of one client share.
#[derive(Clone, Debug)]
pub(crate) struct HandleContext {
    /// The registry, which records the actor that replaced a failed one.
    pub(crate) registry: Arc<Registry>,
    /// Set when the client starts shutting down, so no replacement actor is awaited.
    pub(crate) stopping: Arc<AtomicBool>,
    /// The deadline of one request.
    pub(crate) call_timeout: Duration,
    /// The largest exec process keel sends, in bytes of JSON, from [`crate::Limits`].
    pub(crate) max_spec_bytes: usize,
}

/// A container, created or loaded through a [`crate::Client`].
///
/// The handle keeps working when the container's actor fails and is replaced: each request
/// goes to the actor that serves the container now. A request the failed actor was handling
/// returns cancelled, except a wait, which goes on with the replacement.
#[derive(Clone, Debug)]
pub struct Container {
    container_id: ContainerId,
    target: Target,
    actor: ActorRef<ContainerMsg>,
    context: Arc<HandleContext>,
}

impl Container {
    pub(crate) fn new(
        container_id: ContainerId,
        actor: ActorRef<ContainerMsg>,
        context: Arc<HandleContext>,
    ) -> Self {
        Self {
            target: Target::Container(container_id.clone()),
            container_id,
            actor,
            context,
        }
    }

    /// The container's id.
    pub fn id(&self) -> &ContainerId {
        &self.container_id
    }

    /// Creates the task without starting it; start it with [`Task::start`].
    ///
    /// # Errors
    ///
    /// Returns already exists when the container has a task, or containerd's error; nothing
    /// is left behind on failure.
    pub async fn create_task(&self, stdio: StdioRequest) -> Result<Task, Error> {
        let request = CreateTask {
            stdio,
            restore_from: None,
        };
        self.new_task(Operation::CreateTask, 2, request, ContainerMsg::CreateTask)
            .await
    }

    /// Creates a running task from a checkpoint in `dir`, written by [`Task::checkpoint`].
    /// Several restores from one folder may run at once; the folder is only read.
    ///
    /// # Errors
    ///
    /// Returns invalid argument when `dir` fails [`check_checkpoint_dir`], already exists when
    /// the container has a task, or containerd's or criu's error.
    pub async fn restore_task(&self, dir: &Path, stdio: StdioRequest) -> Result<Task, Error> {
        check_checkpoint_dir(dir)?;
        let request = CreateTask {
            stdio,
            restore_from: Some(dir.to_owned()),
        };
        self.new_task(Operation::Restore, 3, request, ContainerMsg::CreateTask)
            .await
    }

    /// Returns a handle on the container's current task without stdio streams, for example
    /// after [`crate::Client::load_container`] or after the task was deleted and created again.
    ///
    /// # Errors
    ///
    /// Returns not found when the container has no task.
    pub async fn task(&self) -> Result<Task, Error> {
        let init = self
            .ask(
                Operation::Status,
                &self.target,
                self.context.call_timeout,
                ContainerMsg::InitRef,
            )
            .await?;
        Ok(Task::new(self.clone(), init, ProcessIo::default()))
    }

    /// Reopens the stdio FIFOs of the running task and of its running exec processes, after
    /// the engine restarted and loaded the container.
    ///
    /// # Errors
    ///
    /// Returns not found when the container has no task, or an I/O error when containerd
    /// reports a FIFO outside the container's bundle folder.
    pub async fn attach(&self) -> Result<(Task, Vec<Process>), Error> {
        let attached = self
            .ask(
                Operation::Attach,
                &self.target,
                self.context.call_timeout * 3,
                ContainerMsg::Attach,
            )
            .await?;
        let (init, io) = attached.init;
        let task = Task::new(self.clone(), init, io);
        let processes = attached
            .execs
            .into_iter()
            .map(|(process, io)| Process::new(self.clone(), process, io))
            .collect::<Result<_, _>>()?;
        Ok((task, processes))
    }

    /// Kills every process of the task, waits for the exit, deletes the task and the
    /// container, all within `timeout`.
    ///
    /// # Errors
    ///
    /// Returns timed out when the task does not die or cannot be deleted in time, or
    /// containerd's error.
    pub async fn force_delete(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = keel_connection::deadline_after(timeout);
        let timed_out = || Error::TimedOut {
            operation: Operation::DeleteContainer,
            target: self.target.clone(),
            timeout,
        };
        match self.task().await {
            Ok(task) => {
                let killed = match task.kill(SIGKILL, true).await {
                    Ok(()) => true,
                    Err(error) if error.kind() == ErrorKind::NotFound => true,
                    Err(error)
                        if matches!(error.kind(), ErrorKind::Unavailable | ErrorKind::TimedOut) =>
                    {
                        return Err(error);
                    }
                    // A shim that died under the kill fails it ("ttrpc: closed"). containerd
                    // then reports the exit itself, and the delete below removes the task.
                    Err(error) => {
                        tracing::debug!(container_id = %self.container_id, %error, "forced delete goes on after a failed kill");
                        false
                    }
                };
                // The exit usually arrives through the event stream; without one, the delete
                // below still succeeds once the process is gone. Output streams that another
                // handle keeps end with the delete, so the wait does not wait for them.
                if killed {
                    let _ = tokio::time::timeout_at(deadline, task.wait_exited()).await;
                }
                loop {
                    let attempt = task.delete_ref().await;
                    match attempt {
                        Ok(_) => break,
                        Err(error) if error.kind() == ErrorKind::NotFound => break,
                        Err(error) if tokio::time::Instant::now() >= deadline => {
                            tracing::warn!(container_id = %self.container_id, %error, "forced delete gave up");
                            return Err(timed_out());
                        }
                        Err(_) => tokio::time::sleep(DELETE_RETRY_INTERVAL).await,
                    }
                }
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        self.delete().await
    }

    /// Creates and starts the task. A task whose start fails is killed and deleted, and a client
    /// that stops meanwhile first finishes both steps or neither.
    ///
    /// # Errors
    ///
    /// As [`Container::create_task`], plus the start's error.
    pub async fn start_task(&self, stdio: StdioRequest) -> Result<Task, Error> {
        let request = CreateTask {
            stdio,
            restore_from: None,
        };
        self.new_task(
            Operation::StartTask,
            5,
            request,
            ContainerMsg::CreateAndStartTask,
        )
        .await
    }

    /// Sends `request` in the message `build` makes and returns the handle of the new task.
    /// The reply may take `requests` gRPC requests' deadlines.
    async fn new_task(
        &self,
        operation: Operation,
        requests: u32,
        request: CreateTask,
        build: fn(Box<CreateTask>, Reply<(ProcessIo, ProcessRef)>) -> ContainerMsg,
    ) -> Result<Task, Error> {
        let (io, init) = self
            .ask(
                operation,
                &self.target,
                self.context.call_timeout * requests,
                |reply| build(Box::new(request), reply),
            )
            .await?;
        Ok(Task::new(self.clone(), init, io))
    }

    /// Deletes the container record and its bundle folder. The task must be deleted first.
    ///
    /// # Errors
    ///
    /// Returns failed precondition while a task exists, or containerd's error.
    pub async fn delete(&self) -> Result<(), Error> {
        self.ask(
            Operation::DeleteContainer,
            &self.target,
            self.context.call_timeout * 2,
            ContainerMsg::Delete,
        )
        .await
    }

    /// Sends a request to the actor that serves the container now and waits at most `timeout`
    /// for the reply. A request to the actor of a deleted container returns not found.
    pub(crate) async fn ask<T: Send + 'static>(
        &self,
        operation: Operation,
        target: &Target,
        timeout: Duration,
        build: impl FnOnce(keel_container::Reply<T>) -> ContainerMsg,
    ) -> Result<T, Error> {
        let actor = self.live_actor(timeout).await;
        let result = request(&actor, operation, target, timeout, build).await;
        if !matches!(result, Err(Error::Stopped { .. }))
            || self.context.stopping.load(Ordering::Acquire)
        {
            return result;
        }
        if self.was_deleted(&actor) {
            return Err(deleted(operation, target));
        }
        // The actor failed with the request in its mailbox. It is not sent again, because the
        // actor may have acted on it before it failed.
        Err(Error::Rejected {
            operation,
            target: target.clone(),
            kind: ErrorKind::Cancelled,
            reason: "the actor serving this container failed before it replied, and a new one \
                     takes over; check the container's state and send the request again"
                .to_owned(),
        })
    }

    /// Returns true when `actor` stopped because its container was deleted: the client is not
    /// shutting down, no actor replaced it or is being started to replace it, and the registry
    /// no longer maps the id to it.
    fn was_deleted(&self, actor: &ActorRef<ContainerMsg>) -> bool {
        if self.context.stopping.load(Ordering::Acquire) {
            return false;
        }
        if self.context.registry.current(actor).get_id() != actor.get_id() {
            return false;
        }
        if self.context.registry.is_being_replaced(actor.get_id()) {
            return false;
        }
        self.context
            .registry
            .get(&self.container_id)
            .is_none_or(|current| current.get_id() != actor.get_id())
    }

    /// Returns the actor that serves the container now: the one this handle was made for, or
    /// the last that replaced it after a failure.
    pub(crate) fn actor(&self) -> ActorRef<ContainerMsg> {
        self.context.registry.current(&self.actor)
    }

    /// Returns the actor that serves the container now. When that actor failed, it first waits
    /// at most `timeout` for its replacement, because a request sent to the failed actor would
    /// fail as if the client were stopped.
    async fn live_actor(&self, timeout: Duration) -> ActorRef<ContainerMsg> {
        let actor = self.actor();
        let running = !matches!(
            actor.get_status(),
            ActorStatus::Stopping | ActorStatus::Stopped
        );
        if running || self.context.stopping.load(Ordering::Acquire) || self.was_deleted(&actor) {
            return actor;
        }
        let registry = &self.context.registry;
        registry
            .wait_for_successor(&actor, timeout)
            .await
            .unwrap_or(actor)
    }

    /// Waits until `process` exits, and also until its output streams are closed when `until`
    /// is [`WaitUntil::OutputClosed`]. When the actor fails meanwhile, the wait goes on with the
    /// actor that replaces it, which loads the process's state from containerd. When the
    /// container was deleted, it returns not found at once.
    pub(crate) async fn wait_for_exit(
        &self,
        process: &ProcessRef,
        until: WaitUntil,
        target: &Target,
    ) -> Result<ExitStatus, Error> {
        let mut actor = self.live_actor(self.context.call_timeout).await;
        loop {
            let result = request_unbounded(&actor, Operation::Wait, target, |reply| {
                ContainerMsg::Wait(process.clone(), until, reply)
            })
            .await;
            let stopped = matches!(result, Err(Error::Stopped { .. }));
            if !stopped || self.context.stopping.load(Ordering::Acquire) {
                return result;
            }
            if self.was_deleted(&actor) {
                return Err(deleted(Operation::Wait, target));
            }
            match self
                .context
                .registry
                .wait_for_successor(&actor, self.context.call_timeout)
                .await
            {
                Some(successor) => actor = successor,
                None => return result,
            }
        }
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.context.call_timeout
    }

    pub(crate) fn max_spec_bytes(&self) -> usize {
        self.context.max_spec_bytes
    }
}

/// Returns the error for a request about a container that was deleted.
fn deleted(operation: Operation, target: &Target) -> Error {
    Error::Rejected {
        operation,
        target: target.clone(),
        kind: ErrorKind::NotFound,
        reason: "the container was deleted; load or create it again to use its id".to_owned(),
    }
}

/// The files every checkpoint folder written by [`Task::checkpoint`] contains: criu's image
/// inventory and runc's list of the process's file descriptors.
const CHECKPOINT_FILES: [&str; 2] = ["inventory.img", "descriptors.json"];

/// Checks that `dir` is an absolute path to a checkpoint folder written by
/// [`Task::checkpoint`], before anything is changed for a restore.
///
/// # Errors
///
/// Returns invalid argument naming the folder when it is relative, cannot be read, or lacks a
/// checkpoint's files.
pub fn check_checkpoint_dir(dir: &Path) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidArgument {
        field: "checkpoint folder",
        value: dir.display().to_string(),
        reason,
    };
    if !dir.is_absolute() {
        return Err(invalid("must be an absolute path".to_owned()));
    }
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(invalid("is not a folder".to_owned())),
        Err(error) => return Err(invalid(format!("cannot be read: {error}"))),
    }
    for file in CHECKPOINT_FILES {
        if !dir.join(file).is_file() {
            return Err(invalid(format!("has no {file}, so it holds no checkpoint")));
        }
    }
    Ok(())
}
