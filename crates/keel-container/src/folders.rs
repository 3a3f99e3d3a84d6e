//! keel's own folders: made owner-only, never entered through a symlink.
//!
//! The ids in a bundle path are validated identifiers, so they cannot climb out of the state
//! folder; what remains is a symlink or a file planted where keel expects its folder. Each
//! folder keel makes is checked with `lstat` after creation, and one that is a symlink or not
//! a folder is rejected rather than used.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::Path;

/// Makes `path` an owner-only folder unless it exists; returns true when it was made.
///
/// # Errors
///
/// Returns an error of kind `InvalidData` when `path` is a symlink or not a folder.
pub(crate) fn ensure_private_dir(path: &Path) -> io::Result<bool> {
    let created = match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => true,
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => false,
        Err(error) => return Err(error),
    };
    check_dir(path, &std::fs::symlink_metadata(path)?)?;
    Ok(created)
}

/// Checks that `path` is a folder and not a symlink when something exists there, and returns
/// true when it exists. Makes nothing.
///
/// # Errors
///
/// Returns an error of kind `InvalidData` when `path` is a symlink or not a folder.
pub(crate) fn check_dir_if_present(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) => check_dir(path, &metadata).map(|()| true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

fn check_dir(path: &Path, metadata: &std::fs::Metadata) -> io::Result<()> {
    if metadata.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is a symlink; keel uses only folders it made",
                path.display()
            ),
        ));
    }
    if !metadata.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a folder; remove it or choose another state folder",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Makes the caller's state folder, and its missing parents, owner-only.
pub(crate) fn ensure_state_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Removes every FIFO directly in `dir`, and nothing else; a missing folder is not an error.
/// keel calls it once no process of the container is left, so FIFOs whose record keel lost,
/// for example those of execs that ran across a restart of the client, go too.
pub(crate) fn remove_fifos_in(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        // The entry's own type: a symlink to a FIFO is not a FIFO here.
        if !entry.file_type().is_ok_and(|file_type| file_type.is_fifo()) {
            continue;
        }
        let path = entry.path();
        if let Err(error) = std::fs::remove_file(&path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %error, "cannot remove FIFO");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-folders-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    }

    #[test]
    fn new_folder_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;

        let dir = scratch("new");
        let folder = dir.join("bundle");
        assert!(ensure_private_dir(&folder).expect("made"));
        let mode = std::fs::metadata(&folder)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!ensure_private_dir(&folder).expect("exists"));
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn symlink_is_rejected() {
        let dir = scratch("symlink");
        let target = dir.join("elsewhere");
        std::fs::create_dir(&target).expect("target");
        let link = dir.join("bundle");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let error = ensure_private_dir(&link).expect_err("symlink");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn check_accepts_missing_and_folder() {
        let dir = scratch("check");
        let folder = dir.join("bundle");
        assert!(!check_dir_if_present(&folder).expect("missing"));
        assert!(!folder.exists(), "nothing made");
        std::fs::create_dir(&folder).expect("folder");
        assert!(check_dir_if_present(&folder).expect("folder"));
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn check_rejects_symlink_and_file() {
        let dir = scratch("check-planted");
        let target = dir.join("elsewhere");
        std::fs::create_dir(&target).expect("target");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let error = check_dir_if_present(&link).expect_err("symlink");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let file = dir.join("file");
        std::fs::write(&file, b"").expect("file");
        let error = check_dir_if_present(&file).expect_err("file");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn file_is_rejected() {
        let dir = scratch("file");
        let file = dir.join("bundle");
        std::fs::write(&file, b"").expect("file");
        let error = ensure_private_dir(&file).expect_err("file");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
