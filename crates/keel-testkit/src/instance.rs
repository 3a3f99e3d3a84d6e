//! [`PrivateContainerd`]: one containerd process with its own folder, sockets and config,
//! started for a test and removed with everything it created when the test ends.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use keel_supervisor::shims::{
    default_runc_root, delete_runc_container, is_shim_of, remove_shim_socket, shim_pids,
    task_bundles,
};
use nix::sys::signal::Signal;
use tonic::transport::Channel;

use crate::TestkitError;
use crate::grpc::{connect, probe_version};
use crate::layout::Layout;
use crate::leftovers::{kill_shims, remove_empty_folders, remove_folder, remove_namespace_cgroups};
use crate::process::{
    kill_child, parent_pid, send_signal, terminate, try_wait, wait_until_stopped,
};
use crate::programs::{Programs, require_root};
use crate::rootfs::build_busybox_rootfs;

/// How long containerd may take to serve gRPC requests after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The timeout of one readiness probe, and the pause between probes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// How long [`PrivateContainerd::freeze`] waits for every thread of containerd to stop.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

/// The timeout of [`PrivateContainerd::connect`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of the end of the log an error shows.
const LOG_TAIL_LINES: usize = 40;
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// Counts the namespaces this process handed out, across all instances, because runc keeps its
/// state in a folder per namespace that all instances on the machine share.
static NAMESPACE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A containerd process of its own for one test, with its config, sockets, root and state in a
/// fresh folder `/tmp/keel-<pid>-<counter>-<random>/`.
///
/// Dropping it, or calling [`stop`](Self::stop), stops containerd and removes what it created:
/// runc containers and shims of its tasks, their shim sockets, the cgroups and runc folders of
/// namespaces from [`new_namespace`](Self::new_namespace), mounts inside the folder, and the
/// folder. Drop blocks for up to about five seconds plus two per task, so async tests should
/// call `stop().await` instead.
///
/// It needs root, containerd, the runc v2 shim, runc, and for
/// [`busybox_rootfs`](Self::busybox_rootfs) a static busybox. `KEEL_CONTAINERD` overrides the
/// containerd binary and `KEEL_BUSYBOX` the busybox binary. For checkpoint and restore, runc
/// uses the criu in `KEEL_CRIU_DIR`, or else the one `cargo xtask setup` prepares in the
/// workspace's `target/criu/bin`, or else the one on `PATH`.
///
/// NOTE: containerd is a plain child process. If the test process dies without unwinding
/// (SIGKILL, abort), containerd and the folder stay behind.
#[derive(Debug)]
pub struct PrivateContainerd {
    layout: Layout,
    programs: Programs,
    /// The running containerd, or `None` after [`kill`](Self::kill) or cleanup.
    child: Option<Child>,
    /// The pid of the last containerd started.
    pid: u32,
    /// Namespaces handed out by [`new_namespace`](Self::new_namespace).
    namespaces: Mutex<Vec<String>>,
    /// The busybox root filesystem once [`busybox_rootfs`](Self::busybox_rootfs) has built it.
    rootfs: Mutex<Option<PathBuf>>,
    /// Set once cleanup ran, so drop after [`stop`](Self::stop) does nothing.
    cleaned_up: bool,
}

impl PrivateContainerd {
    /// Creates a fresh folder, writes a config into it, starts containerd on it and waits until
    /// containerd serves gRPC requests (at most 20 seconds).
    ///
    /// # Errors
    ///
    /// Returns an error when the process is not root, a program is missing, the folder cannot
    /// be created, or containerd exits or does not serve in time. The last two errors include
    /// the end of containerd's log. Whatever was created is removed before returning.
    pub async fn start() -> Result<Self, TestkitError> {
        require_root()?;
        let programs = Programs::find()?;
        let layout = Layout::create()?;
        let mut instance = Self {
            layout,
            programs,
            child: None,
            pid: 0,
            namespaces: Mutex::new(Vec::new()),
            rootfs: Mutex::new(None),
            cleaned_up: false,
        };
        // On error, dropping `instance` removes the folder and stops containerd.
        instance.spawn_and_wait().await?;
        Ok(instance)
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.layout.socket
    }

    /// The instance folder, which contains everything else.
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// containerd's `root` folder, where it keeps persistent data such as its metadata database.
    pub fn root_dir(&self) -> &Path {
        &self.layout.root
    }

    /// containerd's `state` folder, where it keeps task bundles and other runtime state.
    pub fn state_dir(&self) -> &Path {
        &self.layout.state
    }

    /// The pid of the containerd process started last. After [`kill`](Self::kill) it names a
    /// dead process until [`restart`](Self::restart).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// containerd's log file, which collects its standard output and error across restarts.
    pub fn log_path(&self) -> &Path {
        &self.layout.log
    }

    /// Returns the last lines of containerd's log, for an error message about a failed run.
    pub fn log_tail(&self) -> String {
        log_tail(&self.layout.log)
    }

    /// A folder inside the instance folder for a keel client's state, such as its FIFOs.
    pub fn client_state_dir(&self) -> PathBuf {
        self.layout.client_state.clone()
    }

    /// Returns a containerd namespace name, `keel-t<pid>-<n>`, that no other call of any running
    /// process returns, and remembers it so cleanup removes its cgroups and runc folder.
    pub fn new_namespace(&self) -> String {
        let counter = NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("keel-t{}-{counter}", std::process::id());
        lock(&self.namespaces).push(namespace.clone());
        namespace
    }

    /// Returns a root filesystem with a static busybox in `bin/`, a symlink in `bin/` for each
    /// of its applets (`sh`, `echo`, `cat`, `sleep`, ...), empty `proc`, `dev`, `sys`, `tmp` and
    /// `etc` folders, and `etc/passwd` and `etc/group` with root and nobody.
    ///
    /// The first call builds it inside the instance folder, and later calls return the same
    /// path.
    ///
    /// # Errors
    ///
    /// Returns an error when busybox is missing or dynamically linked, or the files cannot be
    /// written.
    pub fn busybox_rootfs(&self) -> Result<PathBuf, TestkitError> {
        let mut rootfs = lock(&self.rootfs);
        if let Some(path) = rootfs.as_ref() {
            return Ok(path.clone());
        }
        build_busybox_rootfs(&self.layout.busybox_rootfs)?;
        *rootfs = Some(self.layout.busybox_rootfs.clone());
        Ok(self.layout.busybox_rootfs.clone())
    }

    /// Connects a gRPC channel to containerd's socket, giving up after five seconds.
    ///
    /// # Errors
    ///
    /// Returns [`TestkitError::Connect`] when the connection fails.
    pub async fn connect(&self) -> Result<Channel, TestkitError> {
        connect(&self.layout.socket, CONNECT_TIMEOUT).await
    }

    /// Returns the pids of the live shims of this instance, sorted: the containerd shim
    /// processes started with `-address` set to this instance's socket.
    ///
    /// They are found by scanning `/proc`, because containerd 1.6.20's runc v2 shim writes no
    /// `shim.pid` file into the task bundle.
    pub fn shim_pids(&self) -> Vec<u32> {
        shim_pids(&self.layout.socket)
    }

    /// Kills containerd with SIGKILL and reaps it, leaving its shims and containers running.
    /// Does nothing when containerd is not running.
    ///
    /// # Errors
    ///
    /// Returns an error when the signal cannot be sent or waiting fails.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = kill_child(&mut child)?;
        tracing::info!(pid = self.pid, %status, "private containerd killed");
        Ok(())
    }

    /// Starts containerd again on the same folders and config, and waits until it serves (at
    /// most 20 seconds). A containerd that still runs is first stopped with SIGTERM, then
    /// SIGKILL after five seconds.
    ///
    /// # Errors
    ///
    /// Returns the errors of [`start`](Self::start) except the folder ones.
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        if let Some(child) = self.child.take() {
            let status = run_blocking(child, |mut child| terminate(&mut child)).await?;
            tracing::info!(pid = self.pid, %status, "private containerd stopped for restart");
        }
        self.spawn_and_wait().await
    }

    /// Stops containerd with SIGSTOP, so the kernel still accepts connections on its socket but
    /// containerd processes no request until [`thaw`](Self::thaw). Returns once every thread of
    /// containerd is stopped (at most one second), because a thread that was running when the
    /// signal came could otherwise still answer a request.
    ///
    /// # Errors
    ///
    /// Returns [`TestkitError::NotRunning`] after [`kill`](Self::kill), or the signal error.
    pub fn freeze(&self) -> Result<(), TestkitError> {
        let pid = self.running_pid()?;
        send_signal(pid, Signal::SIGSTOP)?;
        if !wait_until_stopped(pid, FREEZE_TIMEOUT) {
            tracing::warn!(pid, "containerd threads still running after SIGSTOP");
        }
        Ok(())
    }

    /// Resumes containerd after [`freeze`](Self::freeze) with SIGCONT.
    ///
    /// # Errors
    ///
    /// Returns [`TestkitError::NotRunning`] after [`kill`](Self::kill), or the signal error.
    pub fn thaw(&self) -> Result<(), TestkitError> {
        send_signal(self.running_pid()?, Signal::SIGCONT)
    }

    /// Lists the container ids of the task bundle folders containerd keeps in `namespace`: one
    /// per task it created and has not deleted, plus any folder a defect left behind (see
    /// [`crate::is_stale_task_bundle`]).
    ///
    /// Hidden folders are left out. containerd 1.6 deletes a bundle by renaming it to `.<id>`
    /// and then removing it, and skips such folders when it loads tasks; one it was removing
    /// when it was killed stays behind, but it is no task and blocks no create.
    pub fn task_bundle_ids(&self, namespace: &str) -> Vec<String> {
        let mut ids: Vec<String> = task_bundles(&self.layout.task_root())
            .into_iter()
            .filter(|bundle| bundle.namespace == namespace && !bundle.id.starts_with('.'))
            .map(|bundle| bundle.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Returns true while the containerd started last runs, that is between
    /// [`start`](Self::start) or [`restart`](Self::restart) and [`kill`](Self::kill).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills one shim of this instance with SIGKILL, as if it crashed. containerd sees the
    /// shim's connection close and cleans up its task.
    ///
    /// # Errors
    ///
    /// Returns [`TestkitError::NotOwned`] when `pid` is not a live shim of this instance, or the
    /// signal error.
    pub fn kill_shim(&self, pid: u32) -> Result<(), TestkitError> {
        if !is_shim_of(pid, &self.layout.socket) {
            return Err(TestkitError::NotOwned {
                pid,
                expected: "a shim",
            });
        }
        send_signal(pid, Signal::SIGKILL)
    }

    /// Kills a task's process from the host with SIGKILL, bypassing containerd: the init
    /// process of a container (`Task::pid` in keel) or an exec process. Works while containerd
    /// is killed or frozen, because the shim, not containerd, reaps the process.
    ///
    /// # Errors
    ///
    /// Returns [`TestkitError::NotOwned`] when the parent of `pid` is not a shim of this
    /// instance, or the signal error.
    pub fn kill_task_process(&self, pid: u32) -> Result<(), TestkitError> {
        let parent_is_shim =
            parent_pid(pid).is_some_and(|parent| is_shim_of(parent, &self.layout.socket));
        if !parent_is_shim {
            return Err(TestkitError::NotOwned {
                pid,
                expected: "a process whose parent is a shim",
            });
        }
        send_signal(pid, Signal::SIGKILL)
    }

    /// Stops containerd and removes everything the instance created, as drop does, but on the
    /// blocking thread pool instead of the calling task's thread.
    pub async fn stop(self) {
        let dir = self.layout.dir.clone();
        let cleanup = tokio::task::spawn_blocking(move || {
            let mut instance = self;
            instance.clean_up();
        });
        if let Err(error) = cleanup.await {
            tracing::error!(dir = %dir.display(), %error, "private containerd cleanup panicked");
        }
    }

    fn running_pid(&self) -> Result<u32, TestkitError> {
        match self.child {
            Some(_) => Ok(self.pid),
            None => Err(TestkitError::NotRunning),
        }
    }

    /// Starts the containerd process and waits until it serves gRPC requests.
    async fn spawn_and_wait(&mut self) -> Result<(), TestkitError> {
        let started = Instant::now();
        let child = self.spawn()?;
        self.pid = child.id();
        self.child = Some(child);

        let version = self.wait_until_serving(started).await?;
        tracing::info!(
            pid = self.pid,
            socket = %self.layout.socket.display(),
            version,
            elapsed_ms = started.elapsed().as_millis(),
            "private containerd serving"
        );
        Ok(())
    }

    fn spawn(&self) -> Result<Child, TestkitError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.layout.log)
            .map_err(|error| TestkitError::io("open", &self.layout.log, error))?;
        let log_for_stderr = log
            .try_clone()
            .map_err(|error| TestkitError::io("duplicate handle of", &self.layout.log, error))?;

        Command::new(&self.programs.containerd)
            .arg("--config")
            .arg(&self.layout.config)
            .env("PATH", &self.programs.path)
            .current_dir(&self.layout.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                program: self.programs.containerd.clone(),
                source,
            })
    }

    /// Probes the Version service until it replies, containerd exits, or [`START_TIMEOUT`]
    /// passes since `started`. Returns containerd's version.
    async fn wait_until_serving(&mut self, started: Instant) -> Result<String, TestkitError> {
        loop {
            if let Some(version) = probe_version(&self.layout.socket, PROBE_TIMEOUT).await {
                return Ok(version);
            }

            let Some(child) = self.child.as_mut() else {
                return Err(TestkitError::NotRunning);
            };
            if let Some(status) = try_wait(child)? {
                self.child = None;
                return Err(TestkitError::ExitedEarly {
                    pid: self.pid,
                    status,
                    socket: self.layout.socket.clone(),
                    log: self.layout.log.clone(),
                    log_tail: log_tail(&self.layout.log),
                });
            }

            if started.elapsed() >= START_TIMEOUT {
                return Err(TestkitError::StartTimedOut {
                    pid: self.pid,
                    socket: self.layout.socket.clone(),
                    timeout_ms: START_TIMEOUT.as_millis(),
                    log: self.layout.log.clone(),
                    log_tail: log_tail(&self.layout.log),
                });
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Stops containerd, then cleans up its tasks, cgroups, runc folders, mounts and folder.
    ///
    /// containerd stops first so it does not react to the shims dying by running its own
    /// cleanup at the same time.
    fn clean_up(&mut self) {
        if self.cleaned_up {
            return;
        }
        self.cleaned_up = true;

        if let Some(mut child) = self.child.take() {
            match terminate(&mut child) {
                Ok(status) => {
                    tracing::debug!(pid = self.pid, %status, "private containerd stopped")
                }
                Err(error) => {
                    tracing::warn!(pid = self.pid, %error, "failed to stop private containerd")
                }
            }
        }

        let namespaces: BTreeSet<String> = lock(&self.namespaces).iter().cloned().collect();
        let bundles = task_bundles(&self.layout.task_root());
        let mut runc_roots = BTreeSet::new();
        for bundle in &bundles {
            let runc_root = delete_runc_container(bundle, Some(&self.programs.path));
            if namespaces.contains(&bundle.namespace) {
                runc_roots.insert(runc_root);
            }
        }
        if kill_shims(&self.layout.socket) {
            bundles.iter().for_each(remove_shim_socket);
        }
        for namespace in &namespaces {
            runc_roots.insert(default_runc_root(namespace));
            remove_namespace_cgroups(namespace);
        }
        remove_empty_folders(&runc_roots);

        match remove_folder(&self.layout.dir) {
            Ok(()) => {
                tracing::info!(dir = %self.layout.dir.display(), "private containerd removed")
            }
            Err(error) => {
                tracing::error!(dir = %self.layout.dir.display(), %error, "failed to remove private containerd folder");
            }
        }
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// Runs `work` on `child` on the blocking thread pool.
async fn run_blocking<T: Send + 'static>(
    child: Child,
    work: impl FnOnce(Child) -> Result<T, TestkitError> + Send + 'static,
) -> Result<T, TestkitError> {
    let pid = child.id();
    tokio::task::spawn_blocking(move || work(child))
        .await
        .map_err(|error| TestkitError::Wait {
            pid,
            source: std::io::Error::other(error),
        })?
}

/// Returns the last lines of the log at `path`, or a note saying why it cannot be read.
fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].join("\n")
        }
        Err(error) => format!("(log unreadable: {error})"),
    }
}

/// Locks `mutex`, taking over the data if a panicking thread poisoned it. The data here (a list
/// of names, a path) stays valid whatever the panic interrupted.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_last_lines() -> std::io::Result<()> {
        let path = std::env::temp_dir().join(format!("keel-log-tail-{}", std::process::id()));
        let text: String = (0..100).map(|line| format!("line {line}\n")).collect();
        std::fs::write(&path, text)?;

        let tail = log_tail(&path);
        std::fs::remove_file(&path)?;

        assert!(tail.starts_with("line 60\n"));
        assert!(tail.ends_with("line 99"));
        Ok(())
    }

    #[test]
    fn log_tail_of_missing_file_says_so() {
        let tail = log_tail(Path::new("/nonexistent-keel-folder/containerd.log"));
        assert!(tail.starts_with("(log unreadable: "));
    }
}
