//! Removal of what an interrupted task create leaves outside containerd. When containerd dies
//! while the shim runs `runc create`, containerd may never learn of the task, so it never runs
//! `runc delete`: runc's state of the container stays under keel's runc root, and the
//! container's cgroups stay empty in every hierarchy. The container delete removes both.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::actor::ContainerState;

/// How long `runc delete` may take.
const RUNC_DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// The mount point of the cgroup file systems.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl ContainerState {
    /// Removes the container's empty cgroups, and runc's state of the container when keel's
    /// runc root still contains it. Touches only runc state inside the client's state folder.
    pub(crate) async fn remove_runc_leftovers(&self) {
        if let Some(runc_dir) = self.own_runc_dir().filter(|dir| dir.exists()) {
            self.remove_runc_state(&runc_dir).await;
        }
        // runc may have been stopped before it made its state folder, and `runc delete` may
        // fail, so the empty cgroups are looked for in any case.
        let cgroups_path = self
            .spec_facts
            .as_ref()
            .and_then(|facts| facts.cgroups_path.as_deref());
        if let Some(cgroups_path) = cgroups_path {
            remove_empty_cgroups(cgroups_path);
        }
    }

    /// Deletes the runc container whose state is in `runc_dir`, and the folder.
    async fn remove_runc_state(&self, runc_dir: &Path) {
        tracing::info!(container_id = %self.container_id, path = %runc_dir.display(), "removing runc state of a task containerd never tracked");
        if runc_dir.join("state.json").is_file() {
            self.run_runc_delete(runc_dir).await;
        }
        // runc killed before it wrote its state leaves only its exec FIFO.
        let _ = std::fs::remove_file(runc_dir.join("exec.fifo"));
        if let Err(error) = std::fs::remove_dir(runc_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container_id = %self.container_id, path = %runc_dir.display(), %error, "cannot remove runc state folder");
        }
    }

    /// Returns `<runc root>/<namespace>/<id>`, the folder where the runc v2 shim keeps runc's
    /// state of this container, when the runc root lies inside the client's state folder.
    fn own_runc_dir(&self) -> Option<PathBuf> {
        let root = &self.runc_options.as_ref()?.root;
        let state_dir = self.bundle_dir.parent()?.parent()?;
        let root = Path::new(root);
        if root.as_os_str().is_empty() || !root.starts_with(state_dir) {
            return None;
        }
        Some(
            root.join(self.services.namespace().as_str())
                .join(self.container_id.as_str()),
        )
    }

    /// Runs `runc delete --force`, which kills a process left in the container and removes its
    /// cgroups and state.
    async fn run_runc_delete(&self, runc_dir: &Path) {
        let Some(root) = runc_dir.parent() else {
            return;
        };
        let binary = self
            .runc_options
            .as_ref()
            .map(|options| options.binary_name.as_str())
            .filter(|name| !name.is_empty())
            .unwrap_or("runc");
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", self.container_id.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match tokio::time::timeout(RUNC_DELETE_TIMEOUT, command.output()).await {
            Ok(Ok(output)) if output.status.success() => {}
            Ok(Ok(output)) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                tracing::warn!(container_id = %self.container_id, status = %output.status, stderr = %stderr.trim(), "runc delete of a leftover container failed");
            }
            Ok(Err(error)) => {
                tracing::warn!(container_id = %self.container_id, runc = binary, %error, "cannot run runc to delete a leftover container");
            }
            Err(_) => {
                tracing::warn!(container_id = %self.container_id, timeout_ms = RUNC_DELETE_TIMEOUT.as_millis() as u64, "runc delete of a leftover container timed out");
            }
        }
    }
}

/// Removes the cgroup `cgroups_path` from every hierarchy where it exists and is empty.
/// A systemd path (`slice:prefix:name`) or a relative one is left alone, because its folder
/// depends on runc's own cgroup. `rmdir` fails on a cgroup that contains processes or children.
fn remove_empty_cgroups(cgroups_path: &Path) {
    if !cgroups_path.is_absolute() || cgroups_path.to_string_lossy().contains(':') {
        return;
    }
    let Ok(relative) = cgroups_path.strip_prefix("/") else {
        return;
    };
    let root = Path::new(CGROUP_ROOT);
    // cgroup v2 mounts one hierarchy at the root; v1 mounts one per controller below it.
    let hierarchies: Vec<PathBuf> = if root.join("cgroup.controllers").is_file() {
        vec![root.to_owned()]
    } else {
        std::fs::read_dir(root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
                    .map(|entry| entry.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    for hierarchy in hierarchies {
        let cgroup = hierarchy.join(relative);
        match std::fs::remove_dir(&cgroup) {
            Ok(()) => tracing::debug!(path = %cgroup.display(), "removed a leftover cgroup"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            // Processes of another container that shares the cgroup path still use it.
            Err(error) if error.raw_os_error() == Some(nix::libc::EBUSY) => {
                tracing::debug!(path = %cgroup.display(), "cgroup still in use");
            }
            Err(error) => {
                tracing::warn!(path = %cgroup.display(), %error, "cannot remove a leftover cgroup");
            }
        }
    }
}
