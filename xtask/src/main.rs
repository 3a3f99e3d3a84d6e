//! `cargo xtask`: the developer commands of the keel workspace.
//!
//! Every command runs from the workspace root and echoes each program it starts, so a failing
//! step can be rerun by hand. A failing program's exit code becomes the exit code of xtask.

mod bench;
mod chaos;
mod command;
mod containerd17;
mod criu;
mod fuzz;
mod setup;
mod tidy;
mod trixie;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::command::{CommandFailed, cargo};

/// Developer commands of the keel workspace.
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer commands of the keel workspace: setup, demo, test, tidy, bench, chaos"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Check for protoc, containerd, runc and a static busybox, and install them with apt-get
    /// when missing (needs root). Then prepare criu from Debian trixie in `target/criu/`.
    Setup,
    /// Run setup, then the keel demo against a private containerd.
    Demo,
    /// Run setup, tidy, rustfmt, clippy and then the whole test suite.
    Test,
    /// Check that every Rust file starts with a `//!` header and that no file cites an issue
    /// number.
    Tidy,
    /// Run setup, install the Go baseline's packages, and benchmark keel against containerd's
    /// Go client, ctr and runc; writes docs/benchmarks.md (target/bench-smoke.md with --smoke).
    Bench {
        /// Fewer repetitions and at most 250 running containers.
        #[arg(long, conflicts_with = "smoke")]
        quick: bool,
        /// Every benchmark once at a tiny size, to check that the benchmarks work.
        #[arg(long)]
        smoke: bool,
    },
    /// Run setup, then the long fault tests: containerd down for --outage-secs around an
    /// exit, --restart-loops restarts around exits, and --lifecycles container lifecycles while
    /// containerd is killed at seeded random moments.
    Chaos {
        /// Container lifecycles of the chaos test.
        #[arg(long, default_value_t = 1000)]
        lifecycles: u32,
        /// Seed of the chaos test, to repeat a run; printed when picked from the clock.
        #[arg(long)]
        seed: Option<u64>,
        /// Seconds containerd stays down while a container exits.
        #[arg(long, default_value_t = 60)]
        outage_secs: u32,
        /// containerd restarts around a container's exit.
        #[arg(long, default_value_t = 50)]
        restart_loops: u32,
        /// Use containerd 1.7 from Debian trixie, unpacked into target/containerd-1.7.
        #[arg(long)]
        containerd_1_7: bool,
    },
    /// Run setup, then every test against a real containerd with containerd 1.7 from Debian
    /// trixie, unpacked into target/containerd-1.7.
    TestContainerd17,
    /// Run the property tests of the decoders and input checks with many random cases.
    Fuzz {
        /// Random inputs per property.
        #[arg(long, default_value_t = 100_000)]
        cases: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit_code_of(&error),
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    let root = workspace_root()?;
    match task {
        Task::Setup => setup::run(),
        Task::Demo => demo(&root),
        Task::Test => test(&root),
        Task::Tidy => tidy::run(&root),
        Task::Fuzz { cases } => fuzz::run(&root, cases),
        Task::Chaos {
            lifecycles,
            seed,
            outage_secs,
            restart_loops,
            containerd_1_7,
        } => {
            let options = chaos::Options {
                lifecycles,
                seed,
                outage_secs,
                restart_loops,
                containerd_1_7,
            };
            chaos::run(&root, &options)
        }
        Task::TestContainerd17 => containerd17::test(&root),
        Task::Bench { quick, smoke } => {
            let size = match (quick, smoke) {
                (_, true) => bench::Size::Smoke,
                (true, false) => bench::Size::Quick,
                (false, false) => bench::Size::Full,
            };
            bench::run(&root, size)
        }
    }
}

fn demo(root: &Path) -> anyhow::Result<()> {
    setup::run()?;
    // The demo's own containerd runs runc with this PATH, so runc finds the prepared criu.
    cargo(root, &["run", "--package", "keel", "--example", "demo"])
        .env("PATH", &criu::path_with_criu()?)
        .run()
}

/// Runs the checks that need no containerd first, so the test summary is the last output.
fn test(root: &Path) -> anyhow::Result<()> {
    setup::run()?;
    tidy::run(root)?;
    cargo(root, &["fmt", "--all", "--check"]).run()?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )
    .run()?;
    // Tests run in parallel: each real-containerd test starts its own private containerd.
    cargo(root, &["test", "--workspace"])
        .env_remove("RUST_TEST_THREADS")
        .run()
}

/// Prints what failed and returns the exit code for it. A program that failed has already
/// printed its own errors, so only its exit code passes on.
fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    if let Some(failed) = error.downcast_ref::<CommandFailed>() {
        return failed.exit_code();
    }
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}

/// Returns the workspace root, the parent of this package's folder.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .with_context(|| format!("{} has no parent folder", manifest_dir.display()))?;
    Ok(root.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_every_task() {
        for task in [
            "setup",
            "demo",
            "test",
            "tidy",
            "bench",
            "chaos",
            "test-containerd17",
        ] {
            assert!(Cli::try_parse_from(["xtask", task]).is_ok(), "{task}");
        }
    }

    #[test]
    fn workspace_root_holds_workspace_manifest() -> anyhow::Result<()> {
        let manifest = std::fs::read_to_string(workspace_root()?.join("Cargo.toml"))?;
        assert!(manifest.contains("[workspace]"));
        Ok(())
    }
}
