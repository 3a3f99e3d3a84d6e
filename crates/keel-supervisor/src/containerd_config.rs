//! containerd's config file for a containerd that keel starts: the supervised one, and the
//! private ones of the tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Plugins a containerd that keel starts never runs. CRI would serve Kubernetes and set up CNI
/// networking. The aufs, btrfs and zfs snapshotters are unused, and the aufs plugin of
/// containerd 1.6 loads a kernel module when it starts.
pub const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
];

/// The gRPC message size limit in both directions, 16 MiB, as Docker configures its containerd.
pub const DEFAULT_MESSAGE_SIZE: u32 = 16 * 1024 * 1024;

/// The settings of containerd's config file (format version 2, read by containerd 1.5 and
/// later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// containerd's `root`: images, snapshots and metadata.
    pub root: PathBuf,
    /// containerd's `state`: sockets of the shims and task bundles.
    pub state: PathBuf,
    /// The gRPC socket.
    pub grpc_socket: PathBuf,
    /// The ttrpc socket the shims publish events on.
    pub ttrpc_socket: PathBuf,
    /// The debug socket.
    pub debug_socket: PathBuf,
    /// The folder of the `opt` plugin, which would otherwise be `/opt/containerd`.
    pub opt_dir: PathBuf,
    /// The gRPC receive limit in bytes.
    pub max_recv_message_size: u32,
    /// The gRPC send limit in bytes.
    pub max_send_message_size: u32,
    /// The log level, such as `info` or `debug`.
    pub log_level: String,
}

/// The file's layout, as containerd reads it.
#[derive(Serialize)]
struct File<'a> {
    version: u32,
    root: &'a Path,
    state: &'a Path,
    disabled_plugins: &'a [&'a str],
    grpc: Grpc<'a>,
    ttrpc: Address<'a>,
    debug: Debug<'a>,
    plugins: BTreeMap<&'static str, OptPlugin<'a>>,
}

#[derive(Serialize)]
struct Grpc<'a> {
    address: &'a Path,
    max_recv_message_size: u32,
    max_send_message_size: u32,
}

#[derive(Serialize)]
struct Address<'a> {
    address: &'a Path,
}

#[derive(Serialize)]
struct Debug<'a> {
    address: &'a Path,
    level: &'a str,
}

#[derive(Serialize)]
struct OptPlugin<'a> {
    path: &'a Path,
}

impl ContainerdConfig {
    /// Renders the config file.
    ///
    /// # Errors
    ///
    /// Returns an error when a path is not UTF-8, which a TOML string cannot hold.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let file = File {
            version: 2,
            root: &self.root,
            state: &self.state,
            disabled_plugins: DISABLED_PLUGINS,
            grpc: Grpc {
                address: &self.grpc_socket,
                max_recv_message_size: self.max_recv_message_size,
                max_send_message_size: self.max_send_message_size,
            },
            ttrpc: Address {
                address: &self.ttrpc_socket,
            },
            debug: Debug {
                address: &self.debug_socket,
                level: &self.log_level,
            },
            plugins: BTreeMap::from([(
                "io.containerd.internal.v1.opt",
                OptPlugin {
                    path: &self.opt_dir,
                },
            )]),
        };
        toml::to_string(&file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(root: &str) -> ContainerdConfig {
        ContainerdConfig {
            root: PathBuf::from(root),
            state: PathBuf::from("/tmp/kc/run/state"),
            grpc_socket: PathBuf::from("/tmp/kc/run/containerd.sock"),
            ttrpc_socket: PathBuf::from("/tmp/kc/run/containerd.sock.ttrpc"),
            debug_socket: PathBuf::from("/tmp/kc/run/debug.sock"),
            opt_dir: PathBuf::from("/tmp/kc/root/opt"),
            max_recv_message_size: DEFAULT_MESSAGE_SIZE,
            max_send_message_size: DEFAULT_MESSAGE_SIZE,
            log_level: "info".to_owned(),
        }
    }

    #[test]
    fn rendered_file_names_every_setting() {
        let text = config("/tmp/kc/root").to_toml().expect("renders");
        let file: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(file["version"].as_integer(), Some(2));
        assert_eq!(file["root"].as_str(), Some("/tmp/kc/root"));
        assert_eq!(file["state"].as_str(), Some("/tmp/kc/run/state"));
        let disabled = file["disabled_plugins"].as_array().expect("array");
        assert_eq!(disabled.len(), DISABLED_PLUGINS.len());
        assert_eq!(disabled[0].as_str(), Some("io.containerd.grpc.v1.cri"));
        let grpc = &file["grpc"];
        assert_eq!(
            grpc["address"].as_str(),
            Some("/tmp/kc/run/containerd.sock")
        );
        assert_eq!(grpc["max_recv_message_size"].as_integer(), Some(16_777_216));
        assert_eq!(grpc["max_send_message_size"].as_integer(), Some(16_777_216));
        assert_eq!(
            file["ttrpc"]["address"].as_str(),
            Some("/tmp/kc/run/containerd.sock.ttrpc")
        );
        assert_eq!(file["debug"]["level"].as_str(), Some("info"));
        assert_eq!(
            file["plugins"]["io.containerd.internal.v1.opt"]["path"].as_str(),
            Some("/tmp/kc/root/opt")
        );
    }

    #[test]
    fn quotes_and_controls_in_paths_survive() {
        let root = "/tmp/a\"b\\c\nd";
        let text = config(root).to_toml().expect("renders");
        let file: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(file["root"].as_str(), Some(root));
    }

    #[test]
    fn non_utf8_path_is_an_error() {
        use std::os::unix::ffi::OsStrExt as _;
        let mut config = config("/tmp/kc/root");
        config.root = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff"));
        assert!(config.to_toml().is_err());
    }
}
