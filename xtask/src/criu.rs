//! Prepares the criu that checkpoint and restore use: criu from Debian 13 (trixie) with its own
//! C library, unpacked into `target/criu/` of the workspace.
//!
//! Debian 12's criu 3.17.1 fails `criu check` on Linux 6.18 because it cannot read the kernel's
//! vDSO symbols, and trixie's criu 4.1.1 needs glibc 2.38 where Debian 12 has 2.36. So this
//! module downloads criu and every library it links, with their dependencies, from the trixie
//! suite, unpacks them with `dpkg -x`, and writes a `criu` script that runs the binary through
//! the unpacked `ld-linux` with `--library-path`. The machine's libraries are never loaded and
//! nothing is installed on the machine.
//!
//! The download runs apt-get under a private configuration, as [`crate::trixie`] describes.
//!
//! keel-testkit puts `target/criu/bin` first on the `PATH` of every private containerd, unless
//! `KEEL_CRIU_DIR` names another folder, and `cargo xtask demo` puts it first on the demo's
//! `PATH`, so runc finds this criu.

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::trixie::{
    Packages, SOURCE_LINE, build_in_staging, checked_stdout, download_and_unpack, write_file,
};

/// The name of what this module prepares, for error messages.
const PURPOSE: &str = "criu";

/// The package whose dependency closure is downloaded.
const CRIU_PACKAGE: &str = "criu";

/// The folder under the workspace's `target/` that contains the prepared criu.
const CRIU_FOLDER: &str = "criu";

/// The file written last into a prepared folder; its absence marks an unfinished one.
const STAMP_FILE: &str = "prepared";

/// The folder of the loader and the shared libraries in Debian's x86_64 packages, and the
/// loader's file name.
const LIBRARY_FOLDER: &str = "usr/lib/x86_64-linux-gnu";
const LOADER: &str = "ld-linux-x86-64.so.2";

/// The path of the binary in the criu package.
const CRIU_BINARY: &str = "usr/sbin/criu";

/// The script runc finds on `PATH`. It finds the unpacked files from its own path, so the
/// folder can be moved into place after it is written.
const WRAPPER: &str = r#"#!/bin/sh
# criu from Debian 13, run with the loader and libraries unpacked next to it, and with the
# options in criu.conf unless CRIU_CONFIG_FILE names another file.
here="$(cd "$(dirname "$0")/.." && pwd)"
lib="$here/root/usr/lib/x86_64-linux-gnu"
CRIU_CONFIG_FILE="${CRIU_CONFIG_FILE:-$here/criu.conf}"
export CRIU_CONFIG_FILE
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$here/root/usr/sbin/criu" "$@"
"#;

/// criu's options, read in every mode, including the `criu swrk` that runc starts.
const CONFIG: &str = "\
# criu's default network lock runs iptables-restore, which Debian 12 does not install. The
# nftables lock uses the libnftables that criu links instead.
network-lock nftables
";

/// Makes sure `target/criu/bin/criu` of the workspace runs, preparing it when it is missing or
/// broken, and prints one line about it.
///
/// # Errors
///
/// Returns an error that names the failed step: the architecture is not x86_64, apt-get or
/// dpkg failed, or the prepared criu does not run or, as root, fails `criu check`.
pub fn prepare() -> anyhow::Result<()> {
    let target = crate::workspace_root()?.join("target");
    let folder = target.join(CRIU_FOLDER);
    if let Some(version) = prepared_version(&folder) {
        println!(
            "found criu: {} ({version})",
            folder.join("bin/criu").display()
        );
        return Ok(());
    }
    if env::consts::ARCH != "x86_64" {
        bail!(
            "preparing criu failed: only x86_64 is supported, this machine is {}",
            env::consts::ARCH
        );
    }

    println!("preparing criu from Debian trixie in {}", folder.display());
    build_in_staging(&folder, build, |folder| prepared_version(folder).is_some())?;

    let version = prepared_version(&folder)
        .with_context(|| format!("{} does not run after preparing it", folder.display()))?;
    println!(
        "found criu: {} ({version})",
        folder.join("bin/criu").display()
    );
    Ok(())
}

/// Returns the inherited `PATH` with the folder of the prepared `criu` script in front, for
/// programs that start containerd without keel-testkit, such as the demo.
///
/// # Errors
///
/// Returns an error when the workspace root cannot be found.
pub fn path_with_criu() -> anyhow::Result<String> {
    let bin = crate::workspace_root()?
        .join("target")
        .join(CRIU_FOLDER)
        .join("bin");
    let inherited = env::var_os("PATH").unwrap_or_default();
    let folders = std::iter::once(bin).chain(env::split_paths(&inherited));
    let path = env::join_paths(folders).context("a PATH folder contains ':'")?;
    Ok(path.to_string_lossy().into_owned())
}

/// Returns the `criu --version` line of a finished folder, or `None` when the folder is
/// missing, unfinished or its criu does not run.
fn prepared_version(folder: &Path) -> Option<String> {
    let stamp_text = fs::read_to_string(folder.join(STAMP_FILE)).ok()?;
    if stamp_text != stamp() {
        return None;
    }
    let output = Command::new(folder.join("bin/criu"))
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|line| line.starts_with("Version:"))
        .map(str::to_owned)
}

/// Downloads, unpacks and checks criu in the empty folder `staging`, leaving only `bin/`,
/// `root/`, `criu.conf` and the stamp file there.
fn build(staging: &Path) -> anyhow::Result<()> {
    let root = staging.join("root");
    download_and_unpack(
        staging,
        PURPOSE,
        Packages::WithDependencies(CRIU_PACKAGE),
        &root,
    )?;
    check_unpacked(&root)?;
    write_file(&staging.join("criu.conf"), CONFIG)?;
    write_wrapper(&staging.join("bin/criu"))?;
    check_criu(&staging.join("bin/criu"))?;
    write_file(&staging.join(STAMP_FILE), &stamp())
}

/// Returns the contents of the stamp file: everything that decides how the folder is made, so
/// a folder made by an older recipe is prepared again.
fn stamp() -> String {
    format!("{SOURCE_LINE}\n{LIBRARY_FOLDER}/{LOADER}\n{CRIU_BINARY}\n{WRAPPER}{CONFIG}")
}

/// Checks that the packages unpacked into `root` contain the loader and the criu binary.
fn check_unpacked(root: &Path) -> anyhow::Result<()> {
    for needed in [
        root.join(LIBRARY_FOLDER).join(LOADER),
        root.join(CRIU_BINARY),
    ] {
        if !needed.is_file() {
            bail!(
                "preparing criu failed: the unpacked packages contain no {}",
                needed.display()
            );
        }
    }
    Ok(())
}

fn write_wrapper(path: &Path) -> anyhow::Result<()> {
    if let Some(folder) = path.parent() {
        fs::create_dir_all(folder)
            .with_context(|| format!("failed to create {}", folder.display()))?;
    }
    write_file(path, WRAPPER)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to make {} executable", path.display()))
}

/// Runs `criu --version`, and as root `criu check`, which tests the kernel features criu needs,
/// and the check of the nftables network lock that [`CONFIG`] selects.
fn check_criu(criu: &Path) -> anyhow::Result<()> {
    let output = Command::new(criu)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("preparing criu failed: cannot start {}", criu.display()))?;
    checked_stdout(PURPOSE, &format!("{} --version", criu.display()), &output)?;

    if !crate::setup::is_root()? {
        println!("not root: skipping `criu check`");
        return Ok(());
    }
    for args in [
        &["check"][..],
        &["check", "--feature", "network_lock_nftables"],
    ] {
        let output = Command::new(criu)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("preparing criu failed: cannot start {}", criu.display()))?;
        let command = format!("{} {}", criu.display(), args.join(" "));
        checked_stdout(PURPOSE, &command, &output)?;
        println!("`{command}` passed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_uses_unpacked_loader_and_binary() {
        assert!(WRAPPER.contains(LIBRARY_FOLDER));
        assert!(WRAPPER.contains(LOADER));
        assert!(WRAPPER.contains(CRIU_BINARY));
    }
}
