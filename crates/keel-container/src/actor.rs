//! The container actor.
//!
//! Lifecycle: the supervisor spawns it when the facade creates or loads a container, and it
//! stops itself after the container is deleted. It owns the container's bundle folder
//! (`<state dir>/<namespace>/<container id>`), the FIFOs inside it, the state of the task and
//! its exec processes, and the sending side of the container's event queue. Requests that
//! change the task (create, start, exec, delete) are awaited inside the handler, so an event
//! that arrives meanwhile waits in the mailbox and is applied after the reply it depends on: a
//! start is always reported before its exit. Every gRPC call has a deadline, so no handler
//! blocks for longer than that.
//!
//! The handlers live in sibling files by concern: `task.rs` (task lifecycle and control),
//! `exec.rs` (exec processes), `events.rs` (events, exits and reconciliation) and
//! `inspect.rs` (stats, process list, status).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::Container as ContainerRecord;
use keel_connection::{Services, call_with_deadline};
use keel_types::{
    ContainerEvent, ContainerId, Error, ErrorKind, Event, ExecId, ExitStatus, Operation, ProcessId,
    ProcessInfo, ProcessStatus, Stats, Target,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::task::TaskTracker;

use crate::delivery::Delivery;
use crate::process::{ProcessRef, RetiredProcesses, WaitUntil};
use crate::stdio::{ProcessIo, StdioRequest};
use crate::task::{TaskState, is_unanswered};
use crate::{Backend, Registry, RuncOptions, Runtime, SupervisorMsg};

/// The reply port of a request whose result is `T`.
pub type Reply<T> = RpcReplyPort<Result<T, Error>>;

/// The parts of a container's spec that its actor uses after the create.
#[derive(Clone, Debug, Default)]
pub struct SpecFacts {
    /// The uid and gid the spec's process runs as, who get the init process's FIFOs.
    pub user: (u32, u32),
    /// Whether the spec's process runs on a terminal, which the init's stdio must match.
    pub terminal: bool,
    /// The spec's cgroups path, for removing what an interrupted task create left.
    pub cgroups_path: Option<PathBuf>,
}

impl SpecFacts {
    /// Reads the facts from `spec`.
    pub fn of(spec: &oci_spec::runtime::Spec) -> Self {
        let process = spec.process().as_ref();
        Self {
            user: process.map_or((0, 0), |process| {
                (process.user().uid(), process.user().gid())
            }),
            terminal: process
                .and_then(|process| process.terminal())
                .unwrap_or(false),
            cgroups_path: spec
                .linux()
                .as_ref()
                .and_then(|linux| linux.cgroups_path().clone()),
        }
    }
}

/// A request to create a container.
#[derive(Clone, Debug)]
pub struct CreateContainer {
    /// The OCI runtime spec as JSON, checked and encoded by the facade.
    pub spec_json: Vec<u8>,
    /// What the container actor keeps of the spec.
    pub spec_facts: SpecFacts,
    /// The runtime and its options.
    pub runtime: Runtime,
    /// Labels stored with the container record.
    pub labels: HashMap<String, String>,
}

/// A request to create a task.
#[derive(Clone, Debug, Default)]
pub struct CreateTask {
    /// The stdio streams the init process gets.
    pub stdio: StdioRequest,
    /// A checkpoint folder to restore the task from, instead of starting it fresh.
    pub restore_from: Option<PathBuf>,
}

/// A request to add an exec process.
#[derive(Clone, Debug)]
pub struct CreateExec {
    /// The exec id, unique among the task's live processes.
    pub exec_id: ExecId,
    /// The process to run as JSON, with its `terminal` flag set from `stdio`.
    pub process_json: Vec<u8>,
    /// The stdio streams the process gets.
    pub stdio: StdioRequest,
}

/// The caller's stdio ends of a task's processes, reopened after an engine restart.
#[derive(Debug)]
pub struct Attached {
    /// The init process's reference and streams.
    pub init: (ProcessRef, ProcessIo),
    /// The reference and streams of each running exec process.
    pub execs: Vec<(ProcessRef, ProcessIo)>,
}

/// Messages a container actor handles. Each request carries its reply port; the reply holds
/// the request's result, and the actor itself keeps running whatever the result.
///
/// A request from a handle carries the [`ProcessRef`] of the process the handle was made for,
/// the init process's for a task handle. When keel no longer tracks that process, because a
/// newer process took its exec id or the container's task was deleted, the request returns not
/// found and never reaches the newer process. A wait or delete then returns the process's
/// recorded exit while keel still remembers it.
#[derive(Debug)]
pub enum ContainerMsg {
    /// Creates the container record in containerd and the bundle folder; replies with the
    /// actor itself, for the caller's handle.
    Create(Box<CreateContainer>, Reply<ActorRef<ContainerMsg>>),
    /// Rebuilds the actor's state from the record containerd just returned for the container
    /// and from its task, and replies with the actor. The containers supervisor sends it to
    /// the actor it spawned for a load, before anyone else can reach that actor.
    Load(Box<ContainerRecord>, Reply<ActorRef<ContainerMsg>>),
    /// Creates the task, fresh or restored from a checkpoint; replies with the caller's stdio
    /// ends and the init process's reference.
    CreateTask(Box<CreateTask>, Reply<(ProcessIo, ProcessRef)>),
    /// Starts the created task; on failure kills and deletes it. Replies with the pid.
    StartTask(ProcessRef, Reply<u32>),
    /// Creates the task and starts it in one request, so that a client stopping between the
    /// two steps cannot leave a created task behind. A task whose start fails is killed and
    /// deleted. Replies as [`ContainerMsg::CreateTask`] does, with the reference's pid set.
    CreateAndStartTask(Box<CreateTask>, Reply<(ProcessIo, ProcessRef)>),
    /// Reopens the FIFOs of a running task and its execs for the caller.
    Attach(Reply<Attached>),
    /// Replies with the init process's reference, for a handle on the task keel tracks now.
    InitRef(Reply<ProcessRef>),
    /// Adds an exec process and its FIFOs to the task of the init reference; replies with the
    /// caller's stdio ends and the exec's reference.
    Exec(ProcessRef, Box<CreateExec>, Reply<(ProcessIo, ProcessRef)>),
    /// Starts an added exec process; on failure deletes it and its FIFOs. Replies with the pid.
    StartExec(ProcessRef, Reply<u32>),
    /// Deletes an exited exec process; replies with its exit status.
    DeleteExec(ProcessRef, Reply<ExitStatus>),
    /// Replies with the exit status of a process once it exited, and also once its output
    /// streams are closed when the caller requests that.
    Wait(ProcessRef, WaitUntil, Reply<ExitStatus>),
    /// Sends a signal to a process, or to every process of the task when `all` is set.
    Kill {
        /// The process to signal.
        process: ProcessRef,
        /// The signal number.
        signal: u32,
        /// Signals every process in the container.
        all: bool,
        /// The reply port.
        reply: Reply<()>,
    },
    /// Closes a process's stdin, now or as soon as the process exists in the shim.
    CloseStdin(ProcessRef, Reply<()>),
    /// Resizes a process's pseudo-terminal.
    Resize {
        /// The process on the terminal.
        process: ProcessRef,
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
        /// The reply port.
        reply: Reply<()>,
    },
    /// Freezes every process of the task of the init reference.
    Pause(ProcessRef, Reply<()>),
    /// Thaws the paused task of the init reference.
    Resume(ProcessRef, Reply<()>),
    /// Changes the resource limits of the task of the init reference.
    Update(
        ProcessRef,
        Box<oci_spec::runtime::LinuxResources>,
        Reply<()>,
    ),
    /// Replies with the cgroup statistics of the task of the init reference.
    Stats(ProcessRef, Reply<Stats>),
    /// Replies with the processes of the task of the init reference.
    Processes(ProcessRef, Reply<Vec<ProcessInfo>>),
    /// Replies with a process's state as containerd reports it.
    Status(ProcessRef, Reply<ProcessStatus>),
    /// Checkpoints the running task into `dir`, leaving it running unless `exit` is set.
    Checkpoint {
        /// The init process of the task.
        task: ProcessRef,
        /// The new or empty folder criu writes the image to; made if missing.
        dir: PathBuf,
        /// Stops the task after the checkpoint.
        exit: bool,
        /// The reply port.
        reply: Reply<()>,
    },
    /// Deletes the stopped task of the init reference and its FIFOs; replies with the init
    /// process's exit status.
    DeleteTask(ProcessRef, Reply<ExitStatus>),
    /// Deletes the container record and the bundle folder, then stops the actor.
    Delete(Reply<()>),
    /// An event from containerd's stream, routed by the event actor.
    Event(ContainerEvent),
    /// Compares the tracked processes with containerd's view and reports missed exits.
    Reconcile,
    /// Loads the container and reconciles; sent to an actor that replaces a failed one.
    Reload,
    /// The bound on holding the init exit for unfinished execs has passed.
    ReleaseInitExit,
    /// Makes the actor fail, so a test can watch its supervisor replace it.
    #[cfg(feature = "fault-injection")]
    InjectFailure,
}

impl ContainerMsg {
    /// Returns the exec process a request names, for the requests a `Process` handle sends.
    fn exec_handle(&self) -> Option<&ProcessRef> {
        let handle = match self {
            Self::StartExec(handle, _)
            | Self::DeleteExec(handle, _)
            | Self::Wait(handle, _, _)
            | Self::CloseStdin(handle, _)
            | Self::Status(handle, _)
            | Self::Kill {
                process: handle, ..
            }
            | Self::Resize {
                process: handle, ..
            } => handle,
            _ => return None,
        };
        handle.process.exec_id().map(|_| handle)
    }
}

/// Tunables of a container actor.
#[derive(Clone, Debug)]
pub struct ContainerOptions {
    /// How many events may wait for the backend before the actor waits too.
    pub event_queue_capacity: usize,
    /// How long the init exit waits for the container's exec processes to report theirs.
    pub init_exit_hold: Duration,
    /// How many exec processes one task may have at once; more are rejected.
    pub max_execs: usize,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        Self {
            event_queue_capacity: 1024,
            init_exit_hold: Duration::from_millis(500),
            max_execs: 1024,
        }
    }
}

/// Start-up arguments of a container actor.
pub struct ContainerArgs {
    /// The container's id.
    pub container_id: ContainerId,
    /// The service clients.
    pub services: Services,
    /// The receiver of every event.
    pub backend: Arc<dyn Backend>,
    /// The client's state folder; the bundle folder is made inside it.
    pub state_dir: PathBuf,
    /// Tunables.
    pub options: ContainerOptions,
    /// Tracks delivery tasks so the client can wait for them at shutdown.
    pub tracker: TaskTracker,
    /// The registry to leave when the container is deleted.
    pub registry: Arc<Registry>,
}

/// The container actor.
#[derive(Debug, Default)]
pub struct ContainerActor;

/// The container actor's state.
pub struct ContainerState {
    pub(crate) container_id: ContainerId,
    pub(crate) target: Target,
    pub(crate) services: Services,
    pub(crate) bundle_dir: PathBuf,
    pub(crate) options: ContainerOptions,
    pub(crate) delivery: Delivery,
    pub(crate) tracker: TaskTracker,
    pub(crate) registry: Arc<Registry>,
    /// The runc options stored with the container record, kept for restores.
    pub(crate) runc_options: Option<RuncOptions>,
    /// What the actor keeps of the container's spec; `None` when a loaded record's spec could
    /// not be read.
    pub(crate) spec_facts: Option<SpecFacts>,
    pub(crate) task: Option<TaskState>,
    /// Set when containerd confirmed keel's delete of the task and keel sent no task create
    /// since, so containerd has no task for this container that keel does not track.
    pub(crate) task_delete_confirmed: bool,
    /// Counts checkpoints and restores, to name their work folders.
    pub(crate) criu_runs: u64,
    /// Set once the exec limit was hit and logged, so the log shows it once.
    pub(crate) exec_limit_logged: bool,
    /// The exits of processes that keel no longer tracks but whose handles may still request.
    pub(crate) retired: RetiredProcesses,
    /// Out-of-memory kills reported for the current task. It lives here, not in the task's
    /// state, so a repeat that arrives after the task was deleted is still recognized.
    pub(crate) oom_reported: u64,
    /// Set when this actor replaced a failed one. Handles made before may then name execs this
    /// actor has not seen, such as one added but not started yet, so it looks them up.
    pub(crate) replacing: bool,
}

impl Actor for ContainerActor {
    type Msg = ContainerMsg;
    type State = ContainerState;
    type Arguments = ContainerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ContainerMsg>,
        args: ContainerArgs,
    ) -> Result<ContainerState, ActorProcessingErr> {
        let bundle_dir = args
            .state_dir
            .join(args.services.namespace().as_str())
            .join(args.container_id.as_str());
        let delivery = Delivery::spawn(
            &args.container_id,
            args.backend,
            args.options.event_queue_capacity,
            &args.tracker,
        );
        Ok(ContainerState {
            target: Target::Container(args.container_id.clone()),
            container_id: args.container_id,
            services: args.services,
            bundle_dir,
            options: args.options,
            delivery,
            tracker: args.tracker,
            registry: args.registry,
            runc_options: None,
            spec_facts: None,
            task: None,
            task_delete_confirmed: false,
            criu_runs: 0,
            exec_limit_logged: false,
            retired: RetiredProcesses::default(),
            oom_reported: 0,
            replacing: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<ContainerMsg>,
        container: &mut ContainerState,
    ) -> Result<(), ActorProcessingErr> {
        container
            .registry
            .remove_if_same(&container.container_id, &myself);
        // Only a normal stop gets here: a failed actor's replacement serves the streams on.
        if let Some(task) = container.task.as_ref() {
            task.release_stdio();
        }
        container.registry.links.forget(&container.container_id);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ContainerMsg>,
        message: ContainerMsg,
        container: &mut ContainerState,
    ) -> Result<(), ActorProcessingErr> {
        // The dispatch future is about 17 KiB, and an actor's task would reserve room for it
        // even while idle; boxing it keeps an idle container actor small.
        Box::pin(dispatch(myself, message, container)).await
    }
}

/// Runs the handler of one message.
async fn dispatch(
    myself: ActorRef<ContainerMsg>,
    message: ContainerMsg,
    container: &mut ContainerState,
) -> Result<(), ActorProcessingErr> {
    if container.replacing
        && let Some(handle) = message.exec_handle()
    {
        container.adopt_exec_of(handle).await;
    }
    match message {
        #[cfg(feature = "fault-injection")]
        ContainerMsg::InjectFailure => {
            return Err(ActorProcessingErr::from("failure injected on request"));
        }
        ContainerMsg::Create(request, reply) => {
            let result = container.create(*request).await;
            if let Err(error) = &result {
                if is_unanswered(error) {
                    container.hand_over_unconfirmed_create(&myself);
                }
                container.leave(&myself, "create failed");
            }
            let _ = reply.send(result.map(|()| myself.clone()));
        }
        ContainerMsg::Load(record, reply) => {
            let result = container.load(Some(*record)).await;
            if result.is_err() {
                container.leave(&myself, "load failed");
            } else {
                container.hold_or_release_init_exit(&myself).await;
            }
            let _ = reply.send(result.map(|()| myself.clone()));
        }
        ContainerMsg::CreateTask(request, reply) => {
            let _ = reply.send(container.create_task(*request).await);
        }
        ContainerMsg::CreateAndStartTask(request, reply) => {
            let result = async {
                let (io, mut init) = container.create_task(*request).await?;
                init.pid = container.start_task(&myself).await?;
                Ok((io, init))
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::StartTask(task, reply) => {
            let result = async {
                container.check_handle(&task, Operation::StartTask)?;
                container.start_task(&myself).await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::Attach(reply) => {
            let _ = reply.send(container.attach().await);
        }
        ContainerMsg::InitRef(reply) => {
            let _ = reply.send(container.init_ref().await);
        }
        ContainerMsg::Exec(task, request, reply) => {
            let result = async {
                container.check_handle(&task, Operation::Exec)?;
                container.exec(*request).await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::StartExec(process, reply) => {
            let result = async {
                container.check_handle(&process, Operation::StartExec)?;
                container.start_exec(&process).await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::DeleteExec(process, reply) => {
            let _ = reply.send(container.delete_exec(&process).await);
        }
        ContainerMsg::Wait(process, until, reply) => container.wait(&process, until, reply),
        ContainerMsg::Kill {
            process,
            signal,
            all,
            reply,
        } => {
            let result = async {
                container.check_handle(&process, Operation::Kill)?;
                container.kill(&process.process, signal, all).await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::CloseStdin(process, reply) => {
            let _ = reply.send(container.close_stdin(&process).await);
        }
        ContainerMsg::Resize {
            process,
            width,
            height,
            reply,
        } => {
            let result = async {
                container.check_handle(&process, Operation::Resize)?;
                container.resize(&process, width, height).await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::Pause(task, reply) => {
            let result = async {
                container.check_handle(&task, Operation::Pause)?;
                container.pause().await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::Resume(task, reply) => {
            let result = async {
                container.check_handle(&task, Operation::Resume)?;
                container.resume().await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::Update(task, resources, reply) => {
            let result = async {
                container.check_handle(&task, Operation::Update)?;
                container.update(&resources).await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::Stats(task, reply) => {
            let result = async {
                container.check_handle(&task, Operation::Stats)?;
                container.stats().await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::Processes(task, reply) => {
            let result = async {
                container.check_handle(&task, Operation::ListProcesses)?;
                container.processes().await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::Status(process, reply) => {
            let result = async {
                container.check_handle(&process, Operation::Status)?;
                container.status(&process.process).await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::Checkpoint {
            task,
            dir,
            exit,
            reply,
        } => {
            let result = async {
                container.check_handle(&task, Operation::Checkpoint)?;
                container.checkpoint(&dir, exit).await
            };
            let _ = reply.send(result.await);
        }
        ContainerMsg::DeleteTask(task, reply) => {
            let _ = reply.send(container.delete_task_of(&task).await);
        }
        ContainerMsg::Delete(reply) => {
            let result = container.delete().await;
            if result.is_ok() {
                container.leave(&myself, "container deleted");
            }
            let _ = reply.send(result);
        }
        ContainerMsg::Event(event) => container.apply_event(&myself, event).await,
        ContainerMsg::Reconcile => container.reconcile(&myself).await,
        ContainerMsg::Reload => {
            container.replacing = true;
            if let Err(error) = container.load(None).await {
                tracing::error!(container_id = %container.container_id, %error, "cannot reload container");
                container.leave(&myself, "reload failed");
                return Ok(());
            }
            container.adopt_running_execs().await;
            container.reconcile(&myself).await;
        }
        ContainerMsg::ReleaseInitExit => container.release_init_exit(true).await,
    }
    Ok(())
}

impl ContainerState {
    /// Asks the containers supervisor to remove the record that containerd may still make for
    /// this actor's failed create. The id is marked first, so a create or load of it that the
    /// supervisor handles after this actor left waits until the record is gone.
    fn hand_over_unconfirmed_create(&self, myself: &ActorRef<ContainerMsg>) {
        let Some(supervisor) = myself.try_get_supervisor() else {
            return;
        };
        self.registry.mark_undoing(self.container_id.clone());
        let undo = SupervisorMsg::UndoCreate(self.container_id.clone());
        if supervisor.send_message(undo).is_err() {
            self.registry.clear_undoing(&self.container_id);
        }
    }

    /// Removes the actor from the registry and stops it. The removal happens before the
    /// reply goes out, so a create with the same id right after the reply is not rejected
    /// as already tracked.
    fn leave(&self, myself: &ActorRef<ContainerMsg>, reason: &str) {
        self.registry.remove_if_same(&self.container_id, myself);
        myself.stop(Some(reason.to_owned()));
    }

    /// Queues an event for the backend.
    pub(crate) async fn deliver(&self, event: Event, timestamp: SystemTime) {
        tracing::debug!(container_id = %self.container_id, ?event, queued = self.delivery.depth(), "deliver");
        let event = ContainerEvent {
            container_id: self.container_id.clone(),
            event,
            timestamp,
        };
        self.delivery.send(event).await;
    }

    /// Runs one gRPC call about this container with the default deadline.
    pub(crate) async fn call<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        let timeout = self.services.call_timeout();
        call_with_deadline(operation, &self.target, timeout, call).await
    }

    /// Runs one gRPC call about `process` with the default deadline.
    pub(crate) async fn call_for<T>(
        &self,
        operation: Operation,
        process: &ProcessId,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        let timeout = self.services.call_timeout();
        let target = self.process_target(process);
        call_with_deadline(operation, &target, timeout, call).await
    }

    pub(crate) fn rejected(&self, operation: Operation, kind: ErrorKind, reason: &str) -> Error {
        Error::Rejected {
            operation,
            target: self.target.clone(),
            kind,
            reason: reason.to_owned(),
        }
    }

    pub(crate) fn rejected_for(
        &self,
        operation: Operation,
        process: &ProcessId,
        kind: ErrorKind,
        reason: &str,
    ) -> Error {
        Error::Rejected {
            operation,
            target: self.process_target(process),
            kind,
            reason: reason.to_owned(),
        }
    }

    pub(crate) fn io_error(&self, operation: Operation, source: std::io::Error) -> Error {
        Error::Io {
            operation,
            target: self.target.clone(),
            path: self.bundle_dir.clone(),
            source,
        }
    }

    pub(crate) fn process_target(&self, process: &ProcessId) -> Target {
        match process {
            ProcessId::Init => self.target.clone(),
            ProcessId::Exec(exec_id) => Target::Exec(self.container_id.clone(), exec_id.clone()),
        }
    }

    /// Returns the error for a request about a task that does not exist.
    pub(crate) fn no_task(&self, operation: Operation) -> Error {
        self.rejected(
            operation,
            ErrorKind::NotFound,
            "the container has no task; create one first",
        )
    }
}

/// Returns containerd's form of a process id: empty for the init process.
pub(crate) fn exec_id_text(process: &ProcessId) -> String {
    process.exec_id().map(ExecId::to_string).unwrap_or_default()
}

/// Converts containerd's timestamp, falling back to now for a missing or invalid one.
pub(crate) fn system_time(timestamp: Option<prost_types::Timestamp>) -> SystemTime {
    timestamp
        .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
        .unwrap_or_else(SystemTime::now)
}
