//! The supervisor's settings, the paths derived from them, and the containerd config file they
//! render to.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::containerd_config::{ContainerdConfig, DEFAULT_MESSAGE_SIZE};

/// The supervisor's response to a containerd that lives but keeps failing health checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HungPolicy {
    /// Reports the hang and keeps checking; containerd is left alone.
    #[default]
    Wait,
    /// Sends SIGUSR1 so containerd writes its goroutine stacks to its log, waits
    /// [`SupervisorConfig::dump_wait`], then kills it with SIGKILL and starts a new one.
    DumpAndRestart,
}

/// The destination of containerd's standard output and error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ContainerdOutput {
    /// Each line becomes a `tracing` event with the target `containerd`. The pipes close when
    /// the supervising process exits, so use [`ContainerdOutput::File`] for a containerd that
    /// outlives it.
    #[default]
    Tracing,
    /// Appended to this file.
    File(PathBuf),
}

impl ContainerdOutput {
    /// Returns where the log goes, in words for an error message, such as
    /// "its log in /var/log/containerd.log".
    pub fn describe(&self) -> String {
        match self {
            Self::Tracing => "its log in the `containerd` tracing target".to_owned(),
            Self::File(path) => format!("its log in {}", path.display()),
        }
    }
}

/// The delays between restarts of a containerd that keeps dying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartBackoff {
    /// The delay before the second restart in a row; the first restart is immediate.
    pub initial: Duration,
    /// The cap of the delay, which doubles with each restart in a row.
    pub max: Duration,
    /// How long containerd must serve before its next death counts as the first again.
    pub reset_after: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
        }
    }
}

impl RestartBackoff {
    /// Returns the delay before restart number `consecutive` (1 for the first death after a
    /// healthy run): zero, then `initial`, doubling up to `max`.
    pub fn delay(&self, consecutive: u32) -> Duration {
        if consecutive <= 1 {
            return Duration::ZERO;
        }
        let doublings = (consecutive - 2).min(31);
        self.initial
            .saturating_mul(1_u32 << doublings)
            .min(self.max)
    }
}

/// Settings of a [`crate::Supervisor`].
///
/// [`SupervisorConfig::new`] puts containerd's persistent data in `root` and everything that
/// lives only while the machine runs (state, sockets, config, pidfile) in `run_dir`. Keep
/// `run_dir` short: a unix socket path must fit in 108 bytes.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The containerd binary. A bare name is looked up on `PATH` when the supervisor starts.
    pub containerd: PathBuf,
    /// containerd's `root` folder: its metadata database and content.
    pub root: PathBuf,
    /// containerd's `state` folder: task bundles and other runtime state.
    pub state: PathBuf,
    /// The folder of the sockets, the generated config file and the pidfile.
    pub run_dir: PathBuf,
    /// The `PATH` containerd and its shims run with, which is where the shim finds runc. `None`
    /// passes on the supervisor's own `PATH`.
    pub path_env: Option<OsString>,
    /// How long a started containerd may take to pass its first health check.
    pub start_timeout: Duration,
    /// The time between health checks of a serving containerd.
    pub health_interval: Duration,
    /// How long one health check may take.
    pub health_timeout: Duration,
    /// How long health checks must keep failing while the process lives before containerd
    /// counts as hung.
    pub hung_after: Duration,
    /// The response to a hung containerd.
    pub hung_policy: HungPolicy,
    /// How long [`HungPolicy::DumpAndRestart`] waits between SIGUSR1 and SIGKILL, so the
    /// goroutine dump reaches the log.
    pub dump_wait: Duration,
    /// The delays between restarts.
    pub restart_backoff: RestartBackoff,
    /// The destination of containerd's output.
    pub output: ContainerdOutput,
    /// Starts containerd in a process group of its own, so a terminal's Ctrl-C or hang-up
    /// that reaches the supervising process does not reach containerd.
    pub own_process_group: bool,
    /// containerd's gRPC receive limit in bytes.
    pub max_recv_message_size: u32,
    /// containerd's gRPC send limit in bytes.
    pub max_send_message_size: u32,
    /// containerd's log level, such as `info` or `debug`.
    pub log_level: String,
}

impl SupervisorConfig {
    /// Returns the default settings for a containerd keeping its data in `root` and its
    /// runtime files in `run_dir` (state in `<run_dir>/state`).
    pub fn new(root: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        let run_dir = run_dir.into();
        Self {
            containerd: PathBuf::from("containerd"),
            root: root.into(),
            state: run_dir.join("state"),
            run_dir,
            path_env: None,
            start_timeout: Duration::from_secs(20),
            health_interval: Duration::from_millis(500),
            health_timeout: Duration::from_secs(1),
            hung_after: Duration::from_secs(5),
            hung_policy: HungPolicy::default(),
            dump_wait: Duration::from_secs(1),
            restart_backoff: RestartBackoff::default(),
            output: ContainerdOutput::default(),
            own_process_group: false,
            max_recv_message_size: DEFAULT_MESSAGE_SIZE,
            max_send_message_size: DEFAULT_MESSAGE_SIZE,
            log_level: "info".to_owned(),
        }
    }

    /// Sets the containerd binary.
    pub fn containerd(mut self, binary: impl Into<PathBuf>) -> Self {
        self.containerd = binary.into();
        self
    }

    /// Sets the start-up timeout.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Sets the hang policy.
    pub fn hung_policy(mut self, policy: HungPolicy) -> Self {
        self.hung_policy = policy;
        self
    }

    /// Sets how long failing health checks make a live containerd hung.
    pub fn hung_after(mut self, after: Duration) -> Self {
        self.hung_after = after;
        self
    }

    /// Sets where containerd's output goes.
    pub fn output(mut self, output: ContainerdOutput) -> Self {
        self.output = output;
        self
    }

    /// containerd's gRPC socket, the one to pass to `keel::ClientOptions::new`.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("containerd.sock")
    }

    /// containerd's ttrpc socket, which its shims publish events on.
    pub fn ttrpc_socket(&self) -> PathBuf {
        self.run_dir.join("containerd.sock.ttrpc")
    }

    /// containerd's debug socket (pprof and expvar).
    pub fn debug_socket(&self) -> PathBuf {
        self.run_dir.join("debug.sock")
    }

    /// The generated config file containerd is started with.
    pub fn config_file(&self) -> PathBuf {
        self.run_dir.join("containerd.toml")
    }

    /// The file holding the pid of the supervised containerd.
    pub fn pidfile(&self) -> PathBuf {
        self.run_dir.join("containerd.pid")
    }

    /// The lock that keeps two supervisors from starting containerd on the same folders at once.
    pub fn lock_file(&self) -> PathBuf {
        self.run_dir.join("supervisor.lock")
    }

    /// The folder where containerd's runc v2 runtime keeps task bundles, as `<namespace>/<id>/`.
    pub fn task_root(&self) -> PathBuf {
        self.state.join("io.containerd.runtime.v2.task")
    }

    /// Returns the settings of containerd's config file.
    pub fn containerd_config(&self) -> ContainerdConfig {
        ContainerdConfig {
            root: self.root.clone(),
            state: self.state.clone(),
            grpc_socket: self.socket(),
            ttrpc_socket: self.ttrpc_socket(),
            debug_socket: self.debug_socket(),
            opt_dir: self.root.join("opt"),
            max_recv_message_size: self.max_recv_message_size,
            max_send_message_size: self.max_send_message_size,
            log_level: self.log_level.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_first_restart_is_immediate() {
        let backoff = RestartBackoff::default();
        assert_eq!(backoff.delay(0), Duration::ZERO);
        assert_eq!(backoff.delay(1), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_cap() {
        let backoff = RestartBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            reset_after: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(2), Duration::from_millis(100));
        assert_eq!(backoff.delay(3), Duration::from_millis(200));
        assert_eq!(backoff.delay(4), Duration::from_millis(400));
        assert_eq!(backoff.delay(5), Duration::from_millis(500));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_millis(500));
    }
}
