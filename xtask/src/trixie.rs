//! Downloading packages from Debian 13 (trixie) and unpacking them into a folder under
//! `target/`, without installing anything on the machine.
//!
//! apt-get runs with a private configuration (`APT_CONFIG`) that names its own sources list,
//! lists and cache folders and an empty dpkg status. It reads none of the machine's apt
//! configuration files, so the machine's apt state and its update hooks are left alone. A proxy
//! therefore has to come from the `http_proxy` environment variable. Signatures are still
//! checked against the machine's trusted keys, which on Debian 12 include trixie's. The
//! packages are unpacked with `dpkg -x`.
//!
//! A folder is built under a staging name and renamed into place only when it is complete, so
//! an interrupted run never leaves a folder that looks finished.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, anyhow, bail};

use crate::command::program;

/// The apt source line of the trixie suite.
pub const SOURCE_LINE: &str = "deb http://deb.debian.org/debian trixie main";

/// The selection of packages that [`download_and_unpack`] fetches.
pub enum Packages<'a> {
    /// The named package alone.
    Only(&'a str),
    /// The named package and every package it depends on or pre-depends on, recursively.
    WithDependencies(&'a str),
}

/// Builds `folder` with `build`, which fills the empty staging folder it is given, and then
/// renames the staging folder to `folder`. `is_prepared` reports whether a folder is finished.
/// When another run finished `folder` first, its folder is kept.
///
/// # Errors
///
/// Returns the error of `build`, or of removing an unfinished `folder` or renaming.
pub fn build_in_staging(
    folder: &Path,
    build: impl FnOnce(&Path) -> anyhow::Result<()>,
    is_prepared: impl Fn(&Path) -> bool,
) -> anyhow::Result<()> {
    let parent = folder
        .parent()
        .with_context(|| format!("{} has no parent folder", folder.display()))?;
    fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
    let name = folder.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!("{name}-staging-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("failed to remove {}", staging.display()))?;
    }

    let result = build(&staging).and_then(|()| move_into_place(&staging, folder, is_prepared));
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Downloads `packages` from trixie into `staging/debs`, with a private apt configuration in
/// `staging/apt`, unpacks them into `root`, and removes both scratch folders. `purpose` names
/// what is being prepared, such as "criu", in error messages.
///
/// # Errors
///
/// Returns an error that names the failed step: writing the apt configuration, `apt-get
/// update`, `apt-cache depends`, `apt-get download` or `dpkg -x`.
pub fn download_and_unpack(
    staging: &Path,
    purpose: &'static str,
    packages: Packages<'_>,
    root: &Path,
) -> anyhow::Result<()> {
    let apt = AptConfig::write(&staging.join("apt"), purpose)?;
    apt.update()?;
    let names = match packages {
        Packages::Only(package) => vec![package.to_owned()],
        Packages::WithDependencies(package) => apt.dependency_closure(package)?,
    };
    let debs = staging.join("debs");
    apt.download(&names, &debs)?;
    unpack_all(&debs, root, purpose)?;

    for scratch in [staging.join("apt"), debs] {
        fs::remove_dir_all(&scratch)
            .with_context(|| format!("failed to remove {}", scratch.display()))?;
    }
    Ok(())
}

/// Returns the standard output of a finished command, or an error with its standard output
/// and standard error. `purpose` names what is being prepared in the message.
///
/// # Errors
///
/// Returns an error when the command exited with a status other than 0.
pub fn checked_stdout(purpose: &str, command: &str, output: &Output) -> anyhow::Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    bail!(
        "preparing {purpose} failed: `{command}` exited with {}:\n{}{}",
        output.status,
        stdout.trim_end(),
        stderr.trim_end()
    )
}

/// Writes `contents` to `path`.
///
/// # Errors
///
/// Returns an error that names `path` when the write fails.
pub fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("failed to write {}", path.display()))
}

/// Replaces `folder` with `staging`. When another run finished first, its folder is kept.
fn move_into_place(
    staging: &Path,
    folder: &Path,
    is_prepared: impl Fn(&Path) -> bool,
) -> anyhow::Result<()> {
    if folder.exists() {
        if is_prepared(folder) {
            return Ok(());
        }
        fs::remove_dir_all(folder)
            .with_context(|| format!("failed to remove unfinished {}", folder.display()))?;
    }
    match fs::rename(staging, folder) {
        Ok(()) => Ok(()),
        Err(_) if is_prepared(folder) => Ok(()),
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
    /// The name of what is being prepared, such as "criu", for error messages.
    purpose: &'static str,
}

impl AptConfig {
    fn write(folder: &Path, purpose: &'static str) -> anyhow::Result<Self> {
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
        Ok(Self { file, purpose })
    }

    fn update(&self) -> anyhow::Result<()> {
        let purpose = self.purpose;
        program("apt-get", &["-q", "update"])
            .env("APT_CONFIG", &self.file.to_string_lossy())
            .run()
            .map_err(|error| anyhow!("preparing {purpose} failed at `apt-get update`: {error}"))
    }

    /// Returns `package` and every package it depends on or pre-depends on, recursively.
    fn dependency_closure(&self, package: &str) -> anyhow::Result<Vec<String>> {
        let purpose = self.purpose;
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
            .with_context(|| format!("preparing {purpose} failed: cannot start apt-cache"))?;
        let stdout = checked_stdout(purpose, "apt-cache depends --recurse", &output)?;
        let packages = parse_package_names(&stdout);
        if !packages.iter().any(|name| name == package) {
            bail!("preparing {purpose} failed: apt-cache depends did not list {package}");
        }
        Ok(packages)
    }

    fn download(&self, packages: &[String], folder: &Path) -> anyhow::Result<()> {
        let purpose = self.purpose;
        fs::create_dir_all(folder)
            .with_context(|| format!("failed to create {}", folder.display()))?;
        let mut args = vec!["-q", "download"];
        args.extend(packages.iter().map(String::as_str));
        program("apt-get", &args)
            .current_dir(folder)
            .env("APT_CONFIG", &self.file.to_string_lossy())
            .run()
            .map_err(|error| anyhow!("preparing {purpose} failed at `apt-get download`: {error}"))
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
fn unpack_all(debs: &Path, root: &Path, purpose: &str) -> anyhow::Result<()> {
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
            .with_context(|| format!("preparing {purpose} failed: cannot start dpkg"))?;
        checked_stdout(
            purpose,
            &format!("dpkg -x {} {}", deb.display(), root.display()),
            &output,
        )?;
        unpacked += 1;
    }
    if unpacked == 0 {
        bail!(
            "preparing {purpose} failed: apt-get download left no packages in {}",
            debs.display()
        );
    }
    Ok(())
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
    fn stdout_of_failed_command_is_an_error() {
        let output = Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 4"])
            .output();
        let error = output
            .map_err(anyhow::Error::from)
            .and_then(|output| checked_stdout("sh", "sh", &output));
        let message = error.err().map(|error| error.to_string());
        assert!(
            message
                .as_deref()
                .is_some_and(|text| text.contains("out") && text.contains("err")),
            "{message:?}"
        );
    }
}
