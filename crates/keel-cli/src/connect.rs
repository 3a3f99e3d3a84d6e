//! Connecting a keel client: to the socket of `--address`, or to keel's own containerd, which
//! is started on first use and left running for the next command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel::{Backend, Client, ClientOptions, ContainerEvent};
use keel_supervisor::{ContainerdOutput, HungPolicy, Supervisor, SupervisorConfig};

use crate::cli::GlobalOptions;
use crate::error::CliError;
use crate::spinner::with_spinner;

/// The default folder of containerd's persistent data.
const DEFAULT_DATA_DIR: &str = "/var/lib/keel-cli";

/// The default folder of sockets, containerd's runtime state and FIFOs.
const DEFAULT_RUN_DIR: &str = "/run/keel-cli";

/// The environment variable that overrides the containerd binary of keel's own containerd.
const CONTAINERD_ENV: &str = "KEEL_CONTAINERD";

/// How long keel's own containerd may take to serve after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long closing a session waits for the last events to reach the backend.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The folders keel uses.
#[derive(Clone, Debug)]
pub struct Paths {
    /// containerd's `root`.
    pub containerd_root: PathBuf,
    /// The supervisor's run folder: sockets, config, pidfile, log and containerd's state.
    pub run_dir: PathBuf,
    /// The client's state folder: bundles and FIFOs, as `<namespace>/<id>/`.
    pub client_dir: PathBuf,
}

impl Paths {
    /// Derives the folders from `--state-dir`, or the defaults without it.
    pub fn new(state_dir: Option<&Path>) -> Self {
        match state_dir {
            Some(dir) => Self {
                containerd_root: dir.join("containerd"),
                run_dir: dir.join("run"),
                client_dir: dir.join("client"),
            },
            None => Self {
                containerd_root: Path::new(DEFAULT_DATA_DIR).join("containerd"),
                run_dir: PathBuf::from(DEFAULT_RUN_DIR),
                client_dir: Path::new(DEFAULT_RUN_DIR).join("client"),
            },
        }
    }
}

/// A connected client, and the supervisor of keel's own containerd when one is used. Dropping
/// the supervisor leaves containerd running for the next command.
pub struct Session {
    /// The connected client.
    pub client: Client,
    _supervisor: Option<Supervisor>,
}

impl Session {
    /// Stops the client's actors; containers keep running.
    pub async fn close(self) {
        self.client.shutdown(SHUTDOWN_TIMEOUT).await;
    }
}

/// A backend that drops every event, for commands that do not print events.
pub struct IgnoreEvents;

#[keel::async_trait]
impl Backend for IgnoreEvents {
    async fn handle_event(&self, _event: ContainerEvent) {}
}

/// Connects a client with `backend`, to `--address` or to keel's own containerd.
pub async fn connect(global: &GlobalOptions, backend: impl Backend) -> Result<Session, CliError> {
    if let Some(dir) = &global.state_dir {
        check_state_dir(dir)?;
    }
    let paths = Paths::new(global.state_dir.as_deref());
    let (socket, supervisor) = match &global.address {
        Some(address) => (address.clone(), None),
        None => {
            let supervisor = start_supervisor(&paths).await?;
            (supervisor.socket(), Some(supervisor))
        }
    };
    let options =
        ClientOptions::new(socket, global.namespace.as_str()).state_dir(&paths.client_dir);
    let client = Client::connect_with(options, backend).await?;
    if let Some(supervisor) = &supervisor {
        let notified = client.clone();
        supervisor.on_event(move |event| {
            if event.is_serving_again() {
                notified.notify_containerd_restarted();
            }
        });
    }
    Ok(Session {
        client,
        _supervisor: supervisor,
    })
}

/// Rejects a `--state-dir` that names a file, or lies under one, before any folder is made.
fn check_state_dir(dir: &Path) -> Result<(), CliError> {
    let file = dir
        .ancestors()
        .find(|path| std::fs::metadata(path).is_ok_and(|metadata| !metadata.is_dir()));
    match file {
        Some(file) => Err(CliError::usage(format!(
            "--state-dir {}: {} is not a folder (Not a directory); name a folder, or a path \
             where keel can make one",
            dir.display(),
            file.display()
        ))),
        None => Ok(()),
    }
}

/// Returns the settings of keel's own containerd. It runs in a process group of its own and
/// logs to `<run>/containerd.log`, so it outlives this command.
pub fn supervisor_config(paths: &Paths) -> SupervisorConfig {
    let mut config = SupervisorConfig::new(&paths.containerd_root, &paths.run_dir)
        .start_timeout(START_TIMEOUT)
        .hung_policy(HungPolicy::Wait)
        .output(ContainerdOutput::File(paths.run_dir.join("containerd.log")));
    config.own_process_group = true;
    if let Some(binary) = std::env::var_os(CONTAINERD_ENV) {
        config.containerd = PathBuf::from(binary);
    }
    config
}

/// Adopts keel's own containerd, or starts it and waits until it serves.
async fn start_supervisor(paths: &Paths) -> Result<Supervisor, CliError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(CliError::usage(
            "keel's own containerd needs root: run keel as root, or pass --address with the socket of a running containerd",
        ));
    }
    let config = supervisor_config(paths);
    let supervisor = with_spinner("starting containerd", Supervisor::start(config)).await?;
    Ok(supervisor)
}
