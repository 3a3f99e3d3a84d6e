//! The handle of a container's task and its init process.

use std::path::Path;

use keel_container::{
    ContainerMsg, CreateExec, OutputStream, ProcessIo, ProcessRef, StdinStream, StdioRequest,
    WaitUntil,
};
use keel_types::{
    Error, ExecId, ExitStatus, Operation, ProcessId, ProcessInfo, ProcessStatus, Stats,
};

use crate::container::Container;
use crate::held_io::HeldIo;
use crate::process::Process;
use crate::validate::{check_process, check_terminal_size, encode_checked};

/// A container's task: its init process and the caller's ends of that process's stdio.
///
/// The handle acts only on the task it was made for. After that task was deleted, requests
/// through it return not found, even when the container has a new task. A `wait` or `delete`
/// returns the deleted task's recorded init exit while keel remembers it.
#[derive(Debug)]
pub struct Task {
    container: Container,
    /// The number keel's container actor gave the init process, sent with every request.
    generation: u64,
    pid: u32,
    io: HeldIo,
}

impl Task {
    pub(crate) fn new(container: Container, init: ProcessRef, io: ProcessIo) -> Self {
        Self {
            container,
            generation: init.generation,
            pid: init.pid,
            io: HeldIo::new(io),
        }
    }

    /// The init process's pid on the host.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The container this task belongs to.
    pub fn container(&self) -> &Container {
        &self.container
    }

    /// Takes the stdout stream; `None` when not requested or already taken.
    pub fn take_stdout(&mut self) -> Option<OutputStream> {
        self.io.take_stdout()
    }

    /// Takes the stderr stream; `None` when not requested, on a terminal, or already taken.
    pub fn take_stderr(&mut self) -> Option<OutputStream> {
        self.io.take_stderr()
    }

    /// Takes the stdin stream; `None` when not requested or already taken.
    pub fn take_stdin(&mut self) -> Option<StdinStream> {
        self.io.take_stdin()
    }

    /// Returns the reference that binds a request to this handle's task.
    fn init_ref(&self) -> ProcessRef {
        ProcessRef {
            process: ProcessId::Init,
            generation: self.generation,
            pid: self.pid,
        }
    }

    /// Sends the request `build` makes from this task's init reference.
    async fn ask<T: Send + 'static>(
        &self,
        operation: Operation,
        build: impl FnOnce(ProcessRef, keel_container::Reply<T>) -> ContainerMsg,
    ) -> Result<T, Error> {
        let container = &self.container;
        let init = self.init_ref();
        container
            .ask(
                operation,
                container.target(),
                container.call_timeout() * 3,
                |reply| build(init, reply),
            )
            .await
    }

    /// Starts the created task.
    ///
    /// # Errors
    ///
    /// Returns containerd's error; the task is then killed, deleted and its FIFOs removed.
    pub async fn start(&mut self) -> Result<(), Error> {
        self.pid = self
            .ask(Operation::StartTask, ContainerMsg::StartTask)
            .await?;
        Ok(())
    }

    /// Waits until the init process exits and the output streams handed out are closed. Output
    /// streams not yet taken from this handle are dropped first, because no caller could read them.
    /// Returns the recorded exit at once when the init process exited before, also after the
    /// task was deleted while keel remembers the exit.
    ///
    /// # Errors
    ///
    /// Returns not found when the task failed to start, when keel forgot the deleted task's
    /// exit, or when the container was deleted. Returns cancelled when the client shut down.
    pub async fn wait(&self) -> Result<ExitStatus, Error> {
        self.io.release_untaken_output();
        let container = &self.container;
        container
            .wait_for_exit(
                &self.init_ref(),
                WaitUntil::OutputClosed,
                container.target(),
            )
            .await
    }

    /// Waits until the init process exits, even while another handle keeps its output streams
    /// open.
    pub(crate) async fn wait_exited(&self) -> Result<ExitStatus, Error> {
        let container = &self.container;
        container
            .wait_for_exit(&self.init_ref(), WaitUntil::Exited, container.target())
            .await
    }

    /// Sends `signal` to the init process, or to every process of the task when `all` is set.
    /// SIGKILL to a paused task also resumes it, so the kill takes effect at once.
    ///
    /// # Errors
    ///
    /// Returns not found when the process has exited, or containerd's error.
    pub async fn kill(&self, signal: u32, all: bool) -> Result<(), Error> {
        self.ask(Operation::Kill, |process, reply| ContainerMsg::Kill {
            process,
            signal,
            all,
            reply,
        })
        .await
    }

    /// Closes the init process's stdin so it reads end of file, before or after start.
    ///
    /// Drops the stdin stream this handle still holds; a stream taken with
    /// [`Task::take_stdin`] must be dropped by the caller too.
    ///
    /// # Errors
    ///
    /// Returns containerd's error.
    pub async fn close_stdin(&mut self) -> Result<(), Error> {
        drop(self.io.take_stdin());
        self.ask(Operation::CloseStdin, ContainerMsg::CloseStdin)
            .await
    }

    /// Resizes the init process's pseudo-terminal. Before the start, the size is the one the
    /// process starts with.
    ///
    /// # Errors
    ///
    /// Returns invalid argument for a side above 65535, or containerd's error. A task without a
    /// terminal ignores the size, and containerd reports success.
    pub async fn resize(&self, width: u32, height: u32) -> Result<(), Error> {
        check_terminal_size(width, height)?;
        self.ask(Operation::Resize, |process, reply| ContainerMsg::Resize {
            process,
            width,
            height,
            reply,
        })
        .await
    }

    /// Freezes every process of the task.
    ///
    /// # Errors
    ///
    /// Returns failed precondition for a stopped or already paused task.
    pub async fn pause(&self) -> Result<(), Error> {
        self.ask(Operation::Pause, ContainerMsg::Pause).await
    }

    /// Thaws a paused task.
    ///
    /// # Errors
    ///
    /// Returns failed precondition for a stopped or running task.
    pub async fn resume(&self) -> Result<(), Error> {
        self.ask(Operation::Resume, ContainerMsg::Resume).await
    }

    /// Changes the task's resource limits.
    ///
    /// # Errors
    ///
    /// Returns invalid argument for a limit the kernel would reject: a memory size below -1, a
    /// CPU period outside 1000 to 1000000 µs, or a CPU quota below 1000 µs other than -1.
    /// Returns failed precondition for a stopped task, or containerd's error.
    pub async fn update(&self, resources: oci_spec::runtime::LinuxResources) -> Result<(), Error> {
        crate::validate::check_resources(&resources)?;
        self.ask(Operation::Update, |task, reply| {
            ContainerMsg::Update(task, Box::new(resources), reply)
        })
        .await
    }

    /// Returns the task's cgroup statistics.
    ///
    /// # Errors
    ///
    /// Returns not found when the task no longer exists.
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.ask(Operation::Stats, ContainerMsg::Stats).await
    }

    /// Returns the task's processes, with the exec id of each exec process.
    ///
    /// # Errors
    ///
    /// Returns not found when the task no longer exists.
    pub async fn processes(&self) -> Result<Vec<ProcessInfo>, Error> {
        self.ask(Operation::ListProcesses, ContainerMsg::Processes)
            .await
    }

    /// Returns the init process's state as containerd reports it.
    ///
    /// # Errors
    ///
    /// Returns not found when the task no longer exists.
    pub async fn status(&self) -> Result<ProcessStatus, Error> {
        self.ask(Operation::Status, ContainerMsg::Status).await
    }

    /// Checkpoints the running task into `dir`, leaving it running unless `exit` is set.
    /// Nothing is stored in containerd. `dir` must be a new or empty folder; keel makes it when
    /// missing, removes it again when the checkpoint fails, and never removes it afterwards.
    ///
    /// # Errors
    ///
    /// Returns invalid argument for a relative folder, one with `..` in it, or one that contains
    /// files. Returns failed precondition for a stopped task, or containerd's or criu's error.
    pub async fn checkpoint(&self, dir: &Path, exit: bool) -> Result<(), Error> {
        let dir = dir.to_owned();
        self.ask(Operation::Checkpoint, |task, reply| {
            ContainerMsg::Checkpoint {
                task,
                dir,
                exit,
                reply,
            }
        })
        .await
    }

    /// Adds an exec process running `process`; start it with [`Process::start`].
    ///
    /// # Errors
    ///
    /// Returns invalid argument for a bad exec id, a process without arguments or one larger
    /// than [`crate::Limits::max_spec_bytes`], already exists while a process with that exec
    /// id lives, or containerd's error.
    pub async fn exec(
        &self,
        exec_id: &str,
        mut process: oci_spec::runtime::Process,
        stdio: StdioRequest,
    ) -> Result<Process, Error> {
        let exec_id = ExecId::new(exec_id)?;
        check_process(&process)?;
        process.set_terminal(Some(stdio.terminal));
        let process_json = encode_checked("process", &process, self.container.max_spec_bytes())?;
        let request = Box::new(CreateExec {
            exec_id: exec_id.clone(),
            process_json,
            stdio,
        });
        let (io, process) = self
            .ask(Operation::Exec, |task, reply| {
                ContainerMsg::Exec(task, request, reply)
            })
            .await?;
        Process::new(self.container.clone(), process, io)
    }

    /// Deletes the stopped task and its FIFOs, and returns the init process's exit status. A
    /// task that is gone already, because an earlier delete went through or containerd removed
    /// it after its shim died, counts as deleted: this returns its recorded init exit.
    ///
    /// # Errors
    ///
    /// Returns failed precondition while the task runs, not found when keel no longer
    /// remembers the deleted task, or containerd's error.
    pub async fn delete(self) -> Result<ExitStatus, Error> {
        self.delete_ref().await
    }

    /// Deletes the task as [`Task::delete`] does, keeping the handle for another attempt.
    pub(crate) async fn delete_ref(&self) -> Result<ExitStatus, Error> {
        self.ask(Operation::DeleteTask, ContainerMsg::DeleteTask)
            .await
    }
}
