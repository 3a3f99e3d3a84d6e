//! The container actor.
//!
//! Lifecycle: the supervisor spawns it when the facade creates or loads a container, and it
//! stops itself after the container is deleted. It owns the container's bundle folder
//! (`<state dir>/<namespace>/<container id>`), the FIFOs inside it, the state of the task and
//! its exec processes, and the sending side of the container's event queue. Requests that
//! change the task (create, start, delete) are awaited inside the handler, so an event that
//! arrives meanwhile waits in the mailbox and is applied after the reply it depends on: a
//! start is always reported before its exit. Every gRPC call has a deadline, so no handler
//! blocks for longer than that.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, StartRequest,
};
use containerd_client::types::v1::Status as TaskStatus;
use keel_connection::{Services, call_with_deadline};
use keel_types::{
    ContainerEvent, ContainerId, Error, ErrorKind, Event, ExecId, ExitStatus, Operation, ProcessId,
    SyntheticReason, Target,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::task::TaskTracker;

use crate::delivery::Delivery;
use crate::process::ProcessState;
use crate::stdio::{FifoSet, ProcessIo, StdioRequest};
use crate::{Backend, Registry, Runtime};

/// The type URL containerd expects for an OCI runtime spec.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The file name prefix of the init process's FIFOs.
const INIT_FIFO_PREFIX: &str = "init";

/// What the facade passes to create a container.
#[derive(Clone, Debug)]
pub struct CreateContainer {
    /// The OCI runtime spec, checked by the facade.
    pub spec: oci_spec::runtime::Spec,
    /// The runtime and its options.
    pub runtime: Runtime,
    /// Labels stored with the container record.
    pub labels: HashMap<String, String>,
}

/// Messages a container actor handles. Each request carries its reply port; the reply holds
/// the request's result, and the actor itself keeps running whatever the result.
#[derive(Debug)]
pub enum ContainerMsg {
    /// Creates the container record in containerd and the bundle folder.
    Create(Box<CreateContainer>, RpcReplyPort<Result<(), Error>>),
    /// Rebuilds the actor's state from an existing container record and task.
    Load(RpcReplyPort<Result<(), Error>>),
    /// Creates the task with the requested stdio; replies with the caller's stdio ends and the
    /// init process's pid.
    CreateTask(StdioRequest, RpcReplyPort<Result<(ProcessIo, u32), Error>>),
    /// Starts the created task; on failure kills and deletes it.
    StartTask(RpcReplyPort<Result<u32, Error>>),
    /// Replies with the exit status of a process once it exited and its output is drained.
    Wait(ProcessId, RpcReplyPort<Result<ExitStatus, Error>>),
    /// Sends a signal to a process, or to every process of the task when `all` is set.
    Kill {
        /// The process to signal.
        process: ProcessId,
        /// The signal number.
        signal: u32,
        /// Signals every process in the container.
        all: bool,
        /// Where the result goes.
        reply: RpcReplyPort<Result<(), Error>>,
    },
    /// Deletes the stopped task and its FIFOs; replies with the init process's exit status.
    DeleteTask(RpcReplyPort<Result<ExitStatus, Error>>),
    /// Deletes the container record and the bundle folder, then stops the actor.
    Delete(RpcReplyPort<Result<(), Error>>),
    /// An event from containerd's stream, routed by the event actor.
    Event(ContainerEvent),
    /// Compares the tracked processes with containerd's view and reports missed exits.
    Reconcile,
    /// Loads the container and reconciles; sent to an actor that replaces a failed one.
    Reload,
    /// The bound on holding the init exit for unfinished execs has passed.
    ReleaseInitExit,
}

/// Tunables of a container actor.
#[derive(Clone, Debug)]
pub struct ContainerOptions {
    /// How many events may wait for the backend before the actor waits too.
    pub event_queue_capacity: usize,
    /// How long the init exit waits for the container's exec processes to report theirs.
    pub init_exit_hold: Duration,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        Self {
            event_queue_capacity: 1024,
            init_exit_hold: Duration::from_millis(500),
        }
    }
}

/// Start-up arguments of a container actor.
pub struct ContainerArgs {
    /// The container's id.
    pub container_id: ContainerId,
    /// The service clients.
    pub services: Services,
    /// Where events go.
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

/// A task and its processes.
#[derive(Debug)]
struct TaskState {
    init: ProcessState,
    execs: HashMap<ExecId, ProcessState>,
    /// The init exit, held until the execs have reported theirs.
    held_init_exit: Option<HeldExit>,
}

impl TaskState {
    fn new(init_fifos: FifoSet) -> Self {
        Self {
            init: ProcessState::new(init_fifos),
            execs: HashMap::new(),
            held_init_exit: None,
        }
    }

    fn process_mut(&mut self, process: &ProcessId) -> Option<&mut ProcessState> {
        match process {
            ProcessId::Init => Some(&mut self.init),
            ProcessId::Exec(exec_id) => self.execs.get_mut(exec_id),
        }
    }

    /// Returns the execs that started and have not reported an exit.
    fn running_execs(&self) -> Vec<ExecId> {
        self.execs
            .iter()
            .filter(|(_, exec)| exec.has_started() && exec.exit_status().is_none())
            .map(|(exec_id, _)| exec_id.clone())
            .collect()
    }

    fn remove_fifos(&self) {
        self.init.fifos.remove();
        for exec in self.execs.values() {
            exec.fifos.remove();
        }
    }
}

/// An init exit recorded but not yet reported.
#[derive(Clone, Copy, Debug)]
struct HeldExit {
    pid: u32,
    status: ExitStatus,
    synthetic: Option<SyntheticReason>,
}

/// The container actor's state.
pub struct ContainerState {
    container_id: ContainerId,
    target: Target,
    services: Services,
    bundle_dir: PathBuf,
    options: ContainerOptions,
    delivery: Delivery,
    tracker: TaskTracker,
    registry: Arc<Registry>,
    task: Option<TaskState>,
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
            task: None,
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
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ContainerMsg>,
        message: ContainerMsg,
        container: &mut ContainerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ContainerMsg::Create(request, reply) => {
                let result = container.create(*request).await;
                if result.is_err() {
                    myself.stop(Some("create failed".to_owned()));
                }
                let _ = reply.send(result);
            }
            ContainerMsg::Load(reply) => {
                let result = container.load().await;
                if result.is_err() {
                    myself.stop(Some("load failed".to_owned()));
                }
                let _ = reply.send(result);
            }
            ContainerMsg::CreateTask(request, reply) => {
                let _ = reply.send(container.create_task(request).await);
            }
            ContainerMsg::StartTask(reply) => {
                let _ = reply.send(container.start_task(&myself).await);
            }
            ContainerMsg::Wait(process, reply) => container.wait(&process, reply),
            ContainerMsg::Kill {
                process,
                signal,
                all,
                reply,
            } => {
                let _ = reply.send(container.kill(&process, signal, all).await);
            }
            ContainerMsg::DeleteTask(reply) => {
                let _ = reply.send(container.delete_task().await);
            }
            ContainerMsg::Delete(reply) => {
                let result = container.delete().await;
                if result.is_ok() {
                    myself.stop(Some("container deleted".to_owned()));
                }
                let _ = reply.send(result);
            }
            ContainerMsg::Event(event) => container.apply_event(&myself, event).await,
            ContainerMsg::Reconcile => container.reconcile(&myself).await,
            ContainerMsg::Reload => {
                if let Err(error) = container.load().await {
                    tracing::error!(container_id = %container.container_id, %error, "cannot reload container");
                    myself.stop(Some("reload failed".to_owned()));
                    return Ok(());
                }
                container.reconcile(&myself).await;
            }
            ContainerMsg::ReleaseInitExit => container.release_init_exit(true).await,
        }
        Ok(())
    }
}

impl ContainerState {
    async fn create(&mut self, request: CreateContainer) -> Result<(), Error> {
        let spec = serde_json::to_vec(&request.spec).map_err(|error| Error::InvalidArgument {
            field: "spec",
            value: String::new(),
            reason: format!("cannot be encoded as JSON: {error}"),
        })?;
        let created_dir = self.make_bundle_dir(Operation::CreateContainer)?;
        let container = Container {
            id: self.container_id.to_string(),
            labels: request.labels,
            runtime: Some(ContainerRuntime {
                name: request.runtime.name,
                options: request
                    .runtime
                    .runc
                    .as_ref()
                    .map(crate::RuncOptions::to_any),
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_owned(),
                value: spec,
            }),
            ..Container::default()
        };
        let request = CreateContainerRequest {
            container: Some(container),
        };
        let mut containers = self.services.containers();
        let result = self
            .call(Operation::CreateContainer, containers.create(request))
            .await;
        if result.is_err() && created_dir {
            self.remove_bundle_dir();
        }
        result.map(drop)
    }

    async fn load(&mut self) -> Result<(), Error> {
        let request = GetContainerRequest {
            id: self.container_id.to_string(),
        };
        let mut containers = self.services.containers();
        self.call(Operation::LoadContainer, containers.get(request))
            .await?;
        self.make_bundle_dir(Operation::LoadContainer)?;

        let request = GetRequest {
            container_id: self.container_id.to_string(),
            exec_id: String::new(),
        };
        let mut tasks = self.services.tasks();
        let process = match self
            .call(Operation::LoadContainer, tasks.get(request))
            .await
        {
            Ok(response) => response.process,
            Err(error) if error.kind() == ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        let Some(process) = process else {
            return Ok(());
        };
        let mut task = TaskState::new(FifoSet::default());
        task.init.mark_created(process.pid);
        if process.status != TaskStatus::Created as i32 {
            task.init.mark_started(process.pid);
        }
        self.task = Some(task);
        Ok(())
    }

    async fn create_task(&mut self, request: StdioRequest) -> Result<(ProcessIo, u32), Error> {
        if self.task.is_some() {
            return Err(self.rejected(
                Operation::CreateTask,
                ErrorKind::AlreadyExists,
                "the container has a task; delete it before creating another",
            ));
        }
        let fifos = FifoSet::create(&self.bundle_dir, INIT_FIFO_PREFIX, request)
            .map_err(|source| self.io_error(Operation::CreateTask, source))?;
        let mut task = TaskState::new(fifos.clone());
        let io = match fifos.open(&task.init.streams_open) {
            Ok(io) => io,
            Err(source) => {
                fifos.remove();
                return Err(self.io_error(Operation::CreateTask, source));
            }
        };
        let [stdin, stdout, stderr] = fifos.request_paths();
        let request = CreateTaskRequest {
            container_id: self.container_id.to_string(),
            stdin,
            stdout,
            stderr,
            terminal: request.terminal,
            ..CreateTaskRequest::default()
        };
        let mut tasks = self.services.tasks();
        let response = match self
            .call(Operation::CreateTask, tasks.create(request))
            .await
        {
            Ok(response) => response,
            Err(error) => {
                drop(io);
                fifos.remove();
                return Err(error);
            }
        };
        let pid = response.pid;
        task.init.mark_created(pid);
        self.task = Some(task);
        self.deliver(Event::Created { pid }, SystemTime::now())
            .await;
        Ok((io, pid))
    }

    async fn start_task(&mut self, myself: &ActorRef<ContainerMsg>) -> Result<u32, Error> {
        if self.task.is_none() {
            return Err(self.rejected(
                Operation::StartTask,
                ErrorKind::NotFound,
                "the container has no task; create one first",
            ));
        }
        let request = StartRequest {
            container_id: self.container_id.to_string(),
            exec_id: String::new(),
        };
        let mut tasks = self.services.tasks();
        let pid = match self.call(Operation::StartTask, tasks.start(request)).await {
            Ok(response) => response.pid,
            Err(error) => {
                self.discard_failed_task().await;
                return Err(error);
            }
        };
        self.record_start(myself, pid, SystemTime::now()).await;
        Ok(pid)
    }

    /// Kills and deletes a task whose start failed, and removes its FIFOs.
    async fn discard_failed_task(&mut self) {
        let kill = KillRequest {
            container_id: self.container_id.to_string(),
            signal: 9,
            all: true,
            ..KillRequest::default()
        };
        let mut tasks = self.services.tasks();
        let _ = self.call(Operation::StartTask, tasks.kill(kill)).await;
        let delete = DeleteTaskRequest {
            container_id: self.container_id.to_string(),
        };
        if let Err(error) = self.call(Operation::StartTask, tasks.delete(delete)).await {
            tracing::warn!(container_id = %self.container_id, %error, "cannot delete task after failed start");
        }
        if let Some(mut task) = self.task.take() {
            task.remove_fifos();
            task.init.fail_waiters(|| {
                self.rejected(
                    Operation::Wait,
                    ErrorKind::NotFound,
                    "the task failed to start",
                )
            });
        }
    }

    fn wait(&mut self, process: &ProcessId, reply: RpcReplyPort<Result<ExitStatus, Error>>) {
        let tracker = self.tracker.clone();
        let Some(state) = self
            .task
            .as_mut()
            .and_then(|task| task.process_mut(process))
        else {
            let target = self.process_target(process);
            let _ = reply.send(Err(Error::Rejected {
                operation: Operation::Wait,
                target,
                kind: ErrorKind::NotFound,
                reason: "no such process".to_owned(),
            }));
            return;
        };
        state.add_waiter(reply, &tracker);
    }

    async fn kill(&mut self, process: &ProcessId, signal: u32, all: bool) -> Result<(), Error> {
        let request = KillRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id_text(process),
            signal,
            all,
        };
        let mut tasks = self.services.tasks();
        let target = self.process_target(process);
        let timeout = self.services.call_timeout();
        call_with_deadline(Operation::Kill, &target, timeout, tasks.kill(request))
            .await
            .map(drop)
    }

    async fn delete_task(&mut self) -> Result<ExitStatus, Error> {
        let request = DeleteTaskRequest {
            container_id: self.container_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        let response = self
            .call(Operation::DeleteTask, tasks.delete(request))
            .await?;
        let status = ExitStatus {
            code: response.exit_status,
            exited_at: system_time(response.exited_at),
        };
        // The delete reply is the last source of the init exit: report it if no event did.
        self.record_exit(
            ProcessId::Init,
            response.pid,
            status,
            None,
            SystemTime::now(),
        )
        .await;
        self.release_init_exit(true).await;
        if let Some(mut task) = self.task.take() {
            task.remove_fifos();
            for (exec_id, mut exec) in task.execs.drain() {
                let target = Target::Exec(self.container_id.clone(), exec_id);
                exec.fail_waiters(|| Error::Rejected {
                    operation: Operation::Wait,
                    target: target.clone(),
                    kind: ErrorKind::NotFound,
                    reason: "the task was deleted".to_owned(),
                });
            }
        }
        self.deliver(Event::Deleted { pid: response.pid }, SystemTime::now())
            .await;
        Ok(status)
    }

    async fn delete(&mut self) -> Result<(), Error> {
        if self.task.is_some() {
            return Err(self.rejected(
                Operation::DeleteContainer,
                ErrorKind::FailedPrecondition,
                "the container has a task; delete the task first or force the delete",
            ));
        }
        let request = DeleteContainerRequest {
            id: self.container_id.to_string(),
        };
        let mut containers = self.services.containers();
        self.call(Operation::DeleteContainer, containers.delete(request))
            .await?;
        self.remove_bundle_dir();
        Ok(())
    }

    /// Applies one event from containerd's stream.
    async fn apply_event(&mut self, myself: &ActorRef<ContainerMsg>, event: ContainerEvent) {
        let timestamp = event.timestamp;
        match event.event {
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
            Event::Deleted { pid } => {
                if let Some(task) = self.task.take() {
                    task.remove_fifos();
                }
                self.deliver(Event::Deleted { pid }, timestamp).await;
            }
            other => self.deliver(other, timestamp).await,
        }
    }

    async fn record_start(&mut self, myself: &ActorRef<ContainerMsg>, pid: u32, at: SystemTime) {
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
        if exec.mark_created(0) {
            self.deliver(Event::ExecAdded { exec_id }, at).await;
        }
    }

    async fn record_exec_started(&mut self, exec_id: ExecId, pid: u32, at: SystemTime) {
        self.record_exec_added(exec_id.clone(), at).await;
        let Some(exec) = self
            .task
            .as_mut()
            .and_then(|task| task.execs.get_mut(&exec_id))
        else {
            return;
        };
        if exec.mark_started(pid) {
            self.deliver(Event::ExecStarted { exec_id, pid }, at).await;
        }
    }

    /// Records an exit from any source and reports it if it is news. The init exit is only
    /// stored here; [`Self::hold_or_release_init_exit`] decides when it goes out.
    async fn record_exit(
        &mut self,
        process: ProcessId,
        pid: u32,
        status: ExitStatus,
        synthetic: Option<SyntheticReason>,
        at: SystemTime,
    ) {
        let tracker = self.tracker.clone();
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
        let pid = if pid == 0 {
            state.pid.unwrap_or(0)
        } else {
            pid
        };
        if !state.mark_exited(pid, status) {
            return;
        }
        if process == ProcessId::Init {
            task.held_init_exit = Some(HeldExit {
                pid,
                status,
                synthetic,
            });
            return;
        }
        state.answer_waiters(&tracker);
        let event = Event::Exited {
            process,
            pid,
            status,
            synthetic,
        };
        self.deliver(event, at).await;
    }

    /// Reports a held init exit once no exec is left running; otherwise schedules
    /// [`ContainerMsg::ReleaseInitExit`] after the hold bound.
    async fn hold_or_release_init_exit(&mut self, myself: &ActorRef<ContainerMsg>) {
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
    async fn release_init_exit(&mut self, force: bool) {
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
            self.record_exit(
                process,
                0,
                synthetic,
                Some(SyntheticReason::ContainerExited),
                SystemTime::now(),
            )
            .await;
        }
        let tracker = self.tracker.clone();
        let Some(task) = self.task.as_mut() else {
            return;
        };
        task.held_init_exit = None;
        task.init.answer_waiters(&tracker);
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
    async fn reconcile(&mut self, myself: &ActorRef<ContainerMsg>) {
        let Some(task) = self.task.as_ref() else {
            return;
        };
        let mut pending: Vec<ProcessId> = task
            .execs
            .iter()
            .filter(|(_, exec)| exec.exit_status().is_none())
            .map(|(exec_id, _)| ProcessId::Exec(exec_id.clone()))
            .collect();
        if task.init.exit_status().is_none() {
            pending.push(ProcessId::Init);
        }
        for process in pending {
            self.reconcile_process(process).await;
        }
        self.hold_or_release_init_exit(myself).await;
    }

    async fn reconcile_process(&mut self, process: ProcessId) {
        let request = GetRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id_text(&process),
        };
        let mut tasks = self.services.tasks();
        let now = SystemTime::now();
        match self.call(Operation::Status, tasks.get(request)).await {
            Ok(response) => {
                let Some(info) = response.process else {
                    return;
                };
                if info.status != TaskStatus::Stopped as i32 {
                    return;
                }
                let status = ExitStatus {
                    code: info.exit_status,
                    exited_at: system_time(info.exited_at),
                };
                tracing::info!(container_id = %self.container_id, %process, code = status.code, "exit found by reconciliation");
                self.record_exit(process, info.pid, status, None, now).await;
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {
                let status = ExitStatus {
                    code: SyntheticReason::EXIT_CODE,
                    exited_at: now,
                };
                tracing::warn!(container_id = %self.container_id, %process, "process vanished; reporting a synthetic exit");
                let reason = Some(SyntheticReason::TaskVanished);
                self.record_exit(process, 0, status, reason, now).await;
            }
            Err(error) => {
                tracing::warn!(container_id = %self.container_id, %process, %error, "cannot reconcile process");
            }
        }
    }

    async fn deliver(&self, event: Event, timestamp: SystemTime) {
        tracing::debug!(container_id = %self.container_id, ?event, queued = self.delivery.depth(), "deliver");
        let event = ContainerEvent {
            container_id: self.container_id.clone(),
            event,
            timestamp,
        };
        self.delivery.send(event).await;
    }

    /// Makes the bundle folder with owner-only permissions; returns true when it was new.
    fn make_bundle_dir(&self, operation: Operation) -> Result<bool, Error> {
        use std::os::unix::fs::DirBuilderExt;

        if let Some(parent) = self.bundle_dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| self.io_error(operation, source))?;
        }
        match std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.bundle_dir)
        {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(self.io_error(operation, source)),
        }
    }

    /// Removes the bundle folder, which holds nothing but FIFOs keel made and removed.
    fn remove_bundle_dir(&self) {
        if let Err(error) = std::fs::remove_dir(&self.bundle_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container_id = %self.container_id, path = %self.bundle_dir.display(), %error, "cannot remove bundle folder");
        }
    }

    async fn call<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        let timeout = self.services.call_timeout();
        call_with_deadline(operation, &self.target, timeout, call).await
    }

    fn rejected(&self, operation: Operation, kind: ErrorKind, reason: &str) -> Error {
        Error::Rejected {
            operation,
            target: self.target.clone(),
            kind,
            reason: reason.to_owned(),
        }
    }

    fn io_error(&self, operation: Operation, source: std::io::Error) -> Error {
        Error::Io {
            operation,
            target: self.target.clone(),
            path: self.bundle_dir.clone(),
            source,
        }
    }

    fn process_target(&self, process: &ProcessId) -> Target {
        match process {
            ProcessId::Init => self.target.clone(),
            ProcessId::Exec(exec_id) => Target::Exec(self.container_id.clone(), exec_id.clone()),
        }
    }
}

/// Returns containerd's form of a process id: empty for the init process.
fn exec_id_text(process: &ProcessId) -> String {
    process.exec_id().map(ExecId::to_string).unwrap_or_default()
}

fn system_time(timestamp: Option<prost_types::Timestamp>) -> SystemTime {
    timestamp
        .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
        .unwrap_or_else(SystemTime::now)
}
