//! Finding and removing what a private containerd leaves outside its own process: task bundles,
//! shims, runc state, cgroups, mounts and FIFOs.
//!
//! Everything here touches only objects that provably belong to one instance: bundles under its
//! state folder, runc state whose bundle label points into that folder, shims whose arguments
//! name its socket, and cgroups and runc folders of namespaces it created.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::mount::{MntFlags, umount2};
use nix::sys::signal::Signal;

use crate::process::{all_pids, command_args, is_process_alive, send_signal, wait_until_dead};

/// The runc root of the runc v2 shim when the container's runtime options set none
/// (`RuncRoot` in containerd 1.6 and 1.7). The shim appends the namespace.
const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

/// The runc binary of the runc v2 shim when the runtime options name none.
const DEFAULT_RUNC_BINARY: &str = "runc";

/// The folder where containerd 1.6 and 1.7 shims create their sockets, named by a hash of the
/// containerd address, namespace and container id.
const SHIM_SOCKET_FOLDER: &str = "/run/containerd/s";

/// The root of the cgroup file systems.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How long a shim may take to die after SIGKILL.
const SHIM_KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// Returns the runc root the runc v2 shim uses for `namespace` when the runtime options set none.
pub(crate) fn default_runc_root(namespace: &str) -> PathBuf {
    Path::new(DEFAULT_RUNC_ROOT).join(namespace)
}

/// One task bundle, `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/`.
#[derive(Clone, Debug)]
pub(crate) struct TaskBundle {
    pub(crate) namespace: String,
    pub(crate) id: String,
    pub(crate) path: PathBuf,
}

impl TaskBundle {
    /// Returns the runc binary and runc root the shim uses for this task.
    ///
    /// The shim writes the container's runc options to `options.json` in the bundle. Its
    /// `binary_name` and `root` fields override the defaults, and the root gets the namespace
    /// appended, as the shim does.
    fn runc_binary_and_root(&self) -> (String, PathBuf) {
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

    /// Returns the shim's socket file from the bundle's `address` file (`unix://<path>`), if it
    /// lies in the shared shim socket folder.
    fn shim_socket(&self) -> Option<PathBuf> {
        let address = fs::read_to_string(self.path.join("address")).ok()?;
        let path = Path::new(address.trim().strip_prefix("unix://")?);
        (path.parent() == Some(Path::new(SHIM_SOCKET_FOLDER))).then(|| path.to_owned())
    }
}

/// Lists the task bundles under `task_root` (`<state>/io.containerd.runtime.v2.task`).
pub(crate) fn task_bundles(task_root: &Path) -> Vec<TaskBundle> {
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

/// Deletes the task's runc container if runc's state shows it belongs to this bundle. `path` is
/// the `PATH` runc is looked up on. Returns the runc root the task used, so the caller can
/// remove it once empty.
pub(crate) fn delete_runc_container(bundle: &TaskBundle, path: &OsStr) -> PathBuf {
    let (runc_binary, runc_root) = bundle.runc_binary_and_root();
    if runc_state_is_ours(&runc_root, bundle) {
        run_runc_delete(&runc_binary, &runc_root, bundle, path);
    }
    runc_root
}

/// Returns the pids of the live shims of the instance serving on `containerd_socket`, sorted.
///
/// A shim is the instance's when its program name starts with `containerd-shim` and its
/// arguments contain `-address <containerd_socket>`. containerd starts every shim with that
/// argument. The pids come from scanning `/proc`, because the runc v2 shim of containerd 1.6.20
/// writes no `shim.pid` file into the bundle.
pub(crate) fn shim_pids(containerd_socket: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = all_pids()
        .into_iter()
        .filter(|&pid| is_shim_of(pid, containerd_socket))
        .filter(|&pid| is_process_alive(pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Kills the live shims of the instance serving on `containerd_socket` with SIGKILL and waits
/// for them to die. Returns whether all died.
pub(crate) fn kill_shims(containerd_socket: &Path) -> bool {
    let mut all_dead = true;
    for pid in shim_pids(containerd_socket) {
        // Checked again right before the signal, so a pid reused since the scan is spared.
        if !is_shim_of(pid, containerd_socket) {
            continue;
        }
        if let Err(error) = send_signal(pid, Signal::SIGKILL) {
            tracing::warn!(pid, %error, "failed to kill shim");
            all_dead = false;
            continue;
        }
        if wait_until_dead(pid, SHIM_KILL_TIMEOUT) {
            tracing::debug!(pid, "shim killed");
        } else {
            tracing::warn!(pid, "shim still alive after SIGKILL");
            all_dead = false;
        }
    }
    all_dead
}

/// Removes the socket the bundle's shim created in the shared shim socket folder. Call it only
/// after the shim is dead, because a live shim still serves on it.
pub(crate) fn remove_shim_socket(bundle: &TaskBundle) {
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

/// Reports whether `pid` is a containerd shim started with `-address <containerd_socket>`.
pub(crate) fn is_shim_of(pid: u32, containerd_socket: &Path) -> bool {
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

fn run_runc_delete(runc_binary: &str, runc_root: &Path, bundle: &TaskBundle, path: &OsStr) {
    let status = Command::new(runc_binary)
        .arg("--root")
        .arg(runc_root)
        .args(["delete", "--force"])
        .arg(&bundle.id)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {
            tracing::debug!(namespace = %bundle.namespace, container_id = %bundle.id, "runc container deleted");
        }
        Ok(status) => {
            tracing::warn!(namespace = %bundle.namespace, container_id = %bundle.id, %status, "runc delete failed");
        }
        Err(error) => {
            tracing::warn!(namespace = %bundle.namespace, container_id = %bundle.id, runc = runc_binary, %error, "failed to start runc");
        }
    }
}

/// Removes each folder in `folders` if it is empty. A folder that is not empty is left alone.
pub(crate) fn remove_empty_folders(folders: &BTreeSet<PathBuf>) {
    for folder in folders {
        match fs::remove_dir(folder) {
            Ok(()) => tracing::debug!(folder = %folder.display(), "empty folder removed"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::debug!(folder = %folder.display(), %error, "folder kept");
            }
        }
    }
}

/// Removes the empty cgroups `<namespace>/*` and `<namespace>` in every cgroup hierarchy, the
/// layout of the `/<namespace>/<id>` cgroups path that containerd's clients set by default.
///
/// The kernel refuses to remove a cgroup that has processes or child cgroups, so a cgroup still
/// in use survives.
pub(crate) fn remove_namespace_cgroups(namespace: &str) {
    let root = Path::new(CGROUP_ROOT);
    let hierarchies = std::iter::once(root.to_owned()).chain(subfolders(root));
    for hierarchy in hierarchies {
        let cgroup = hierarchy.join(namespace);
        if !cgroup.is_dir() {
            continue;
        }
        for child in subfolders(&cgroup) {
            let _ = fs::remove_dir(&child);
        }
        match fs::remove_dir(&cgroup) {
            Ok(()) => tracing::debug!(namespace, cgroup = %cgroup.display(), "cgroup removed"),
            Err(error) => {
                tracing::warn!(namespace, cgroup = %cgroup.display(), %error, "failed to remove cgroup");
            }
        }
    }
}

/// Removes `folder` and everything in it, unmounting first whatever is mounted inside it.
///
/// Unmounting comes first because removing files through a mount would delete them from the
/// mounted file system, which may be outside the folder.
pub(crate) fn remove_folder(folder: &Path) -> io::Result<()> {
    unmount_inside(folder);
    let first = match fs::remove_dir_all(folder) {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => error,
    };

    tracing::debug!(folder = %folder.display(), error = %first, "removal failed, unmounting again");
    unmount_inside(folder);
    fs::remove_dir_all(folder)
}

/// Detaches every mount whose mount point lies strictly inside `folder`, the newest first.
fn unmount_inside(folder: &Path) {
    let folder = fs::canonicalize(folder).unwrap_or_else(|_| folder.to_owned());
    for mount_point in mount_points().iter().rev() {
        let inside = mount_point.starts_with(&folder) && mount_point != &folder;
        if !inside {
            continue;
        }
        match umount2(mount_point, MntFlags::MNT_DETACH) {
            Ok(()) => tracing::debug!(mount_point = %mount_point.display(), "unmounted"),
            Err(error) => {
                tracing::warn!(mount_point = %mount_point.display(), %error, "failed to unmount");
            }
        }
    }
}

/// Returns the mount points of this process's mount namespace in the order they were mounted.
fn mount_points() -> Vec<PathBuf> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    // The fifth field is the mount point, with space, tab, newline and backslash escaped as
    // three octal digits (proc(5)).
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = bytes
            .get(index + 1..index + 4)
            .filter(|_| bytes[index] == b'\\');
        let value = escape
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match value {
            Some(value) => {
                decoded.push(value);
                index += 4;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Counts the FIFOs in `folder` and its subfolders, without following symlinks. A missing
/// folder has none.
///
/// # Errors
///
/// Returns the error of reading a folder other than a missing `folder` itself.
pub fn fifo_count(folder: &Path) -> io::Result<usize> {
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_fifo() {
            count += 1;
        } else if file_type.is_dir() {
            count += fifo_count(&entry.path())?;
        }
    }
    Ok(count)
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
    fn unescape_octal_decodes_space_and_backslash() {
        assert_eq!(unescape_octal(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape_octal(r"/plain"), "/plain");
        assert_eq!(unescape_octal(r"/short\04"), r"/short\04");
    }

    #[test]
    fn mount_points_include_root() {
        assert!(mount_points().contains(&PathBuf::from("/")));
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
    }

    #[test]
    fn own_process_is_not_a_shim() {
        assert!(!is_shim_of(
            std::process::id(),
            Path::new("/tmp/keel-0/containerd.sock")
        ));
    }

    #[test]
    fn fifo_count_finds_nested_fifos() -> io::Result<()> {
        let folder = std::env::temp_dir().join(format!("keel-fifo-count-{}", std::process::id()));
        fs::create_dir_all(folder.join("nested"))?;
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        nix::unistd::mkfifo(&folder.join("top"), mode)?;
        nix::unistd::mkfifo(&folder.join("nested/inner"), mode)?;
        fs::write(folder.join("plain"), "")?;

        let count = fifo_count(&folder);
        fs::remove_dir_all(&folder)?;

        assert_eq!(count?, 2);
        Ok(())
    }

    #[test]
    fn fifo_count_of_missing_folder_is_zero() -> io::Result<()> {
        assert_eq!(fifo_count(Path::new("/nonexistent-keel-folder"))?, 0);
        Ok(())
    }
}
