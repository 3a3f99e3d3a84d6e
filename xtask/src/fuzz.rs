//! `cargo xtask fuzz`: the property tests of keel's decoders and input checks, run with many
//! more cases than `cargo test` gives them.
//!
//! The targets are proptest properties named `fuzz::*`: the event envelope decoder, the cgroup
//! metrics decoder, identifier validation, and spec and label validation. cargo-fuzz needs a
//! nightly toolchain, which this workspace does not use, so proptest drives them instead.

use std::path::Path;

use crate::command::cargo;

/// The packages that hold `fuzz` property tests.
const PACKAGES: [&str; 4] = ["keel-types", "keel-events", "keel-container", "keel"];

/// Runs every `fuzz` property with `cases` random inputs each.
pub fn run(root: &Path, cases: u32) -> anyhow::Result<()> {
    let cases = cases.to_string();
    let mut args = vec!["test", "--lib"];
    for package in PACKAGES {
        args.extend(["--package", package]);
    }
    args.extend(["fuzz::"]);
    cargo(root, &args).env("PROPTEST_CASES", &cases).run()
}
