//! `cargo xtask chaos`: the long fault runs that the default test suite keeps short.
//!
//! It runs two tests of `tests/tests/faults.rs` at full length (a long containerd outage
//! around an exit, and many restarts around exits) and then `tests/tests/chaos.rs` with many
//! lifecycles while containerd is killed at seeded random moments. The sizes reach the tests
//! through environment variables, echoed with each command so a failed run can be repeated.

use std::path::Path;

use crate::command::cargo;

/// The sizes of one chaos run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Lifecycles of the chaos test.
    pub lifecycles: u32,
    /// The seed of the chaos test; the test picks one from the clock and prints it when unset.
    pub seed: Option<u64>,
    /// Seconds containerd stays down around an exit.
    pub outage_secs: u32,
    /// Restarts around an exit.
    pub restart_loops: u32,
    /// Runs against containerd 1.7 from Debian trixie instead of the installed one.
    pub containerd_1_7: bool,
}

/// Runs setup, then the long fault tests and the chaos test.
///
/// # Errors
///
/// Returns an error when setup fails or a test fails.
pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let containerd = match options.containerd_1_7 {
        true => Some(crate::containerd17::prepare(root)?),
        false => None,
    };
    let with_containerd = |step: crate::command::Step| match &containerd {
        Some(path) => step.env("KEEL_CONTAINERD", &path.to_string_lossy()),
        None => step,
    };

    let faults = cargo(
        root,
        &[
            "test",
            "--package",
            "keel-tests",
            "--test",
            "faults",
            "--",
            "--exact",
            "exit_during_outage_reported_once",
            "exits_around_restarts_reported_once",
        ],
    )
    .env("KEEL_OUTAGE_SECS", &options.outage_secs.to_string())
    .env("KEEL_RESTART_LOOPS", &options.restart_loops.to_string());
    with_containerd(faults).run()?;

    let mut chaos = cargo(
        root,
        &[
            "test",
            "--package",
            "keel-tests",
            "--test",
            "chaos",
            "--",
            "--nocapture",
        ],
    )
    .env("KEEL_CHAOS_LIFECYCLES", &options.lifecycles.to_string());
    if let Some(seed) = options.seed {
        chaos = chaos.env("KEEL_CHAOS_SEED", &seed.to_string());
    }
    with_containerd(chaos).run()
}
