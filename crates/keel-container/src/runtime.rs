//! The runtime a container runs with, and runc's typed options.

use prost::Message;

/// containerd's name for the runc v2 shim.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

/// The type URL containerd expects for [`RuncOptions`].
const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// The type URL of [`CheckpointOptions`].
const CHECKPOINT_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.CheckpointOptions";

/// The type URL of [`ProcessDetails`].
const PROCESS_DETAILS_TYPE_URL: &str = "containerd.runc.v1.ProcessDetails";

/// The runtime of a container: the shim's name and its options.
#[derive(Clone, Debug, PartialEq)]
pub struct Runtime {
    /// The runtime name, such as [`RUNC_RUNTIME`].
    pub name: String,
    /// Options for the runc shim, stored with the container record so they survive a reload.
    pub runc: Option<RuncOptions>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            name: RUNC_RUNTIME.to_owned(),
            runc: None,
        }
    }
}

/// Options of the runc v2 shim, the message `containerd.runc.v1.Options`.
#[derive(Clone, PartialEq, Message)]
pub struct RuncOptions {
    /// Disables `pivot_root` when creating the container.
    #[prost(bool, tag = "1")]
    pub no_pivot_root: bool,
    /// Gives the container no session keyring.
    #[prost(bool, tag = "2")]
    pub no_new_keyring: bool,
    /// The cgroup the shim itself is placed in.
    #[prost(string, tag = "3")]
    pub shim_cgroup: String,
    /// The owner of the stdio pipes the shim creates.
    #[prost(uint32, tag = "4")]
    pub io_uid: u32,
    /// The group of the stdio pipes the shim creates.
    #[prost(uint32, tag = "5")]
    pub io_gid: u32,
    /// The runc binary, looked up on containerd's PATH when not absolute.
    #[prost(string, tag = "6")]
    pub binary_name: String,
    /// runc's state folder.
    #[prost(string, tag = "7")]
    pub root: String,
    /// The criu binary used for checkpoint and restore.
    #[prost(string, tag = "8")]
    pub criu_path: String,
    /// Uses systemd to manage cgroups.
    #[prost(bool, tag = "9")]
    pub systemd_cgroup: bool,
    /// The folder criu writes its images to.
    #[prost(string, tag = "10")]
    pub criu_image_path: String,
    /// The folder criu writes its logs and work files to.
    #[prost(string, tag = "11")]
    pub criu_work_path: String,
}

impl RuncOptions {
    /// Encodes the options as the `Any` containerd stores with the container.
    pub fn to_any(&self) -> prost_types::Any {
        prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE_URL.to_owned(),
            value: self.encode_to_vec(),
        }
    }

    /// Decodes options stored with a container record; `None` for another runtime's options.
    pub fn from_any(any: &prost_types::Any) -> Option<Result<Self, prost::DecodeError>> {
        let type_name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
        (type_name == RUNC_OPTIONS_TYPE_URL).then(|| Self::decode(any.value.as_slice()))
    }
}

/// Options of a runc checkpoint, the message `containerd.runc.v1.CheckpointOptions`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct CheckpointOptions {
    /// Stops the container after the checkpoint.
    #[prost(bool, tag = "1")]
    pub(crate) exit: bool,
    /// The folder criu writes the image to, so containerd stores nothing in its content store.
    #[prost(string, tag = "8")]
    pub(crate) image_path: String,
    /// The folder criu writes its logs to.
    #[prost(string, tag = "9")]
    pub(crate) work_path: String,
}

impl CheckpointOptions {
    pub(crate) fn to_any(&self) -> prost_types::Any {
        prost_types::Any {
            type_url: CHECKPOINT_OPTIONS_TYPE_URL.to_owned(),
            value: self.encode_to_vec(),
        }
    }
}

/// The runc shim's details of one process in a process list.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ProcessDetails {
    /// The exec id of the process, empty for others.
    #[prost(string, tag = "1")]
    pub(crate) exec_id: String,
}

impl ProcessDetails {
    /// Decodes the details of a process list entry; `None` for another runtime's details.
    pub(crate) fn from_any(any: &prost_types::Any) -> Option<Self> {
        let type_name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
        if type_name != PROCESS_DETAILS_TYPE_URL {
            return None;
        }
        Self::decode(any.value.as_slice()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_round_trip_through_any() {
        let options = RuncOptions {
            binary_name: "runc".to_owned(),
            io_uid: 1000,
            systemd_cgroup: true,
            ..RuncOptions::default()
        };
        let decoded = RuncOptions::from_any(&options.to_any())
            .expect("is runc options")
            .expect("decodes");
        assert_eq!(decoded, options);
    }
}
