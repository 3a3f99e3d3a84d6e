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

/// The environment variable that names a folder with a `criu` executable, put first on
/// containerd's `PATH` so runc uses that criu for checkpoint and restore.
pub const CRIU_DIR_ENV: &str = "KEEL_CRIU_DIR";

/// The folder where `cargo xtask setup` prepares criu, used when [`CRIU_DIR_ENV`] is not set and
/// the folder contains a `criu` executable.
const DEFAULT_CRIU_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/criu/bin");

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

        let path = match find_criu_dir()? {
            Some(criu_dir) => prepend_folder(criu_dir, &path),
            None => path,
        };
        Ok(Self { containerd, path })
    }
}

/// Returns the folder of the criu runc should use: [`CRIU_DIR_ENV`] if set, else the folder
/// `cargo xtask setup` prepares when it contains a criu, else `None` (runc then finds criu on
/// the inherited `PATH`, if at all).
fn find_criu_dir() -> Result<Option<PathBuf>, TestkitError> {
    if let Some(value) = env::var_os(CRIU_DIR_ENV) {
        let folder = PathBuf::from(value);
        if !is_executable_file(&folder.join("criu")) {
            return Err(TestkitError::ProgramNotFound {
                program: "criu",
                location: format!("in {} (from {CRIU_DIR_ENV})", folder.display()),
                remedy: format!(
                    "point {CRIU_DIR_ENV} at a folder with a criu executable, or unset it to use \
                     the criu `cargo xtask setup` prepares"
                ),
            });
        }
        return Ok(Some(folder));
    }
    let folder = Path::new(DEFAULT_CRIU_DIR);
    if !is_executable_file(&folder.join("criu")) {
        return Ok(None);
    }
    // The folder is named relative to this crate's manifest, and a PATH entry reads better
    // without `..`.
    Ok(Some(
        folder.canonicalize().unwrap_or_else(|_| folder.to_owned()),
    ))
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
    prepend_folder(parent, path)
}

/// Puts `folder` in front of `path`.
fn prepend_folder(folder: PathBuf, path: &OsString) -> OsString {
    let folders = std::iter::once(folder).chain(env::split_paths(path));
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
    fn default_criu_dir_is_in_workspace_target() {
        let workspace = Path::new(DEFAULT_CRIU_DIR).join("../../..");
        let manifest = std::fs::read_to_string(workspace.join("Cargo.toml"));
        assert!(manifest.is_ok_and(|text| text.contains("[workspace]")));
        assert!(DEFAULT_CRIU_DIR.ends_with("/target/criu/bin"));
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
