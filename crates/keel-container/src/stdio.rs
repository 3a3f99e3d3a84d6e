//! FIFOs between keel and a process's stdio.
//!
//! keel makes the FIFOs in the container's bundle folder, opens the read ends of stdout and
//! stderr before asking containerd to create the process (the shim blocks until they are
//! open), and hands the open ends to the caller as async streams. Each output stream counts
//! itself closed when it reads end of file or is dropped, and `wait` resolves only after every
//! output stream of the process is closed, so a caller never sees an exit before the last byte.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use nix::sys::stat::Mode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use keel_types::Error;

use crate::folders::ensure_private_dir;
use crate::process::ProcessState;

/// The stdio streams a process gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioRequest {
    /// Gives the process a stdin stream; needs `output` or `terminal` as well.
    pub stdin: bool,
    /// Captures stdout and stderr; containerd's shim accepts both or neither.
    pub output: bool,
    /// Runs the process on a pseudo-terminal: one output stream, no stderr.
    pub terminal: bool,
}

impl StdioRequest {
    /// Rejects stdin without output. containerd 1.6's runc shim stalls on such a process: its
    /// start times out, and the shim then stops replying for the whole task.
    ///
    /// # Errors
    ///
    /// Returns invalid argument naming the request.
    pub fn check(&self) -> Result<(), Error> {
        if self.stdin && !self.output && !self.terminal {
            return Err(Error::InvalidArgument {
                field: "stdio",
                value: format!("{self:?}"),
                reason: "stdin needs output or a terminal too, because containerd's runc shim \
                         stalls a process that has stdin alone; request output as well, and \
                         drop the output streams if they are not wanted"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

/// The caller's ends of a process's stdio.
#[derive(Debug, Default)]
pub struct ProcessIo {
    /// The process's stdin, when requested.
    pub stdin: Option<StdinStream>,
    /// The process's stdout, or the terminal's output.
    pub stdout: Option<OutputStream>,
    /// The process's stderr; `None` on a terminal.
    pub stderr: Option<OutputStream>,
}

/// The FIFO paths of one process, removed when the process is deleted.
#[derive(Clone, Debug, Default)]
pub(crate) struct FifoSet {
    pub(crate) stdin: Option<PathBuf>,
    pub(crate) stdout: Option<PathBuf>,
    pub(crate) stderr: Option<PathBuf>,
}

impl FifoSet {
    /// Returns true when the process has no FIFO, so no stream is handed out for it.
    pub(crate) fn is_empty(&self) -> bool {
        self.stdin.is_none() && self.stdout.is_none() && self.stderr.is_none()
    }

    /// Makes the FIFOs for `request` in `folder`, named after `process_name`. `folder` is made
    /// owner-only first when it is missing and a FIFO is requested. Its parent must exist.
    pub(crate) fn create(
        folder: &Path,
        process_name: &str,
        request: StdioRequest,
    ) -> io::Result<Self> {
        if request.stdin || request.output || request.terminal {
            ensure_private_dir(folder)?;
        }
        let make = |stream: &str| -> io::Result<PathBuf> {
            let path = folder.join(format!("{process_name}-{stream}"));
            remove_stale_fifo(&path)?;
            nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)?;
            Ok(path)
        };
        let mut fifos = Self::default();
        let result = (|| {
            if request.stdin {
                fifos.stdin = Some(make("stdin")?);
            }
            if request.output || request.terminal {
                fifos.stdout = Some(make("stdout")?);
            }
            if request.output && !request.terminal {
                fifos.stderr = Some(make("stderr")?);
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(fifos),
            Err(error) => {
                fifos.remove();
                Err(error)
            }
        }
    }

    /// Gives the FIFOs to `uid` and `gid`, the user the process runs as.
    pub(crate) fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        for path in [&self.stdin, &self.stdout, &self.stderr]
            .into_iter()
            .flatten()
        {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// Adopts the FIFO paths containerd reports for a running process, after checking that
    /// each is a FIFO directly inside `folder`, the bundle folder keel made.
    pub(crate) fn adopt(folder: &Path, paths: [&str; 3]) -> io::Result<Self> {
        let check = |path: &str| -> io::Result<Option<PathBuf>> {
            if path.is_empty() {
                return Ok(None);
            }
            let path = PathBuf::from(path);
            if path.parent() != Some(folder) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("FIFO {} is outside the bundle folder", path.display()),
                ));
            }
            let metadata = std::fs::symlink_metadata(&path)?;
            if !std::os::unix::fs::FileTypeExt::is_fifo(&metadata.file_type()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a FIFO", path.display()),
                ));
            }
            Ok(Some(path))
        };
        let [stdin, stdout, stderr] = paths;
        Ok(Self {
            stdin: check(stdin)?,
            stdout: check(stdout)?,
            stderr: check(stderr)?,
        })
    }

    /// Opens the caller's ends for `process`. Output ends must be open before containerd
    /// creates the process. Writes to stdin fail once the process's `stdin_reader_gone` is
    /// cancelled, and dropped output streams are read until its `drains_end` is.
    pub(crate) fn open(&self, process: &ProcessState) -> io::Result<ProcessIo> {
        let output = |path: &Option<PathBuf>| -> io::Result<Option<OutputStream>> {
            path.as_deref()
                .map(|path| OutputStream::open(path, process))
                .transpose()
        };
        Ok(ProcessIo {
            stdout: output(&self.stdout)?,
            stderr: output(&self.stderr)?,
            stdin: self
                .stdin
                .as_deref()
                .map(|path| StdinStream::open(path, &process.links.stdin_reader_gone))
                .transpose()?,
        })
    }

    /// Returns the paths in containerd's request form, where an empty string means none.
    pub(crate) fn request_paths(&self) -> [String; 3] {
        let text = |path: &Option<PathBuf>| {
            path.as_ref()
                .map(|path| path.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        [text(&self.stdin), text(&self.stdout), text(&self.stderr)]
    }

    /// Removes the FIFOs, ignoring ones already gone.
    pub(crate) fn remove(&self) {
        for path in [&self.stdin, &self.stdout, &self.stderr]
            .into_iter()
            .flatten()
        {
            if let Err(error) = std::fs::remove_file(path)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), %error, "cannot remove FIFO");
            }
        }
    }
}

/// Removes a FIFO left at `path` by an earlier process of the same name; refuses anything
/// that is not a FIFO.
fn remove_stale_fifo(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if std::os::unix::fs::FileTypeExt::is_fifo(&metadata.file_type()) => {
            std::fs::remove_file(path)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a FIFO", path.display()),
        )),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// A process's stdout or stderr, readable with [`tokio::io::AsyncReadExt`].
///
/// Dropping it before the end of the stream does not block the process. The shim keeps its own
/// read end of the FIFO open, so a FIFO without an active reader would fill and stall the
/// process's next write for good. So the dropped stream's FIFO is read to its end in the
/// background instead, and the output is discarded.
#[derive(Debug)]
pub struct OutputStream {
    receiver: Option<pipe::Receiver>,
    open: Option<Arc<watch::Sender<usize>>>,
    drains_end: CancellationToken,
}

impl OutputStream {
    fn open(path: &Path, process: &ProcessState) -> io::Result<Self> {
        let receiver = pipe::OpenOptions::new().open_receiver(path)?;
        process.links.streams_open.send_modify(|open| *open += 1);
        Ok(Self {
            receiver: Some(receiver),
            open: Some(Arc::clone(&process.links.streams_open)),
            drains_end: process.links.drains_end.clone(),
        })
    }

    fn mark_closed(&mut self) {
        if let Some(open) = self.open.take() {
            open.send_modify(|open| *open = open.saturating_sub(1));
        }
    }
}

impl AsyncRead for OutputStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buffer.filled().len();
        let Some(receiver) = self.receiver.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let result = Pin::new(receiver).poll_read(context, buffer);
        if matches!(result, Poll::Ready(Ok(()))) && buffer.filled().len() == before {
            self.mark_closed();
        }
        result
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        let at_end = self.open.is_none();
        self.mark_closed();
        if at_end {
            return;
        }
        // Outside a runtime there is nothing to read on, and the FIFO just closes.
        if let (Some(receiver), Ok(runtime)) =
            (self.receiver.take(), tokio::runtime::Handle::try_current())
        {
            let end = self.drains_end.clone();
            runtime.spawn(async move { end.run_until_cancelled(discard_to_end(receiver)).await });
        }
    }
}

/// Reads `receiver` until the shim closes its write end, which it does once the process's
/// output ends, or when the task is deleted and the shim exits.
async fn discard_to_end(mut receiver: pipe::Receiver) {
    let mut buffer = vec![0; DISCARD_BUFFER_BYTES];
    loop {
        match tokio::io::AsyncReadExt::read(&mut receiver, &mut buffer).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::debug!(%error, "stopped discarding a dropped output stream");
                return;
            }
        }
    }
}

/// The read size of a dropped output stream's drain: a FIFO's default capacity.
const DISCARD_BUFFER_BYTES: usize = 64 * 1024;

/// A process's stdin, writable with [`tokio::io::AsyncWriteExt`].
///
/// Dropping it closes keel's end; the process sees end of file only after the task's or exec's
/// `close_stdin`, because the shim keeps a write end of its own. Once the process has exited or
/// was deleted, a write fails with [`io::ErrorKind::BrokenPipe`], also one that was waiting for
/// room in the FIFO.
#[derive(Debug)]
pub struct StdinStream {
    sender: pipe::Sender,
    reader_gone: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl StdinStream {
    fn open(path: &Path, reader_gone: &CancellationToken) -> io::Result<Self> {
        // Read-write open succeeds before the shim opens its end, where a write-only open of a
        // FIFO without a reader would fail. The same open makes keel a reader of the FIFO, so
        // the kernel never fails a write when the process is gone. `reader_gone` fails it.
        let sender = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path)?;
        Ok(Self {
            sender,
            reader_gone: Box::pin(reader_gone.clone().cancelled_owned()),
        })
    }

    fn poll_reader_gone(&mut self, context: &mut Context<'_>) -> Poll<io::Error> {
        self.reader_gone.as_mut().poll(context).map(|()| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the process has exited or was deleted, so nothing reads its stdin",
            )
        })
    }
}

impl AsyncWrite for StdinStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(error) = self.poll_reader_gone(context) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.sender).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sender).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sender).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-stdio-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    }

    #[test]
    fn adopt_rejects_path_outside_bundle() {
        let dir = scratch("outside");
        let error = FifoSet::adopt(&dir, ["", "/tmp/elsewhere-stdout", ""]).expect_err("outside");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let nested = dir.join("sub").join("init-stdout");
        let error =
            FifoSet::adopt(&dir, ["", nested.to_str().expect("utf-8"), ""]).expect_err("nested");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn adopt_rejects_non_fifo() {
        let dir = scratch("regular");
        let file = dir.join("init-stdout");
        std::fs::write(&file, b"").expect("file");
        let error = FifoSet::adopt(&dir, ["", file.to_str().expect("utf-8"), ""])
            .expect_err("regular file");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn create_refuses_to_replace_a_regular_file() {
        let dir = scratch("planted");
        std::fs::write(dir.join("init-stdout"), b"keep").expect("file");
        let request = StdioRequest {
            output: true,
            ..StdioRequest::default()
        };
        let error = FifoSet::create(&dir, "init", request).expect_err("planted file");
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read(dir.join("init-stdout")).expect("still there"),
            b"keep"
        );
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
