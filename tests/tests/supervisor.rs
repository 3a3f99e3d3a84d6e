//! The containerd supervisor against a real containerd: restarts after death, both hang
//! policies, pidfile adoption, and containers that outlive a stopped containerd.

#![allow(
    clippy::expect_used,
    reason = "the helpers of these tests fail the test on any error, as the tests do"
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use keel::{Client, ClientOptions, StdioRequest, spec::SpecBuilder};
use keel_supervisor::{
    ContainerdOutput, Containers, HungPolicy, Supervisor, SupervisorConfig, SupervisorEvent,
    SupervisorStatus,
};
use keel_tests::{Recorder, create_and_start, kill_and_delete};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::broadcast;

/// Generous bound for anything that should take well under a second.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

static FOLDER_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A folder `/tmp/ks-<pid>-<n>` for one supervised containerd, and the test's namespace.
/// Dropping it kills a containerd still named by its pidfile, removes the namespace's empty
/// cgroups and runc folder, and removes the folder. Shims of a test that failed before its
/// `stop(.., Containers::Stop)` stay behind.
struct TestDir {
    path: PathBuf,
    namespace: String,
}

impl TestDir {
    fn new() -> Self {
        keel_tests::init_tracing();
        let counter = FOLDER_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("/tmp/ks-{}-{counter}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test folder");
        let namespace = format!("keel-s{}-{counter}", std::process::id());
        Self { path, namespace }
    }

    fn config(&self) -> SupervisorConfig {
        SupervisorConfig::new(self.path.join("root"), &self.path)
            .start_timeout(Duration::from_secs(20))
            .output(ContainerdOutput::File(self.path.join("containerd.log")))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path.join("containerd.log")).unwrap_or_default()
    }

    /// Builds a root folder with a static busybox and the applets the tests run.
    fn busybox_rootfs(&self) -> PathBuf {
        let rootfs = self.path.join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).expect("create rootfs bin");
        for folder in ["proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(rootfs.join(folder)).expect("create rootfs folder");
        }
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("link applet");
        }
        rootfs
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let config = self.config();
        if let Some(pid) = read_pid(&config.pidfile())
            && command_line(pid).contains(&config.config_file().display().to_string())
        {
            send(pid, Signal::SIGKILL);
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let cgroup = hierarchy.path().join(&self.namespace);
            for child in std::fs::read_dir(&cgroup).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(child.path());
            }
            let _ = std::fs::remove_dir(&cgroup);
        }
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn read_pid(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

fn send(pid: u32, signal: Signal) {
    let raw = i32::try_from(pid).expect("pid fits i32");
    kill(Pid::from_raw(raw), signal).expect("send signal");
}

/// Waits for the first event matching `condition`, skipping others.
async fn next_event(
    events: &mut broadcast::Receiver<SupervisorEvent>,
    condition: impl Fn(&SupervisorEvent) -> bool,
) -> SupervisorEvent {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(event) if condition(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("supervisor events closed"),
            }
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, wait)
        .await
        .expect("supervisor event in time")
}

fn is_death(event: &SupervisorEvent) -> bool {
    matches!(event, SupervisorEvent::Died { .. })
}

fn is_restart(event: &SupervisorEvent) -> bool {
    matches!(event, SupervisorEvent::Restarted { .. })
}

fn is_hang(event: &SupervisorEvent) -> bool {
    matches!(event, SupervisorEvent::Hung { .. })
}

fn is_recovery(event: &SupervisorEvent) -> bool {
    matches!(event, SupervisorEvent::Recovered { .. })
}

/// Stops `supervisor`'s containerd with the containers it runs, allowing five seconds.
async fn stop_with_containers(supervisor: Supervisor) {
    supervisor
        .stop(Duration::from_secs(5), Containers::Stop)
        .await
        .expect("stop");
}

fn serving_pid(supervisor: &Supervisor) -> u32 {
    match supervisor.status() {
        SupervisorStatus::Serving { pid } => pid,
        other => panic!("containerd not serving: {other:?}"),
    }
}

/// Lists the container ids in `namespace` with containerd's own command-line client.
fn ctr_containers(supervisor: &Supervisor, namespace: &str) -> Vec<String> {
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(supervisor.socket())
        .args(["--namespace", namespace, "containers", "list", "--quiet"])
        .output()
        .expect("run ctr");
    assert!(output.status.success(), "ctr failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts a supervised containerd, runs `sleep 1000` in container `container_id` through a
/// client that then shuts down, and returns the supervisor and the sleep's pid.
async fn supervise_sleeper(dir: &TestDir, container_id: &str) -> (Supervisor, u32) {
    let rootfs = dir.busybox_rootfs();
    let supervisor = Supervisor::start(dir.config()).await.expect("start");
    let client = connect(&supervisor, dir).await;
    let spec = SpecBuilder::new(&rootfs).args(["sleep", "1000"]).build();
    let (_container, task) =
        create_and_start(&client, container_id, spec, StdioRequest::default()).await;
    let task_pid = task.pid();
    client.shutdown(Duration::from_secs(5)).await;
    (supervisor, task_pid)
}

async fn connect(supervisor: &Supervisor, dir: &TestDir) -> Client {
    let options = ClientOptions::new(supervisor.socket(), dir.namespace.as_str())
        .state_dir(dir.path.join("client"));
    Client::connect_with(options, Recorder::default())
        .await
        .expect("connect to supervised containerd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_containerd_is_restarted_within_a_second() {
    let dir = TestDir::new();
    let supervisor = Supervisor::start(dir.config()).await.expect("start");
    let client = connect(&supervisor, &dir).await;
    let notified = client.clone();
    supervisor.on_event(move |event| {
        if event.is_serving_again() {
            notified.notify_containerd_restarted();
        }
    });
    let mut events = supervisor.subscribe();
    let old_pid = serving_pid(&supervisor);

    let killed_at = Instant::now();
    send(old_pid, Signal::SIGKILL);
    let died = next_event(&mut events, is_death).await;
    let noticed_after = killed_at.elapsed();
    let restarted = next_event(&mut events, is_restart).await;
    let serving_after = killed_at.elapsed();
    eprintln!("death noticed after {noticed_after:?}, serving again after {serving_after:?}");

    let SupervisorEvent::Died { pid, status } = died else {
        unreachable!()
    };
    assert_eq!(pid, old_pid);
    assert!(status.is_some(), "a child's exit status is known");
    let SupervisorEvent::Restarted {
        pid: new_pid,
        attempt,
    } = restarted
    else {
        unreachable!()
    };
    assert_ne!(new_pid, old_pid);
    assert_eq!(attempt, 1);
    assert!(
        noticed_after < Duration::from_secs(1),
        "death noticed after {noticed_after:?}"
    );
    assert!(
        serving_after < Duration::from_secs(1),
        "serving again after {serving_after:?}"
    );
    assert_eq!(read_pid(&supervisor.pidfile()), Some(new_pid));
    client
        .version()
        .await
        .expect("client works after the restart");

    client.shutdown(Duration::from_secs(5)).await;
    stop_with_containers(supervisor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_containerd_is_left_alone_under_wait() {
    let dir = TestDir::new();
    let config = dir
        .config()
        .hung_policy(HungPolicy::Wait)
        .hung_after(Duration::from_secs(1));
    let supervisor = Supervisor::start(config).await.expect("start");
    let mut events = supervisor.subscribe();
    let pid = serving_pid(&supervisor);

    send(pid, Signal::SIGSTOP);
    let hung = next_event(&mut events, is_hang).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status_while_stopped = supervisor.status();
    send(pid, Signal::SIGCONT);
    let recovered = next_event(&mut events, is_recovery).await;

    assert_eq!(hung, SupervisorEvent::Hung { pid });
    assert_eq!(status_while_stopped, SupervisorStatus::Hung { pid });
    assert_eq!(recovered, SupervisorEvent::Recovered { pid });
    assert_eq!(supervisor.status(), SupervisorStatus::Serving { pid });
    stop_with_containers(supervisor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_containerd_is_dumped_and_restarted() {
    let dir = TestDir::new();
    let config = dir
        .config()
        .hung_policy(HungPolicy::DumpAndRestart)
        .hung_after(Duration::from_secs(1));
    let supervisor = Supervisor::start(config).await.expect("start");
    let mut events = supervisor.subscribe();
    let old_pid = serving_pid(&supervisor);

    send(old_pid, Signal::SIGSTOP);
    let hung = next_event(&mut events, is_hang).await;
    let died = next_event(&mut events, is_death).await;
    let restarted = next_event(&mut events, is_restart).await;

    assert_eq!(hung, SupervisorEvent::Hung { pid: old_pid });
    let SupervisorEvent::Died { pid, .. } = died else {
        unreachable!()
    };
    assert_eq!(pid, old_pid);
    let SupervisorEvent::Restarted { pid: new_pid, .. } = restarted else {
        unreachable!()
    };
    assert_ne!(new_pid, old_pid);
    assert!(
        dir.log().contains("goroutine stack dump"),
        "the log holds the goroutine dump"
    );
    stop_with_containers(supervisor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pidfile_of_unrelated_process_is_not_adopted() {
    let dir = TestDir::new();
    let mut sleeper = std::process::Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let config = dir.config();
    std::fs::write(config.pidfile(), format!("{}\n", sleeper.id())).expect("write pidfile");

    let supervisor = Supervisor::start(config).await.expect("start");
    let pid = serving_pid(&supervisor);
    let sleeper_alive = sleeper.try_wait().expect("check sleep").is_none();

    assert_ne!(pid, sleeper.id());
    assert!(command_line(pid).contains("containerd"));
    assert!(sleeper_alive, "the unrelated process was left alone");
    assert_eq!(read_pid(&supervisor.pidfile()), Some(pid));

    sleeper.kill().expect("kill sleep");
    sleeper.wait().expect("reap sleep");
    stop_with_containers(supervisor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_containerd_death_is_noticed() {
    let dir = TestDir::new();
    let first = Supervisor::start(dir.config()).await.expect("start");
    let pid = serving_pid(&first);
    drop(first);

    let second = Supervisor::start(dir.config()).await.expect("adopt");
    let mut events = second.subscribe();
    let adopted_pid = serving_pid(&second);
    send(pid, Signal::SIGKILL);
    let died = next_event(&mut events, is_death).await;
    let restarted = next_event(&mut events, is_restart).await;

    assert_eq!(adopted_pid, pid);
    assert_eq!(died, SupervisorEvent::Died { pid, status: None });
    let SupervisorEvent::Restarted { pid: new_pid, .. } = restarted else {
        unreachable!()
    };
    assert_ne!(new_pid, pid);
    stop_with_containers(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_outlive_a_stopped_containerd() {
    let dir = TestDir::new();
    let (supervisor, task_pid) = supervise_sleeper(&dir, "survivor").await;
    let old_pid = serving_pid(&supervisor);

    supervisor
        .stop(Duration::from_secs(5), Containers::Keep)
        .await
        .expect("stop");
    let containerd_gone = !Path::new(&format!("/proc/{old_pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{old_pid}/stat"))
            .is_ok_and(|stat| stat.contains(") Z"));
    let task_alive = Path::new(&format!("/proc/{task_pid}")).exists();

    let supervisor = Supervisor::start(dir.config()).await.expect("start again");
    let client = connect(&supervisor, &dir).await;
    let container = client.load_container("survivor").await.expect("load");
    let task = container.task().await.expect("task of loaded container");
    let status = kill_and_delete(&container, task).await;
    let remaining = ctr_containers(&supervisor, &dir.namespace);

    assert!(containerd_gone, "containerd stopped");
    assert!(task_alive, "the container kept running");
    assert_eq!(status.code, 128 + Signal::SIGKILL as u32);
    assert!(remaining.is_empty(), "containers left: {remaining:?}");
    client.shutdown(Duration::from_secs(5)).await;
    stop_with_containers(supervisor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_containers_kills_tasks_and_shims() {
    let dir = TestDir::new();
    let (supervisor, task_pid) = supervise_sleeper(&dir, "doomed").await;
    let socket = supervisor.socket().display().to_string();
    let shims_before = shims_of(&socket);
    let run_dir = supervisor.run_dir().to_owned();

    stop_with_containers(supervisor).await;
    let shims_after = shims_of(&socket);

    assert_eq!(shims_before.len(), 1, "one shim ran: {shims_before:?}");
    assert!(shims_after.is_empty(), "shims left: {shims_after:?}");
    assert!(!is_running(task_pid), "the container's process was killed");
    for name in ["containerd.sock", "containerd.sock.ttrpc", "debug.sock"] {
        assert!(!run_dir.join(name).exists(), "{name} left behind");
    }
}

/// Lists the live processes whose command line is a containerd shim of `socket`.
fn shims_of(socket: &str) -> Vec<u32> {
    let marker = format!("-address {socket} ");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| is_running(pid))
        .filter(|&pid| {
            let line = command_line(pid);
            line.contains("containerd-shim")
        })
        .filter(|&pid| command_line(pid).contains(&marker))
        .collect()
}

/// Reports whether `pid` is a process that is neither gone nor a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(!matches!(state, 'Z' | 'X'))
        })
        .unwrap_or(false)
}
