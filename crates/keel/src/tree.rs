//! The root of the actor tree.
//!
//! Restart table: the connection actor, the event actor and the containers supervisor are
//! linked to the root, which publishes each replacement's reference.
//!
//! | failed child | replacement |
//! | --- | --- |
//! | connection actor | a new one, then a new event actor that holds the new reference |
//! | event actor | a new one, which subscribes and reconciles, so missed exits are reported |
//! | containers supervisor | a new one, which gives every tracked container a new actor that loads its state and reconciles (the old container actors died with their supervisor) |
//!
//! A child that stops normally is not restarted, and a failed restart is logged while the
//! rest of the tree keeps serving. Stopping the root stops the event actor first (no more
//! routing), then every container actor, then the containers supervisor and the connection
//! actor, waiting for each.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use keel_connection::{ConnectionActor, ConnectionArgs, ConnectionMsg, Services};
use keel_container::{
    Backend, ContainerOptions, ContainersSupervisor, Registry, SupervisorArgs, SupervisorMsg,
};
use keel_events::{EventActor, EventArgs, EventMsg, EventStats};
use keel_types::NamespaceEvent;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;

/// How long stopping waits for each actor.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The current references of the root's children, replaced when a child is restarted.
#[derive(Clone)]
pub(crate) struct Children {
    pub(crate) connection: ActorRef<ConnectionMsg>,
    pub(crate) events: ActorRef<EventMsg>,
    pub(crate) containers: ActorRef<SupervisorMsg>,
}

/// Start-up arguments of the root.
pub(crate) struct TreeArgs {
    pub(crate) connection: ConnectionArgs,
    pub(crate) services: Services,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) state_dir: PathBuf,
    pub(crate) container_options: ContainerOptions,
    pub(crate) tracker: TaskTracker,
    pub(crate) registry: Arc<Registry>,
    pub(crate) event_stats: Arc<EventStats>,
    /// The sender of namespace-wide subscriptions; the client keeps only a weak one, so
    /// subscriptions end when the tree stops.
    pub(crate) observers: broadcast::Sender<NamespaceEvent>,
    pub(crate) children: Arc<RwLock<Option<Children>>>,
    pub(crate) max_containers: usize,
}

/// The root actor; it handles no messages of its own.
pub(crate) struct Tree;

impl Actor for Tree {
    type Msg = ();
    type State = TreeArgs;
    type Arguments = TreeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: TreeArgs,
    ) -> Result<TreeArgs, ActorProcessingErr> {
        let cell = myself.get_cell();
        let connection = args.spawn_connection(&cell).await?;
        let containers = args.spawn_containers(&cell).await?;
        let events = args.spawn_events(&cell, &connection).await?;
        args.publish(Children {
            connection,
            events,
            containers,
        });
        Ok(args)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        args: &mut TreeArgs,
    ) -> Result<(), ActorProcessingErr> {
        let Some(children) = args.current() else {
            return Ok(());
        };
        let _ = children
            .events
            .stop_and_wait(None, Some(STOP_TIMEOUT))
            .await;
        for actor in args.registry.actors() {
            let _ = actor.stop_and_wait(None, Some(STOP_TIMEOUT)).await;
        }
        let _ = children
            .containers
            .stop_and_wait(None, Some(STOP_TIMEOUT))
            .await;
        let _ = children
            .connection
            .stop_and_wait(None, Some(STOP_TIMEOUT))
            .await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        args: &mut TreeArgs,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(failed, error) = event else {
            return Ok(());
        };
        let Some(mut children) = args.current() else {
            return Ok(());
        };
        let cell = myself.get_cell();
        let failed_id = failed.get_id();
        let restarted = if failed_id == children.connection.get_id() {
            tracing::error!(%error, "connection actor failed; restarting it");
            args.restart_connection(&cell, &mut children).await
        } else if failed_id == children.events.get_id() {
            tracing::error!(%error, "event actor failed; restarting it");
            args.spawn_events(&cell, &children.connection)
                .await
                .map(|events| children.events = events)
        } else if failed_id == children.containers.get_id() {
            tracing::error!(%error, "containers supervisor failed; restarting it");
            args.restart_containers(&cell, &mut children).await
        } else {
            Ok(())
        };
        // A failed restart leaves that child down; the rest of the tree keeps serving.
        if let Err(error) = restarted {
            tracing::error!(%error, "cannot restart a failed actor");
        }
        args.publish(children);
        Ok(())
    }
}

impl TreeArgs {
    /// Replaces the connection actor, then the event actor, which holds the connection's
    /// reference to ask for health checks when its stream breaks.
    async fn restart_connection(
        &self,
        cell: &ActorCell,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        children.connection = self.spawn_connection(cell).await?;
        children
            .events
            .stop(Some("connection actor replaced".to_owned()));
        children.events = self.spawn_events(cell, &children.connection).await?;
        Ok(())
    }

    /// Replaces the containers supervisor. Its container actors died with it, so each tracked
    /// container gets a new actor that loads its state from containerd and reconciles.
    async fn restart_containers(
        &self,
        cell: &ActorCell,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        let tracked = self.registry.take_all();
        children.containers = self.spawn_containers(cell).await?;
        for (container_id, previous) in tracked {
            let _ = children
                .containers
                .cast(SupervisorMsg::Adopt(container_id, previous));
        }
        Ok(())
    }

    fn current(&self) -> Option<Children> {
        self.children
            .read()
            .ok()
            .and_then(|children| children.clone())
    }

    fn publish(&self, children: Children) {
        if let Ok(mut current) = self.children.write() {
            *current = Some(children);
        }
    }

    async fn spawn_connection(
        &self,
        cell: &ActorCell,
    ) -> Result<ActorRef<ConnectionMsg>, ActorProcessingErr> {
        let args = self.connection.clone();
        let (actor, _) = Actor::spawn_linked(None, ConnectionActor, args, cell.clone()).await?;
        Ok(actor)
    }

    async fn spawn_containers(
        &self,
        cell: &ActorCell,
    ) -> Result<ActorRef<SupervisorMsg>, ActorProcessingErr> {
        let args = SupervisorArgs {
            services: self.services.clone(),
            backend: Arc::clone(&self.backend),
            state_dir: self.state_dir.clone(),
            options: self.container_options.clone(),
            tracker: self.tracker.clone(),
            registry: Arc::clone(&self.registry),
            max_containers: self.max_containers,
        };
        let (actor, _) =
            Actor::spawn_linked(None, ContainersSupervisor, args, cell.clone()).await?;
        Ok(actor)
    }

    async fn spawn_events(
        &self,
        cell: &ActorCell,
        connection: &ActorRef<ConnectionMsg>,
    ) -> Result<ActorRef<EventMsg>, ActorProcessingErr> {
        let args = EventArgs {
            services: self.services.clone(),
            router: Arc::clone(&self.registry) as Arc<dyn keel_events::Router>,
            connection: connection.clone(),
            connection_state: self.connection.state.subscribe(),
            stats: Arc::clone(&self.event_stats),
            observers: self.observers.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, EventActor, args, cell.clone()).await?;
        Ok(actor)
    }
}
