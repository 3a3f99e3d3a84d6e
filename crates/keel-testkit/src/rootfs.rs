//! A minimal root filesystem for test containers: a static busybox, one symlink per applet, and
//! the few files and folders that programs expect.

use std::fs::{self, DirBuilder};
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _, symlink};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::TestkitError;
use crate::programs::find_busybox;

/// `/etc/passwd` with root and nobody, the two users tests switch between.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// `/etc/group` with the primary groups of the users in [`PASSWD`].
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";

/// The `p_type` of the ELF program header that names a dynamic loader.
const PT_INTERP: u32 = 3;

/// Builds the root filesystem at `rootfs`, replacing whatever a failed earlier build left there.
pub(crate) fn build_busybox_rootfs(rootfs: &Path) -> Result<(), TestkitError> {
    let busybox = find_busybox()?;
    if !is_static_elf(&busybox)? {
        return Err(TestkitError::BusyboxNotStatic { path: busybox });
    }
    let applets = list_applets(&busybox)?;

    if rootfs.exists() {
        fs::remove_dir_all(rootfs).map_err(|error| TestkitError::io("remove", rootfs, error))?;
    }
    for (folder, mode) in [
        ("", 0o755),
        ("bin", 0o755),
        ("proc", 0o555),
        ("dev", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("etc", 0o755),
    ] {
        create_folder(&rootfs.join(folder), mode)?;
    }

    install_busybox(&busybox, &rootfs.join("bin"), &applets)?;
    write_file(&rootfs.join("etc/passwd"), PASSWD)?;
    write_file(&rootfs.join("etc/group"), GROUP)?;
    Ok(())
}

/// Copies busybox to `bin/busybox` and links every applet to it.
fn install_busybox(busybox: &Path, bin: &Path, applets: &[String]) -> Result<(), TestkitError> {
    let target = bin.join("busybox");
    fs::copy(busybox, &target)
        .map_err(|error| TestkitError::io("copy busybox to", &target, error))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
        .map_err(|error| TestkitError::io("set permissions of", &target, error))?;

    for applet in applets {
        let link = bin.join(applet);
        symlink("busybox", &link)
            .map_err(|error| TestkitError::io("create symlink", &link, error))?;
    }
    Ok(())
}

/// Returns the applet names from `busybox --list`, without `busybox` itself and without any
/// name that is not a plain file name.
fn list_applets(busybox: &Path) -> Result<Vec<String>, TestkitError> {
    let output = Command::new(busybox)
        .arg("--list")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| TestkitError::Spawn {
            program: busybox.to_owned(),
            source: error,
        })?;
    if !output.status.success() {
        return Err(TestkitError::CommandFailed {
            command: format!("{} --list", busybox.display()),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }

    let applets = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| is_applet_name(name))
        .map(str::to_owned)
        .collect();
    Ok(applets)
}

fn is_applet_name(name: &str) -> bool {
    !name.is_empty() && name != "busybox" && name != "." && name != ".." && !name.contains('/')
}

/// Reads the ELF program headers of `path` and reports whether none names a dynamic loader.
/// Only the first 64 KiB are read, because the headers sit near the start of the file.
///
/// A file that is not ELF, or whose headers cannot be parsed, counts as static, so an unusual
/// busybox is tried rather than rejected.
pub(crate) fn is_static_elf(path: &Path) -> Result<bool, TestkitError> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|file| file.take(64 * 1024).read_to_end(&mut bytes))
        .map_err(|error| TestkitError::io("read", path, error))?;
    Ok(!has_interpreter(&bytes).unwrap_or(false))
}

/// Returns whether the ELF image has a `PT_INTERP` program header, or `None` when `image` is not
/// an ELF file or its header table lies outside `image`.
fn has_interpreter(image: &[u8]) -> Option<bool> {
    if image.get(..4)? != b"\x7fELF" {
        return None;
    }
    let is_64_bit = match image.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little_endian = match image.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let read = |offset: usize, width: usize| read_uint(image, offset, width, little_endian);

    // Offsets of e_phoff, e_phentsize and e_phnum differ between ELF32 and ELF64.
    let (table, entry_size, count) = if is_64_bit {
        (read(0x20, 8)?, read(0x36, 2)?, read(0x38, 2)?)
    } else {
        (read(0x1c, 4)?, read(0x2a, 2)?, read(0x2c, 2)?)
    };
    let table = usize::try_from(table).ok()?;
    let entry_size = usize::try_from(entry_size).ok()?;

    for index in 0..usize::try_from(count).ok()? {
        let entry = table.checked_add(index.checked_mul(entry_size)?)?;
        if read(entry, 4)? == u64::from(PT_INTERP) {
            return Some(true);
        }
    }
    Some(false)
}

fn read_uint(image: &[u8], offset: usize, width: usize, little_endian: bool) -> Option<u64> {
    let bytes = image.get(offset..offset.checked_add(width)?)?;
    let append = |value: u64, byte: &u8| (value << 8) | u64::from(*byte);
    let value = if little_endian {
        bytes.iter().rev().fold(0, append)
    } else {
        bytes.iter().fold(0, append)
    };
    Some(value)
}

fn create_folder(path: &Path, mode: u32) -> Result<(), TestkitError> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|error| TestkitError::io("create directory", path, error))?;
    // The umask may have cleared bits of `mode`, such as the sticky bit of /tmp.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|error| TestkitError::io("set permissions of", path, error))
}

fn write_file(path: &Path, contents: &str) -> Result<(), TestkitError> {
    fs::write(path, contents).map_err(|error| TestkitError::io("write", path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_found_in_dynamic_binary() {
        assert_eq!(has_interpreter(&read("/bin/ls")), Some(true));
    }

    #[test]
    fn interpreter_absent_in_static_busybox() {
        assert_eq!(has_interpreter(&read("/bin/busybox")), Some(false));
    }

    #[test]
    fn non_elf_has_no_answer() {
        assert_eq!(has_interpreter(b"#!/bin/sh\n"), None);
        assert_eq!(has_interpreter(b"\x7fELF"), None);
    }

    #[test]
    fn applet_names_exclude_paths_and_busybox() {
        assert!(is_applet_name("sh"));
        assert!(is_applet_name("["));
        assert!(!is_applet_name("busybox"));
        assert!(!is_applet_name("../sh"));
        assert!(!is_applet_name(""));
    }

    fn read(path: &str) -> Vec<u8> {
        fs::read(path).unwrap_or_else(|error| panic!("failed to read {path}: {error}"))
    }
}
