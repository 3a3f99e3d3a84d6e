//! The task bundles, runc containers and shims of one containerd, found and removed without
//! touching those of any other containerd on the machine.
//!
//! A stopped containerd leaves its shims, and so its containers, running, which is what lets
//! containers survive an engine restart. When asked to stop them too, the supervisor deletes
//! each task's runc container and kills each shim. Everything touched provably belongs to this
//! containerd: bundles under its state folder, runc state whose bundle label points at such a
//! bundle, and shims whose command line names its socket.
//!
//! The functions are public so that keel-testkit cleans up its private containerd instances
//! with the same checks.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::SupervisorConfig;
use crate::pidfile::{all_pids, command_args, is_process_alive, wait_until_dead};

/// The runc root of the runc v2 shim when the container's runtime options set none
/// (`RuncRoot` in containerd 1.6 and 1.7). The shim appends the namespace.
const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

/// The runc binary of the runc v2 shim when the runtime options name none.
const DEFAULT_RUNC_BINARY: &str = "runc";

/// The folder where containerd 1.6 and 1.7 shims create their sockets, named by a hash of the
/// containerd address, namespace and container id.
const SHIM_SOCKET_FOLDER: &str = "/run/containerd/s";

/// How long a shim may take to die after SIGKILL.
const SHIM_KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// One task bundle, `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/`.
#[derive(Clone, Debug)]
pub struct TaskBundle {
    /// The containerd namespace of the task.
    pub namespace: String,
    /// The container id of the task.
    pub id: String,
    /// The bundle folder.
    pub path: PathBuf,
}

impl TaskBundle {
    /// Returns the runc binary and runc root the shim uses for this task.
    ///
    /// The shim writes the container's runc options to `options.json` in the bundle. Its
    /// `binary_name` and `root` fields override the defaults, and the root gets the namespace
    /// appended, as the shim does.
    pub fn runc_binary_and_root(&self) -> (String, PathBuf) {
        let options = fs::read(self.path.join("options.json"))
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
        let binary = field("binary_name").unwrap_or_else(|| DEFAULT_RUNC_BINARY.to_owned());
        let root = field("root").unwrap_or_else(|| DEFAULT_RUNC_ROOT.to_owned());
        (binary, Path::new(&root).join(&self.namespace))
    }

    /// Returns the pid in the bundle's `shim.pid`. containerd 1.6.20's runc v2 shim does not
    /// write that file, so [`shim_pids`] finds shims through `/proc` as well.
    fn shim_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.path.join("shim.pid")).ok()?;
        text.trim().parse().ok()
    }

    /// Returns the shim's socket file from the bundle's `address` file (`unix://<path>`), if it
    /// lies in the shared shim socket folder.
    fn shim_socket(&self) -> Option<PathBuf> {
        let address = fs::read_to_string(self.path.join("address")).ok()?;
        let path = Path::new(address.trim().strip_prefix("unix://")?);
        (path.parent() == Some(Path::new(SHIM_SOCKET_FOLDER))).then(|| path.to_owned())
    }
}

/// Deletes the runc container of every task of this containerd, then kills its shims and
/// removes their sockets. Blocks; call it on the blocking thread pool.
pub(crate) fn stop_tasks_and_shims(config: &SupervisorConfig) {
    let bundles = task_bundles(&config.task_root());
    for bundle in &bundles {
        delete_runc_container(bundle, config.path_env.as_deref());
    }

    let socket = config.socket();
    let mut shims = shim_pids(&socket);
    for bundle in &bundles {
        if let Some(pid) = bundle.shim_pid()
            && !shims.contains(&pid)
        {
            shims.push(pid);
        }
    }
    for pid in shims {
        kill_shim(pid, &socket);
    }
    bundles.iter().for_each(remove_shim_socket);
}

/// Returns the runc root the runc v2 shim uses for `namespace` when the runtime options set none.
pub fn default_runc_root(namespace: &str) -> PathBuf {
    Path::new(DEFAULT_RUNC_ROOT).join(namespace)
}

/// Lists the task bundles under `task_root` (`<state>/io.containerd.runtime.v2.task`).
pub fn task_bundles(task_root: &Path) -> Vec<TaskBundle> {
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

/// Runs `runc delete --force` for the task's container if runc's state shows it belongs to
/// this bundle. runc's root is shared by every containerd on the machine, so a container of
/// the same namespace and id from another containerd is spared. runc is looked up on
/// `path_env` when given, and on this process's `PATH` otherwise.
///
/// Returns the runc root the task used, so the caller can remove it once empty.
pub fn delete_runc_container(bundle: &TaskBundle, path_env: Option<&OsStr>) -> PathBuf {
    let (runc_binary, runc_root) = bundle.runc_binary_and_root();
    if runc_state_is_ours(&runc_root, bundle) {
        run_runc_delete(&runc_binary, &runc_root, bundle, path_env);
    }
    runc_root
}

/// Returns the pids of the live shims of the containerd serving on `containerd_socket`, sorted.
///
/// A shim is that containerd's when its program name starts with `containerd-shim` and its
/// arguments contain `-address <containerd_socket>`. containerd starts every shim with that
/// argument. The pids come from scanning `/proc`, because the runc v2 shim of containerd 1.6.20
/// writes no `shim.pid` file into the bundle.
pub fn shim_pids(containerd_socket: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = all_pids()
        .into_iter()
        .filter(|&pid| is_shim_of(pid, containerd_socket))
        .filter(|&pid| is_process_alive(pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Reports whether `pid` is a containerd shim started with `-address <containerd_socket>`.
pub fn is_shim_of(pid: u32, containerd_socket: &Path) -> bool {
    let Some(args) = command_args(pid) else {
        return false;
    };
    let is_shim = args
        .first()
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|name| name.to_string_lossy().starts_with("containerd-shim"));
    let socket = containerd_socket.to_string_lossy();
    let serves_socket = args
        .windows(2)
        .any(|pair| pair[0] == "-address" && pair[1] == socket.as_ref());
    is_shim && serves_socket
}

/// Kills the shim `pid` with SIGKILL after checking again that it is a shim of
/// `containerd_socket`, so a pid reused since a scan is spared, and waits for it to die.
///
/// Returns false when the shim could not be signalled or still runs after the wait, and true
/// otherwise, including when `pid` is no such shim.
pub fn kill_shim(pid: u32, containerd_socket: &Path) -> bool {
    if !is_shim_of(pid, containerd_socket) {
        return true;
    }
    let signalled = i32::try_from(pid)
        .map_err(|_| nix::errno::Errno::ESRCH)
        .and_then(|raw| nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGKILL));
    if let Err(error) = signalled {
        tracing::warn!(pid, %error, "failed to kill shim");
        return false;
    }

    if !wait_until_dead(pid, SHIM_KILL_TIMEOUT) {
        tracing::warn!(pid, "shim still alive after SIGKILL");
        return false;
    }
    tracing::info!(pid, "shim killed");
    true
}

/// Removes the socket the bundle's shim created in the shared shim socket folder, found
/// through the bundle's `address` file. Call it only after the shim is dead, because a live
/// shim still serves on it.
pub fn remove_shim_socket(bundle: &TaskBundle) {
    let Some(socket) = bundle.shim_socket() else {
        return;
    };
    let is_socket = socket
        .symlink_metadata()
        .is_ok_and(|metadata| metadata.file_type().is_socket());
    if !is_socket {
        return;
    }
    match fs::remove_file(&socket) {
        Ok(()) => tracing::debug!(socket = %socket.display(), "shim socket removed"),
        Err(error) => {
            tracing::warn!(socket = %socket.display(), %error, "failed to remove shim socket");
        }
    }
}

/// Reports whether runc has state for the task's id under `runc_root` whose bundle is this
/// bundle. runc records the bundle as the label `bundle=<path>` in its `state.json`.
fn runc_state_is_ours(runc_root: &Path, bundle: &TaskBundle) -> bool {
    let state = runc_root.join(&bundle.id).join("state.json");
    let Ok(text) = fs::read_to_string(&state) else {
        return false;
    };
    let label = format!("\"bundle={}\"", bundle.path.display());
    text.contains(&label)
}

fn run_runc_delete(
    runc_binary: &str,
    runc_root: &Path,
    bundle: &TaskBundle,
    path_env: Option<&OsStr>,
) {
    let mut command = Command::new(runc_binary);
    command
        .arg("--root")
        .arg(runc_root)
        .args(["delete", "--force"])
        .arg(&bundle.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = path_env {
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

/// Lists the subfolders of `folder`, not following symlinks. A folder that cannot be read has
/// none.
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
        assert!(!is_shim_of(
            std::process::id(),
            Path::new("/tmp/keel-0/containerd.sock")
        ));
    }

    #[test]
    fn runc_root_defaults_to_shim_default() {
        let bundle = TaskBundle {
            namespace: "keel-ns".to_owned(),
            id: "c1".to_owned(),
            path: PathBuf::from("/nonexistent-keel-bundle"),
        };
        let (binary, root) = bundle.runc_binary_and_root();
        assert_eq!(binary, "runc");
        assert_eq!(root, PathBuf::from("/run/containerd/runc/keel-ns"));
        assert_eq!(default_runc_root("keel-ns"), root);
    }
}
