//! The handle of an exec process.

use keel_container::{ContainerMsg, OutputStream, ProcessIo, ProcessRef, StdinStream, WaitUntil};
use keel_types::{Error, ExecId, ExitStatus, Operation, ProcessId, ProcessStatus, Target};

use crate::container::Container;
use crate::held_io::HeldIo;
use crate::validate::check_terminal_size;

/// An exec process in a container's task, and the caller's ends of its stdio.
///
/// The handle acts only on the process it was made for. Once that process exited and keel
/// deleted it, another exec may take its exec id; requests through this handle never reach
/// that newer process.
#[derive(Debug)]
pub struct Process {
    container: Container,
    exec_id: ExecId,
    target: Target,
    /// The number keel's container actor gave this process, sent with every request.
    generation: u64,
    pid: u32,
    io: HeldIo,
}

impl Process {
    /// Makes the handle of the exec process `handle` names.
    ///
    /// # Errors
    ///
    /// Returns internal when `handle` names the init process, which a container actor never
    /// returns for an exec.
    pub(crate) fn new(
        container: Container,
        handle: ProcessRef,
        io: ProcessIo,
    ) -> Result<Self, Error> {
        let Some(exec_id) = handle.process.exec_id().cloned() else {
            return Err(Error::Rejected {
                operation: Operation::Exec,
                target: container.target().clone(),
                kind: keel_types::ErrorKind::Internal,
                reason: "the container actor returned the init process for an exec".to_owned(),
            });
        };
        Ok(Self {
            target: Target::Exec(container.id().clone(), exec_id.clone()),
            container,
            exec_id,
            generation: handle.generation,
            pid: handle.pid,
            io: HeldIo::new(io),
        })
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

    /// Returns the reference that binds a request to this handle's process.
    fn process_ref(&self) -> ProcessRef {
        ProcessRef {
            process: ProcessId::Exec(self.exec_id.clone()),
            generation: self.generation,
            pid: self.pid,
        }
    }

    /// Starts the process.
    ///
    /// # Errors
    ///
    /// Returns [`keel_types::ErrorKind::ExecutableNotFound`] when the executable does not
    /// exist in the container, failed precondition when it has already started, or
    /// containerd's error. The process and its FIFOs are deleted on failure, so the exec id is
    /// free again. After timed out or unavailable the process may have started, so it stays:
    /// its `ExecStarted` and exit events arrive if it did, and `wait` and `delete` work.
    pub async fn start(&mut self) -> Result<(), Error> {
        let process = self.process_ref();
        self.pid = self
            .container
            .ask(
                Operation::StartExec,
                &self.target,
                self.container.call_timeout() * 3,
                |reply| ContainerMsg::StartExec(process, reply),
            )
            .await?;
        Ok(())
    }

    /// Waits until the process exits and the output streams handed out are closed. Output
    /// streams not yet taken from this handle are dropped first, because no caller could read them.
    ///
    /// Returns the recorded exit at once when the process exited before. This is also true after
    /// keel deleted it, after its exec id was used again, or after its task was deleted, for as
    /// long as keel remembers the exit. A container keeps the last 256 such exits.
    ///
    /// # Errors
    ///
    /// Returns not found when the process failed to start, when its task was deleted before
    /// it reported an exit, when keel forgot its exit, or when its container was deleted.
    pub async fn wait(&self) -> Result<ExitStatus, Error> {
        self.io.release_untaken_output();
        let process = self.process_ref();
        self.container
            .wait_for_exit(&process, WaitUntil::OutputClosed, &self.target)
            .await
    }

    /// Sends `signal` to the process.
    ///
    /// # Errors
    ///
    /// Returns not found when the process has exited and keel deleted it, or containerd's
    /// error.
    pub async fn kill(&self, signal: u32) -> Result<(), Error> {
        let process = self.process_ref();
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
        let process = self.process_ref();
        self.container
            .ask(
                Operation::CloseStdin,
                &self.target,
                self.container.call_timeout() * 2,
                |reply| ContainerMsg::CloseStdin(process, reply),
            )
            .await
    }

    /// Resizes the process's pseudo-terminal. Before the start, keel keeps the size and applies
    /// it as soon as the process has started, because the shim makes an exec's terminal only then.
    ///
    /// # Errors
    ///
    /// Returns invalid argument for a side above 65535, or containerd's error. A process without
    /// a terminal ignores the size, and containerd reports success.
    pub async fn resize(&self, width: u32, height: u32) -> Result<(), Error> {
        check_terminal_size(width, height)?;
        let process = self.process_ref();
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
        let process = self.process_ref();
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
    /// containerd by itself once its exit is reported; this returns the recorded status then,
    /// and never touches a newer process with the same exec id.
    ///
    /// # Errors
    ///
    /// Returns failed precondition while the process runs, or not found when keel no longer
    /// remembers the process.
    pub async fn delete(self) -> Result<ExitStatus, Error> {
        let process = self.process_ref();
        self.container
            .ask(
                Operation::DeleteExec,
                &self.target,
                self.container.call_timeout() * 2,
                |reply| ContainerMsg::DeleteExec(process, reply),
            )
            .await
    }
}
