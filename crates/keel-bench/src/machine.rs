//! The facts about the machine that a report states next to its figures.

use std::process::Command;

/// The machine a benchmark ran on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The number of processors available, as `nproc` prints it.
    pub processors: String,
    /// The processor model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` from `/proc/meminfo`.
    pub memory: String,
    /// The kernel release, as `uname -r` prints it.
    pub kernel: String,
    /// The first line of `containerd --version`.
    pub containerd: String,
    /// The first line of `runc --version`.
    pub runc: String,
    /// The output of `go version`, or a note that Go is missing.
    pub go: String,
    /// The cgroup hierarchy: v1 or v2.
    pub cgroup: String,
}

impl Machine {
    /// Collects the facts; a fact that cannot be read becomes "unknown".
    pub fn describe() -> Self {
        Self {
            processors: first_line("nproc", &[]),
            cpu_model: cpu_model(),
            memory: memory_total(),
            kernel: first_line("uname", &["-r"]),
            containerd: first_line("containerd", &["--version"]),
            runc: first_line("runc", &["--version"]),
            go: first_line("go", &["version"]),
            cgroup: cgroup_version(),
        }
    }
}

fn first_line(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output();
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("unknown")
            .trim()
            .to_owned(),
        _ => format!("unknown ({program} not found or failed)"),
    }
}

fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map_or_else(
            || "unknown".to_owned(),
            |(_, model)| model.trim().to_owned(),
        )
}

fn memory_total() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        });
    match kib {
        Some(kib) => format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)),
        None => "unknown".to_owned(),
    }
}

fn cgroup_version() -> String {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2".to_owned()
    } else {
        "v1".to_owned()
    }
}

/// Returns the client process's resident set size in KiB, from `VmRSS` in
/// `/proc/self/status`.
pub fn resident_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("/proc/self/status has no VmRSS line"))
}

/// Returns the CPU time, user plus system, that this process has used so far, in
/// milliseconds.
pub fn cpu_time_ms() -> anyhow::Result<f64> {
    usage_ms(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

/// Returns the CPU time, user plus system, of this process's children that have ended and
/// been waited for, in milliseconds.
pub fn children_cpu_time_ms() -> anyhow::Result<f64> {
    usage_ms(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

fn usage_ms(scope: nix::sys::resource::UsageWho) -> anyhow::Result<f64> {
    let usage = nix::sys::resource::getrusage(scope)?;
    let ms =
        |time: nix::sys::time::TimeVal| time.tv_sec() as f64 * 1e3 + time.tv_usec() as f64 / 1e3;
    Ok(ms(usage.user_time()) + ms(usage.system_time()))
}
