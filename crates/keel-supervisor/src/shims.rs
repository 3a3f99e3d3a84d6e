//! Stopping the containers of a supervised containerd: their runc containers and their shims.
//!
//! A stopped containerd leaves its shims, and so its containers, running, which is what lets
//! containers survive an engine restart. When asked to stop them too, the supervisor deletes
//! each task's runc container and kills each shim. Everything touched provably belongs to this
//! containerd: bundles under its state folder, runc state whose bundle label points at such a
//! bundle, and shims whose command line names its socket.

use std::fs;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::SupervisorConfig;
use crate::pidfile::{command_args, is_alive};

/// The runc root of the runc v2 shim when the container's runtime options set none
/// (`RuncRoot` in containerd 1.6 and 1.7). The shim appends the namespace.
const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

/// The folder where containerd 1.6 and 1.7 shims create their sockets.
const SHIM_SOCKET_FOLDER: &str = "/run/containerd/s";

/// How long a shim may take to die after SIGKILL.
const SHIM_KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// One task bundle, `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/`.
#[derive(Clone, Debug)]
struct TaskBundle {
    namespace: String,
    id: String,
    path: PathBuf,
}

/// Deletes the runc container of every task of this containerd, then kills its shims and
/// removes their sockets. Blocks; call it on the blocking thread pool.
pub(crate) fn stop_tasks_and_shims(config: &SupervisorConfig) {
    let bundles = task_bundles(&config.task_root());
    for bundle in &bundles {
        delete_runc_container(bundle, config);
    }

    let mut shims = shim_pids(&config.socket());
    for bundle in &bundles {
        if let Some(pid) = bundle_shim_pid(bundle)
            && !shims.contains(&pid)
        {
            shims.push(pid);
        }
    }
    let socket = config.socket();
    for pid in shims {
        kill_shim(pid, &socket);
    }
    bundles.iter().for_each(remove_shim_socket);
}

/// Lists the task bundles under `task_root`.
fn task_bundles(task_root: &Path) -> Vec<TaskBundle> {
    let mut bundles = Vec::new();
    for namespace_dir in subfolders(task_root) {
        let Some(namespace) = file_name(&namespace_dir) else {
            continue;
        };
        for path in subfolders(&namespace_dir) {
            let Some(id) = file_name(&path) else {
                continue;
            };
            bundles.push(TaskBundle {
                namespace: namespace.clone(),
                id,
                path,
            });
        }
    }
    bundles
}

/// Runs `runc delete --force` for the bundle's container if runc's state shows it belongs to
/// this bundle. runc's root is shared by every containerd on the machine, so a container of
/// the same namespace and id from another containerd is spared.
fn delete_runc_container(bundle: &TaskBundle, config: &SupervisorConfig) {
    let (runc_binary, runc_root) = runc_binary_and_root(bundle);
    let state = runc_root.join(&bundle.id).join("state.json");
    let label = format!("\"bundle={}\"", bundle.path.display());
    let is_ours = fs::read_to_string(&state).is_ok_and(|text| text.contains(&label));
    if !is_ours {
        return;
    }

    let mut command = Command::new(&runc_binary);
    command
        .arg("--root")
        .arg(&runc_root)
        .args(["delete", "--force"])
        .arg(&bundle.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = &config.path_env {
        command.env("PATH", path);
    }
    match command.status() {
        Ok(status) if status.success() => {
            tracing::info!(namespace = %bundle.namespace, container_id = %bundle.id, "runc container deleted");
        }
        Ok(status) => {
            tracing::warn!(namespace = %bundle.namespace, container_id = %bundle.id, %status, "runc delete failed");
        }
        Err(error) => {
            tracing::warn!(namespace = %bundle.namespace, container_id = %bundle.id, runc = runc_binary, %error, "failed to start runc");
        }
    }
}

/// Returns the runc binary and runc root the shim uses for the bundle's task. The shim writes
/// the container's runc options to `options.json`. Their `binary_name` and `root` override the
/// defaults, and the shim appends the namespace to the root.
fn runc_binary_and_root(bundle: &TaskBundle) -> (String, PathBuf) {
    let options = fs::read(bundle.path.join("options.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let field = |name: &str| {
        options
            .as_ref()
            .and_then(|options| options.get(name))
            .and_then(serde_json::Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let binary = field("binary_name").unwrap_or_else(|| "runc".to_owned());
    let root = field("root").unwrap_or_else(|| DEFAULT_RUNC_ROOT.to_owned());
    (binary, Path::new(&root).join(&bundle.namespace))
}

/// Returns the pid in the bundle's `shim.pid`. containerd 1.6.20's runc v2 shim does not write
/// that file, so [`shim_pids`] finds shims through `/proc` as well.
fn bundle_shim_pid(bundle: &TaskBundle) -> Option<u32> {
    let text = fs::read_to_string(bundle.path.join("shim.pid")).ok()?;
    text.trim().parse().ok()
}

/// Returns the pids of the live shims started with `-address <socket>`.
fn shim_pids(socket: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&pid| is_shim(pid, Some(socket)) && is_alive(pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Reports whether `pid` is a containerd shim, started with `-address <socket>` when `socket`
/// is given.
fn is_shim(pid: u32, socket: Option<&Path>) -> bool {
    let Some(args) = command_args(pid) else {
        return false;
    };
    let is_shim = args
        .first()
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|name| name.to_string_lossy().starts_with("containerd-shim"));
    let Some(socket) = socket else {
        return is_shim;
    };
    let socket = socket.to_string_lossy();
    let serves_socket = args
        .windows(2)
        .any(|pair| pair[0] == "-address" && pair[1] == socket.as_ref());
    is_shim && serves_socket
}

/// Kills the shim `pid` with SIGKILL after checking again that it is a shim of `socket`, and
/// waits for it to die.
fn kill_shim(pid: u32, socket: &Path) {
    if !is_shim(pid, Some(socket)) {
        return;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if let Err(error) = nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGKILL) {
        tracing::warn!(pid, %error, "failed to kill shim");
        return;
    }
    let deadline = Instant::now() + SHIM_KILL_TIMEOUT;
    while is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_alive(pid) {
        tracing::warn!(pid, "shim still alive after SIGKILL");
    } else {
        tracing::info!(pid, "shim killed");
    }
}

/// Removes the socket the bundle's shim created in the shared shim socket folder, found through
/// the bundle's `address` file (`unix://<path>`). Call it only after the shim is dead.
fn remove_shim_socket(bundle: &TaskBundle) {
    let Ok(address) = fs::read_to_string(bundle.path.join("address")) else {
        return;
    };
    let Some(path) = address.trim().strip_prefix("unix://").map(PathBuf::from) else {
        return;
    };
    if path.parent() != Some(Path::new(SHIM_SOCKET_FOLDER)) {
        return;
    }
    let is_socket = path
        .symlink_metadata()
        .is_ok_and(|metadata| metadata.file_type().is_socket());
    if is_socket && let Err(error) = fs::remove_file(&path) {
        tracing::warn!(socket = %path.display(), %error, "failed to remove shim socket");
    }
}

fn subfolders(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(folder) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|file_type| file_type.is_dir()))
        .map(|entry| entry.path())
        .collect()
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_not_a_shim() {
        assert!(!is_shim(std::process::id(), None));
    }

    #[test]
    fn runc_root_defaults_to_shim_default() {
        let bundle = TaskBundle {
            namespace: "keel-ns".to_owned(),
            id: "c1".to_owned(),
            path: PathBuf::from("/nonexistent-keel-bundle"),
        };
        let (binary, root) = runc_binary_and_root(&bundle);
        assert_eq!(binary, "runc");
        assert_eq!(root, PathBuf::from("/run/containerd/runc/keel-ns"));
    }
}
