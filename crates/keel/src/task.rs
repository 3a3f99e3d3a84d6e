//! The handle of a container's task and its init process.

use keel_container::{ContainerMsg, OutputStream, ProcessIo, StdinStream};
use keel_types::{Error, ExitStatus, Operation, ProcessId};

use crate::container::Container;
use crate::request::{request, request_unbounded};

/// A container's task: its init process and the caller's ends of that process's stdio.
#[derive(Debug)]
pub struct Task {
    container: Container,
    pid: u32,
    io: ProcessIo,
}

impl Task {
    pub(crate) fn new(container: Container, pid: u32, io: ProcessIo) -> Self {
        Self { container, pid, io }
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
        self.io.stdout.take()
    }

    /// Takes the stderr stream; `None` when not requested, on a terminal, or already taken.
    pub fn take_stderr(&mut self) -> Option<OutputStream> {
        self.io.stderr.take()
    }

    /// Takes the stdin stream; `None` when not requested or already taken.
    pub fn take_stdin(&mut self) -> Option<StdinStream> {
        self.io.stdin.take()
    }

    /// Starts the created task.
    ///
    /// # Errors
    ///
    /// Returns containerd's error; the task is then killed, deleted and its FIFOs removed.
    pub async fn start(&mut self) -> Result<(), Error> {
        let container = &self.container;
        self.pid = request(
            container.actor(),
            Operation::StartTask,
            container.target(),
            container.call_timeout() * 3,
            ContainerMsg::StartTask,
        )
        .await?;
        Ok(())
    }

    /// Waits until the init process exits and the output streams handed out are closed.
    ///
    /// # Errors
    ///
    /// Returns not found when the task was deleted or failed to start, or stopped when the
    /// client shut down.
    pub async fn wait(&self) -> Result<ExitStatus, Error> {
        let container = &self.container;
        request_unbounded(
            container.actor(),
            Operation::Wait,
            container.target(),
            |reply| ContainerMsg::Wait(ProcessId::Init, reply),
        )
        .await
    }

    /// Sends `signal` to the init process, or to every process of the task when `all` is set.
    ///
    /// # Errors
    ///
    /// Returns not found when the process has exited, or containerd's error.
    pub async fn kill(&self, signal: u32, all: bool) -> Result<(), Error> {
        let container = &self.container;
        request(
            container.actor(),
            Operation::Kill,
            container.target(),
            container.call_timeout() * 2,
            |reply| ContainerMsg::Kill {
                process: ProcessId::Init,
                signal,
                all,
                reply,
            },
        )
        .await
    }

    /// Deletes the stopped task and its FIFOs, and returns the init process's exit status.
    ///
    /// # Errors
    ///
    /// Returns failed precondition while the task runs, or containerd's error.
    pub async fn delete(self) -> Result<ExitStatus, Error> {
        let container = &self.container;
        request(
            container.actor(),
            Operation::DeleteTask,
            container.target(),
            container.call_timeout() * 2,
            ContainerMsg::DeleteTask,
        )
        .await
    }
}
