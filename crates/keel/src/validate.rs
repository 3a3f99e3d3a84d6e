//! Checks of caller input, run before anything is created.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Component, Path};

use keel_types::Error;
use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources, Process, Spec};

use crate::client::{ClientOptions, Limits};

fn invalid(field: &'static str, value: impl Into<String>, reason: &str) -> Error {
    Error::InvalidArgument {
        field,
        value: value.into(),
        reason: reason.to_owned(),
    }
}

/// Checks that `spec` names a process with arguments and an existing absolute root folder.
pub(crate) fn check_spec(spec: &Spec) -> Result<(), Error> {
    let Some(process) = spec.process() else {
        return Err(invalid(
            "spec.process",
            "",
            "is missing; set the process to run",
        ));
    };
    check_process_fields(process, &SPEC_PROCESS)?;
    let Some(root) = spec.root() else {
        return Err(invalid("spec.root", "", "is missing; set the root folder"));
    };
    check_root_path(root.path())?;
    check_hostname(spec)?;
    check_mounts(spec)?;
    check_linux(spec)
}

/// The maximum host name length the kernel accepts (`HOST_NAME_MAX`), in bytes.
const MAX_HOSTNAME_BYTES: usize = 64;

/// Checks the host name against the kernel's limit, which `sethostname` enforces only inside
/// `runc create`.
fn check_hostname(spec: &Spec) -> Result<(), Error> {
    match spec.hostname() {
        Some(hostname) if hostname.len() > MAX_HOSTNAME_BYTES => Err(invalid(
            "spec.hostname",
            truncated(hostname),
            &format!("must be at most {MAX_HOSTNAME_BYTES} bytes, the kernel's limit"),
        )),
        Some(hostname) if hostname.contains('\0') => Err(invalid(
            "spec.hostname",
            hostname.replace('\0', "\\0"),
            "must not contain a NUL byte, where the kernel would cut it short",
        )),
        _ => Ok(()),
    }
}

/// Checks that every mount goes to an absolute path inside the container, as the OCI runtime
/// spec requires.
fn check_mounts(spec: &Spec) -> Result<(), Error> {
    for mount in spec.mounts().iter().flatten() {
        if !mount.destination().is_absolute() {
            return Err(invalid(
                "spec.mounts.destination",
                mount.destination().display().to_string(),
                "must be an absolute path inside the container",
            ));
        }
    }
    Ok(())
}

/// Checks the Linux settings that runc would reject only after containerd made the task, or
/// that would reach outside the container's cgroup.
fn check_linux(spec: &Spec) -> Result<(), Error> {
    // Without a mount namespace runc mounts the container's root and /proc, /dev and /sys in
    // the caller's namespace, where they stay after the container is gone.
    let Some(linux) = spec.linux() else {
        return Err(invalid(
            "spec.linux",
            "",
            "is missing; without it runc runs the container in the host's namespaces and \
             mounts its file systems on the host. Start from keel::spec::SpecBuilder",
        ));
    };
    let has_mount_namespace = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|namespace| namespace.typ() == oci_spec::runtime::LinuxNamespaceType::Mount);
    if !has_mount_namespace {
        return Err(invalid(
            "spec.linux.namespaces",
            "",
            "must include a mount namespace, or runc mounts the container's file systems on \
             the host and leaves them there",
        ));
    }
    if let Some(path) = linux.cgroups_path()
        && path.components().any(|part| part == Component::ParentDir)
    {
        return Err(invalid(
            "spec.linux.cgroupsPath",
            path.display().to_string(),
            "must not contain `..`; give a path below the cgroup root, such as /namespace/id",
        ));
    }
    match linux.resources() {
        Some(resources) => check_resources_with(resources, &SPEC_RESOURCE_FIELDS),
        None => Ok(()),
    }
}

/// The names of the checked resource fields, as the error names them.
struct ResourceFields {
    memory_limit: &'static str,
    memory_reservation: &'static str,
    memory_swap: &'static str,
    memory_swappiness: &'static str,
    cpu_shares: &'static str,
    cpu_quota: &'static str,
    cpu_period: &'static str,
    cpu_cpus: &'static str,
    cpu_mems: &'static str,
    blkio_weight: &'static str,
    blkio_leaf_weight: &'static str,
}

const SPEC_RESOURCE_FIELDS: ResourceFields = ResourceFields {
    memory_limit: "spec.linux.resources.memory.limit",
    memory_reservation: "spec.linux.resources.memory.reservation",
    memory_swap: "spec.linux.resources.memory.swap",
    memory_swappiness: "spec.linux.resources.memory.swappiness",
    cpu_shares: "spec.linux.resources.cpu.shares",
    cpu_quota: "spec.linux.resources.cpu.quota",
    cpu_period: "spec.linux.resources.cpu.period",
    cpu_cpus: "spec.linux.resources.cpu.cpus",
    cpu_mems: "spec.linux.resources.cpu.mems",
    blkio_weight: "spec.linux.resources.blockIO.weight",
    blkio_leaf_weight: "spec.linux.resources.blockIO.leafWeight",
};

const UPDATE_RESOURCE_FIELDS: ResourceFields = ResourceFields {
    memory_limit: "resources.memory.limit",
    memory_reservation: "resources.memory.reservation",
    memory_swap: "resources.memory.swap",
    memory_swappiness: "resources.memory.swappiness",
    cpu_shares: "resources.cpu.shares",
    cpu_quota: "resources.cpu.quota",
    cpu_period: "resources.cpu.period",
    cpu_cpus: "resources.cpu.cpus",
    cpu_mems: "resources.cpu.mems",
    blkio_weight: "resources.blockIO.weight",
    blkio_leaf_weight: "resources.blockIO.leafWeight",
};

/// The CPU period bounds of the kernel's CFS bandwidth control, in microseconds.
const CPU_PERIOD_US: RangeInclusive<u64> = 1_000..=1_000_000;

/// The smallest memory limit accepted, 6 MiB, as Docker requires. runc and the shim take
/// about 2 MiB of the container's cgroup at start, and the kernel refuses a limit below the
/// cgroup's usage, so a smaller limit fails the task create or the update.
const MIN_MEMORY_LIMIT: i64 = 6 << 20;

/// The smallest CPU quota the kernel accepts, in microseconds.
const MIN_CPU_QUOTA_US: i64 = 1_000;

/// The kernel's bounds for CPU shares. runc reads the value back and fails when the kernel
/// clamped it.
const CPU_SHARES: RangeInclusive<u64> = 2..=262_144;

/// The block I/O weight bounds of the kernel.
const BLKIO_WEIGHT: RangeInclusive<u16> = 10..=1000;

/// The largest swappiness the kernel accepts.
const MAX_SWAPPINESS: u64 = 100;

/// Checks the resource limits of a task update against the rules the kernel enforces.
///
/// # Errors
///
/// Returns invalid argument naming the first field that breaks its rule.
pub(crate) fn check_resources(resources: &LinuxResources) -> Result<(), Error> {
    check_resources_with(resources, &UPDATE_RESOURCE_FIELDS)
}

fn check_resources_with(resources: &LinuxResources, fields: &ResourceFields) -> Result<(), Error> {
    if let Some(memory) = resources.memory() {
        check_memory(memory, fields)?;
    }
    if let Some(cpu) = resources.cpu() {
        check_cpu(cpu, fields)?;
    }
    if let Some(block_io) = resources.block_io() {
        let weights = [
            (fields.blkio_weight, block_io.weight()),
            (fields.blkio_leaf_weight, block_io.leaf_weight()),
        ];
        for (field, weight) in weights {
            check_within(field, weight, &BLKIO_WEIGHT, "")?;
        }
    }
    Ok(())
}

fn check_memory(memory: &LinuxMemory, fields: &ResourceFields) -> Result<(), Error> {
    if let Some(limit) = memory.limit()
        && (1..MIN_MEMORY_LIMIT).contains(&limit)
    {
        return Err(invalid(
            fields.memory_limit,
            limit.to_string(),
            &format!("must be at least {MIN_MEMORY_LIMIT} bytes (6 MiB), or -1 for no limit"),
        ));
    }
    // The swap value limits memory and swap together, so the kernel rejects one below the
    // memory limit.
    if let (Some(limit), Some(swap)) = (memory.limit(), memory.swap())
        && limit > 0
        && swap > 0
        && swap < limit
    {
        return Err(invalid(
            fields.memory_swap,
            swap.to_string(),
            &format!(
                "limits memory and swap together, so it must be at least the memory limit ({limit}), or -1 for no limit"
            ),
        ));
    }
    let byte_counts = [
        (fields.memory_limit, memory.limit()),
        (fields.memory_reservation, memory.reservation()),
        (fields.memory_swap, memory.swap()),
    ];
    for (field, value) in byte_counts {
        if let Some(value) = value
            && value < -1
        {
            return Err(invalid(
                field,
                value.to_string(),
                "must be a number of bytes, or -1 for no limit",
            ));
        }
    }
    if let Some(swappiness) = memory.swappiness()
        && swappiness > MAX_SWAPPINESS
    {
        return Err(invalid(
            fields.memory_swappiness,
            swappiness.to_string(),
            &format!("must be from 0 to {MAX_SWAPPINESS}"),
        ));
    }
    Ok(())
}

/// Checks `value` against the kernel's `bounds`, where 0, which runc leaves unchanged, is
/// also accepted. `unit` follows the bounds in the error, such as " microseconds".
fn check_within<T>(
    field: &'static str,
    value: Option<T>,
    bounds: &RangeInclusive<T>,
    unit: &str,
) -> Result<(), Error>
where
    T: Copy + Default + PartialOrd + std::fmt::Display,
{
    match value {
        Some(value) if value != T::default() && !bounds.contains(&value) => Err(invalid(
            field,
            value.to_string(),
            &format!(
                "must be from {} to {}{unit}, the kernel's bounds, or 0 to leave it unchanged",
                bounds.start(),
                bounds.end()
            ),
        )),
        _ => Ok(()),
    }
}

fn check_cpu(cpu: &LinuxCpu, fields: &ResourceFields) -> Result<(), Error> {
    check_within(fields.cpu_shares, cpu.shares(), &CPU_SHARES, "")?;
    check_within(
        fields.cpu_period,
        cpu.period(),
        &CPU_PERIOD_US,
        " microseconds",
    )?;
    if let Some(quota) = cpu.quota()
        && quota != 0
        && quota != -1
        && quota < MIN_CPU_QUOTA_US
    {
        return Err(invalid(
            fields.cpu_quota,
            quota.to_string(),
            "must be at least 1000 microseconds, or -1 for no limit",
        ));
    }
    if let Some(cpus) = cpu.cpus() {
        check_id_list(fields.cpu_cpus, cpus, "CPU", ONLINE_CPUS, None)?;
    }
    if let Some(mems) = cpu.mems() {
        check_id_list(
            fields.cpu_mems,
            mems,
            "memory node",
            ONLINE_NODES,
            Some("0"),
        )?;
    }
    Ok(())
}

/// The files in which the kernel lists its online CPUs and memory nodes. A kernel built without
/// NUMA support has no node folder and one memory node, 0. When the CPU list cannot be read,
/// only the syntax is checked.
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";
const ONLINE_NODES: &str = "/sys/devices/system/node/online";

/// Checks a cpuset list such as `0-3,8`: its syntax, and that every number it names is online
/// on this machine, since the kernel rejects a cpuset naming an offline CPU or node. An empty
/// list leaves the cgroup's set unchanged.
fn check_id_list(
    field: &'static str,
    list: &str,
    noun: &str,
    online_file: &str,
    online_default: Option<&str>,
) -> Result<(), Error> {
    // The kernel strips spaces from what is written, so a list of only spaces would empty the
    // cgroup's set, which the kernel rejects for a cgroup with processes.
    if !list.is_empty() && list.trim().is_empty() {
        return Err(invalid(
            field,
            list,
            &format!("names no {noun}; leave it empty to keep the cgroup's set"),
        ));
    }
    let Some(ranges) = parse_id_list(list) else {
        return Err(invalid(
            field,
            truncated(list),
            &format!("must list {noun} numbers and ranges, such as 0-3,8"),
        ));
    };
    let Some(online_text) = std::fs::read_to_string(online_file)
        .ok()
        .or_else(|| online_default.map(str::to_owned))
    else {
        return Ok(());
    };
    let Some(online) = parse_id_list(&online_text) else {
        return Ok(());
    };
    let is_online = |id: u32| online.iter().any(|range| range.contains(id));
    let highest_online = online.iter().map(|range| range.last).max();
    let offline = ranges.iter().find_map(|range| {
        // The kernel rejects a range that ends past its highest CPU or node number, even when
        // the stride leaves the end out. The highest online number is used as that bound.
        if highest_online.is_none_or(|highest| range.last > highest) {
            return Some(range.last);
        }
        (range.first..=range.last).find(|id| range.contains(*id) && !is_online(*id))
    });
    match offline {
        Some(id) => Err(invalid(
            field,
            truncated(list),
            &format!(
                "names {noun} {id}, which is not online here; the online ones are {}",
                online_text.trim()
            ),
        )),
        None => Ok(()),
    }
}

/// One item of a kernel list: the numbers `first` to `last`, of which the first `used` of
/// every `group` belong to the set.
#[derive(Debug, PartialEq, Eq)]
struct IdRange {
    first: u32,
    last: u32,
    used: u32,
    group: u32,
}

impl IdRange {
    fn contains(&self, id: u32) -> bool {
        (self.first..=self.last).contains(&id) && (id - self.first) % self.group < self.used
    }
}

/// Parses the kernel's list format: comma-separated numbers and ranges `a-b`, where a range
/// may end in a stride `:used/group` that takes the first `used` of every `group` numbers.
/// Returns `None` when `list` is not in that format or breaks the kernel's rules for it.
fn parse_id_list(list: &str) -> Option<Vec<IdRange>> {
    let list = list.trim();
    if list.is_empty() {
        return Some(Vec::new());
    }
    list.split(',')
        .map(|item| {
            let (range, stride) = match item.split_once(':') {
                Some((range, stride)) => (range, Some(stride)),
                None => (item, None),
            };
            let (first, last) = match range.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None if stride.is_none() => {
                    let id = number(range)?;
                    (id, id)
                }
                None => return None,
            };
            let (used, group) = match stride {
                Some(stride) => {
                    let (used, group) = stride.split_once('/')?;
                    (number(used)?, number(group)?)
                }
                None => (1, 1),
            };
            (first <= last && group > 0 && used <= group).then_some(IdRange {
                first,
                last,
                used,
                group,
            })
        })
        .collect()
}

/// Parses a decimal number of the kernel's list format, which has no sign or spaces.
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// containerd's bound on one label: key and value together, in bytes.
const MAX_LABEL_BYTES: usize = 4096;

/// Checks labels against containerd's rule and the client's count limit.
pub(crate) fn check_labels(labels: &HashMap<String, String>, limits: &Limits) -> Result<(), Error> {
    if labels.len() > limits.max_labels {
        return Err(invalid(
            "labels",
            format!("{} labels", labels.len()),
            &format!(
                "at most {} labels are allowed; see Limits::max_labels",
                limits.max_labels
            ),
        ));
    }
    for (key, value) in labels {
        if key.is_empty() {
            return Err(invalid("label key", key.as_str(), "must not be empty"));
        }
        if key.len() + value.len() > MAX_LABEL_BYTES {
            return Err(invalid(
                "label",
                truncated(key),
                &format!("key and value must be at most {MAX_LABEL_BYTES} bytes together"),
            ));
        }
    }
    Ok(())
}

/// Encodes the spec as JSON, checked against the client's limit.
pub(crate) fn encode_spec(spec: &Spec, limits: &Limits) -> Result<Vec<u8>, Error> {
    encode_checked("spec", spec, limits.max_spec_bytes)
}

/// Encodes `value`, the argument `field`, as JSON of at most `max_bytes` bytes.
pub(crate) fn encode_checked(
    field: &'static str,
    value: &impl serde::Serialize,
    max_bytes: usize,
) -> Result<Vec<u8>, Error> {
    let json = serde_json::to_vec(value)
        .map_err(|error| invalid(field, "", &format!("cannot be encoded as JSON: {error}")))?;
    let size = json.len();
    if size > max_bytes {
        return Err(invalid(
            field,
            format!("{size} bytes"),
            &format!(
                "must be at most {max_bytes} bytes of JSON; shorten the arguments and environment or raise Limits::max_spec_bytes"
            ),
        ));
    }
    Ok(json)
}

/// Checks a pseudo-terminal size: the kernel stores each side in 16 bits, so a larger value
/// would be cut short.
pub(crate) fn check_terminal_size(width: u32, height: u32) -> Result<(), Error> {
    for (field, value) in [("terminal width", width), ("terminal height", height)] {
        if value > u32::from(u16::MAX) {
            return Err(invalid(
                field,
                value.to_string(),
                "must be at most 65535 character cells",
            ));
        }
    }
    Ok(())
}

/// The maximum timeout or interval the client's options accept. keel multiplies the call
/// timeout for requests that make several calls, so an unbounded one could overflow.
const MAX_OPTION_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Checks the client's options: an absolute state folder that is, or can become, a folder,
/// and timeouts and intervals above zero.
pub(crate) fn check_options(options: &ClientOptions) -> Result<(), Error> {
    let state_dir = &options.state_dir;
    let path_text = || state_dir.display().to_string();
    if !state_dir.is_absolute() {
        return Err(invalid(
            "state folder",
            path_text(),
            "must be an absolute path, because the shim opens the FIFOs in it from another \
             working folder",
        ));
    }
    // The nearest part of the path that exists must be a folder, or keel could never create
    // its folders there.
    let existing = state_dir.ancestors().find_map(|path| {
        std::fs::symlink_metadata(path)
            .ok()
            .map(|metadata| (path, metadata))
    });
    // A symlink counts as what it points to. One that points nowhere can never hold a folder.
    let existing = match existing {
        Some((path, metadata)) if metadata.is_symlink() => match std::fs::metadata(path) {
            Ok(target) => Some((path, target)),
            Err(error) => {
                return Err(invalid(
                    "state folder",
                    path_text(),
                    &format!(
                        "goes through the symlink {}, whose target cannot be read ({error}); point it at a folder or name another path",
                        path.display()
                    ),
                ));
            }
        },
        other => other,
    };
    if let Some((path, metadata)) = existing
        && !metadata.is_dir()
    {
        let reason = if path == state_dir.as_path() {
            "is a file, not a folder; name a folder, or a path where keel can create one".to_owned()
        } else {
            format!(
                "lies under the file {}; name a folder, or a path where keel can create one",
                path.display()
            )
        };
        return Err(invalid("state folder", path_text(), &reason));
    }
    let durations = [
        ("call timeout", options.call_timeout),
        ("connect timeout", options.connect_timeout),
        ("health interval", options.health_interval),
        ("health timeout", options.health_timeout),
    ];
    for (field, duration) in durations {
        if duration.is_zero() {
            return Err(invalid(
                field,
                "0s",
                "must be above zero, or every request would time out at once",
            ));
        }
        if duration > MAX_OPTION_DURATION {
            return Err(invalid(
                field,
                format!("{duration:?}"),
                "must be at most 24 hours; a request that may take longer is better watched by the caller",
            ));
        }
    }
    Ok(())
}

/// Shortens a value for an error message.
fn truncated(value: &str) -> String {
    const SHOWN: usize = 64;
    match value.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

/// Checks an exec process by the rules of [`check_process_fields`].
pub(crate) fn check_process(process: &Process) -> Result<(), Error> {
    check_process_fields(process, &EXEC_PROCESS)
}

/// The names errors give the fields of a process: the spec's own process, or an exec's.
struct ProcessFields {
    args: &'static str,
    env: &'static str,
    uid: &'static str,
    gid: &'static str,
    additional_gids: &'static str,
    cwd: &'static str,
    console_size: &'static str,
    rlimits: &'static str,
}

const SPEC_PROCESS: ProcessFields = ProcessFields {
    args: "spec.process.args",
    env: "spec.process.env",
    uid: "spec.process.user.uid",
    gid: "spec.process.user.gid",
    additional_gids: "spec.process.user.additionalGids",
    cwd: "spec.process.cwd",
    console_size: "spec.process.consoleSize",
    rlimits: "spec.process.rlimits",
};

const EXEC_PROCESS: ProcessFields = ProcessFields {
    args: "process.args",
    env: "process.env",
    uid: "process.user.uid",
    gid: "process.user.gid",
    additional_gids: "process.user.additionalGids",
    cwd: "process.cwd",
    console_size: "process.consoleSize",
    rlimits: "process.rlimits",
};

/// Checks that a process has arguments without NUL bytes, `KEY=VALUE` environment entries, a
/// uid and gid runc accepts, and an absolute working folder.
fn check_process_fields(process: &Process, fields: &ProcessFields) -> Result<(), Error> {
    let has_args = process.args().as_ref().is_some_and(|args| !args.is_empty());
    if !has_args {
        return Err(invalid(fields.args, "[]", "must name the command to run"));
    }
    for arg in process.args().iter().flatten() {
        if arg.contains('\0') {
            return Err(invalid(
                fields.args,
                arg.replace('\0', "\\0"),
                "must not contain a NUL byte",
            ));
        }
    }
    for entry in process.env().iter().flatten() {
        let key = entry.split_once('=').map(|(key, _)| key);
        if key.is_none_or(str::is_empty) || entry.contains('\0') {
            return Err(invalid(
                fields.env,
                entry.replace('\0', "\\0"),
                "must be KEY=VALUE with a non-empty key and no NUL byte",
            ));
        }
    }
    let user = process.user();
    let additional_gids = user.additional_gids().iter().flatten();
    let ids = [(fields.uid, user.uid()), (fields.gid, user.gid())]
        .into_iter()
        .chain(additional_gids.map(|gid| (fields.additional_gids, *gid)));
    for (field, id) in ids {
        if i32::try_from(id).is_err() {
            return Err(invalid(
                field,
                id.to_string(),
                "must be at most 2147483647, the largest id runc accepts",
            ));
        }
    }
    let cwd = process.cwd();
    if !cwd.is_absolute() || cwd.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(invalid(
            fields.cwd,
            cwd.display().to_string().replace('\0', "\\0"),
            "must be an absolute path inside the container, without a NUL byte",
        ));
    }
    if let Some(size) = process.console_size() {
        for side in [size.width(), size.height()] {
            if side > u64::from(u16::MAX) {
                return Err(invalid(
                    fields.console_size,
                    format!("{}x{}", size.width(), size.height()),
                    "each side must be at most 65535 character cells, since the kernel stores a side in 16 bits",
                ));
            }
        }
    }
    for rlimit in process.rlimits().iter().flatten() {
        if rlimit.soft() > rlimit.hard() {
            return Err(invalid(
                fields.rlimits,
                format!(
                    "{:?} soft {} hard {}",
                    rlimit.typ(),
                    rlimit.soft(),
                    rlimit.hard()
                ),
                "must have a soft limit no higher than its hard limit, as setrlimit requires",
            ));
        }
    }
    Ok(())
}

fn check_root_path(path: &Path) -> Result<(), Error> {
    let value = || path.display().to_string();
    if path.as_os_str().is_empty() {
        return Err(invalid("spec.root.path", value(), "must not be empty"));
    }
    if !path.is_absolute() {
        return Err(invalid(
            "spec.root.path",
            value(),
            "must be an absolute path to the root folder",
        ));
    }
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(invalid("spec.root.path", value(), "is not a folder")),
        Err(error) => Err(invalid(
            "spec.root.path",
            value(),
            &format!("cannot be read: {error}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecBuilder;

    #[test]
    fn spec_without_args_rejected() {
        let spec = SpecBuilder::new("/").build();
        let error = check_spec(&spec).expect_err("no args");
        assert!(error.to_string().contains("spec.process.args"), "{error}");
    }

    #[test]
    fn relative_root_rejected() {
        let spec = SpecBuilder::new("rootfs").args(["true"]).build();
        let error = check_spec(&spec).expect_err("relative root");
        assert!(error.to_string().contains("spec.root.path"), "{error}");
    }

    #[test]
    fn missing_root_rejected() {
        let spec = SpecBuilder::new("/nonexistent/keel/rootfs")
            .args(["true"])
            .build();
        assert!(check_spec(&spec).is_err());
    }

    #[test]
    fn env_without_key_rejected() {
        let spec = SpecBuilder::new("/").args(["true"]).env("", "c").build();
        let error = check_spec(&spec).expect_err("empty key");
        assert!(error.to_string().contains("spec.process.env"), "{error}");
    }

    #[test]
    fn uid_beyond_runc_range_rejected() {
        let spec = SpecBuilder::new("/")
            .args(["true"])
            .user(u32::MAX, 0)
            .build();
        let error = check_spec(&spec).expect_err("uid too large");
        assert!(
            error.to_string().contains("spec.process.user.uid"),
            "{error}"
        );
    }

    #[test]
    fn nul_in_argument_rejected() {
        let spec = SpecBuilder::new("/").args(["echo", "a\0b"]).build();
        let error = check_spec(&spec).expect_err("NUL byte");
        assert!(error.to_string().contains("spec.process.args"), "{error}");
    }

    #[test]
    fn cgroups_path_with_parent_rejected() {
        let mut spec = SpecBuilder::new("/").args(["true"]).build();
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(Some("/../../etc/evil".into()));
        }
        let error = check_spec(&spec).expect_err("parent component");
        assert!(error.to_string().contains("cgroupsPath"), "{error}");
    }

    #[test]
    fn long_hostname_rejected() {
        let spec = SpecBuilder::new("/")
            .args(["true"])
            .hostname(&"h".repeat(65))
            .build();
        let error = check_spec(&spec).expect_err("65 bytes");
        assert!(error.to_string().contains("spec.hostname"), "{error}");
        let spec = SpecBuilder::new("/")
            .args(["true"])
            .hostname(&"h".repeat(64))
            .build();
        check_spec(&spec).expect("64 bytes");
    }

    #[test]
    fn negative_memory_limit_rejected() {
        let spec = SpecBuilder::new("/")
            .args(["true"])
            .memory_limit(-5)
            .build();
        let error = check_spec(&spec).expect_err("negative limit");
        assert!(error.to_string().contains("memory.limit"), "{error}");
    }

    #[test]
    fn resource_updates_the_kernel_refuses_rejected() {
        use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
        let memory = |limit: i64| {
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(limit)
                        .build()
                        .expect("memory"),
                )
                .build()
                .expect("resources")
        };
        let memory_and_swap = |limit: i64, swap: i64| {
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(limit)
                        .swap(swap)
                        .build()
                        .expect("memory"),
                )
                .build()
                .expect("resources")
        };
        let cpu = |quota: i64, period: u64| {
            LinuxResourcesBuilder::default()
                .cpu(
                    LinuxCpuBuilder::default()
                        .quota(quota)
                        .period(period)
                        .build()
                        .expect("cpu"),
                )
                .build()
                .expect("resources")
        };
        for (resources, field) in [
            (memory(-5), "resources.memory.limit"),
            (memory(4096), "resources.memory.limit"),
            (memory_and_swap(64 << 20, 1024), "resources.memory.swap"),
            (cpu(-7, 100_000), "resources.cpu.quota"),
            (cpu(500, 100_000), "resources.cpu.quota"),
            (cpu(50_000, 1), "resources.cpu.period"),
            (cpu(50_000, 2_000_000), "resources.cpu.period"),
        ] {
            let error = check_resources(&resources).expect_err(field);
            assert!(error.to_string().contains(field), "{error}");
        }
        for resources in [
            memory(-1),
            memory(0),
            memory(6 << 20),
            memory(64 << 20),
            memory_and_swap(64 << 20, 128 << 20),
            memory_and_swap(64 << 20, -1),
            cpu(-1, 100_000),
            cpu(50_000, 100_000),
        ] {
            check_resources(&resources).expect("accepted");
        }
    }

    #[test]
    fn out_of_bounds_cpu_values_rejected() {
        use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
        let cpus = |list: &str| {
            LinuxResourcesBuilder::default()
                .cpu(LinuxCpuBuilder::default().cpus(list).build().expect("cpu"))
                .build()
                .expect("resources")
        };
        let mems = |list: &str| {
            LinuxResourcesBuilder::default()
                .cpu(LinuxCpuBuilder::default().mems(list).build().expect("cpu"))
                .build()
                .expect("resources")
        };
        let shares = |shares: u64| {
            LinuxResourcesBuilder::default()
                .cpu(
                    LinuxCpuBuilder::default()
                        .shares(shares)
                        .build()
                        .expect("cpu"),
                )
                .build()
                .expect("resources")
        };
        let swappiness = |swappiness: u64| {
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .swappiness(swappiness)
                        .build()
                        .expect("memory"),
                )
                .build()
                .expect("resources")
        };
        for (resources, field) in [
            (cpus("zero"), "resources.cpu.cpus"),
            (cpus("3-1"), "resources.cpu.cpus"),
            (cpus("0,,1"), "resources.cpu.cpus"),
            (cpus(" "), "resources.cpu.cpus"),
            (cpus("+0"), "resources.cpu.cpus"),
            (cpus("4096"), "resources.cpu.cpus"),
            (mems("0-4096"), "resources.cpu.mems"),
            (shares(1), "resources.cpu.shares"),
            (shares(300_000), "resources.cpu.shares"),
            (swappiness(101), "resources.memory.swappiness"),
        ] {
            let error = check_resources(&resources).expect_err(field);
            assert!(error.to_string().contains(field), "{error}");
        }
        for resources in [
            cpus("0"),
            cpus(""),
            cpus(" 0-0\n"),
            mems("0"),
            shares(0),
            shares(2),
            shares(1024),
            swappiness(0),
            swappiness(100),
        ] {
            check_resources(&resources).expect("accepted");
        }
    }

    #[test]
    fn kernel_id_lists_parse() {
        let range = |first, last, used, group| IdRange {
            first,
            last,
            used,
            group,
        };
        assert_eq!(
            parse_id_list("0-3,8"),
            Some(vec![range(0, 3, 1, 1), range(8, 8, 1, 1)])
        );
        assert_eq!(parse_id_list("0-7:2/4"), Some(vec![range(0, 7, 2, 4)]));
        assert_eq!(parse_id_list("\n"), Some(vec![]));
        for bad in [
            "-1", "1-", "a", "+0", "0 - 1", "1:2/4", "0-3:2", "0-3:x/4", "0-3:5/4", "0-3:1/0",
            "1;2",
        ] {
            assert_eq!(parse_id_list(bad), None, "{bad}");
        }
        let strided = range(0, 7, 2, 4);
        let members: Vec<u32> = (0..10).filter(|id| strided.contains(*id)).collect();
        assert_eq!(members, [0, 1, 4, 5]);
    }

    #[test]
    fn relative_mount_destination_rejected() {
        let mut spec = SpecBuilder::new("/").args(["true"]).build();
        let mut mount = oci_spec::runtime::Mount::default();
        mount.set_destination("relative/dest".into());
        spec.mounts_mut().get_or_insert_with(Vec::new).push(mount);
        let error = check_spec(&spec).expect_err("relative destination");
        assert!(error.to_string().contains("destination"), "{error}");
    }

    #[test]
    fn spec_without_process_rejected() {
        let mut spec = SpecBuilder::new("/").build();
        spec.set_process(None);
        let error = check_spec(&spec).expect_err("no process");
        assert!(error.to_string().contains("spec.process"), "{error}");
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::spec::SpecBuilder;

    proptest! {
        #[test]
        fn relative_roots_always_rejected(root in "[^/\\x00][\\PC]{0,40}") {
            let spec = SpecBuilder::new(root.as_str()).args(["true"]).build();
            prop_assert!(check_spec(&spec).is_err());
        }

        #[test]
        fn arbitrary_specs_never_panic(
            root in "\\PC{0,40}",
            args in proptest::collection::vec("\\PC{0,10}", 0..4),
            cwd in "\\PC{0,20}",
        ) {
            let spec = SpecBuilder::new(root.as_str()).args(args).cwd(cwd.as_str()).build();
            let _ = check_spec(&spec);
            let _ = encode_spec(&spec, &Limits::default());
        }

        #[test]
        fn oversized_labels_rejected(key in "[a-z]{1,10}", extra in 0_usize..100) {
            let value = "v".repeat(MAX_LABEL_BYTES - key.len() + 1 + extra);
            let labels = HashMap::from([(key, value)]);
            prop_assert!(check_labels(&labels, &Limits::default()).is_err());
        }
    }
}
