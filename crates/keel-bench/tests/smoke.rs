//! Runs every benchmark once at a tiny size (`keel-bench --smoke`) against a private
//! containerd, so a change that breaks a benchmark shows up in `cargo test`. Figures from this
//! run are not checked, because a debug build on a busy machine does not measure speed.

use std::process::Command;

#[test]
fn smoke_run_writes_every_section() {
    if !is_root() {
        eprintln!("skipped: the benchmarks need root to run containers");
        return;
    }
    let output = std::env::temp_dir().join(format!("keel-bench-smoke-{}.md", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_keel-bench"))
        .arg("--smoke")
        .arg("--output")
        .arg(&output)
        .output()
        .expect("keel-bench starts");
    assert!(
        run.status.success(),
        "keel-bench --smoke failed with {}:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );

    let report = std::fs::read_to_string(&output).expect("report written");
    std::fs::remove_file(&output).expect("report removed");
    for heading in [
        "## Targets",
        "## 1. Lifecycle latency",
        "## 2. Throughput",
        "## 3. Exec latency",
        "## 4. Event pipeline",
        "## 5. Stdio throughput",
        "## 6. Reconnect",
        "## 7. Client memory",
    ] {
        assert!(report.contains(heading), "report lacks {heading:?}");
    }
    assert!(
        report.contains(", failed: 0."),
        "a keel lifecycle failed:\n{report}"
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}
