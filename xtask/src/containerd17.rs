//! Prepares containerd 1.7 from Debian 13 (trixie) in `target/containerd-1.7/` of the
//! workspace, and runs the real-containerd tests against it.
//!
//! Debian 12 ships containerd 1.6.20; trixie ships 1.7.24, which runs on Debian 12 as it is (it
//! needs only glibc 2.34 and runc). The package is downloaded with apt-get under a private
//! configuration (`APT_CONFIG`) that names its own sources list, lists, cache and an empty dpkg
//! status, so the machine's apt state is left alone, and unpacked with `dpkg -x`. Nothing is
//! installed on the machine. keel-testkit starts the unpacked binary when `KEEL_CONTAINERD`
//! names it, and puts its folder first on the `PATH` of containerd, so containerd 1.7's own
//! runc shim runs the tasks.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, anyhow, bail};

use crate::command::{cargo, program};

/// The apt source line of the suite containerd 1.7 comes from.
const SOURCE_LINE: &str = "deb http://deb.debian.org/debian trixie main";

/// The folder under the workspace's `target/` that holds the unpacked package.
const FOLDER: &str = "containerd-1.7";

/// Where the package puts the daemon.
const CONTAINERD_BINARY: &str = "usr/bin/containerd";

/// The version prefix the unpacked daemon must report.
const EXPECTED_VERSION: &str = " 1.7.";

/// The environment variable keel-testkit reads the containerd binary from.
const CONTAINERD_ENV: &str = "KEEL_CONTAINERD";

/// Runs setup, prepares containerd 1.7, and runs the tests of the `keel-tests` package (every
/// test against a real containerd) with it. Every test file runs even after one fails, so
/// one run lists every difference from containerd 1.6.
///
/// # Errors
///
/// Returns an error when setup or the preparation fails, or the tests fail.
pub fn test(root: &Path) -> anyhow::Result<()> {
    crate::setup::run()?;
    let containerd = prepare(root)?;
    cargo(root, &["test", "--package", "keel-tests", "--no-fail-fast"])
        .env(CONTAINERD_ENV, &containerd.to_string_lossy())
        .env_remove("RUST_TEST_THREADS")
        .run()
}

/// Makes sure `target/containerd-1.7/usr/bin/containerd` reports version 1.7, downloading and
/// unpacking trixie's package when it is missing, and returns its path.
///
/// # Errors
///
/// Returns an error that names the failed step: apt-get or dpkg failed, or the unpacked
/// containerd does not report version 1.7.
pub fn prepare(root: &Path) -> anyhow::Result<PathBuf> {
    let folder = root.join("target").join(FOLDER);
    let containerd = folder.join(CONTAINERD_BINARY);
    if let Some(version) = version_of(&containerd) {
        println!("found containerd 1.7: {} ({version})", containerd.display());
        return Ok(containerd);
    }

    println!(
        "preparing containerd 1.7 from Debian trixie in {}",
        folder.display()
    );
    let staging = root
        .join("target")
        .join(format!("{FOLDER}-staging-{}", std::process::id()));
    let result = unpack(&staging).and_then(|()| move_into_place(&staging, &folder));
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result?;

    let version = version_of(&containerd).with_context(|| {
        format!(
            "{} does not report containerd 1.7 after unpacking it",
            containerd.display()
        )
    })?;
    println!("found containerd 1.7: {} ({version})", containerd.display());
    Ok(containerd)
}

/// Returns the `containerd --version` line when it reports 1.7, or `None`.
fn version_of(containerd: &Path) -> Option<String> {
    let output = Command::new(containerd)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && text.contains(EXPECTED_VERSION)).then_some(text)
}

/// Downloads trixie's containerd package into `staging/debs` and unpacks it into `staging`.
fn unpack(staging: &Path) -> anyhow::Result<()> {
    let apt_config = write_apt_config(&staging.join("apt"))?;
    let apt_config = apt_config.to_string_lossy();
    program("apt-get", &["-q", "update"])
        .env("APT_CONFIG", &apt_config)
        .run()
        .map_err(|error| anyhow!("preparing containerd 1.7 failed at `apt-get update`: {error}"))?;
    let debs = staging.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("failed to create {}", debs.display()))?;
    program("apt-get", &["-q", "download", "containerd"])
        .current_dir(&debs)
        .env("APT_CONFIG", &apt_config)
        .run()
        .map_err(|error| {
            anyhow!("preparing containerd 1.7 failed at `apt-get download`: {error}")
        })?;

    let deb = fs::read_dir(&debs)
        .with_context(|| format!("failed to read {}", debs.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|extension| extension == "deb"))
        .with_context(|| format!("apt-get download left no package in {}", debs.display()))?;
    let output = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(staging)
        .stdin(Stdio::null())
        .output()
        .context("preparing containerd 1.7 failed: cannot start dpkg")?;
    if !output.status.success() {
        bail!(
            "preparing containerd 1.7 failed: `dpkg -x {}` exited with {}: {}",
            deb.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    for scratch in [staging.join("apt"), debs] {
        fs::remove_dir_all(&scratch)
            .with_context(|| format!("failed to remove {}", scratch.display()))?;
    }
    Ok(())
}

/// Writes an apt configuration that reads nothing of the machine's apt setup and writes only
/// inside `folder`; returns its path.
fn write_apt_config(folder: &Path) -> anyhow::Result<PathBuf> {
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
    let file = folder.join("apt.conf");
    write_file(&file, &text)?;
    Ok(file)
}

/// Replaces `folder` with `staging`.
fn move_into_place(staging: &Path, folder: &Path) -> anyhow::Result<()> {
    if folder.exists() {
        fs::remove_dir_all(folder)
            .with_context(|| format!("failed to remove unfinished {}", folder.display()))?;
    }
    fs::rename(staging, folder).with_context(|| {
        format!(
            "failed to move {} to {}",
            staging.display(),
            folder.display()
        )
    })
}

fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("failed to write {}", path.display()))
}
