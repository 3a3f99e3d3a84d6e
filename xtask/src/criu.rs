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
//! apt-get runs with a private configuration (`APT_CONFIG`) that names its own sources list,
//! lists and cache folders, and reads none of the machine's apt configuration files, so the
//! machine's apt state and its update hooks are left alone. A proxy therefore has to come from
//! the `http_proxy` environment variable. Signatures are still checked against the machine's
//! trusted keys, which on Debian 12 include trixie's.
//!
//! keel-testkit puts `target/criu/bin` first on the `PATH` of every private containerd, unless
//! `KEEL_CRIU_DIR` names another folder, and `cargo xtask demo` puts it first on the demo's
//! `PATH`, so runc finds this criu.

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, anyhow, bail};

use crate::command::program;

/// The apt source line of the suite criu comes from.
const SOURCE_LINE: &str = "deb http://deb.debian.org/debian trixie main";

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
    fs::create_dir_all(&target)
        .with_context(|| format!("failed to create {}", target.display()))?;
    let staging = target.join(format!("{CRIU_FOLDER}-staging-{}", std::process::id()));
    let result = build(&staging).and_then(|()| move_into_place(&staging, &folder));
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result?;

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

/// Downloads, unpacks and checks criu in `staging`, leaving only `bin/`, `root/` and the stamp
/// file there.
fn build(staging: &Path) -> anyhow::Result<()> {
    if staging.exists() {
        fs::remove_dir_all(staging)
            .with_context(|| format!("failed to remove {}", staging.display()))?;
    }
    let apt = AptConfig::write(&staging.join("apt"))?;
    apt.update()?;
    let packages = apt.dependency_closure(CRIU_PACKAGE)?;
    let debs = staging.join("debs");
    apt.download(&packages, &debs)?;

    let root = staging.join("root");
    unpack_all(&debs, &root)?;
    write_file(&staging.join("criu.conf"), CONFIG)?;
    write_wrapper(&staging.join("bin/criu"))?;
    check_criu(&staging.join("bin/criu"))?;

    for scratch in [staging.join("apt"), debs] {
        fs::remove_dir_all(&scratch)
            .with_context(|| format!("failed to remove {}", scratch.display()))?;
    }
    write_file(&staging.join(STAMP_FILE), &stamp())
}

/// Returns the contents of the stamp file: everything that decides how the folder is made, so
/// a folder made by an older recipe is prepared again.
fn stamp() -> String {
    format!("{SOURCE_LINE}\n{LIBRARY_FOLDER}/{LOADER}\n{CRIU_BINARY}\n{WRAPPER}{CONFIG}")
}

/// Replaces `folder` with `staging`. When another run finished first, its folder is kept.
fn move_into_place(staging: &Path, folder: &Path) -> anyhow::Result<()> {
    if folder.exists() {
        if prepared_version(folder).is_some() {
            return Ok(());
        }
        fs::remove_dir_all(folder)
            .with_context(|| format!("failed to remove unfinished {}", folder.display()))?;
    }
    match fs::rename(staging, folder) {
        Ok(()) => Ok(()),
        Err(_) if prepared_version(folder).is_some() => Ok(()),
        Err(error) => Err(error).with_context(|| {
            format!(
                "failed to move {} to {}",
                staging.display(),
                folder.display()
            )
        }),
    }
}

/// A private apt configuration: its own sources list, lists, cache and an empty dpkg status, so
/// apt reads only the trixie packages and writes only inside its folder.
struct AptConfig {
    /// The configuration file, passed in `APT_CONFIG`.
    file: PathBuf,
}

impl AptConfig {
    fn write(folder: &Path) -> anyhow::Result<Self> {
        let empty = folder.join("empty");
        for needed in [
            folder.join("lists/partial"),
            folder.join("cache/archives/partial"),
            empty.clone(),
        ] {
            fs::create_dir_all(&needed)
                .with_context(|| format!("failed to create {}", needed.display()))?;
        }
        let sources = folder.join("sources.list");
        let status = folder.join("status");
        write_file(&sources, &format!("{SOURCE_LINE}\n"))?;
        write_file(&status, "")?;

        let file = folder.join("apt.conf");
        let settings = [
            ("Dir::Etc::SourceList", sources),
            ("Dir::Etc::SourceParts", empty.clone()),
            ("Dir::Etc::Parts", empty.clone()),
            ("Dir::Etc::Main", folder.join("no-main-config")),
            ("Dir::Etc::Preferences", folder.join("no-preferences")),
            ("Dir::Etc::PreferencesParts", empty),
            ("Dir::State::Lists", folder.join("lists")),
            ("Dir::State::status", status),
            ("Dir::Cache", folder.join("cache")),
        ];
        let mut text = String::new();
        for (key, path) in settings {
            text.push_str(&format!("{key} \"{}\";\n", path.display()));
        }
        text.push_str("APT::Architecture \"amd64\";\n");
        text.push_str("Acquire::Languages \"none\";\n");
        // The folders belong to the caller, so apt's download user `_apt` cannot write to them.
        text.push_str("APT::Sandbox::User \"root\";\n");
        write_file(&file, &text)?;
        Ok(Self { file })
    }

    fn update(&self) -> anyhow::Result<()> {
        program("apt-get", &["-q", "update"])
            .env("APT_CONFIG", &self.file.to_string_lossy())
            .run()
            .map_err(|error| anyhow!("preparing criu failed at `apt-get update`: {error}"))
    }

    /// Returns `package` and every package it depends on or pre-depends on, recursively.
    fn dependency_closure(&self, package: &str) -> anyhow::Result<Vec<String>> {
        let args = [
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            package,
        ];
        let output = Command::new("apt-cache")
            .args(args)
            .env("APT_CONFIG", &self.file)
            .stdin(Stdio::null())
            .output()
            .context("preparing criu failed: cannot start apt-cache")?;
        let stdout = checked_stdout("apt-cache depends --recurse", &output)?;
        let packages = parse_package_names(&stdout);
        if !packages.iter().any(|name| name == package) {
            bail!("preparing criu failed: apt-cache depends did not list {package}");
        }
        Ok(packages)
    }

    fn download(&self, packages: &[String], folder: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(folder)
            .with_context(|| format!("failed to create {}", folder.display()))?;
        let mut args = vec!["-q", "download"];
        args.extend(packages.iter().map(String::as_str));
        program("apt-get", &args)
            .current_dir(folder)
            .env("APT_CONFIG", &self.file.to_string_lossy())
            .run()
            .map_err(|error| anyhow!("preparing criu failed at `apt-get download`: {error}"))
    }
}

/// Returns the package names in the output of `apt-cache depends --recurse`: the lines that
/// are not indented, without the virtual packages, which apt-cache writes as `<name>`.
fn parse_package_names(output: &str) -> Vec<String> {
    let mut names: Vec<String> = output
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with(char::is_whitespace))
        .filter(|line| !line.starts_with('<'))
        .map(|line| line.trim().to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Unpacks every `.deb` in `debs` into `root` with `dpkg -x`.
fn unpack_all(debs: &Path, root: &Path) -> anyhow::Result<()> {
    let entries =
        fs::read_dir(debs).with_context(|| format!("failed to read {}", debs.display()))?;
    let mut unpacked = 0;
    for entry in entries {
        let deb = entry
            .with_context(|| format!("failed to read {}", debs.display()))?
            .path();
        if deb.extension().is_none_or(|extension| extension != "deb") {
            continue;
        }
        let output = Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(root)
            .stdin(Stdio::null())
            .output()
            .context("preparing criu failed: cannot start dpkg")?;
        checked_stdout(
            &format!("dpkg -x {} {}", deb.display(), root.display()),
            &output,
        )?;
        unpacked += 1;
    }
    if unpacked == 0 {
        bail!(
            "preparing criu failed: apt-get download left no packages in {}",
            debs.display()
        );
    }
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
    checked_stdout(&format!("{} --version", criu.display()), &output)?;

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
        checked_stdout(&command, &output)?;
        println!("`{command}` passed");
    }
    Ok(())
}

/// Returns the standard output of a finished command, or an error with its standard error.
fn checked_stdout(command: &str, output: &Output) -> anyhow::Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    bail!(
        "preparing criu failed: `{command}` exited with {}:\n{}{}",
        output.status,
        stdout.trim_end(),
        stderr.trim_end()
    )
}

fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("failed to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_skip_dependencies_and_virtual_packages() {
        let output = "criu\n  Depends: libc6\n  Depends: <libfoo>\nlibc6\n  \
                      Depends: libgcc-s1\n<libfoo>\nlibgcc-s1\nlibc6\n";
        assert_eq!(
            parse_package_names(output),
            ["criu", "libc6", "libgcc-s1"].map(String::from)
        );
    }

    #[test]
    fn wrapper_uses_unpacked_loader_and_binary() {
        assert!(WRAPPER.contains(LIBRARY_FOLDER));
        assert!(WRAPPER.contains(LOADER));
        assert!(WRAPPER.contains(CRIU_BINARY));
    }

    #[test]
    fn stdout_of_failed_command_is_an_error() {
        let output = Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 4"])
            .output();
        let error = output
            .map_err(anyhow::Error::from)
            .and_then(|output| checked_stdout("sh", &output));
        let message = error.err().map(|error| error.to_string());
        assert!(
            message
                .as_deref()
                .is_some_and(|text| text.contains("out") && text.contains("err")),
            "{message:?}"
        );
    }
}
