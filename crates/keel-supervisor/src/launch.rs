//! Getting a serving containerd: adopt the one the pidfile names when it is ours and serves,
//! otherwise start a new one and wait until it serves.
//!
//! Both happen under an exclusive lock on a file in the run folder, so two supervisors of the
//! same folders (two commands of a command line tool, say) never start two containerds on one
//! root: the second finds the first one's pidfile and adopts.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;

use crate::config::{HungPolicy, SupervisorConfig};
use crate::error::SupervisorError;
use crate::health::{PROBE_INTERVAL, is_serving, wait_until_serving};
use crate::pidfile;
use crate::process::ContainerdProcess;

/// How long an adopted but unresponsive containerd may take to die after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The origin of a serving containerd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Started,
    Adopted,
}

/// Creates containerd's folders and writes its config file.
pub(crate) fn prepare(config: &SupervisorConfig) -> Result<(), SupervisorError> {
    check_paths(config)?;
    for folder in [&config.run_dir, &config.root, &config.state] {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(|error| SupervisorError::io("create directory", folder, error))?;
    }
    let path = config.config_file();
    let text = config
        .containerd_config()
        .to_toml()
        .map_err(|error| SupervisorError::io("render", &path, std::io::Error::other(error)))?;
    fs::write(&path, text).map_err(|error| SupervisorError::io("write", &path, error))
}

/// The maximum length of a socket path containerd accepts, in bytes; it rejects longer ones,
/// because BSD systems allow no more.
const MAX_SOCKET_PATH: usize = 104;

/// Checks the folders and sockets before anything is made. containerd runs in the run folder,
/// where relative paths would not resolve, and rejects a socket path longer than
/// [`MAX_SOCKET_PATH`].
fn check_paths(config: &SupervisorConfig) -> Result<(), SupervisorError> {
    let folders = [
        ("run folder", &config.run_dir),
        ("root folder", &config.root),
        ("state folder", &config.state),
    ];
    for (field, folder) in folders {
        if !folder.is_absolute() {
            return Err(SupervisorError::InvalidPath {
                field,
                path: folder.clone(),
                reason: "must be an absolute path".to_owned(),
            });
        }
    }
    for socket in [
        config.socket(),
        config.ttrpc_socket(),
        config.debug_socket(),
    ] {
        let length = socket.as_os_str().len();
        if length > MAX_SOCKET_PATH {
            return Err(SupervisorError::InvalidPath {
                field: "socket path",
                path: socket,
                reason: format!(
                    "is {length} bytes, more than containerd's limit of {MAX_SOCKET_PATH}; choose a shorter run folder"
                ),
            });
        }
    }
    Ok(())
}

/// Returns the containerd binary: `config.containerd` when it names a path, else the first
/// executable of that name on the `PATH` containerd runs with.
pub(crate) fn resolve_binary(config: &SupervisorConfig) -> Result<PathBuf, SupervisorError> {
    let binary = &config.containerd;
    let not_found = || SupervisorError::BinaryNotFound {
        binary: binary.clone(),
    };
    if binary.components().count() > 1 {
        return binary
            .is_file()
            .then(|| binary.clone())
            .ok_or_else(not_found);
    }
    let path = config
        .path_env
        .clone()
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    std::env::split_paths(&path)
        .map(|folder| folder.join(binary))
        .find(|candidate| candidate.is_file())
        .ok_or_else(not_found)
}

/// Adopts the containerd of the pidfile or starts one, under the run folder's lock, and writes
/// the pidfile.
pub(crate) async fn adopt_or_start(
    config: &SupervisorConfig,
    binary: &Path,
) -> Result<(ContainerdProcess, Origin), SupervisorError> {
    let _lock = lock(config.lock_file()).await?;
    if let Some(process) = try_adopt(config, binary).await? {
        return Ok((process, Origin::Adopted));
    }
    let process = start(config, binary).await?;
    pidfile::write(&config.pidfile(), process.pid())?;
    Ok((process, Origin::Started))
}

/// Takes an exclusive lock on `path`, waiting on the blocking thread pool while another
/// supervisor holds it.
async fn lock(path: PathBuf) -> Result<Flock<File>, SupervisorError> {
    tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| SupervisorError::io("open", &path, error))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| SupervisorError::io("lock", &path, errno.into()))
    })
    .await
    .map_err(|error| {
        SupervisorError::io(
            "lock",
            "the supervisor lock file",
            std::io::Error::other(error),
        )
    })?
}

/// Returns the containerd the pidfile names if it is ours and serves within the start-up
/// timeout. An unrelated process is left alone. Our containerd that does not serve is killed
/// under [`HungPolicy::DumpAndRestart`] and rejected under [`HungPolicy::Wait`].
async fn try_adopt(
    config: &SupervisorConfig,
    binary: &Path,
) -> Result<Option<ContainerdProcess>, SupervisorError> {
    let pidfile = config.pidfile();
    let Some(pid) = pidfile::read(&pidfile) else {
        return Ok(None);
    };
    let Some(pidfd) = pidfile::open_if_ours(pid, binary, &config.config_file()) else {
        tracing::info!(pid, pidfile = %pidfile.display(), "pidfile names no containerd of ours; starting a new one");
        return Ok(None);
    };
    let mut process = ContainerdProcess::adopt(pid, pidfd);
    let socket = config.socket();
    if wait_until_serving(&socket, config.start_timeout).await {
        return Ok(Some(process));
    }

    match config.hung_policy {
        HungPolicy::Wait => Err(SupervisorError::AdoptedNotServing {
            pid,
            pidfile,
            socket,
        }),
        HungPolicy::DumpAndRestart => {
            tracing::warn!(
                pid,
                "containerd from the pidfile does not serve; killing it"
            );
            dump_and_kill(&process, config.dump_wait).await;
            let _ = tokio::time::timeout(KILL_TIMEOUT, process.exited()).await;
            Ok(None)
        }
    }
}

/// Sends SIGUSR1 so containerd dumps its goroutine stacks to its log, and SIGCONT so a stopped
/// containerd acts on it, waits `dump_wait`, then sends SIGKILL.
pub(crate) async fn dump_and_kill(process: &ContainerdProcess, dump_wait: Duration) {
    let pid = process.pid();
    for signal in [Signal::SIGUSR1, Signal::SIGCONT] {
        if let Err(error) = process.signal(signal) {
            tracing::warn!(pid, %error, "failed to signal hung containerd");
        }
    }
    tokio::time::sleep(dump_wait).await;
    if let Err(error) = process.signal(Signal::SIGKILL) {
        tracing::warn!(pid, %error, "failed to kill hung containerd");
    }
}

/// Starts containerd and waits until it serves, it exits, or the start-up timeout passes. A
/// containerd that does not serve in time is killed.
async fn start(
    config: &SupervisorConfig,
    binary: &Path,
) -> Result<ContainerdProcess, SupervisorError> {
    let mut process = ContainerdProcess::spawn(config, binary)?;
    let pid = process.pid();
    let socket = config.socket();
    let started = tokio::time::Instant::now();
    loop {
        let remaining = config.start_timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            let _ = process.signal(Signal::SIGKILL);
            let _ = tokio::time::timeout(KILL_TIMEOUT, process.exited()).await;
            return Err(SupervisorError::StartTimedOut {
                pid,
                socket,
                timeout_ms: config.start_timeout.as_millis(),
                log: config.output.describe(),
            });
        }
        let check_timeout = remaining.min(config.health_timeout);
        tokio::select! {
            status = process.exited() => {
                return Err(match status {
                    Some(status) => SupervisorError::ExitedEarly {
                        pid,
                        status,
                        socket,
                        log: config.output.describe(),
                    },
                    None => SupervisorError::Process {
                        action: "wait for",
                        pid,
                        source: std::io::Error::other("its exit status is unknown"),
                    },
                });
            }
            serving = is_serving(&socket, check_timeout) => {
                if serving {
                    return Ok(process);
                }
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_run_folder_rejected() {
        let config = SupervisorConfig::new("/tmp/keel-root", "relative/run");
        let error = prepare(&config).expect_err("relative run folder");
        assert!(
            matches!(
                error,
                SupervisorError::InvalidPath {
                    field: "run folder",
                    ..
                }
            ),
            "{error}"
        );
        assert!(!Path::new("relative").exists(), "a folder was made");
    }

    #[test]
    fn long_socket_path_rejected() {
        let run_dir = format!("/tmp/{}", "r".repeat(MAX_SOCKET_PATH));
        let config = SupervisorConfig::new("/tmp/keel-root", &run_dir);
        let error = prepare(&config).expect_err("long socket path");
        assert!(
            matches!(
                error,
                SupervisorError::InvalidPath {
                    field: "socket path",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("104"), "{error}");
        assert!(!Path::new(&run_dir).exists(), "a folder was made");
    }
}
