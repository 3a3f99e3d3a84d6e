//! Task lifecycle and control requests of the container actor.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::{
    CheckpointTaskRequest, CloseIoRequest, Container, CreateContainerRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteResponse, DeleteTaskRequest, GetContainerRequest, GetRequest,
    KillRequest, PauseTaskRequest, ResizePtyRequest, ResumeTaskRequest, StartRequest,
    UpdateTaskRequest,
};
use containerd_client::types::v1::Status as TaskStatus;
use keel_connection::{Services, call_with_deadline};
use keel_types::{
    ContainerId, Error, ErrorKind, Event, ExecId, ExitStatus, Operation, ProcessId, ProcessStatus,
    SyntheticReason, Target,
};
use ractor::ActorRef;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::RuncOptions;
use crate::actor::{
    Attached, ContainerMsg, ContainerState, CreateContainer, CreateTask, Reply, SpecFacts,
    exec_id_text, system_time,
};
use crate::folders::{check_dir_if_present, ensure_private_dir, ensure_state_dir, remove_fifos_in};
use crate::process::{ProcessRef, ProcessState, WaitUntil};
use crate::runtime::CheckpointOptions;
use crate::stdin_eof::wake_stdin_reader;
use crate::stdio::{FifoSet, ProcessIo};

/// The type URL containerd expects for an OCI runtime spec.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The type URL containerd expects for OCI Linux resources.
const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// The pause between the two deletes that must both find no record before a create with an
/// unknown outcome counts as never carried out. containerd may run a create it received before
/// a freeze after a delete sent later, so one "not found" is not enough.
const UNCONFIRMED_CREATE_RECHECK: Duration = Duration::from_millis(250);

/// The failed attempt after which the removal of a create with an unknown outcome logs that
/// containerd still does not reply: about 20 s in while containerd is down.
const UNANSWERED_UNDO_WARNING: u32 = 16;

/// The file name prefix of the init process's FIFOs.
const INIT_FIFO_PREFIX: &str = "init";

/// SIGKILL's number.
const SIGKILL: u32 = 9;

/// The logs criu writes into its work folder when checkpointing and restoring.
const CRIU_LOG_FILES: [&str; 2] = ["dump.log", "restore.log"];

/// The start of the name of each criu work folder in a bundle folder.
const CRIU_WORK_PREFIX: &str = "criu-work-";

/// How many lines of a criu log a failed checkpoint or restore writes to the log.
const CRIU_LOG_TAIL_LINES: usize = 30;

/// A task and its processes.
#[derive(Debug)]
pub(crate) struct TaskState {
    pub(crate) init: ProcessState,
    pub(crate) execs: HashMap<ExecId, ProcessState>,
    /// The init exit, held until the execs have reported theirs.
    pub(crate) held_init_exit: Option<HeldExit>,
    /// Whether the task is frozen.
    pub(crate) paused: bool,
}

/// An init exit recorded but not yet reported.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeldExit {
    pub(crate) pid: u32,
    pub(crate) status: ExitStatus,
    pub(crate) synthetic: Option<SyntheticReason>,
}

impl TaskState {
    /// Releases the stdio of every process of the task; see [`ProcessState::release_stdio`].
    pub(crate) fn release_stdio(&self) {
        self.init.release_stdio();
        for exec in self.execs.values() {
            exec.release_stdio();
        }
    }

    /// Makes the record of a task keel found in containerd or learned of from an event.
    pub(crate) fn new(init_fifos: FifoSet) -> Self {
        Self::with_init(ProcessState::new(init_fifos))
    }

    /// Makes the record of a task keel creates.
    fn created(init_fifos: FifoSet) -> Self {
        Self::with_init(ProcessState::created(init_fifos))
    }

    fn with_init(init: ProcessState) -> Self {
        Self {
            init,
            execs: HashMap::new(),
            held_init_exit: None,
            paused: false,
        }
    }

    pub(crate) fn process(&self, process: &ProcessId) -> Option<&ProcessState> {
        match process {
            ProcessId::Init => Some(&self.init),
            ProcessId::Exec(exec_id) => self.execs.get(exec_id),
        }
    }

    pub(crate) fn process_mut(&mut self, process: &ProcessId) -> Option<&mut ProcessState> {
        match process {
            ProcessId::Init => Some(&mut self.init),
            ProcessId::Exec(exec_id) => self.execs.get_mut(exec_id),
        }
    }

    /// Returns the execs that started and have not reported an exit.
    pub(crate) fn running_execs(&self) -> Vec<ExecId> {
        self.execs
            .iter()
            .filter(|(_, exec)| exec.has_started() && exec.exit_status().is_none())
            .map(|(exec_id, _)| exec_id.clone())
            .collect()
    }
}

impl ContainerState {
    pub(crate) async fn create(&mut self, request: CreateContainer) -> Result<(), Error> {
        self.spec_facts = Some(request.spec_facts);
        self.check_bundle_dir(Operation::CreateContainer)?;
        let container = Container {
            id: self.container_id.to_string(),
            labels: request.labels,
            runtime: Some(ContainerRuntime {
                name: request.runtime.name,
                options: request.runtime.runc.as_ref().map(RuncOptions::to_any),
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_owned(),
                value: request.spec_json,
            }),
            ..Container::default()
        };
        let request_message = CreateContainerRequest {
            container: Some(container),
        };
        let mut containers = self.services.containers();
        self.call(
            Operation::CreateContainer,
            containers.create(request_message),
        )
        .await?;
        self.runc_options = request.runtime.runc;
        Ok(())
    }

    /// Loads the container record, with its runtime options and spec user, and the task's state.
    /// Uses `record` when the caller just read it from containerd, instead of reading it again.
    pub(crate) async fn load(&mut self, record: Option<Container>) -> Result<(), Error> {
        let record = match record {
            Some(record) => Some(record),
            None => {
                let request = GetContainerRequest {
                    id: self.container_id.to_string(),
                };
                let mut containers = self.services.containers();
                self.call(Operation::LoadContainer, containers.get(request))
                    .await?
                    .container
            }
        };
        if let Some(container) = record {
            self.runc_options = container
                .runtime
                .as_ref()
                .and_then(|runtime| runtime.options.as_ref())
                .and_then(RuncOptions::from_any)
                .and_then(Result::ok);
            let spec = container.spec.and_then(|spec| {
                serde_json::from_slice::<oci_spec::runtime::Spec>(&spec.value).ok()
            });
            self.spec_facts = spec.as_ref().map(SpecFacts::of);
        }
        self.check_bundle_dir(Operation::LoadContainer)?;

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
        // Adopting the init FIFOs lets the task delete remove them, as for a task keel created.
        let fifos = self.adopt_fifos(&ProcessId::Init, &process);
        let mut task = TaskState::new(fifos);
        self.take_over_links(&ProcessId::Init, &mut task.init);
        task.init.mark_created(process.pid);
        if process.status != TaskStatus::Created as i32 {
            task.init.mark_started(process.pid);
        }
        task.paused = process.status == TaskStatus::Paused as i32;
        self.task = Some(task);
        // A task that stopped while no actor served the container reports its exit here. The
        // caller releases it once the execs are known.
        if process.status == TaskStatus::Stopped as i32 {
            let status = ExitStatus {
                code: process.exit_status,
                exited_at: system_time(process.exited_at),
            };
            self.record_exit(
                ProcessId::Init,
                process.pid,
                status,
                None,
                SystemTime::now(),
            )
            .await;
        }
        Ok(())
    }

    /// Starts tracking the exec processes that run in the loaded task, so that an actor which
    /// replaced a failed one serves the handles made before and reconciles these processes'
    /// exits. Listing the processes makes the shim run `runc ps`, so a plain load skips it.
    pub(crate) async fn adopt_running_execs(&mut self) {
        let running = self.task.as_ref().is_some_and(|task| {
            task.init.pid.is_some_and(|pid| pid != 0) && task.init.exit_status().is_none()
        });
        if !running {
            return;
        }
        let processes = match self.processes().await {
            Ok(processes) => processes,
            Err(error) => {
                tracing::warn!(container_id = %self.container_id, %error, "cannot list the processes of the reloaded task; its running execs are tracked once a handle names them");
                return;
            }
        };
        for exec_id in processes.into_iter().filter_map(|process| process.exec_id) {
            if let Err(error) = self.adopt_exec(&exec_id).await {
                tracing::warn!(container_id = %self.container_id, %exec_id, %error, "cannot adopt a running exec");
            }
        }
    }

    /// Returns the FIFOs containerd reports for `process`, or none when they are not keel's.
    fn adopt_fifos(
        &self,
        process: &ProcessId,
        info: &containerd_client::types::v1::Process,
    ) -> FifoSet {
        let paths = [
            info.stdin.as_str(),
            info.stdout.as_str(),
            info.stderr.as_str(),
        ];
        FifoSet::adopt(&self.bundle_dir, paths).unwrap_or_else(|error| {
            tracing::warn!(container_id = %self.container_id, %process, %error, "cannot adopt the FIFOs of a loaded process");
            FifoSet::default()
        })
    }

    /// Starts tracking the exec that `handle` names, when this actor has neither a record nor
    /// a remembered exit of it and containerd still has the exec.
    pub(crate) async fn adopt_exec_of(&mut self, handle: &ProcessRef) {
        let Some(exec_id) = handle.process.exec_id() else {
            return;
        };
        if self.process_of(handle).is_some() || self.retired_exit(handle).is_some() {
            return;
        }
        match self.adopt_exec(exec_id).await {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(container_id = %self.container_id, %exec_id, %error, "cannot look up an exec of an earlier handle");
            }
        }
    }

    /// Starts tracking the exec `exec_id` with the FIFOs and state containerd reports for it.
    async fn adopt_exec(&mut self, exec_id: &ExecId) -> Result<(), Error> {
        let tracked = self
            .task
            .as_ref()
            .is_some_and(|task| task.execs.contains_key(exec_id));
        if tracked {
            return Ok(());
        }

        let process = ProcessId::Exec(exec_id.clone());
        let request = GetRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        let response = self
            .call_for(Operation::Status, &process, tasks.get(request))
            .await?;
        let Some(info) = response.process else {
            return Ok(());
        };

        let fifos = self.adopt_fifos(&process, &info);
        let mut state = ProcessState::new(fifos);
        self.take_over_links(&process, &mut state);
        state.mark_created(info.pid);
        if info.status != TaskStatus::Created as i32 {
            state.mark_started(info.pid);
        }
        if let Some(task) = self.task.as_mut() {
            task.execs.insert(exec_id.clone(), state);
        }
        // An exec that exited while no actor served the container reports its exit here.
        if info.status == TaskStatus::Stopped as i32 {
            let status = ExitStatus {
                code: info.exit_status,
                exited_at: system_time(info.exited_at),
            };
            self.record_exit(process, info.pid, status, None, SystemTime::now())
                .await;
        }
        Ok(())
    }

    pub(crate) async fn create_task(
        &mut self,
        request: CreateTask,
    ) -> Result<(ProcessIo, ProcessRef), Error> {
        request.stdio.check()?;
        if let Some(terminal) = self.spec_facts.as_ref().map(|facts| facts.terminal)
            && terminal != request.stdio.terminal
        {
            let reason = if terminal {
                "the spec's process runs on a terminal; request `terminal` in the stdio too"
            } else {
                "the spec's process has no terminal; set `terminal` in the spec's process too, or \
                 leave it out of the stdio"
            };
            return Err(Error::InvalidArgument {
                field: "stdio",
                value: format!("{:?}", request.stdio),
                reason: reason.to_owned(),
            });
        }
        let operation = match request.restore_from {
            Some(_) => Operation::Restore,
            None => Operation::CreateTask,
        };
        if self.task.is_some() {
            return Err(self.rejected(
                operation,
                ErrorKind::AlreadyExists,
                "the container has a task; delete it before creating another",
            ));
        }
        self.check_runc_root(operation)?;
        // From here on containerd may have a task that keel does not track, for example when
        // the create's reply is lost.
        self.task_delete_confirmed = false;
        let fifos = FifoSet::create(&self.bundle_dir, INIT_FIFO_PREFIX, request.stdio)
            .map_err(|source| self.io_error(operation, source))?;
        let (uid, gid) = self.spec_facts.as_ref().map_or((0, 0), |facts| facts.user);
        if (uid, gid) != (0, 0)
            && let Err(source) = fifos.chown(uid, gid)
        {
            fifos.remove();
            return Err(self.io_error(operation, source));
        }
        let task = TaskState::created(fifos.clone());
        self.record_links(&ProcessId::Init, &task.init);
        let io = match fifos.open(&task.init) {
            Ok(io) => io,
            Err(source) => {
                fifos.remove();
                return Err(self.io_error(operation, source));
            }
        };
        let work_dir = match &request.restore_from {
            Some(_) => Some(self.make_criu_work_dir(operation)?),
            None => None,
        };
        let options = request.restore_from.as_ref().map(|image| {
            let mut options = self.runc_options.clone().unwrap_or_default();
            options.criu_image_path = image.to_string_lossy().into_owned();
            options.criu_work_path = work_dir
                .as_ref()
                .map(|dir| dir.to_string_lossy().into_owned())
                .unwrap_or_default();
            options.to_any()
        });
        let [stdin, stdout, stderr] = fifos.request_paths();
        let create = CreateTaskRequest {
            container_id: self.container_id.to_string(),
            stdin,
            stdout,
            stderr,
            terminal: request.stdio.terminal,
            options,
            ..CreateTaskRequest::default()
        };
        let mut tasks = self.services.tasks();
        let result = self.call(operation, tasks.create(create)).await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                if let Some(work_dir) = work_dir {
                    finish_work_dir(&self.container_id, &work_dir, true);
                }
                drop(io);
                fifos.remove();
                return Err(error);
            }
        };
        let mut task = task;
        // A new task starts its own count of out-of-memory kills.
        self.oom_reported = 0;
        if request.restore_from.is_none() {
            let pid = response.pid;
            task.init.mark_created(pid);
            let init = task.init.handle_ref(ProcessId::Init);
            self.task = Some(task);
            self.deliver(Event::Created { pid }, SystemTime::now())
                .await;
            return Ok((io, init));
        }

        // containerd 1.6's runc shim only records the image at create and runs `runc restore`
        // at start, which needs the criu work folder and returns the restored pid.
        self.task = Some(task);
        let start = StartRequest {
            container_id: self.container_id.to_string(),
            exec_id: String::new(),
        };
        let started = self.call(operation, tasks.start(start)).await;
        if let Some(work_dir) = work_dir {
            finish_work_dir(&self.container_id, &work_dir, started.is_err());
        }
        let pid = match started {
            Ok(response) => response.pid,
            Err(error) => {
                drop(io);
                self.discard_failed_task().await;
                return Err(error);
            }
        };
        let Some(task) = self.task.as_mut() else {
            return Err(self.no_task(operation));
        };
        task.init.mark_created(pid);
        task.init.mark_started(pid);
        let init = task.init.handle_ref(ProcessId::Init);
        let now = SystemTime::now();
        self.deliver(Event::Created { pid }, now).await;
        self.deliver(Event::Started { pid }, now).await;
        Ok((io, init))
    }

    pub(crate) async fn start_task(
        &mut self,
        myself: &ActorRef<ContainerMsg>,
    ) -> Result<u32, Error> {
        let Some(task) = self.task.as_ref() else {
            return Err(self.no_task(Operation::StartTask));
        };
        if task.init.has_started() {
            return Err(self.rejected(
                Operation::StartTask,
                ErrorKind::FailedPrecondition,
                "the task has already started",
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
            signal: SIGKILL,
            all: true,
            ..KillRequest::default()
        };
        let mut tasks = self.services.tasks();
        let _ = self.call(Operation::StartTask, tasks.kill(kill)).await;
        let delete = DeleteTaskRequest {
            container_id: self.container_id.to_string(),
        };
        let reported = self
            .task
            .as_ref()
            .is_some_and(|task| task.init.created_reported());
        match self.call(Operation::StartTask, tasks.delete(delete)).await {
            // The backend received `Created`, so it also receives the exit and `Deleted`.
            // A restore reports nothing before its start succeeds.
            Ok(response) if reported => {
                self.finish_task_delete(&response).await;
                return;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(container_id = %self.container_id, %error, "cannot delete task after failed start");
            }
        }
        if let Some(mut task) = self.task.take() {
            task.release_stdio();
            remove_fifos_in(&self.bundle_dir);
            let error = || {
                self.rejected(
                    Operation::Wait,
                    ErrorKind::NotFound,
                    "the task failed to start",
                )
            };
            task.init.fail_waiters(error);
        }
    }

    /// Reopens the FIFOs containerd reports for the task and its running execs.
    pub(crate) async fn attach(&mut self) -> Result<Attached, Error> {
        if self.task.is_none() {
            return Err(self.no_task(Operation::Attach));
        }
        let init = self.attach_process(&ProcessId::Init).await?;
        let exec_ids: Vec<ExecId> = self
            .processes()
            .await?
            .into_iter()
            .filter_map(|info| info.exec_id)
            .collect();
        let mut execs = Vec::new();
        for exec_id in exec_ids {
            let process = ProcessId::Exec(exec_id);
            match self.attach_process(&process).await {
                Ok(attached) => execs.push(attached),
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(Attached { init, execs })
    }

    async fn attach_process(
        &mut self,
        process: &ProcessId,
    ) -> Result<(ProcessRef, ProcessIo), Error> {
        let request = GetRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id_text(process),
        };
        let mut tasks = self.services.tasks();
        let response = self
            .call_for(Operation::Attach, process, tasks.get(request))
            .await?;
        let Some(info) = response.process else {
            return Err(self.rejected_for(
                Operation::Attach,
                process,
                ErrorKind::NotFound,
                "no such process",
            ));
        };
        let paths = [
            info.stdin.as_str(),
            info.stdout.as_str(),
            info.stderr.as_str(),
        ];
        let fifos = FifoSet::adopt(&self.bundle_dir, paths)
            .map_err(|source| self.io_error(Operation::Attach, source))?;
        let Some(task) = self.task.as_mut() else {
            return Err(self.no_task(Operation::Attach));
        };
        let state = match process {
            ProcessId::Init => &mut task.init,
            ProcessId::Exec(exec_id) => task
                .execs
                .entry(exec_id.clone())
                .or_insert_with(|| ProcessState::new(FifoSet::default())),
        };
        state.mark_created(info.pid);
        state.mark_started(info.pid);
        state.fifos = fifos.clone();
        // Background reads of output streams dropped before this attach would compete with
        // the new streams for the output.
        state.links.drains_end.cancel();
        state.links.drains_end = CancellationToken::new();
        let handle = state.handle_ref(process.clone());
        self.registry
            .links
            .record(&self.container_id, process, &state.links);
        let io = fifos
            .open(state)
            .map_err(|source| self.io_error(Operation::Attach, source))?;
        Ok((handle, io))
    }

    /// Replies with the exit of the process `handle` was made for, once known: from its record,
    /// or from the retired record after keel stopped tracking it.
    pub(crate) fn wait(&mut self, handle: &ProcessRef, until: WaitUntil, reply: Reply<ExitStatus>) {
        let tracker = self.tracker.clone();
        // A deleted exec without an exit is one whose start failed: it will never exit.
        if let Some(state) = self
            .process_of_mut(handle)
            .filter(|state| !state.deleted || state.exit_status().is_some())
        {
            state.add_waiter(until, reply, &tracker);
            return;
        }
        let result = match self.retired_exit(handle) {
            Some(status) => Ok(status),
            None => Err(self.gone(handle, Operation::Wait)),
        };
        let _ = reply.send(result);
    }

    pub(crate) async fn kill(
        &mut self,
        process: &ProcessId,
        signal: u32,
        all: bool,
    ) -> Result<(), Error> {
        if signal > MAX_SIGNAL {
            return Err(Error::InvalidArgument {
                field: "signal",
                value: signal.to_string(),
                reason: format!(
                    "must be a Linux signal number from 1 to {MAX_SIGNAL}, or 0 to check that the process exists"
                ),
            });
        }
        let request = KillRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id_text(process),
            signal,
            all,
        };
        let mut tasks = self.services.tasks();
        self.call_for(Operation::Kill, process, tasks.kill(request))
            .await?;
        // A frozen process cannot die: thaw the task so SIGKILL takes effect at once.
        if signal == SIGKILL
            && self.task.as_ref().is_some_and(|task| task.paused)
            && let Err(error) = self.resume().await
        {
            tracing::warn!(container_id = %self.container_id, %error, "cannot resume paused task after kill");
        }
        Ok(())
    }

    /// Closes stdin now, or at start for an exec the shim has not opened yet. A process that
    /// exited has no stdin to close, so that succeeds at once.
    pub(crate) async fn close_stdin(&mut self, handle: &ProcessRef) -> Result<(), Error> {
        if self.retired_exit(handle).is_some() {
            return Ok(());
        }
        let Some(state) = self.process_of_mut(handle) else {
            return Err(self.gone(handle, Operation::CloseStdin));
        };
        if state.exit_status().is_some() {
            return Ok(());
        }
        if matches!(handle.process, ProcessId::Exec(_)) && !state.has_started() {
            state.close_stdin_pending = true;
            return Ok(());
        }
        self.send_close_io(&handle.process).await
    }

    pub(crate) async fn send_close_io(&self, process: &ProcessId) -> Result<(), Error> {
        let request = CloseIoRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id_text(process),
            stdin: true,
        };
        let mut tasks = self.services.tasks();
        self.call_for(Operation::CloseStdin, process, tasks.close_io(request))
            .await?;
        let stdin_fifo = self
            .task
            .as_ref()
            .and_then(|task| task.process(process))
            .and_then(|state| state.fifos.stdin.clone());
        if let Some(path) = stdin_fifo {
            wake_stdin_reader(path);
        }
        Ok(())
    }

    /// Resizes a process's terminal now, or at start for an exec the shim has not started yet,
    /// because the shim makes an exec's terminal only when it starts the exec.
    pub(crate) async fn resize(
        &mut self,
        handle: &ProcessRef,
        width: u32,
        height: u32,
    ) -> Result<(), Error> {
        if let ProcessId::Exec(_) = handle.process
            && let Some(state) = self.process_of_mut(handle)
            && !state.has_started()
        {
            state.resize_pending = Some((width, height));
            return Ok(());
        }
        self.send_resize(&handle.process, width, height).await
    }

    pub(crate) async fn send_resize(
        &self,
        process: &ProcessId,
        width: u32,
        height: u32,
    ) -> Result<(), Error> {
        let request = ResizePtyRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id_text(process),
            width,
            height,
        };
        let mut tasks = self.services.tasks();
        self.call_for(Operation::Resize, process, tasks.resize_pty(request))
            .await
            .map(drop)
    }

    pub(crate) async fn pause(&mut self) -> Result<(), Error> {
        self.require_live_task(Operation::Pause)?;
        if self.task.as_ref().is_some_and(|task| task.paused) {
            return Err(self.rejected(
                Operation::Pause,
                ErrorKind::FailedPrecondition,
                "the task is already paused",
            ));
        }
        let request = PauseTaskRequest {
            container_id: self.container_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        if let Err(error) = self.call(Operation::Pause, tasks.pause(request)).await {
            return Err(self.stopped_task_error(error, Operation::Pause).await);
        }
        if let Some(task) = self.task.as_mut() {
            task.paused = true;
        }
        Ok(())
    }

    pub(crate) async fn resume(&mut self) -> Result<(), Error> {
        self.require_live_task(Operation::Resume)?;
        let request = ResumeTaskRequest {
            container_id: self.container_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        if let Err(error) = self.call(Operation::Resume, tasks.resume(request)).await {
            let running = |status: &ProcessStatus| matches!(status, ProcessStatus::Running);
            return Err(self
                .precondition_error(
                    error,
                    Operation::Resume,
                    &ProcessId::Init,
                    running,
                    "the task is not paused",
                )
                .await);
        }
        if let Some(task) = self.task.as_mut() {
            task.paused = false;
        }
        Ok(())
    }

    /// Fails unless the task exists and its init process has not exited.
    fn require_live_task(&self, operation: Operation) -> Result<(), Error> {
        let Some(task) = self.task.as_ref() else {
            return Err(self.no_task(operation));
        };
        if task.init.exit_status().is_some() {
            return Err(self.rejected(
                operation,
                ErrorKind::FailedPrecondition,
                "the task has stopped",
            ));
        }
        Ok(())
    }

    pub(crate) async fn update(
        &mut self,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), Error> {
        let value = serde_json::to_vec(resources).map_err(|error| Error::InvalidArgument {
            field: "resources",
            value: String::new(),
            reason: format!("cannot be encoded as JSON: {error}"),
        })?;
        let request = UpdateTaskRequest {
            container_id: self.container_id.to_string(),
            resources: Some(prost_types::Any {
                type_url: RESOURCES_TYPE_URL.to_owned(),
                value,
            }),
            ..UpdateTaskRequest::default()
        };
        let mut tasks = self.services.tasks();
        match self.call(Operation::Update, tasks.update(request)).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.stopped_task_error(error, Operation::Update).await),
        }
    }

    /// Checkpoints into the caller's folder; containerd's content store is not used, so no
    /// image, lease or temporary content is left there.
    pub(crate) async fn checkpoint(&mut self, dir: &Path, exit: bool) -> Result<(), Error> {
        self.require_live_task(Operation::Checkpoint)?;
        let created = prepare_checkpoint_dir(dir).map_err(|reason| Error::InvalidArgument {
            field: "checkpoint folder",
            value: dir.display().to_string(),
            reason,
        })?;
        let work_dir = match self.make_criu_work_dir(Operation::Checkpoint) {
            Ok(work_dir) => work_dir,
            Err(error) => {
                remove_created_dir(created.as_deref());
                return Err(error);
            }
        };
        let options = CheckpointOptions {
            exit,
            image_path: dir.to_string_lossy().into_owned(),
            work_path: work_dir.to_string_lossy().into_owned(),
        };
        let request = CheckpointTaskRequest {
            container_id: self.container_id.to_string(),
            options: Some(options.to_any()),
            ..CheckpointTaskRequest::default()
        };
        let mut tasks = self.services.tasks();
        let result = self
            .call(Operation::Checkpoint, tasks.checkpoint(request))
            .await;
        finish_work_dir(&self.container_id, &work_dir, result.is_err());
        match result {
            Ok(_) => Ok(()),
            // The shim may have finished the dump, or may still be writing it, while containerd
            // did not reply. The folder can hold a complete checkpoint, so it stays.
            Err(error) if is_unanswered(&error) => {
                tracing::warn!(container_id = %self.container_id, path = %dir.display(), %error, "checkpoint not confirmed; its folder is kept and may hold a complete checkpoint");
                Err(error)
            }
            Err(error) => {
                remove_created_dir(created.as_deref());
                Err(self.stopped_task_error(error, Operation::Checkpoint).await)
            }
        }
    }

    /// Turns containerd's internal error into failed precondition when the task's init process
    /// has exited, which keel may not have learned yet when it sent the request.
    async fn stopped_task_error(&self, error: Error, operation: Operation) -> Error {
        let stopped = |status: &ProcessStatus| matches!(status, ProcessStatus::Stopped(_));
        self.precondition_error(
            error,
            operation,
            &ProcessId::Init,
            stopped,
            "the task has stopped",
        )
        .await
    }

    /// Deletes the task `task` names, its init process's reference. A task keel already
    /// dropped, because it was deleted or vanished, counts as deleted: its recorded init exit
    /// is returned while keel remembers it.
    pub(crate) async fn delete_task_of(&mut self, task: &ProcessRef) -> Result<ExitStatus, Error> {
        if let Some(status) = self.retired_exit(task) {
            return Ok(status);
        }
        self.check_handle(task, Operation::DeleteTask)?;
        self.delete_task().await
    }

    pub(crate) async fn delete_task(&mut self) -> Result<ExitStatus, Error> {
        let request = DeleteTaskRequest {
            container_id: self.container_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        let response = match self
            .call(Operation::DeleteTask, tasks.delete(request))
            .await
        {
            Ok(response) => response,
            // A delete whose reply was lost, or containerd's clean-up after a dead shim,
            // removed the task already.
            Err(error) if error.kind() == ErrorKind::NotFound && self.task.is_some() => {
                return self.forget_vanished_task(error).await;
            }
            Err(error) => return Err(error),
        };
        Ok(self.finish_task_delete(&response).await)
    }

    /// Reports what a successful task delete ends: the init exit, if no event reported it, and
    /// `Deleted`. Forgets the task and replies to the waiters of its processes.
    async fn finish_task_delete(&mut self, response: &DeleteResponse) -> ExitStatus {
        self.task_delete_confirmed = true;
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
            remove_fifos_in(&self.bundle_dir);
            self.retire_task(&task);
            for (exec_id, mut exec) in task.execs.drain() {
                let process = ProcessId::Exec(exec_id);
                let error = self.rejected_for(
                    Operation::Wait,
                    &process,
                    ErrorKind::NotFound,
                    "the task was deleted",
                );
                exec.fail_waiters(|| error_clone(&error));
            }
        }
        let deleted = Event::Deleted {
            pid: response.pid,
            status: Some(status),
        };
        self.deliver(deleted, SystemTime::now()).await;
        status
    }

    pub(crate) async fn delete(&mut self) -> Result<(), Error> {
        // containerd deletes a container record even while its task runs, which would leave
        // the task and its shim behind; so containerd's view counts, not only keel's. After
        // keel's own task delete succeeded, containerd has no task to ask about, and the two
        // calls are skipped.
        let unconfirmed = !self.task_delete_confirmed;
        if unconfirmed {
            self.adopt_untracked_task().await?;
            self.delete_leftover_task().await?;
        }
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
        match self
            .call(Operation::DeleteContainer, containers.delete(request))
            .await
        {
            Ok(_) => {}
            // A delete whose reply was lost when containerd died removed the record already.
            Err(error) if error.kind() == ErrorKind::NotFound => {
                tracing::debug!(container_id = %self.container_id, "container record already gone");
            }
            Err(error) => return Err(error),
        }
        if unconfirmed {
            self.remove_runc_leftovers().await;
        }
        self.remove_bundle_dir();
        self.registry.links.forget(&self.container_id);
        Ok(())
    }

    /// Records the stdio links of a process keel made with FIFOs, for an actor that may have
    /// to take over from this one.
    pub(crate) fn record_links(&self, process: &ProcessId, state: &ProcessState) {
        if !state.fifos.is_empty() {
            self.registry
                .links
                .record(&self.container_id, process, &state.links);
        }
    }

    /// Gives a process found in containerd the stdio links that a failed actor handed out for
    /// it, so the caller's streams of it end at its exit as before.
    fn take_over_links(&self, process: &ProcessId, state: &mut ProcessState) {
        if let Some(links) = self.registry.links.find(&self.container_id, process) {
            state.links = links;
        }
    }

    /// Makes the state and namespace folders owner-only and checks the bundle path, so a
    /// symlink or a file planted at the namespace or bundle path is rejected before the
    /// container exists. The bundle folder itself is made only when something goes in it:
    /// FIFOs (by [`FifoSet::create`]) or a criu work folder. A container without stdio never
    /// needs one, which saves making and removing a folder per container.
    fn check_bundle_dir(&self, operation: Operation) -> Result<(), Error> {
        let folder_error = |path: &Path, source| Error::Io {
            operation,
            target: self.target.clone(),
            path: path.to_owned(),
            source,
        };
        let Some(namespace_dir) = self.bundle_dir.parent() else {
            return Err(self.io_error(
                operation,
                std::io::Error::other("bundle folder has no parent"),
            ));
        };
        if let Some(state_dir) = namespace_dir.parent() {
            ensure_state_dir(state_dir).map_err(|source| folder_error(state_dir, source))?;
        }
        ensure_private_dir(namespace_dir).map_err(|source| folder_error(namespace_dir, source))?;
        check_dir_if_present(&self.bundle_dir)
            .map(drop)
            .map_err(|source| folder_error(&self.bundle_dir, source))
    }

    /// Makes runc's state folder when it lies in keel's state folder, as keel's default one
    /// does, or checks it when it exists. runc makes a missing one itself and follows a
    /// symlink planted there, so it would write outside keel's folders.
    fn check_runc_root(&self, operation: Operation) -> Result<(), Error> {
        let Some(root) = self
            .runc_options
            .as_ref()
            .map(|options| Path::new(&options.root))
            .filter(|root| !root.as_os_str().is_empty())
        else {
            return Ok(());
        };
        let state_dir = self.bundle_dir.parent().and_then(Path::parent);
        if state_dir.is_some_and(|state_dir| root.starts_with(state_dir)) {
            ensure_private_dir(root).map_err(|source| self.io_error(operation, source))?;
        }
        Ok(())
    }

    /// Makes a fresh folder for criu's logs inside the bundle folder, so concurrent restores
    /// from one image never share one. The folder a failed run kept goes first.
    fn make_criu_work_dir(&mut self, operation: Operation) -> Result<std::path::PathBuf, Error> {
        ensure_private_dir(&self.bundle_dir).map_err(|source| self.io_error(operation, source))?;
        remove_kept_work_dirs(&self.container_id, &self.bundle_dir);
        self.criu_runs += 1;
        let dir = self
            .bundle_dir
            .join(format!("{CRIU_WORK_PREFIX}{}", self.criu_runs));
        ensure_private_dir(&dir).map_err(|source| self.io_error(operation, source))?;
        Ok(dir)
    }

    /// Removes the bundle folder, with any FIFO and kept criu log left in it, if it was made.
    pub(crate) fn remove_bundle_dir(&self) {
        remove_fifos_in(&self.bundle_dir);
        remove_kept_work_dirs(&self.container_id, &self.bundle_dir);
        if let Err(error) = std::fs::remove_dir(&self.bundle_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container_id = %self.container_id, path = %self.bundle_dir.display(), %error, "cannot remove bundle folder");
        }
    }
}

/// Ends a criu run in the work folder `dir`. After a success it removes the folder. After a
/// failure it logs the end of each criu log and keeps the folder, because runc's error names a
/// log in it. The next criu run of the container, or the container's delete, removes it.
fn finish_work_dir(container_id: &ContainerId, dir: &Path, failed: bool) {
    if failed {
        for name in CRIU_LOG_FILES {
            let path = dir.join(name);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(CRIU_LOG_TAIL_LINES)..].join("\n");
            tracing::warn!(%container_id, path = %path.display(), log = %tail, "criu failed");
        }
        return;
    }
    if let Err(error) = std::fs::remove_dir_all(dir) {
        tracing::warn!(%container_id, path = %dir.display(), %error, "cannot remove criu work folder");
    }
}

/// Removes the criu work folders that failed runs kept in the bundle folder `bundle_dir`.
fn remove_kept_work_dirs(container_id: &ContainerId, bundle_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(bundle_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_work_dir = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(CRIU_WORK_PREFIX));
        let is_folder = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if is_work_dir && is_folder {
            let path = entry.path();
            if let Err(error) = std::fs::remove_dir_all(&path) {
                tracing::warn!(%container_id, path = %path.display(), %error, "cannot remove criu work folder");
            }
        }
    }
}

/// Checks that `dir` can take a checkpoint: an absolute path without `..` parts, to a folder
/// that is empty or missing. criu writes dozens of files into it, which would mix with the
/// files of a folder such as `/`. Creates the folder when missing and returns the highest
/// folder it created, so a failed checkpoint can remove what it created.
///
/// # Errors
///
/// Returns the reason `dir` cannot take a checkpoint.
fn prepare_checkpoint_dir(dir: &Path) -> Result<Option<PathBuf>, String> {
    if !dir.is_absolute() {
        return Err("must be an absolute path".to_owned());
    }
    // A relative path, rejected above, is the only one whose parts can contain `.`.
    if dir.components().any(|part| part == Component::ParentDir) {
        return Err("must not contain `..`; name the folder directly".to_owned());
    }
    match std::fs::symlink_metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {
            let mut entries = std::fs::read_dir(dir).map_err(|error| error.to_string())?;
            return match entries.next() {
                None => Ok(None),
                Some(_) => Err("is not empty; checkpoint into a new or empty folder, so \
                                criu's files do not mix with others"
                    .to_owned()),
            };
        }
        Ok(_) => return Err("exists and is not a folder".to_owned()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(format!("cannot be read: {error}")),
    }
    let highest_missing = dir
        .ancestors()
        .take_while(|folder| !folder.exists())
        .last()
        .map(Path::to_owned);
    std::fs::create_dir_all(dir).map_err(|error| format!("cannot be created: {error}"))?;
    Ok(highest_missing)
}

/// Removes the folders [`prepare_checkpoint_dir`] created, after a checkpoint that failed.
fn remove_created_dir(created: Option<&Path>) {
    let Some(created) = created else {
        return;
    };
    if let Err(error) = std::fs::remove_dir_all(created) {
        tracing::warn!(path = %created.display(), %error, "failed to remove the folder of a failed checkpoint");
    }
}

/// Copies an error's kind and text for each waiter that needs one.
fn error_clone(error: &Error) -> Error {
    match error {
        Error::Rejected {
            operation,
            target,
            kind,
            reason,
        } => Error::Rejected {
            operation: *operation,
            target: target.clone(),
            kind: *kind,
            reason: reason.clone(),
        },
        other => Error::Rejected {
            operation: Operation::Wait,
            target: keel_types::Target::Containerd,
            kind: other.kind(),
            reason: other.to_string(),
        },
    }
}

/// The highest Linux signal number (`SIGRTMAX`).
const MAX_SIGNAL: u32 = 64;

/// Removes the record of a create of `container_id` whose call timed out or lost its
/// connection. containerd may still carry out such a create later, for example once a frozen
/// containerd thaws. The caller got an error for the create, so the record must not stay
/// behind.
///
/// Deletes the record until containerd confirms it gone twice. While containerd does not
/// reply, for example while it is down or frozen, it keeps trying with backoff for as long as
/// the client runs. A record left behind would make every later create of the id fail with
/// already exists. It stops once `tracker` is closed, which the client's shutdown does.
pub(crate) async fn undo_unconfirmed_create(
    services: &Services,
    container_id: &ContainerId,
    tracker: &TaskTracker,
) {
    let backoff = keel_connection::Backoff::default();
    let target = Target::Container(container_id.clone());
    let mut failed_attempts = 0;
    let mut times_absent = 0;
    while !tracker.is_closed() {
        let request = DeleteContainerRequest {
            id: container_id.to_string(),
        };
        let mut containers = services.containers();
        let result = call_with_deadline(
            Operation::DeleteContainer,
            &target,
            services.call_timeout(),
            containers.delete(request),
        )
        .await;
        let pause = match result {
            Ok(_) => {
                tracing::warn!(
                    %container_id,
                    "removed the container record of a create that had failed for the caller"
                );
                return;
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {
                times_absent += 1;
                if times_absent == 2 {
                    return;
                }
                UNCONFIRMED_CREATE_RECHECK
            }
            Err(error) if is_unanswered(&error) => {
                failed_attempts += 1;
                if failed_attempts == UNANSWERED_UNDO_WARNING {
                    tracing::warn!(
                        %container_id,
                        %error,
                        "containerd does not reply; still trying to remove the record of a \
                         create with an unknown outcome"
                    );
                }
                backoff.delay(failed_attempts)
            }
            Err(error) => {
                tracing::warn!(
                    %container_id,
                    %error,
                    "cannot remove the record of a create with an unknown outcome; load the \
                     container and delete it"
                );
                return;
            }
        };
        tokio::time::sleep(pause).await;
    }
    tracing::warn!(
        %container_id,
        "the client shut down before containerd confirmed that a create with an unknown \
         outcome left no record; load the container and delete it if it exists"
    );
}

/// Reports whether `error` leaves a call's outcome unknown: containerd did not reply in time,
/// or the connection failed, so the request may still have been carried out.
pub(crate) fn is_unanswered(error: &Error) -> bool {
    matches!(error.kind(), ErrorKind::TimedOut | ErrorKind::Unavailable)
}
