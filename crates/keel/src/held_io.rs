//! The caller's stdio ends that a task or process handle keeps until they are taken.

use std::sync::{Mutex, PoisonError};

use keel_container::{OutputStream, ProcessIo, StdinStream};

/// A process's stdio ends, kept behind a lock so that `wait(&self)` can drop the output
/// streams nobody took.
#[derive(Debug)]
pub(crate) struct HeldIo(Mutex<ProcessIo>);

impl HeldIo {
    pub(crate) fn new(io: ProcessIo) -> Self {
        Self(Mutex::new(io))
    }

    fn get_mut(&mut self) -> &mut ProcessIo {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn take_stdout(&mut self) -> Option<OutputStream> {
        self.get_mut().stdout.take()
    }

    pub(crate) fn take_stderr(&mut self) -> Option<OutputStream> {
        self.get_mut().stderr.take()
    }

    pub(crate) fn take_stdin(&mut self) -> Option<StdinStream> {
        self.get_mut().stdin.take()
    }

    /// Drops the output streams still held here, because no caller can read them any more.
    pub(crate) fn release_untaken_output(&self) {
        let mut io = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        drop(io.stdout.take());
        drop(io.stderr.take());
    }
}
