//! Finding the programs a private containerd needs, with errors that name the package to
//! install.

use std::env;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::TestkitError;

/// The environment variable that overrides the containerd binary.
pub const CONTAINERD_ENV: &str = "KEEL_CONTAINERD";

/// The environment variable that overrides the busybox binary.
pub const BUSYBOX_ENV: &str = "KEEL_BUSYBOX";

/// The busybox binary used when [`BUSYBOX_ENV`] is not set. Debian's busybox-static installs it.
const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// The programs one private containerd runs, and the `PATH` it runs them with.
#[derive(Clone, Debug)]
pub(crate) struct Programs {
    pub(crate) containerd: PathBuf,
    /// The `PATH` of the containerd process and so of its shims, which look up runc there.
    pub(crate) path: OsString,
}

impl Programs {
    /// Finds containerd (from [`CONTAINERD_ENV`] or `PATH`) and checks that the runc v2 shim and
    /// runc are on the `PATH` containerd will use.
    ///
    /// When containerd comes from [`CONTAINERD_ENV`], its folder goes first on that `PATH`, so
    /// a shim shipped next to it wins over an installed one.
    pub(crate) fn find() -> Result<Self, TestkitError> {
        let inherited = env::var_os("PATH").unwrap_or_default();
        let (containerd, path) = match env::var_os(CONTAINERD_ENV) {
            Some(value) => {
                let containerd = check_override("containerd", CONTAINERD_ENV, value)?;
                let path = prepend_parent(&containerd, &inherited);
                (containerd, path)
            }
            None => {
                let containerd = find_on_path("containerd", &inherited)
                    .ok_or_else(|| not_on_path("containerd", "containerd", Some(CONTAINERD_ENV)))?;
                (containerd, inherited)
            }
        };

        find_on_path("containerd-shim-runc-v2", &path)
            .ok_or_else(|| not_on_path("containerd-shim-runc-v2", "containerd", None))?;
        find_on_path("runc", &path).ok_or_else(|| not_on_path("runc", "runc", None))?;

        Ok(Self { containerd, path })
    }
}

/// Returns the busybox binary: [`BUSYBOX_ENV`] if set, else `/bin/busybox`.
pub(crate) fn find_busybox() -> Result<PathBuf, TestkitError> {
    if let Some(value) = env::var_os(BUSYBOX_ENV) {
        return check_override("busybox", BUSYBOX_ENV, value);
    }
    let busybox = PathBuf::from(DEFAULT_BUSYBOX);
    if !is_executable_file(&busybox) {
        return Err(TestkitError::ProgramNotFound {
            program: "busybox",
            location: format!("at {DEFAULT_BUSYBOX}"),
            remedy: format!(
                "install it with `apt-get install busybox-static` or set {BUSYBOX_ENV} to its path"
            ),
        });
    }
    Ok(busybox)
}

/// Returns an error unless the effective user is root.
pub(crate) fn require_root() -> Result<(), TestkitError> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return Ok(());
    }
    Err(TestkitError::NotRoot {
        euid: euid.as_raw(),
    })
}

/// Searches the folders of `path` (a `PATH` value) for an executable file called `program`.
pub(crate) fn find_on_path(program: &str, path: &OsString) -> Option<PathBuf> {
    env::split_paths(path)
        .map(|folder| folder.join(program))
        .find(|candidate| is_executable_file(candidate))
}

fn check_override(
    program: &'static str,
    env_var: &'static str,
    value: OsString,
) -> Result<PathBuf, TestkitError> {
    let path = PathBuf::from(value);
    if is_executable_file(&path) {
        return Ok(path);
    }
    Err(TestkitError::InvalidOverride {
        program,
        env_var,
        path,
    })
}

fn not_on_path(
    program: &'static str,
    package: &str,
    env_var: Option<&'static str>,
) -> TestkitError {
    let mut remedy = format!("install it with `apt-get install {package}`");
    if let Some(env_var) = env_var {
        remedy.push_str(&format!(" or set {env_var} to its path"));
    }
    TestkitError::ProgramNotFound {
        program,
        location: "on PATH".to_owned(),
        remedy,
    }
}

/// Puts the folder of `binary` in front of `path`.
fn prepend_parent(binary: &Path, path: &OsString) -> OsString {
    let parent = binary.parent().map(Path::to_path_buf).unwrap_or_default();
    let folders = std::iter::once(parent).chain(env::split_paths(path));
    // Joining fails only when a folder contains ':', and then the inherited PATH still works.
    env::join_paths(folders).unwrap_or_else(|_| path.clone())
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_on_path_skips_missing_folders() {
        let path = OsString::from("/nonexistent-keel-folder:/bin");
        assert_eq!(find_on_path("sh", &path), Some(PathBuf::from("/bin/sh")));
    }

    #[test]
    fn find_on_path_rejects_non_executables() {
        let path = OsString::from("/etc");
        assert_eq!(find_on_path("passwd", &path), None);
    }

    #[test]
    fn prepend_parent_puts_binary_folder_first() {
        let path = prepend_parent(Path::new("/opt/c17/bin/containerd"), &"/usr/bin".into());
        assert_eq!(path, OsString::from("/opt/c17/bin:/usr/bin"));
    }

    #[test]
    fn missing_program_message_names_package() {
        let error = not_on_path("containerd", "containerd", Some(CONTAINERD_ENV));
        assert_eq!(
            error.to_string(),
            "containerd not found on PATH: install it with `apt-get install containerd` \
             or set KEEL_CONTAINERD to its path"
        );
    }
}
