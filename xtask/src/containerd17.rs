//! Prepares containerd 1.7 from Debian 13 (trixie) in `target/containerd-1.7/` of the
//! workspace, and runs the real-containerd tests against it.
//!
//! Debian 12 ships containerd 1.6.20; trixie ships 1.7.24, which runs on Debian 12 as it is (it
//! needs only glibc 2.34 and runc). The package is downloaded and unpacked by
//! [`crate::trixie`], which leaves the machine's apt state alone and installs nothing.
//! keel-testkit starts the unpacked binary when `KEEL_CONTAINERD` names it, and puts its folder
//! first on the `PATH` of containerd, so containerd 1.7's own runc shim runs the tasks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::command::cargo;
use crate::trixie::{Packages, build_in_staging, download_and_unpack};

/// The name of what this module prepares, for error messages.
const PURPOSE: &str = "containerd 1.7";

/// The trixie package that contains containerd 1.7.
const CONTAINERD_PACKAGE: &str = "containerd";

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
    let unpack = |staging: &Path| {
        download_and_unpack(
            staging,
            PURPOSE,
            Packages::Only(CONTAINERD_PACKAGE),
            staging,
        )
    };
    build_in_staging(&folder, unpack, |folder| {
        version_of(&folder.join(CONTAINERD_BINARY)).is_some()
    })?;

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
