//! `cargo xtask setup`: finds the programs the tests and the demo need, and installs the missing
//! ones with apt-get when running as root.

use std::env;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::command::program;

/// The Debian packages that provide every program checked here.
const PACKAGES: &[&str] = &["protobuf-compiler", "containerd", "runc", "busybox-static"];

/// The command a user without root runs to install [`PACKAGES`].
const INSTALL_COMMAND: &str = "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive \
                               apt-get install -y protobuf-compiler containerd runc busybox-static";

/// The environment variables that override a program, as keel-testkit reads them.
const CONTAINERD_ENV: &str = "KEEL_CONTAINERD";
const BUSYBOX_ENV: &str = "KEEL_BUSYBOX";

/// The busybox binary keel-testkit copies into container root folders when [`BUSYBOX_ENV`] is
/// not set.
const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// The `p_type` of the ELF program header that names a dynamic loader.
const PT_INTERP: u64 = 3;

/// The outcome of looking for one program.
enum Check {
    Found {
        path: PathBuf,
        detail: Option<String>,
    },
    /// Not installed, so apt-get can fix it.
    Missing { reason: String },
    /// An environment variable names a wrong file, which apt-get cannot fix.
    BadOverride {
        reason: String,
        env_var: &'static str,
    },
}

/// The programs that failed their checks.
#[derive(Default)]
struct Failures {
    /// Names of programs that are not installed.
    missing: Vec<&'static str>,
    /// Environment variables that name an unusable file.
    bad_overrides: Vec<&'static str>,
}

/// Prints one line per program, installs the packages when one is missing, and then prepares
/// criu (see [`crate::criu`]).
///
/// # Errors
///
/// Returns an error when a program is missing and the user is not root (the message contains
/// the install command), when apt-get fails, when a program is still missing afterwards, or
/// when preparing criu fails.
pub fn run() -> anyhow::Result<()> {
    install_missing()?;
    crate::criu::prepare()
}

fn install_missing() -> anyhow::Result<()> {
    let failures = check_all();
    if !failures.bad_overrides.is_empty() {
        bail!(
            "unusable program override: fix or unset {}",
            failures.bad_overrides.join(" and ")
        );
    }
    let missing = failures.missing;
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root()? {
        bail!(
            "missing {}: install them as root with\n    {INSTALL_COMMAND}",
            missing.join(", ")
        );
    }

    program("apt-get", &["update"]).run()?;
    let mut install = vec!["install", "-y"];
    install.extend_from_slice(PACKAGES);
    program("apt-get", &install)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;

    let still_missing = check_all().missing;
    if !still_missing.is_empty() {
        bail!(
            "still missing after apt-get install: {}",
            still_missing.join(", ")
        );
    }
    Ok(())
}

/// Checks every program, prints one line for each and returns the names of those that failed.
fn check_all() -> Failures {
    let checks = [
        ("protoc", check_on_path("protoc", Some("--version"))),
        ("containerd", check_containerd()),
        (
            "containerd-shim-runc-v2",
            check_on_path("containerd-shim-runc-v2", None),
        ),
        ("runc", check_on_path("runc", Some("--version"))),
        ("busybox", check_busybox()),
    ];

    let mut failures = Failures::default();
    for (name, check) in checks {
        match check {
            Check::Found { path, detail: None } => println!("found {name}: {}", path.display()),
            Check::Found {
                path,
                detail: Some(detail),
            } => println!("found {name}: {} ({detail})", path.display()),
            Check::Missing { reason } => {
                println!("missing {name}: {reason}");
                failures.missing.push(name);
            }
            Check::BadOverride { reason, env_var } => {
                println!("unusable {name}: {reason} (from {env_var})");
                failures.bad_overrides.push(env_var);
            }
        }
    }
    failures
}

fn check_containerd() -> Check {
    let Some(value) = env::var_os(CONTAINERD_ENV) else {
        return check_on_path("containerd", Some("--version"));
    };
    match check_file(Path::new(&value), Some("--version")) {
        Check::Missing { reason } => Check::BadOverride {
            reason,
            env_var: CONTAINERD_ENV,
        },
        check => check,
    }
}

/// Checks that busybox exists and is statically linked, because container root folders built
/// from it contain no shared libraries.
fn check_busybox() -> Check {
    let Some(value) = env::var_os(BUSYBOX_ENV) else {
        return check_busybox_file(PathBuf::from(DEFAULT_BUSYBOX));
    };
    match check_busybox_file(PathBuf::from(value)) {
        Check::Missing { reason } => Check::BadOverride {
            reason,
            env_var: BUSYBOX_ENV,
        },
        check => check,
    }
}

fn check_busybox_file(path: PathBuf) -> Check {
    if !is_executable_file(&path) {
        return Check::Missing {
            reason: format!("{} is not an executable file", path.display()),
        };
    }
    match has_interpreter(&path) {
        Some(true) => Check::Missing {
            reason: format!(
                "{} is dynamically linked, but container root folders have no shared libraries",
                path.display()
            ),
        },
        Some(false) => Check::Found {
            path,
            detail: Some("static".to_owned()),
        },
        None => Check::Found {
            path,
            detail: Some("not ELF, linking unknown".to_owned()),
        },
    }
}

fn check_on_path(name: &str, version_flag: Option<&str>) -> Check {
    let path = env::var_os("PATH").unwrap_or_default();
    let found = env::split_paths(&path)
        .map(|folder| folder.join(name))
        .find(|candidate| is_executable_file(candidate));
    match found {
        Some(binary) => check_file(&binary, version_flag),
        None => Check::Missing {
            reason: "not found on PATH".to_owned(),
        },
    }
}

fn check_file(path: &Path, version_flag: Option<&str>) -> Check {
    if !is_executable_file(path) {
        return Check::Missing {
            reason: format!("{} is not an executable file", path.display()),
        };
    }
    Check::Found {
        path: path.to_owned(),
        detail: version_flag.and_then(|flag| first_output_line(path, flag)),
    }
}

/// Runs `<path> <flag>` and returns the first line of its standard output.
fn first_output_line(path: &Path, flag: &str) -> Option<String> {
    let output = Command::new(path)
        .arg(flag)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next().map(|line| line.trim().to_owned())
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Reports whether the effective user id, read from `/proc/self/status`, is 0.
pub(crate) fn is_root() -> anyhow::Result<bool> {
    let status =
        fs::read_to_string("/proc/self/status").context("failed to read /proc/self/status")?;
    // The line is "Uid:" followed by the real, effective, saved and file-system user ids.
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no effective uid in /proc/self/status")?;
    Ok(effective == "0")
}

/// Reports whether the ELF file at `path` has a `PT_INTERP` program header, that is, needs a
/// dynamic loader. Returns `None` when the file is not ELF or its header table cannot be read.
/// keel-testkit's `rootfs` module makes the same check before it builds a root folder.
fn has_interpreter(path: &Path) -> Option<bool> {
    let mut image = Vec::new();
    // The program headers sit near the start of the file.
    fs::File::open(path)
        .and_then(|file| file.take(64 * 1024).read_to_end(&mut image))
        .ok()?;
    if image.get(..4)? != b"\x7fELF" {
        return None;
    }
    let is_64_bit = *image.get(4)? == 2;
    let little_endian = *image.get(5)? == 1;
    let read = |offset: usize, width: usize| {
        let bytes = image.get(offset..offset.checked_add(width)?)?;
        let append = |value: u64, byte: &u8| (value << 8) | u64::from(*byte);
        Some(if little_endian {
            bytes.iter().rev().fold(0, append)
        } else {
            bytes.iter().fold(0, append)
        })
    };

    // e_phoff, e_phentsize and e_phnum sit at different offsets in ELF32 and ELF64.
    let (table, entry_size, count) = if is_64_bit {
        (read(0x20, 8)?, read(0x36, 2)?, read(0x38, 2)?)
    } else {
        (read(0x1c, 4)?, read(0x2a, 2)?, read(0x2c, 2)?)
    };
    for index in 0..count {
        let entry = table.checked_add(index.checked_mul(entry_size)?)?;
        if read(usize::try_from(entry).ok()?, 4)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binary_has_interpreter() {
        assert_eq!(has_interpreter(Path::new("/bin/ls")), Some(true));
    }

    #[test]
    fn script_is_not_elf() {
        let script = std::env::temp_dir().join(format!("xtask-script-{}", std::process::id()));
        let written = fs::write(&script, "#!/bin/sh\n");
        let result = has_interpreter(&script);
        let _ = fs::remove_file(&script);
        assert!(written.is_ok());
        assert_eq!(result, None);
    }

    #[test]
    fn install_command_names_every_package() {
        for package in PACKAGES {
            assert!(INSTALL_COMMAND.contains(package), "{package}");
        }
    }
}
