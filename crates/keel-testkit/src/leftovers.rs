//! Removing what a private containerd leaves outside its own process: shims, runc folders,
//! cgroups, mounts and FIFOs.
//!
//! Everything here touches only objects that provably belong to one instance: shims whose
//! arguments name its socket, and cgroups and runc folders of namespaces it created. Its task
//! bundles, runc state and shims are found by [`keel_supervisor::shims`].

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

use keel_supervisor::shims::{kill_shim, shim_pids};
use nix::mount::{MntFlags, umount2};

/// The root of the cgroup file systems.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Kills the live shims of the instance serving on `containerd_socket` with SIGKILL and waits
/// for them to die. Returns whether all died.
pub(crate) fn kill_shims(containerd_socket: &Path) -> bool {
    let mut all_dead = true;
    for pid in shim_pids(containerd_socket) {
        all_dead &= kill_shim(pid, containerd_socket);
    }
    all_dead
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
