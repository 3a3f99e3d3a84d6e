//! The default Linux spec and a builder for the parts an engine usually sets.
//!
//! containerd fills in no spec defaults, and `oci_spec`'s `Spec::default()` carries another
//! runtime's choices (its own hostname, three capabilities, a cgroup namespace). [`default_spec`]
//! returns what containerd 1.6's Go `oci.WithDefaultSpec` produces on Linux instead.

use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxDeviceCgroup, LinuxNamespace,
    LinuxNamespaceType, LinuxResources, Mount, PosixRlimitBuilder, PosixRlimitType, Process, Root,
    Spec, User,
};

/// The `PATH` containerd's `oci.WithDefaultPathEnv` sets.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities containerd grants by default.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Returns containerd's default Linux spec with `rootfs` as the root folder.
///
/// The process has no arguments yet: set them with [`SpecBuilder`] or on the returned spec.
pub fn default_spec(rootfs: impl Into<PathBuf>) -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(None);
    spec.set_root(Some(root(rootfs.into())));
    spec.set_process(Some(default_process()));
    spec.set_mounts(Some(default_mounts()));
    spec.set_linux(Some(default_linux()));
    spec
}

fn root(path: PathBuf) -> Root {
    let mut root = Root::default();
    root.set_path(path);
    root.set_readonly(Some(false));
    root
}

fn default_process() -> Process {
    let capabilities: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let mut linux_capabilities = LinuxCapabilities::default();
    linux_capabilities.set_bounding(Some(capabilities.clone()));
    linux_capabilities.set_permitted(Some(capabilities.clone()));
    linux_capabilities.set_effective(Some(capabilities));
    linux_capabilities.set_inheritable(None);
    linux_capabilities.set_ambient(None);

    // The builder fails only on a missing required field, and every field is set here.
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .hard(1024_u64)
        .soft(1024_u64)
        .build();

    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_user(User::default());
    process.set_args(None);
    process.set_env(Some(vec![DEFAULT_PATH_ENV.to_owned()]));
    process.set_cwd(PathBuf::from("/"));
    process.set_no_new_privileges(Some(true));
    process.set_capabilities(Some(linux_capabilities));
    process.set_rlimits(Some(nofile.into_iter().collect()));
    process.set_apparmor_profile(None);
    process.set_oom_score_adj(None);
    process.set_selinux_label(None);
    process
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut mount = Mount::default();
    mount.set_destination(PathBuf::from(destination));
    mount.set_typ(Some(typ.to_owned()));
    mount.set_source(Some(PathBuf::from(source)));
    mount.set_options(Some(
        options.iter().map(|option| (*option).to_owned()).collect(),
    ));
    mount
}

fn default_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
    ]
}

fn default_linux() -> oci_spec::runtime::Linux {
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|typ| {
        let mut namespace = LinuxNamespace::default();
        namespace.set_typ(typ);
        namespace
    })
    .collect::<Vec<_>>();

    let mut deny_all_devices = LinuxDeviceCgroup::default();
    deny_all_devices.set_allow(false);
    deny_all_devices.set_access(Some("rwm".to_owned()));
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(vec![deny_all_devices]));

    let mut linux = LinuxBuilder::default().build().unwrap_or_default();
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(resources));
    linux.set_masked_paths(Some(MASKED_PATHS.map(str::to_owned).to_vec()));
    linux.set_readonly_paths(Some(READONLY_PATHS.map(str::to_owned).to_vec()));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_devices(None);
    linux.set_seccomp(None);
    linux.set_cgroups_path(None);
    linux
}

/// Returns a process for exec that runs `args` as root in `/` with the default `PATH`.
pub fn exec_process<I, S>(args: I) -> Process
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut process = default_process();
    process.set_args(Some(args.into_iter().map(Into::into).collect()));
    process
}

/// Builds a spec from [`default_spec`] and the fields an engine sets most often.
#[derive(Clone, Debug)]
pub struct SpecBuilder {
    spec: Spec,
}

impl SpecBuilder {
    /// Starts from the default spec with `rootfs` as the root folder.
    pub fn new(rootfs: impl Into<PathBuf>) -> Self {
        Self {
            spec: default_spec(rootfs),
        }
    }

    fn process(&mut self) -> &mut Process {
        self.spec.process_mut().get_or_insert_with(default_process)
    }

    /// Sets the command and its arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args = args.into_iter().map(Into::into).collect();
        self.process().set_args(Some(args));
        self
    }

    /// Adds an environment variable in `KEY=value` form, replacing an earlier one of that key.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        let prefix = format!("{key}=");
        let process = self.process();
        let mut env = process.env().clone().unwrap_or_default();
        env.retain(|entry| !entry.starts_with(&prefix));
        env.push(format!("{key}={value}"));
        process.set_env(Some(env));
        self
    }

    /// Sets the working folder inside the container.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.process().set_cwd(cwd.into());
        self
    }

    /// Sets the user and group the process runs as.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        let mut user = User::default();
        user.set_uid(uid);
        user.set_gid(gid);
        self.process().set_user(user);
        self
    }

    /// Runs the process on a pseudo-terminal.
    pub fn terminal(mut self, terminal: bool) -> Self {
        self.process().set_terminal(Some(terminal));
        self
    }

    /// Sets the size of the process's pseudo-terminal from its first instruction, in character
    /// cells. Without it the terminal starts at 0 by 0 until a resize.
    pub fn console_size(mut self, width: u32, height: u32) -> Self {
        self.process()
            .set_console_size(Some(console_box(width, height)));
        self
    }

    /// Limits the container's memory to `bytes`.
    pub fn memory_limit(mut self, bytes: i64) -> Self {
        let mut memory = oci_spec::runtime::LinuxMemory::default();
        memory.set_limit(Some(bytes));
        if let Some(linux) = self.spec.linux_mut() {
            let mut resources = linux.resources().clone().unwrap_or_default();
            resources.set_memory(Some(memory));
            linux.set_resources(Some(resources));
        }
        self
    }

    /// Sets the container's hostname.
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.spec.set_hostname(Some(hostname.to_owned()));
        self
    }

    /// Returns the spec.
    pub fn build(self) -> Spec {
        self.spec
    }
}

/// Returns the OCI box of a terminal `width` cells wide and `height` high.
pub fn console_box(width: u32, height: u32) -> oci_spec::runtime::Box {
    // The builder fails only for a missing field, and every field of a box has a default.
    oci_spec::runtime::BoxBuilder::default()
        .width(width)
        .height(height)
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_matches_containerd_defaults() {
        let spec = default_spec("/rootfs");
        assert_eq!(spec.hostname(), &None);
        let process = spec.process().as_ref().expect("has a process");
        let bounding = process
            .capabilities()
            .as_ref()
            .and_then(|caps| caps.bounding().clone())
            .expect("has bounding capabilities");
        assert_eq!(bounding.len(), 14);
        assert!(bounding.contains(&Capability::NetBindService));
        let mounts = spec.mounts().as_ref().expect("has mounts");
        let destinations: Vec<_> = mounts
            .iter()
            .map(|mount| mount.destination().clone())
            .collect();
        for expected in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ] {
            assert!(
                destinations.contains(&PathBuf::from(expected)),
                "{expected}"
            );
        }
        let linux = spec.linux().as_ref().expect("has linux");
        let namespaces = linux.namespaces().as_ref().expect("has namespaces");
        assert_eq!(namespaces.len(), 5);
        assert!(
            !namespaces
                .iter()
                .any(|namespace| namespace.typ() == LinuxNamespaceType::Cgroup)
        );
        assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(10));
        assert_eq!(linux.readonly_paths().as_ref().map(Vec::len), Some(5));
    }

    #[test]
    fn builder_replaces_env_of_same_key() {
        let spec = SpecBuilder::new("/rootfs")
            .args(["sh", "-c", "true"])
            .env("A", "1")
            .env("A", "2")
            .build();
        let env = spec
            .process()
            .as_ref()
            .and_then(|process| process.env().clone())
            .expect("has env");
        assert!(env.contains(&"A=2".to_owned()));
        assert!(!env.contains(&"A=1".to_owned()));
    }
}
