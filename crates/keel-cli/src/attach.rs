//! Connecting this terminal to a running process: its output to stdout and stderr, stdin to
//! its stdin, terminal resizes to its pseudo-terminal, and Ctrl-C or SIGTERM to the process
//! unless this terminal is in raw mode.

use keel::{Error, ExitStatus, OutputStream, Process, StdinStream, Task};
use tokio::io::AsyncWriteExt as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use crate::error::CliError;
use crate::terminal::{RawMode, window_size};

/// A process with stdio: a task's init process or an exec process.
pub trait Attachable {
    fn take_stdout(&mut self) -> Option<OutputStream>;
    fn take_stderr(&mut self) -> Option<OutputStream>;
    fn take_stdin(&mut self) -> Option<StdinStream>;
    async fn wait(&self) -> Result<ExitStatus, Error>;
    async fn signal(&self, signal: i32) -> Result<(), Error>;
    async fn resize(&self, width: u32, height: u32) -> Result<(), Error>;
    async fn close_stdin(&mut self) -> Result<(), Error>;
}

impl Attachable for Task {
    fn take_stdout(&mut self) -> Option<OutputStream> {
        Task::take_stdout(self)
    }
    fn take_stderr(&mut self) -> Option<OutputStream> {
        Task::take_stderr(self)
    }
    fn take_stdin(&mut self) -> Option<StdinStream> {
        Task::take_stdin(self)
    }
    async fn wait(&self) -> Result<ExitStatus, Error> {
        Task::wait(self).await
    }
    async fn signal(&self, signal: i32) -> Result<(), Error> {
        Task::kill(self, signal.unsigned_abs(), false).await
    }
    async fn resize(&self, width: u32, height: u32) -> Result<(), Error> {
        Task::resize(self, width, height).await
    }
    async fn close_stdin(&mut self) -> Result<(), Error> {
        Task::close_stdin(self).await
    }
}

impl Attachable for Process {
    fn take_stdout(&mut self) -> Option<OutputStream> {
        Process::take_stdout(self)
    }
    fn take_stderr(&mut self) -> Option<OutputStream> {
        Process::take_stderr(self)
    }
    fn take_stdin(&mut self) -> Option<StdinStream> {
        Process::take_stdin(self)
    }
    async fn wait(&self) -> Result<ExitStatus, Error> {
        Process::wait(self).await
    }
    async fn signal(&self, signal: i32) -> Result<(), Error> {
        Process::kill(self, signal.unsigned_abs()).await
    }
    async fn resize(&self, width: u32, height: u32) -> Result<(), Error> {
        Process::resize(self, width, height).await
    }
    async fn close_stdin(&mut self) -> Result<(), Error> {
        Process::close_stdin(self).await
    }
}

/// The reason the wait loop woke up.
enum Step {
    Exited(Result<ExitStatus, Error>),
    StdinClosed,
    Resized,
    Signal(i32),
}

/// Copies the process's output to stdout and stderr and this stdin to the process, until the
/// process exits; returns its exit status. With `tty`, resizes reach the process's
/// pseudo-terminal, and with `interactive` too, stdin's terminal is in raw mode meanwhile so
/// every key reaches the process.
pub async fn attach_and_wait(
    process: &mut impl Attachable,
    tty: bool,
    interactive: bool,
) -> Result<ExitStatus, CliError> {
    let raw_mode = if tty && interactive {
        RawMode::enable()
    } else {
        None
    };
    // Listening starts before any output is copied, so a signal sent after the first output
    // is always passed on.
    let mut signals = Signals::listen(raw_mode.is_none());
    let stdout = process
        .take_stdout()
        .map(|stream| tokio::spawn(copy_output(stream, tokio::io::stdout())));
    let stderr = process
        .take_stderr()
        .map(|stream| tokio::spawn(copy_output(stream, tokio::io::stderr())));
    let (stdin_closed, mut stdin_eof) = oneshot::channel();
    match process.take_stdin() {
        Some(stream) => drop(tokio::spawn(copy_input(stream, stdin_closed))),
        None => drop(stdin_closed),
    }
    if tty && let Some((width, height)) = window_size() {
        resize(process, width, height).await;
    }

    let status = wait_loop(process, &mut signals, &mut stdin_eof).await;
    for copier in [stdout, stderr].into_iter().flatten() {
        let _ = copier.await;
    }
    drop(raw_mode);
    Ok(status?)
}

/// Waits for the exit while closing the process's stdin at end of input, passing resizes on,
/// and passing on the signals `signals` listens for.
async fn wait_loop(
    process: &mut impl Attachable,
    signals: &mut Signals,
    stdin_eof: &mut oneshot::Receiver<()>,
) -> Result<ExitStatus, Error> {
    let mut stdin_open = true;
    loop {
        let step = tokio::select! {
            status = process.wait() => Step::Exited(status),
            _ = &mut *stdin_eof, if stdin_open => Step::StdinClosed,
            Some(()) = recv(&mut signals.resized) => Step::Resized,
            Some(()) = recv(&mut signals.interrupt) => Step::Signal(nix::libc::SIGINT),
            Some(()) = recv(&mut signals.terminate) => Step::Signal(nix::libc::SIGTERM),
        };
        match step {
            Step::Exited(status) => return status,
            Step::StdinClosed => {
                stdin_open = false;
                if let Err(error) = process.close_stdin().await {
                    tracing::debug!(%error, "failed to close the process's stdin");
                }
            }
            Step::Resized => {
                if let Some((width, height)) = window_size() {
                    resize(process, width, height).await;
                }
            }
            Step::Signal(number) => {
                if let Err(error) = process.signal(number).await {
                    tracing::debug!(%error, signal = number, "failed to forward signal");
                }
            }
        }
    }
}

/// The signals this process handles while attached. SIGINT and SIGTERM are listened for only
/// when they are passed on; otherwise they keep their default action.
struct Signals {
    resized: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen(forward: bool) -> Self {
        let listen = |kind: SignalKind| signal(kind).ok();
        Self {
            resized: listen(SignalKind::window_change()),
            interrupt: forward.then(|| listen(SignalKind::interrupt())).flatten(),
            terminate: forward.then(|| listen(SignalKind::terminate())).flatten(),
        }
    }
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

async fn resize(process: &impl Attachable, width: u32, height: u32) {
    if let Err(error) = process.resize(width, height).await {
        tracing::debug!(%error, width, height, "failed to resize the process's terminal");
    }
}

/// Copies one output stream to `target` until end of file, flushing as it goes.
async fn copy_output(mut stream: OutputStream, mut target: impl tokio::io::AsyncWrite + Unpin) {
    if let Err(error) = tokio::io::copy(&mut stream, &mut target).await {
        tracing::debug!(%error, "output copy ended");
    }
    let _ = target.flush().await;
}

/// Copies this process's stdin to the process until end of input, then reports it.
async fn copy_input(mut stream: StdinStream, closed: oneshot::Sender<()>) {
    let mut stdin = tokio::io::stdin();
    if let Err(error) = tokio::io::copy(&mut stdin, &mut stream).await {
        tracing::debug!(%error, "input copy ended");
    }
    drop(stream);
    let _ = closed.send(());
}
