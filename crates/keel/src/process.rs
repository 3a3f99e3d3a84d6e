//! The handle of an exec process.

use keel_container::{ContainerMsg, OutputStream, ProcessIo, StdinStream};
use keel_types::{Error, ExecId, ExitStatus, Operation, ProcessId, ProcessStatus, Target};

use crate::container::Container;
use crate::held_io::HeldIo;

/// An exec process in a container's task, and the caller's ends of its stdio.
#[derive(Debug)]
pub struct Process {
    container: Container,
    exec_id: ExecId,
    target: Target,
    pid: u32,
    io: HeldIo,
}

impl Process {
    pub(crate) fn new(container: Container, exec_id: ExecId, io: ProcessIo) -> Self {
        Self {
            target: Target::Exec(container.id().clone(), exec_id.clone()),
            container,
            exec_id,
            pid: 0,
            io: HeldIo::new(io),
        }
    }

    pub(crate) fn attached(container: Container, exec_id: ExecId, pid: u32, io: ProcessIo) -> Self {
        let mut process = Self::new(container, exec_id, io);
        process.pid = pid;
        process
    }

    /// The exec id.
    pub fn exec_id(&self) -> &ExecId {
        &self.exec_id
    }

    /// The pid on the host; 0 until started.
    pub fn pid(&self) -> u32 {
        self.pid
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

    fn process_id(&self) -> ProcessId {
        ProcessId::Exec(self.exec_id.clone())
    }

    /// Starts the process.
    ///
    /// # Errors
    ///
    /// Returns [`keel_types::ErrorKind::ExecutableNotFound`] when the executable does not
    /// exist in the container, or containerd's error. The process and its FIFOs are deleted
    /// on failure, so the exec id is free again.
    pub async fn start(&mut self) -> Result<(), Error> {
        let exec_id = self.exec_id.clone();
        self.pid = self
            .container
            .ask(
                Operation::StartExec,
                &self.target,
                self.container.call_timeout() * 3,
                |reply| ContainerMsg::StartExec(exec_id, reply),
            )
            .await?;
        Ok(())
    }

    /// Waits until the process exits and the output streams handed out are closed. Output
    /// streams not yet taken from this handle are dropped first, because no caller could read them.
    ///
    /// # Errors
    ///
    /// Returns not found when the process failed to start or its task was deleted.
    pub async fn wait(&self) -> Result<ExitStatus, Error> {
        self.io.release_untaken_output();
        let process = self.process_id();
        self.container.wait_for_exit(&process, &self.target).await
    }

    /// Sends `signal` to the process.
    ///
    /// # Errors
    ///
    /// Returns not found when the process has exited, or containerd's error.
    pub async fn kill(&self, signal: u32) -> Result<(), Error> {
        let process = self.process_id();
        self.container
            .ask(
                Operation::Kill,
                &self.target,
                self.container.call_timeout() * 2,
                |reply| ContainerMsg::Kill {
                    process,
                    signal,
                    all: false,
                    reply,
                },
            )
            .await
    }

    /// Closes the process's stdin so it reads end of file, before or after start.
    ///
    /// Drops the stdin stream this handle still holds; a stream taken with
    /// [`Process::take_stdin`] must be dropped by the caller too.
    ///
    /// # Errors
    ///
    /// Returns containerd's error.
    pub async fn close_stdin(&mut self) -> Result<(), Error> {
        drop(self.io.take_stdin());
        let process = self.process_id();
        self.container
            .ask(
                Operation::CloseStdin,
                &self.target,
                self.container.call_timeout() * 2,
                |reply| ContainerMsg::CloseStdin(process, reply),
            )
            .await
    }

    /// Resizes the process's pseudo-terminal.
    ///
    /// # Errors
    ///
    /// Returns containerd's error. A process without a terminal ignores the size, and containerd
    /// reports success.
    pub async fn resize(&self, width: u32, height: u32) -> Result<(), Error> {
        let process = self.process_id();
        self.container
            .ask(
                Operation::Resize,
                &self.target,
                self.container.call_timeout() * 2,
                |reply| ContainerMsg::Resize {
                    process,
                    width,
                    height,
                    reply,
                },
            )
            .await
    }

    /// Returns the process's state as containerd reports it.
    ///
    /// # Errors
    ///
    /// Returns not found once the process was deleted.
    pub async fn status(&self) -> Result<ProcessStatus, Error> {
        let process = self.process_id();
        self.container
            .ask(
                Operation::Status,
                &self.target,
                self.container.call_timeout() * 2,
                |reply| ContainerMsg::Status(process, reply),
            )
            .await
    }

    /// Deletes the exited process and returns its exit status. keel deletes an exec from
    /// containerd by itself once its exit is reported; this returns the recorded status then.
    ///
    /// # Errors
    ///
    /// Returns failed precondition while the process runs.
    pub async fn delete(self) -> Result<ExitStatus, Error> {
        let exec_id = self.exec_id.clone();
        self.container
            .ask(
                Operation::DeleteExec,
                &self.target,
                self.container.call_timeout() * 2,
                |reply| ContainerMsg::DeleteExec(exec_id, reply),
            )
            .await
    }
}
