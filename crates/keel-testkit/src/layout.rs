//! The folder of one private containerd: where each file lives, and the config file that points
//! containerd at them.

use std::fmt::Write as _;
use std::fs::{self, DirBuilder};
use std::io;
use std::io::Read as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use keel_supervisor::{ContainerdConfig, DEFAULT_MESSAGE_SIZE};

use crate::TestkitError;

/// The parent of every instance folder. It is short on purpose, because a unix socket path must
/// fit in 108 bytes (`sun_path` on Linux) and the sockets live inside the folder.
const PARENT: &str = "/tmp";

/// The prefix of every instance folder's name.
pub(crate) const FOLDER_PREFIX: &str = "keel-";

/// Counts the instance folders this process created, so two instances never share a name.
static FOLDER_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The paths of one instance, all inside its folder.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) opt: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) ttrpc_socket: PathBuf,
    pub(crate) debug_socket: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) client_state: PathBuf,
    pub(crate) busybox_rootfs: PathBuf,
}

impl Layout {
    fn new(dir: PathBuf) -> Self {
        Self {
            root: dir.join("root"),
            state: dir.join("state"),
            opt: dir.join("opt"),
            socket: dir.join("containerd.sock"),
            ttrpc_socket: dir.join("containerd.sock.ttrpc"),
            debug_socket: dir.join("debug.sock"),
            config: dir.join("config.toml"),
            log: dir.join("containerd.log"),
            client_state: dir.join("client"),
            busybox_rootfs: dir.join("busybox-rootfs"),
            dir,
        }
    }

    /// Creates a fresh folder `/tmp/keel-<pid>-<counter>-<random>` with mode 0700, its
    /// subfolders and the config file.
    pub(crate) fn create() -> Result<Self, TestkitError> {
        let dir = create_unique_folder()?;
        let layout = Self::new(dir);

        for folder in [
            &layout.root,
            &layout.state,
            &layout.opt,
            &layout.client_state,
        ] {
            DirBuilder::new()
                .mode(0o700)
                .create(folder)
                .map_err(|error| TestkitError::io("create directory", folder, error))?;
        }

        let config = layout
            .containerd_config()
            .to_toml()
            .map_err(|error| TestkitError::io("render", &layout.config, io::Error::other(error)))?;
        fs::write(&layout.config, config)
            .map_err(|error| TestkitError::io("write", &layout.config, error))?;
        Ok(layout)
    }

    /// The folder where containerd's v2 runtime keeps task bundles, as `<namespace>/<id>/`.
    pub(crate) fn task_root(&self) -> PathBuf {
        self.state.join("io.containerd.runtime.v2.task")
    }

    /// Returns the settings of the instance's config file.
    fn containerd_config(&self) -> ContainerdConfig {
        ContainerdConfig {
            root: self.root.clone(),
            state: self.state.clone(),
            grpc_socket: self.socket.clone(),
            ttrpc_socket: self.ttrpc_socket.clone(),
            debug_socket: self.debug_socket.clone(),
            opt_dir: self.opt.clone(),
            max_recv_message_size: DEFAULT_MESSAGE_SIZE,
            max_send_message_size: DEFAULT_MESSAGE_SIZE,
            log_level: "info".to_owned(),
        }
    }
}

/// Creates `/tmp/keel-<pid>-<counter>-<random>` with mode 0700, trying another random part if
/// the name is taken.
fn create_unique_folder() -> Result<PathBuf, TestkitError> {
    let pid = std::process::id();
    let mut attempt = 0;
    loop {
        let counter = FOLDER_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{FOLDER_PREFIX}{pid}-{counter}-{}", random_hex());
        let dir = Path::new(PARENT).join(name);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(error) => return Err(TestkitError::io("create directory", dir, error)),
        }
    }
}

/// Returns eight hex digits from `/dev/urandom`, or from the clock if that cannot be read.
fn random_hex() -> String {
    let mut bytes = [0_u8; 4];
    let read = fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_every_path() {
        let layout = Layout::new(PathBuf::from("/tmp/keel-1-0-00000000"));
        let text = layout.containerd_config().to_toml().expect("renders");
        assert!(text.contains("root = \"/tmp/keel-1-0-00000000/root\""));
        assert!(text.contains("address = \"/tmp/keel-1-0-00000000/containerd.sock\""));
        assert!(text.contains("path = \"/tmp/keel-1-0-00000000/opt\""));
    }

    #[test]
    fn socket_paths_fit_sun_path() {
        let dir = Path::new(PARENT).join(format!(
            "{FOLDER_PREFIX}{}-{}-{}",
            u32::MAX,
            u64::MAX,
            random_hex()
        ));
        let layout = Layout::new(dir);
        for socket in [layout.socket, layout.ttrpc_socket, layout.debug_socket] {
            assert!(
                socket.as_os_str().len() < 108,
                "{} is too long",
                socket.display()
            );
        }
    }
}
