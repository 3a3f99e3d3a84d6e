//! `cargo xtask bench`: installs what the Go baseline needs, then runs keel-bench in release
//! mode and writes its report to `docs/benchmarks.md`.

use std::path::Path;

use anyhow::bail;

use crate::command::{cargo, program};
use crate::setup;

/// The Debian packages of the Go baseline: the Go toolchain and containerd 1.6's Go sources,
/// which the baseline builds against offline in GOPATH mode.
const GO_PACKAGES: &[&str] = &["golang-go", "golang-github-containerd-containerd-dev"];

/// A file that golang-github-containerd-containerd-dev installs.
const CONTAINERD_GO_CLIENT: &str =
    "/usr/share/gocode/src/github.com/containerd/containerd/client.go";

/// How much of each benchmark to run.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    /// Every benchmark at full size; writes `docs/benchmarks.md`.
    Full,
    /// Fewer repetitions and at most 250 running containers; writes `docs/benchmarks.md`.
    Quick,
    /// Every benchmark once at a tiny size; writes `target/bench-smoke.md`.
    Smoke,
}

/// Runs setup, installs the Go baseline's packages when missing, and runs the benchmarks.
///
/// # Errors
///
/// Returns an error when a package is missing and the user is not root, or when a step fails.
pub fn run(root: &Path, size: Size) -> anyhow::Result<()> {
    setup::run()?;
    install_go_packages()?;
    let (flag, output) = match size {
        Size::Full => (None, root.join("docs/benchmarks.md")),
        Size::Quick => (Some("--quick"), root.join("docs/benchmarks.md")),
        Size::Smoke => (Some("--smoke"), root.join("target/bench-smoke.md")),
    };
    let output = output.display().to_string();
    let mut args = vec!["run", "--release", "--package", "keel-bench", "--"];
    args.extend(flag);
    args.extend(["--output", output.as_str()]);
    cargo(root, &args).run()
}

fn install_go_packages() -> anyhow::Result<()> {
    let has_go = program_on_path("go");
    let has_sources = Path::new(CONTAINERD_GO_CLIENT).is_file();
    if has_go && has_sources {
        return Ok(());
    }
    if !is_root()? {
        bail!(
            "the Go baseline needs {}: install them as root with\n    sudo apt-get install -y {}",
            GO_PACKAGES.join(" and "),
            GO_PACKAGES.join(" ")
        );
    }
    program("apt-get", &["update"]).run()?;
    let mut install = vec!["install", "-y"];
    install.extend_from_slice(GO_PACKAGES);
    program("apt-get", &install)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
}

fn program_on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|folder| folder.join(name).is_file()))
}

fn is_root() -> anyhow::Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    // The line is "Uid:" followed by the real, effective, saved and file-system user ids.
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    Ok(effective == Some("0"))
}
