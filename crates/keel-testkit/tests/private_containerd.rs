//! Tests of `PrivateContainerd` against the real containerd, runc and busybox of this machine.
//! They need root.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateNamespaceRequest, CreateTaskRequest,
    ListNamespacesRequest, Namespace, StartRequest,
};
use containerd_client::types::Mount;
use keel_testkit::{PrivateContainerd, fifo_count, is_process_alive};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

type TestResult = Result<(), Box<dyn Error>>;

/// The type URL containerd expects on an OCI runtime spec.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

#[tokio::test]
async fn start_serves_version_in_new_namespace() -> TestResult {
    init_logging();
    let containerd = PrivateContainerd::start().await?;
    let dir = containerd.dir().to_owned();
    let pid = containerd.pid();
    let namespace = containerd.new_namespace();
    assert!(containerd.socket().starts_with(&dir));
    assert!(containerd.socket().as_os_str().len() < 108);
    assert!(is_process_alive(pid));

    let channel = containerd.connect().await?;
    let create = CreateNamespaceRequest {
        namespace: Some(Namespace {
            name: namespace.clone(),
            labels: Default::default(),
        }),
    };
    NamespacesClient::new(channel.clone())
        .create(in_namespace(create, &namespace)?)
        .await?;
    let listed = NamespacesClient::new(channel.clone())
        .list(ListNamespacesRequest::default())
        .await?
        .into_inner();
    assert!(
        listed
            .namespaces
            .iter()
            .any(|listed| listed.name == namespace)
    );

    let version = VersionClient::new(channel)
        .version(in_namespace((), &namespace)?)
        .await?
        .into_inner();
    assert!(!version.version.is_empty());

    containerd.stop().await;

    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!is_process_alive(pid), "containerd pid {pid} still alive");
    Ok(())
}

#[tokio::test]
async fn new_namespace_is_unique_and_valid() -> TestResult {
    init_logging();
    let containerd = PrivateContainerd::start().await?;

    let first = containerd.new_namespace();
    let second = containerd.new_namespace();

    assert_ne!(first, second);
    for namespace in [&first, &second] {
        assert!(namespace.starts_with("keel-t"));
        assert!(
            namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        );
    }
    containerd.stop().await;
    Ok(())
}

#[tokio::test]
async fn busybox_rootfs_has_applets_and_users() -> TestResult {
    init_logging();
    let containerd = PrivateContainerd::start().await?;

    let rootfs = containerd.busybox_rootfs()?;

    assert!(rootfs.starts_with(containerd.dir()));
    assert_eq!(
        containerd.busybox_rootfs()?,
        rootfs,
        "second call builds again"
    );
    assert!(rootfs.join("bin/busybox").is_file());
    for applet in ["sh", "echo", "cat", "sleep", "true", "wc"] {
        let link = rootfs.join("bin").join(applet);
        assert_eq!(std::fs::read_link(&link)?, Path::new("busybox"), "{applet}");
    }
    for folder in ["proc", "dev", "sys", "tmp", "etc"] {
        assert!(rootfs.join(folder).is_dir(), "{folder} missing");
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
    assert!(passwd.starts_with("root:x:0:0:"));
    assert!(passwd.contains("\nnobody:x:65534:65534:"));
    assert!(rootfs.join("etc/group").is_file());

    containerd.stop().await;
    Ok(())
}

#[tokio::test]
async fn stop_removes_running_task() -> TestResult {
    init_logging();
    let containerd = PrivateContainerd::start().await?;
    let dir = containerd.dir().to_owned();
    let namespace = containerd.new_namespace();
    let rootfs = containerd.busybox_rootfs()?;
    let channel = containerd.connect().await?;

    let root = RootSource::Path(rootfs);
    let container_pid = run_sleeping_task(&channel, &namespace, "sleeper", root).await?;

    let shim_pids = containerd.shim_pids();
    assert_eq!(shim_pids.len(), 1, "shim pids: {shim_pids:?}");
    assert!(shim_pids.iter().all(|&pid| is_process_alive(pid)));
    assert!(is_process_alive(container_pid));
    let bundle = containerd
        .state_dir()
        .join("io.containerd.runtime.v2.task")
        .join(&namespace)
        .join("sleeper");
    let shim_socket = shim_socket(&bundle)?;
    assert!(shim_socket.exists(), "{} missing", shim_socket.display());
    let runc_root = Path::new("/run/containerd/runc").join(&namespace);
    assert!(runc_root.join("sleeper").exists());
    assert_eq!(fifo_count(&containerd.client_state_dir())?, 0);

    containerd.stop().await;

    assert!(!dir.exists(), "{} still exists", dir.display());
    for pid in shim_pids {
        assert!(!is_process_alive(pid), "shim pid {pid} still alive");
    }
    assert!(
        !is_process_alive(container_pid),
        "container pid {container_pid} alive"
    );
    assert!(
        !shim_socket.exists(),
        "{} still exists",
        shim_socket.display()
    );
    assert!(!runc_root.exists(), "{} still exists", runc_root.display());
    let cgroup = Path::new("/sys/fs/cgroup/memory").join(&namespace);
    assert!(!cgroup.exists(), "{} still exists", cgroup.display());
    Ok(())
}

#[tokio::test]
async fn stop_after_kill_unmounts_bundle_rootfs() -> TestResult {
    init_logging();
    let mut containerd = PrivateContainerd::start().await?;
    let dir = containerd.dir().to_owned();
    let namespace = containerd.new_namespace();
    let rootfs = containerd.busybox_rootfs()?;
    let channel = containerd.connect().await?;
    let root = RootSource::BindMount(rootfs);
    let container_pid = run_sleeping_task(&channel, &namespace, "mounted", root).await?;
    let shim_pids = containerd.shim_pids();
    assert_eq!(shim_pids.len(), 1, "shim pids: {shim_pids:?}");
    assert!(!mounts_inside(&dir)?.is_empty(), "shim mounted no rootfs");

    containerd.kill()?;
    assert!(shim_pids.iter().all(|&pid| is_process_alive(pid)));
    containerd.stop().await;

    assert!(!dir.exists(), "{} still exists", dir.display());
    assert_eq!(mounts_inside(&dir)?, Vec::<String>::new());
    for pid in shim_pids {
        assert!(!is_process_alive(pid), "shim pid {pid} still alive");
    }
    assert!(
        !is_process_alive(container_pid),
        "container pid {container_pid} alive"
    );
    Ok(())
}

#[tokio::test]
async fn kill_and_restart_serve_again() -> TestResult {
    init_logging();
    let mut containerd = PrivateContainerd::start().await?;
    let first_pid = containerd.pid();

    containerd.kill()?;

    assert!(!is_process_alive(first_pid));
    assert!(containerd.freeze().is_err(), "freeze after kill");

    containerd.restart().await?;

    let second_pid = containerd.pid();
    assert_ne!(first_pid, second_pid);
    assert!(is_process_alive(second_pid));
    let channel = containerd.connect().await?;
    VersionClient::new(channel).version(()).await?;

    containerd.stop().await;
    assert!(!is_process_alive(second_pid));
    Ok(())
}

#[tokio::test]
async fn freeze_stalls_requests_until_thaw() -> TestResult {
    init_logging();
    let containerd = PrivateContainerd::start().await?;
    let channel = containerd.connect().await?;

    containerd.freeze()?;
    let frozen = tokio::time::timeout(
        Duration::from_millis(500),
        VersionClient::new(channel.clone()).version(()),
    )
    .await;
    containerd.thaw()?;

    assert!(frozen.is_err(), "version answered while frozen");
    VersionClient::new(channel).version(()).await?;
    containerd.stop().await;
    Ok(())
}

#[tokio::test]
async fn drop_removes_folder_and_process() -> TestResult {
    init_logging();
    let containerd = PrivateContainerd::start().await?;
    let dir = containerd.dir().to_owned();
    let pid = containerd.pid();

    drop(containerd);

    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!is_process_alive(pid));
    Ok(())
}

/// Sends the test kit's logs to the test's captured output, shown when the test fails.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("keel_testkit=debug")
        .with_test_writer()
        .try_init();
}

/// Where a test container's root file system comes from.
enum RootSource {
    /// The spec's root path names the folder, and no mount is made.
    Path(PathBuf),
    /// The shim bind-mounts the folder onto the bundle's `rootfs`, as for a snapshot.
    BindMount(PathBuf),
}

/// Creates a container running `sleep 1000`, starts its task and returns the container's pid.
async fn run_sleeping_task(
    channel: &Channel,
    namespace: &str,
    container_id: &str,
    root: RootSource,
) -> Result<u32, Box<dyn Error>> {
    let (root_path, rootfs_mounts) = match root {
        RootSource::Path(folder) => (folder, Vec::new()),
        RootSource::BindMount(folder) => {
            let mount = Mount {
                r#type: "bind".to_owned(),
                source: folder.to_string_lossy().into_owned(),
                target: String::new(),
                options: vec!["rbind".to_owned(), "ro".to_owned()],
            };
            (PathBuf::from("rootfs"), vec![mount])
        }
    };
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": { "uid": 0, "gid": 0 },
            "args": ["sleep", "1000"],
            "env": ["PATH=/bin"],
            "cwd": "/"
        },
        "root": { "path": root_path, "readonly": true },
        "hostname": container_id,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
            }
        ],
        "linux": {
            "namespaces": [{ "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }],
            "cgroupsPath": format!("/{namespace}/{container_id}")
        }
    });
    let container = Container {
        id: container_id.to_owned(),
        runtime: Some(Runtime {
            name: "io.containerd.runc.v2".to_owned(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: SPEC_TYPE_URL.to_owned(),
            value: serde_json::to_vec(&spec)?,
        }),
        ..Default::default()
    };
    let create = CreateContainerRequest {
        container: Some(container),
    };
    ContainersClient::new(channel.clone())
        .create(in_namespace(create, namespace)?)
        .await?;

    let mut tasks = TasksClient::new(channel.clone());
    let create_task = CreateTaskRequest {
        container_id: container_id.to_owned(),
        rootfs: rootfs_mounts,
        ..Default::default()
    };
    tasks.create(in_namespace(create_task, namespace)?).await?;
    let start = StartRequest {
        container_id: container_id.to_owned(),
        exec_id: String::new(),
    };
    let started = tasks.start(in_namespace(start, namespace)?).await?;
    Ok(started.into_inner().pid)
}

/// Returns the shim socket named in the bundle's `address` file.
fn shim_socket(bundle: &Path) -> Result<PathBuf, Box<dyn Error>> {
    let address = std::fs::read_to_string(bundle.join("address"))?;
    let path = address
        .trim()
        .strip_prefix("unix://")
        .ok_or_else(|| format!("unexpected shim address {address:?}"))?;
    Ok(PathBuf::from(path))
}

/// Returns the mount points in this process's mount table that lie inside `folder`.
fn mounts_inside(folder: &Path) -> Result<Vec<String>, Box<dyn Error>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = format!("{}/", folder.display());
    let mounts = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount_point| mount_point.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    Ok(mounts)
}

fn in_namespace<T>(message: T, namespace: &str) -> Result<Request<T>, Box<dyn Error>> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(namespace)?;
    request.metadata_mut().insert("containerd-namespace", value);
    Ok(request)
}
