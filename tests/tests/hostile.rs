//! Hostile input on a real containerd: every case returns invalid argument (or the error its
//! row names) and leaves the file system and containerd as they were.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel::spec::{SpecBuilder, exec_process};
use keel::{ClientOptions, ErrorKind, Runtime, StdioRequest};
use keel_tests::{Harness, INPUT_OUTPUT, OUTPUT, Recorder, force_delete};

/// Lists every path under `folder`, so a test can assert nothing was added or removed.
fn tree(folder: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return paths;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        paths.push(path.clone());
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            paths.extend(tree(&path));
        }
    }
    paths.sort();
    paths
}

fn hostile_ids() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("dot", ".".to_owned()),
        ("traversal", "..".to_owned()),
        ("nested traversal", "../../etc".to_owned()),
        ("slash", "a/b".to_owned()),
        ("absolute", "/etc/passwd".to_owned()),
        ("nul", "a\0b".to_owned()),
        ("newline", "a\nb".to_owned()),
        ("space", "a b".to_owned()),
        ("cyrillic look-alike", "аpp".to_owned()),
        ("fullwidth look-alike", "ａpp".to_owned()),
        ("leading separator", "-app".to_owned()),
        ("trailing separator", "app.".to_owned()),
        ("double separator", "a..b".to_owned()),
        ("too long", "a".repeat(77)),
        ("very long", "a".repeat(100_000)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_container_ids_rejected() {
    let harness = Harness::start().await;
    let before = tree(&harness.state_dir);
    for (case, id) in hostile_ids() {
        let error = harness
            .client
            .create_container(&id, harness.spec(&["true"]))
            .await
            .expect_err(case);
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{case}: {error}");
        assert!(
            error.to_string().contains("container id"),
            "{case}: {error}"
        );
        let error = harness.client.load_container(&id).await.expect_err(case);
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{case}: {error}");
    }
    assert_eq!(tree(&harness.state_dir), before);
    assert!(harness.containerd_containers().is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_exec_ids_rejected() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("host", &["sleep", "1000"]).await;
    let bundle = harness.bundle_dir("host");
    let before = tree(&bundle);
    for (case, id) in hostile_ids() {
        let error = task
            .exec(&id, exec_process(["true"]), INPUT_OUTPUT)
            .await
            .expect_err(case);
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{case}: {error}");
        assert!(error.to_string().contains("exec id"), "{case}: {error}");
    }
    assert_eq!(tree(&bundle), before, "no FIFO made");
    assert_eq!(task.processes().await.expect("processes").len(), 1);
    force_delete(&container).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_namespaces_rejected() {
    let harness = Harness::start().await;
    let state_dir = harness.containerd.dir().join("hostile-namespace-state");
    for (case, namespace) in hostile_ids() {
        let options = ClientOptions::new(harness.containerd.socket(), namespace.as_str())
            .state_dir(&state_dir);
        let error = keel::Client::connect_with(options, Recorder::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("{case}: connected"));
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{case}: {error}");
        assert!(error.to_string().contains("namespace"), "{case}: {error}");
    }
    assert!(!state_dir.exists(), "no state folder made");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_state_folder_rejected() {
    let harness = Harness::start().await;
    for state_dir in ["keel-state", "./keel-state", ""] {
        let options = harness.client_options().state_dir(state_dir);
        let error = keel::Client::connect_with(options, Recorder::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("{state_dir:?}: connected"));
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
        let text = error.to_string();
        assert!(text.contains("absolute"), "{text}");
        assert!(text.contains(state_dir), "{text}");
        assert!(state_dir.is_empty() || !Path::new(state_dir).exists());
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_client_options_rejected() {
    let harness = Harness::start().await;
    let file = harness.containerd.dir().join("state-file");
    std::fs::write(&file, b"not a folder").expect("write file");
    let under_file = file.join("state");
    let dangling = harness.containerd.dir().join("dangling");
    std::os::unix::fs::symlink(harness.containerd.dir().join("missing"), &dangling)
        .expect("symlink");
    for (state_dir, expected) in [
        (&file, "is a file"),
        (&under_file, "lies under the file"),
        (&dangling, "goes through the symlink"),
    ] {
        let options = harness.client_options().state_dir(state_dir);
        let error = keel::Client::connect_with(options, Recorder::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("{}: connected", state_dir.display()));
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
        let text = error.to_string();
        assert!(text.contains(expected), "{text}");
        assert!(text.contains(&state_dir.display().to_string()), "{text}");
    }

    for (call_timeout, expected) in [
        (std::time::Duration::ZERO, "call timeout"),
        (std::time::Duration::MAX, "at most 24 hours"),
    ] {
        let mut options = harness.client_options();
        options.call_timeout = call_timeout;
        let error = keel::Client::connect_with(options, Recorder::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("call timeout {call_timeout:?}: connected"));
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }

    let (container, _task) = harness.run_detached("endless", &["sleep", "1000"]).await;
    container
        .force_delete(std::time::Duration::MAX)
        .await
        .expect("force delete without a deadline");

    harness
        .client
        .shutdown(std::time::Duration::from_secs(5))
        .await;
    let error = harness
        .client
        .version()
        .await
        .expect_err("version after shutdown");
    assert_eq!(error.kind(), ErrorKind::Cancelled, "{error}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_specs_rejected() {
    let harness = Harness::start().await;
    let file_root = harness.containerd.dir().join("not-a-folder");
    std::fs::write(&file_root, b"").expect("file");
    let mut no_process = harness.spec(&["true"]);
    no_process.set_process(None);
    let mut no_root = harness.spec(&["true"]);
    no_root.set_root(None);
    let mut huge_env = harness.spec(&["true"]);
    if let Some(process) = huge_env.process_mut() {
        let env = (0..40_000).map(|index| format!("VARIABLE_{index}=a value that takes some room"));
        process.set_env(Some(env.collect()));
    }
    let mut no_linux = harness.spec(&["true"]);
    no_linux.set_linux(None);
    let mut no_mount_namespace = harness.spec(&["true"]);
    if let Some(linux) = no_mount_namespace.linux_mut() {
        let without_mount =
            linux.namespaces().iter().flatten().filter(|namespace| {
                namespace.typ() != oci_spec::runtime::LinuxNamespaceType::Mount
            });
        linux.set_namespaces(Some(without_mount.cloned().collect()));
    }
    let odd_process = |edit: &dyn Fn(&mut oci_spec::runtime::Process)| {
        let mut spec = harness.spec(&["true"]);
        if let Some(process) = spec.process_mut() {
            edit(process);
        }
        spec
    };
    let wide_console = odd_process(&|process| {
        let size = oci_spec::runtime::BoxBuilder::default()
            .width(70_000_u64)
            .height(24_u64)
            .build()
            .expect("console size");
        process.set_console_size(Some(size));
    });
    let soft_above_hard = odd_process(&|process| {
        let rlimit = oci_spec::runtime::PosixRlimitBuilder::default()
            .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
            .soft(2048_u64)
            .hard(1024_u64)
            .build()
            .expect("rlimit");
        process.set_rlimits(Some(vec![rlimit]));
    });
    let huge_group = odd_process(&|process| {
        let mut user = process.user().clone();
        user.set_additional_gids(Some(vec![u32::MAX]));
        process.set_user(user);
    });
    let nul_cwd = odd_process(&|process| {
        process.set_cwd("/tmp\0x".into());
    });
    let mut escaping_cgroup = harness.spec(&["true"]);
    if let Some(linux) = escaping_cgroup.linux_mut() {
        linux.set_cgroups_path(Some("/../../../etc/evil".into()));
    }
    let cases = vec![
        ("no process", no_process, "spec.process"),
        (
            "no args",
            SpecBuilder::new(&harness.rootfs).build(),
            "spec.process.args",
        ),
        ("no root", no_root, "spec.root"),
        (
            "relative root",
            SpecBuilder::new("rootfs").args(["true"]).build(),
            "spec.root.path",
        ),
        (
            "traversal root",
            SpecBuilder::new("../../rootfs").args(["true"]).build(),
            "spec.root.path",
        ),
        (
            "missing root",
            SpecBuilder::new("/nonexistent/keel/rootfs")
                .args(["true"])
                .build(),
            "spec.root.path",
        ),
        (
            "file root",
            SpecBuilder::new(&file_root).args(["true"]).build(),
            "spec.root.path",
        ),
        (
            "relative cwd",
            SpecBuilder::new(&harness.rootfs)
                .args(["true"])
                .cwd("tmp")
                .build(),
            "spec.process.cwd",
        ),
        ("oversized env", huge_env, "spec"),
        (
            "env without key",
            SpecBuilder::new(&harness.rootfs)
                .args(["true"])
                .env("", "c")
                .build(),
            "spec.process.env",
        ),
        (
            "negative memory limit",
            SpecBuilder::new(&harness.rootfs)
                .args(["true"])
                .memory_limit(-5)
                .build(),
            "spec.linux.resources.memory.limit",
        ),
        (
            "memory limit below what runc needs",
            SpecBuilder::new(&harness.rootfs)
                .args(["true"])
                .memory_limit(4096)
                .build(),
            "spec.linux.resources.memory.limit",
        ),
        (
            "host name over the kernel's limit",
            SpecBuilder::new(&harness.rootfs)
                .args(["true"])
                .hostname(&"h".repeat(300))
                .build(),
            "spec.hostname",
        ),
        ("escaping cgroup", escaping_cgroup, "spec.linux.cgroupsPath"),
        ("no linux section", no_linux, "spec.linux"),
        (
            "no mount namespace",
            no_mount_namespace,
            "spec.linux.namespaces",
        ),
        (
            "NUL in the host name",
            SpecBuilder::new(&harness.rootfs)
                .args(["true"])
                .hostname("a\0b")
                .build(),
            "spec.hostname",
        ),
        ("console wider than 16 bits", wide_console, "consoleSize"),
        (
            "soft limit above hard",
            soft_above_hard,
            "spec.process.rlimits",
        ),
        ("group id beyond runc's range", huge_group, "additionalGids"),
        ("NUL in the working folder", nul_cwd, "spec.process.cwd"),
    ];
    let before = tree(&harness.state_dir);
    for (case, spec, field) in cases {
        let error = harness
            .client
            .create_container("victim", spec)
            .await
            .expect_err(case);
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{case}: {error}");
        assert!(error.to_string().contains(field), "{case}: {error}");
    }
    assert_eq!(tree(&harness.state_dir), before);
    assert!(harness.containerd_containers().is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_labels_rejected() {
    let harness = Harness::start().await;
    let too_many: HashMap<String, String> = (0..300)
        .map(|index| (format!("k{index}"), "v".to_owned()))
        .collect();
    let cases = vec![
        (
            "empty key",
            HashMap::from([(String::new(), "v".to_owned())]),
        ),
        (
            "oversized",
            HashMap::from([("k".to_owned(), "v".repeat(5000))]),
        ),
        ("too many", too_many),
    ];
    let before = tree(&harness.state_dir);
    for (case, labels) in cases {
        let error = harness
            .client
            .create_container_with(
                "labelled",
                harness.spec(&["true"]),
                Runtime::default(),
                labels,
            )
            .await
            .expect_err(case);
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{case}: {error}");
        assert!(error.to_string().contains("label"), "{case}: {error}");
    }
    assert_eq!(tree(&harness.state_dir), before);
    assert!(harness.containerd_containers().is_empty());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlink_and_file_rejected() {
    let harness = Harness::start().await;
    let namespace_dir = harness.state_dir.join(&harness.namespace);
    let decoy = harness.containerd.dir().join("decoy");
    std::fs::create_dir_all(&decoy).expect("decoy");
    std::fs::create_dir_all(&harness.state_dir).expect("state folder");

    std::os::unix::fs::symlink(&decoy, &namespace_dir).expect("plant symlink");
    let error = harness
        .client
        .create_container("victim", harness.spec(&["true"]))
        .await
        .expect_err("symlinked namespace folder");
    assert!(error.to_string().contains("create container"), "{error}");
    assert!(
        tree(&decoy).is_empty(),
        "nothing written through the symlink"
    );
    std::fs::remove_file(&namespace_dir).expect("remove symlink");

    std::fs::write(&namespace_dir, b"planted").expect("plant file");
    let error = harness
        .client
        .create_container("victim", harness.spec(&["true"]))
        .await
        .expect_err("file where a folder should be");
    assert!(error.to_string().contains("create container"), "{error}");
    assert_eq!(
        std::fs::read(&namespace_dir).expect("file kept"),
        b"planted"
    );
    std::fs::remove_file(&namespace_dir).expect("remove file");

    std::fs::create_dir(&namespace_dir).expect("namespace folder");
    std::os::unix::fs::symlink(&decoy, harness.bundle_dir("victim")).expect("plant bundle symlink");
    let error = harness
        .client
        .create_container("victim", harness.spec(&["true"]))
        .await
        .expect_err("symlinked bundle folder");
    assert!(error.to_string().contains("create container"), "{error}");
    assert!(
        tree(&decoy).is_empty(),
        "nothing written through the symlink"
    );
    assert!(harness.containerd_containers().is_empty());
    std::fs::remove_file(harness.bundle_dir("victim")).expect("remove bundle symlink");

    // runc's state folder in keel's state folder: runc would follow a symlink there.
    std::os::unix::fs::symlink(&decoy, harness.state_dir.join(".runc")).expect("plant runc root");
    let container = harness.create_container("runc-victim", &["true"]).await;
    let error = container
        .start_task(keel::StdioRequest::default())
        .await
        .expect_err("symlinked runc state folder");
    assert!(error.to_string().contains("create task"), "{error}");
    assert!(
        tree(&decoy).is_empty(),
        "nothing written through the symlink"
    );
    assert!(harness.containerd_tasks().is_empty());
    container.delete().await.expect("delete container");
    assert!(decoy.is_dir(), "the decoy folder is never removed");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_checkpoint_folders_rejected() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("cp", &["sleep", "1000"]).await;
    let scratch = harness.containerd.dir().join("odd-checkpoints");
    std::fs::create_dir_all(scratch.join("full")).expect("scratch folder");
    std::fs::write(scratch.join("full/kept"), "caller's").expect("caller's file");
    std::fs::write(scratch.join("file"), "caller's").expect("caller's file");
    let climbing = scratch.join("a/../b");
    let cases = [
        ("relative", PathBuf::from("relative/dir"), "absolute"),
        ("root folder", PathBuf::from("/"), "not empty"),
        ("folder with files", scratch.join("full"), "not empty"),
        ("regular file", scratch.join("file"), "not a folder"),
        ("dot-dot", climbing.clone(), ".."),
    ];
    for (case, dir, reason) in cases {
        let error = task.checkpoint(&dir, false).await.expect_err(case);
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{case}: {error}");
        assert!(error.to_string().contains(reason), "{case}: {error}");
    }
    assert!(!Path::new("relative").exists());
    assert!(!scratch.join("a").exists(), "nothing made for `a/../b`");
    assert!(!scratch.join("b").exists(), "nothing made for `a/../b`");
    assert_eq!(
        tree(&scratch.join("full")),
        vec![scratch.join("full/kept")],
        "nothing written into a folder with files"
    );
    assert!(!Path::new("/inventory.img").exists());

    // A checkpoint refused for a stopped task makes no folder.
    task.kill(9, false).await.expect("kill");
    task.wait().await.expect("wait");
    let late = scratch.join("late/image");
    let error = task
        .checkpoint(&late, false)
        .await
        .expect_err("stopped task");
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");
    assert!(
        !scratch.join("late").exists(),
        "folder of a refused checkpoint made"
    );
    force_delete(&container).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_without_output_rejected() {
    let harness = Harness::start().await;
    let stdin_only = StdioRequest {
        stdin: true,
        ..StdioRequest::default()
    };
    let container = harness.create_container("deaf", &["sleep", "1000"]).await;
    let error = container
        .start_task(stdin_only)
        .await
        .expect_err("task with stdin alone");
    assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
    assert!(error.to_string().contains("stdin"), "{error}");
    assert!(harness.containerd_tasks().is_empty(), "no task made");

    let task = container
        .start_task(StdioRequest::default())
        .await
        .expect("start without stdio");
    let error = task
        .exec("reader", exec_process(["cat"]), stdin_only)
        .await
        .expect_err("exec with stdin alone");
    assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
    assert!(task.processes().await.expect("processes").len() == 1);
    force_delete(&container).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_exec_and_terminal_rejected() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("bounds", &["sleep", "1000"]).await;
    let bundle = harness.bundle_dir("bounds");
    let before = tree(&bundle);

    let huge = "x".repeat(2 << 20);
    let error = task
        .exec("huge", exec_process(["echo", huge.as_str()]), INPUT_OUTPUT)
        .await
        .expect_err("exec larger than the spec limit");
    assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
    assert!(error.to_string().contains("process"), "{error}");
    assert_eq!(tree(&bundle), before, "no FIFO made");

    for (width, height) in [(70_000, 30), (80, u32::MAX)] {
        let error = task
            .resize(width, height)
            .await
            .expect_err("terminal side above 65535");
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
        assert!(error.to_string().contains("terminal"), "{error}");
    }
    assert_eq!(task.processes().await.expect("processes").len(), 1);
    force_delete(&container).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_unknown_containers_counted_and_dropped() {
    let harness = Harness::start().await;
    // Another client of the same namespace runs a container keel does not track.
    let status = std::process::Command::new("ctr")
        .arg("--address")
        .arg(harness.containerd.socket())
        .args(["--namespace", &harness.namespace, "run", "--rm", "--rootfs"])
        .arg(&harness.rootfs)
        .args(["stranger", "/bin/true"])
        .status()
        .expect("run ctr");
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while harness
        .client
        .event_stats()
        .unrouted
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no unrouted event counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(harness.recorder.events_of("stranger").is_empty());
    assert_eq!(harness.client.tracked_containers(), 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_mismatch_rejected_before_task_create() {
    let harness = Harness::start().await;
    let with_terminal = SpecBuilder::new(&harness.rootfs)
        .args(["sh"])
        .terminal(true)
        .build();
    let on_terminal = harness
        .client
        .create_container("on-terminal", with_terminal)
        .await
        .expect("create container with a terminal");
    let plain = harness.create_container("plain", &["true"]).await;
    let terminal_stdio = StdioRequest {
        stdin: true,
        terminal: true,
        ..StdioRequest::default()
    };
    for (container, stdio) in [(&on_terminal, OUTPUT), (&plain, terminal_stdio)] {
        let error = container
            .start_task(stdio)
            .await
            .expect_err("stdio that does not match the spec");
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
        assert!(error.to_string().contains("stdio"), "{error}");
    }
    assert!(harness.containerd_tasks().is_empty());
    on_terminal.delete().await.expect("delete on-terminal");
    plain.delete().await.expect("delete plain");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_signal_rejected() {
    let harness = Harness::start().await;
    let (container, task) = harness.run_detached("target", &["sleep", "1000"]).await;
    let error = task.kill(65, false).await.expect_err("signal 65");
    assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
    assert!(error.to_string().contains("signal"), "{error}");
    assert_eq!(
        task.status().await.expect("status"),
        keel::ProcessStatus::Running
    );
    force_delete(&container).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_bounds_resources_rejected() {
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
    let harness = Harness::start().await;
    let with_cpu = |cpu: LinuxCpuBuilder| {
        LinuxResourcesBuilder::default()
            .cpu(cpu.build().expect("cpu"))
            .build()
            .expect("resources")
    };
    let cases = [
        (
            "offline CPU",
            with_cpu(LinuxCpuBuilder::default().cpus("0-4095")),
            "cpu.cpus",
        ),
        (
            "CPU list syntax",
            with_cpu(LinuxCpuBuilder::default().cpus("first")),
            "cpu.cpus",
        ),
        (
            "offline memory node",
            with_cpu(LinuxCpuBuilder::default().mems("7")),
            "cpu.mems",
        ),
        (
            "shares above the kernel's bound",
            with_cpu(LinuxCpuBuilder::default().shares(1_u64 << 20)),
            "cpu.shares",
        ),
        (
            "swappiness over 100",
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .swappiness(200_u64)
                        .build()
                        .expect("memory"),
                )
                .build()
                .expect("resources"),
            "memory.swappiness",
        ),
    ];

    for (case, resources, field) in &cases {
        let mut spec = harness.spec(&["true"]);
        if let Some(linux) = spec.linux_mut() {
            linux.set_resources(Some(resources.clone()));
        }
        let error = harness
            .client
            .create_container("refused", spec)
            .await
            .expect_err(case);
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{case}: {error}");
        assert!(
            error
                .to_string()
                .contains(&format!("spec.linux.resources.{field}")),
            "{case}: {error}"
        );
    }
    assert!(harness.containerd_containers().is_empty());

    let (container, task) = harness.run_detached("target", &["sleep", "1000"]).await;
    for (case, resources, field) in cases {
        let error = task.update(resources).await.expect_err(case);
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{case}: {error}");
        assert!(
            error.to_string().contains(&format!("resources.{field}")),
            "{case}: {error}"
        );
    }
    assert_eq!(
        task.status().await.expect("status"),
        keel::ProcessStatus::Running
    );
    force_delete(&container).await;
    harness.stop().await;
}
