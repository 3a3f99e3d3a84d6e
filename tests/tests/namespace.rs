//! Namespace-wide views on a real containerd: listing every container with its task, and
//! subscribing to the events of containers another client made.

use std::time::Duration;

use keel::{
    Client, ClientOptions, ContainerEvent, Event, NamespaceEvent, ProcessStatus, StdioRequest,
    Subscription,
};
use keel_tests::{Harness, Recorder, delete_task_and_container};

const NO_STDIO: StdioRequest = StdioRequest {
    stdin: false,
    output: false,
    terminal: false,
};

/// Connects a second client to the harness's containerd and namespace, with its own state
/// folder, so nothing it creates is tracked by the harness's client.
async fn second_client(harness: &Harness) -> Client {
    let options = ClientOptions::new(harness.containerd.socket(), harness.namespace.as_str())
        .state_dir(harness.state_dir.join("second-client"));
    match Client::connect_with(options, Recorder::default()).await {
        Ok(client) => client,
        Err(error) => panic!("cannot connect a second client: {error}"),
    }
}

/// Collects the container events of `container_id` from `subscription` until `done` holds for
/// them or ten seconds pass.
async fn collect_events(
    subscription: &mut Subscription,
    container_id: &str,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&events) {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(NamespaceEvent::Event(ContainerEvent {
                container_id: id,
                event,
                ..
            }))) if id.as_str() == container_id => events.push(event),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_shows_every_container_with_its_task() {
    let harness = Harness::start().await;
    let own = harness
        .client
        .create_container("own", harness.spec(&["sleep", "60"]))
        .await
        .expect("create own");
    let own_task = own.start_task(NO_STDIO).await.expect("start own");

    let other_client = second_client(&harness).await;
    let exited = other_client
        .create_container("exited", harness.spec(&["sh", "-c", "exit 7"]))
        .await
        .expect("create exited");
    let exited_task = exited.start_task(NO_STDIO).await.expect("start exited");
    assert_eq!(exited_task.wait().await.expect("wait").code, 7);
    other_client
        .create_container("bare", harness.spec(&["true"]))
        .await
        .expect("create bare");

    let listed = harness.client.list_containers().await.expect("list");
    let ids: Vec<&str> = listed
        .iter()
        .map(|container| container.id.as_str())
        .collect();
    assert_eq!(ids, ["bare", "exited", "own"]);
    let by_id = |id: &str| {
        listed
            .iter()
            .find(|container| container.id.as_str() == id)
            .expect("listed")
    };
    let own_summary = by_id("own").task.expect("own has a task");
    assert_eq!(own_summary.pid, own_task.pid());
    assert_eq!(own_summary.status, ProcessStatus::Running);
    let exited_summary = by_id("exited").task.expect("exited has a task");
    assert!(
        matches!(exited_summary.status, ProcessStatus::Stopped(status) if status.code == 7),
        "exited task: {exited_summary:?}"
    );
    assert_eq!(by_id("bare").task, None);
    assert_eq!(by_id("bare").runtime, "io.containerd.runc.v2");
    assert!(by_id("bare").created_at.is_some());
    assert_eq!(
        harness.client.tracked_containers(),
        1,
        "listing must not track the other client's containers"
    );

    own_task.kill(9, false).await.expect("kill own");
    own_task.wait().await.expect("wait own");
    own_task.delete().await.expect("delete own task");
    own.delete().await.expect("delete own");
    exited_task.delete().await.expect("delete exited task");
    exited.delete().await.expect("delete exited");
    other_client
        .container("bare")
        .await
        .expect("bare handle")
        .delete()
        .await
        .expect("delete bare");
    assert!(
        harness
            .client
            .list_containers()
            .await
            .expect("list")
            .is_empty()
    );
    other_client.shutdown(Duration::from_secs(5)).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_sees_another_clients_container() {
    let harness = Harness::start().await;
    let mut subscription = harness.client.subscribe().expect("subscribe");
    let other_client = second_client(&harness).await;
    let container = other_client
        .create_container("elsewhere", harness.spec(&["sh", "-c", "exit 5"]))
        .await
        .expect("create");
    let task = container.start_task(NO_STDIO).await.expect("start");
    let pid = task.pid();
    assert_eq!(task.wait().await.expect("wait").code, 5);
    delete_task_and_container(&container, task).await;

    let events = collect_events(&mut subscription, "elsewhere", |events| {
        events
            .iter()
            .any(|event| matches!(event, Event::Deleted { .. }))
    })
    .await;
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Created { pid: created },
                Event::Started { pid: started },
                Event::Exited { status, synthetic: None, .. },
                Event::Deleted { status: Some(deleted), .. },
            ] if *created == pid && *started == pid && status.code == 5 && deleted.code == 5
        ),
        "events: {events:?}"
    );
    assert!(
        harness.recorder.events_of("elsewhere").is_empty(),
        "the backend gets only tracked containers' events"
    );
    other_client.shutdown(Duration::from_secs(5)).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_reports_gap_after_restart() {
    let mut harness = Harness::start().await;
    let mut subscription = harness.client.subscribe().expect("subscribe");
    harness
        .containerd
        .restart()
        .await
        .expect("restart containerd");
    let gap = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match subscription.next().await {
                Some(NamespaceEvent::Gap) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(gap, Ok(true), "no gap reported after the restart");

    // The stream works again: a new container's events arrive.
    let container = harness
        .client
        .create_container("after", harness.spec(&["true"]))
        .await
        .expect("create after restart");
    let task = container.start_task(NO_STDIO).await.expect("start");
    let events = collect_events(&mut subscription, "after", |events| {
        events
            .iter()
            .any(|event| matches!(event, Event::Exited { .. }))
    })
    .await;
    assert!(
        events
            .iter()
            .any(|event| matches!(event, Event::Exited { .. })),
        "events after the restart: {events:?}"
    );
    delete_task_and_container(&container, task).await;

    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_ends_at_shutdown() {
    let harness = Harness::start().await;
    let mut subscription = harness.client.subscribe().expect("subscribe");
    harness.client.shutdown(Duration::from_secs(5)).await;

    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while subscription.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the subscription outlived the client");
    let error = harness
        .client
        .subscribe()
        .expect_err("subscribing after shutdown");
    assert_eq!(error.kind(), keel::ErrorKind::Cancelled);
    harness.containerd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_drops_resent_exit_after_freeze() {
    let harness = Harness::start().await;
    let mut subscription = harness.client.subscribe().expect("subscribe");
    let container = harness
        .client
        .create_container("thawed", harness.spec(&["sh", "-c", "sleep 1; exit 3"]))
        .await
        .expect("create");
    let task = container.start_task(NO_STDIO).await.expect("start");

    // The shim's publish of the exit times out while containerd is frozen, so the shim
    // sends the same envelope again after the thaw.
    harness.containerd.freeze().expect("freeze containerd");
    tokio::time::sleep(Duration::from_secs(6)).await;
    harness.containerd.thaw().expect("thaw containerd");

    let events = collect_events(&mut subscription, "thawed", |_| false).await;
    let exits: Vec<&Event> = events
        .iter()
        .filter(|event| matches!(event, Event::Exited { .. }))
        .collect();
    assert_eq!(exits.len(), 1, "exits: {exits:?}");
    assert!(
        matches!(exits[0], Event::Exited { status, .. } if status.code == 3),
        "{exits:?}"
    );
    assert_eq!(task.wait().await.expect("wait").code, 3);
    delete_task_and_container(&container, task).await;
    harness.stop().await;
}
