//! The supervisor of the container actors.
//!
//! Restart table: a container actor that stops normally (after its container is deleted, or
//! after a failed create) leaves the registry and is not restarted. A container actor that
//! fails is replaced by a new one that loads the container from containerd and reconciles its
//! task, so missed exits are still reported. The supervisor never stops because a child ended,
//! unlike ractor's default handler.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use containerd_client::services::v1::{Container as ContainerRecord, GetContainerRequest};
use keel_connection::{Services, call_with_deadline};
use keel_types::{ContainerId, ContainerSummary, Error, ErrorKind, Operation, Target};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::task::TaskTracker;

use crate::listing::list_containers;
use crate::task::undo_unconfirmed_create;
use crate::{
    Backend, ContainerActor, ContainerArgs, ContainerMsg, ContainerOptions, CreateContainer,
    Registry,
};

/// Messages the containers supervisor handles.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Spawns an actor for a container that exists in containerd and has it load its state
    /// and reconcile; sent for each container after a failed supervisor is replaced, with the
    /// id of the actor that served it before.
    Adopt(ContainerId, ActorId),
    /// Spawns the actor of a new container and hands it the create request, whose reply
    /// port gets the actor once containerd made the container. Fails with already exists
    /// when the container is tracked.
    Create(
        ContainerId,
        Box<CreateContainer>,
        RpcReplyPort<Result<ActorRef<ContainerMsg>, Error>>,
    ),
    /// Returns the actor of a tracked container. With `load` set, a container that exists
    /// only in containerd gets a new actor, which loads it and then replies itself.
    Lookup {
        /// The container.
        container_id: ContainerId,
        /// Loads a container that containerd has and keel does not track.
        load: bool,
        /// The port for the actor.
        reply: RpcReplyPort<Result<ActorRef<ContainerMsg>, Error>>,
    },
    /// Spawns the actor of a container that containerd was just found to have, for a
    /// [`SupervisorMsg::Lookup`] with `load` set, and hands it the record to load from.
    /// Replies as that lookup does.
    SpawnFound {
        /// The container.
        container_id: ContainerId,
        /// The record containerd returned.
        record: Box<ContainerRecord>,
        /// The lookup's reply port.
        reply: RpcReplyPort<Result<ActorRef<ContainerMsg>, Error>>,
    },
    /// Removes the record that containerd may still make for a create whose call timed out or
    /// lost its connection. The container actor of that create sends it as it leaves. Creates
    /// and loads of the id wait until the record is gone.
    UndoCreate(ContainerId),
    /// The removal that [`SupervisorMsg::UndoCreate`] started is over, so the creates and
    /// loads that waited for it run now.
    UndoFinished(ContainerId),
    /// Lists every container of the namespace from containerd, tracked or not. The calls run
    /// on their own task, so a slow containerd never holds up the supervisor's other messages.
    List(RpcReplyPort<Result<Vec<ContainerSummary>, Error>>),
    /// Makes the actor fail, so a test can watch its supervisor replace it.
    #[cfg(feature = "fault-injection")]
    InjectFailure,
}

/// Start-up arguments of the containers supervisor.
pub struct SupervisorArgs {
    /// The service clients.
    pub services: Services,
    /// The receiver of every event.
    pub backend: Arc<dyn Backend>,
    /// The client's state folder.
    pub state_dir: PathBuf,
    /// Tunables of each container actor.
    pub options: ContainerOptions,
    /// Tracks delivery tasks.
    pub tracker: TaskTracker,
    /// The registry the event actor routes through.
    pub registry: Arc<Registry>,
    /// How many containers the client may track at once; more are rejected.
    pub max_containers: usize,
}

/// The containers supervisor.
#[derive(Debug, Default)]
pub struct ContainersSupervisor;

/// The supervisor's state: its arguments and which container each child serves.
pub struct Supervisor {
    args: SupervisorArgs,
    children: HashMap<ActorId, ContainerId>,
    /// Set once the container limit was hit and logged, so the log shows it once.
    limit_logged: bool,
    /// The creates and loads that wait for [`SupervisorMsg::UndoFinished`] of their id.
    waiting: HashMap<ContainerId, Vec<SupervisorMsg>>,
}

impl Actor for ContainersSupervisor {
    type Msg = SupervisorMsg;
    type State = Supervisor;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<Supervisor, ActorProcessingErr> {
        Ok(Supervisor {
            args,
            children: HashMap::new(),
            limit_logged: false,
            waiting: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut Supervisor,
    ) -> Result<(), ActorProcessingErr> {
        let Some(message) = state.defer_while_undoing(message) else {
            return Ok(());
        };
        match message {
            #[cfg(feature = "fault-injection")]
            SupervisorMsg::InjectFailure => {
                return Err(ActorProcessingErr::from("failure injected on request"));
            }
            SupervisorMsg::Adopt(container_id, previous) => {
                if state.args.registry.get(&container_id).is_none()
                    && let Ok(actor) = state.spawn(&myself, container_id.clone()).await
                {
                    // Queued first, so requests redirected to the new actor find the state.
                    let _ = actor.cast(ContainerMsg::Reload);
                    state
                        .args
                        .registry
                        .record_successor(previous, actor.clone());
                } else {
                    state.args.registry.clear_replacing(previous);
                }
            }
            SupervisorMsg::Create(container_id, request, reply) => {
                let spawned = match state.args.registry.get(&container_id) {
                    Some(_) => Err(Error::Rejected {
                        operation: Operation::CreateContainer,
                        target: Target::Container(container_id),
                        kind: ErrorKind::AlreadyExists,
                        reason: "keel already tracks a container with this id".to_owned(),
                    }),
                    None => state.spawn(&myself, container_id).await,
                };
                // The new actor sends the reply itself, so the caller waits for one reply, not
                // two. An actor that stopped already drops the reply port, and the caller's
                // request then fails as stopped.
                match spawned {
                    Ok(actor) => {
                        let _ = actor.cast(ContainerMsg::Create(request, reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            SupervisorMsg::Lookup {
                container_id,
                load,
                reply,
            } => {
                let result = match state.args.registry.get(&container_id) {
                    Some(actor) => Ok(actor),
                    None if load => {
                        // The id is registered only once containerd is known to have the
                        // container, so a load of a missing id does not block a create of it.
                        let services = state.args.services.clone();
                        let myself = myself.clone();
                        state.args.tracker.spawn(async move {
                            match find_container(&services, &container_id).await {
                                Ok(record) => {
                                    let found = SupervisorMsg::SpawnFound {
                                        container_id,
                                        record: Box::new(record),
                                        reply,
                                    };
                                    let _ = myself.cast(found);
                                }
                                Err(error) => {
                                    let _ = reply.send(Err(error));
                                }
                            }
                        });
                        return Ok(());
                    }
                    None => Err(Error::Rejected {
                        operation: Operation::Status,
                        target: Target::Container(container_id),
                        kind: ErrorKind::NotFound,
                        reason: "no such container; create or load it first".to_owned(),
                    }),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::SpawnFound {
                container_id,
                record,
                reply,
            } => match state.args.registry.get(&container_id) {
                Some(actor) => {
                    let _ = reply.send(Ok(actor));
                }
                // The load goes to the new actor before anyone else can reach it, so every
                // later request finds the actor loaded. The actor replies once loaded.
                None => match state.spawn(&myself, container_id).await {
                    Ok(actor) => {
                        let _ = actor.cast(ContainerMsg::Load(record, reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
            },
            SupervisorMsg::UndoCreate(container_id) => {
                let services = state.args.services.clone();
                let registry = Arc::clone(&state.args.registry);
                let myself = myself.clone();
                let tracker = state.args.tracker.clone();
                state.args.tracker.spawn(async move {
                    undo_unconfirmed_create(&services, &container_id, &tracker).await;
                    // Cleared here, not by the supervisor, so a supervisor that failed
                    // meanwhile cannot leave the id blocked.
                    registry.clear_undoing(&container_id);
                    let _ = myself.cast(SupervisorMsg::UndoFinished(container_id));
                });
            }
            SupervisorMsg::UndoFinished(container_id) => {
                for waiting in state.waiting.remove(&container_id).unwrap_or_default() {
                    if !waiting.caller_gave_up() {
                        let _ = myself.cast(waiting);
                    }
                }
            }
            SupervisorMsg::List(reply) => {
                let services = state.args.services.clone();
                state.args.tracker.spawn(async move {
                    let _ = reply.send(list_containers(&services).await);
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut Supervisor,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(container_id) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state
                    .restart(&myself, container_id, cell.get_id(), &error.to_string())
                    .await;
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.children.remove(&cell.get_id());
                state.args.registry.forget_successors_of(cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

impl Supervisor {
    /// Keeps a create or load of an id whose failed create is being undone until
    /// [`SupervisorMsg::UndoFinished`], and returns every other message.
    fn defer_while_undoing(&mut self, message: SupervisorMsg) -> Option<SupervisorMsg> {
        let container_id = match &message {
            SupervisorMsg::Create(container_id, ..)
            | SupervisorMsg::Lookup {
                container_id,
                load: true,
                ..
            }
            | SupervisorMsg::SpawnFound { container_id, .. } => container_id,
            _ => return Some(message),
        };
        if !self.args.registry.is_undoing(container_id) {
            return Some(message);
        }
        let container_id = container_id.clone();
        self.waiting.entry(container_id).or_default().push(message);
        None
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        container_id: ContainerId,
    ) -> Result<ActorRef<ContainerMsg>, Error> {
        let max_containers = self.args.max_containers;
        if self.args.registry.len() >= max_containers {
            if !std::mem::replace(&mut self.limit_logged, true) {
                tracing::warn!(max_containers, "container limit reached");
            }
            return Err(Error::Rejected {
                operation: Operation::CreateContainer,
                target: Target::Container(container_id),
                kind: ErrorKind::FailedPrecondition,
                reason: format!(
                    "keel already tracks {max_containers} containers; delete some or raise the limit"
                ),
            });
        }
        let args = ContainerArgs {
            container_id: container_id.clone(),
            services: self.args.services.clone(),
            backend: Arc::clone(&self.args.backend),
            state_dir: self.args.state_dir.clone(),
            options: self.args.options.clone(),
            tracker: self.args.tracker.clone(),
            registry: Arc::clone(&self.args.registry),
        };
        let spawned = Actor::spawn_linked(None, ContainerActor, args, myself.get_cell()).await;
        match spawned {
            Ok((actor, _handle)) => {
                self.children.insert(actor.get_id(), container_id.clone());
                self.args.registry.insert(container_id, actor.clone());
                Ok(actor)
            }
            Err(error) => Err(Error::Rejected {
                operation: Operation::CreateContainer,
                target: Target::Container(container_id),
                kind: ErrorKind::Internal,
                reason: format!("cannot start the container actor: {error}"),
            }),
        }
    }

    /// Replaces a failed container actor with one loaded from containerd.
    async fn restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        container_id: ContainerId,
        failed: ActorId,
        error: &str,
    ) {
        tracing::error!(%container_id, %error, "container actor failed; restarting it");
        self.args.registry.mark_replacing(failed);
        self.args.registry.remove_if_id(&container_id, failed);
        let Ok(actor) = self.spawn(myself, container_id.clone()).await else {
            self.args.registry.clear_replacing(failed);
            return;
        };
        // Loading awaits containerd, so it runs in the new actor's mailbox, not here. It is
        // queued before handles are redirected, so their requests find the loaded state.
        let _ = actor.cast(ContainerMsg::Reload);
        self.args.registry.record_successor(failed, actor.clone());
    }
}

impl SupervisorMsg {
    /// Returns true when the message is a request whose caller no longer waits for the reply.
    fn caller_gave_up(&self) -> bool {
        match self {
            Self::Create(_, _, reply) => reply.is_closed(),
            Self::Lookup { reply, .. } | Self::SpawnFound { reply, .. } => reply.is_closed(),
            _ => false,
        }
    }
}

/// Returns containerd's record of the container `container_id`.
///
/// # Errors
///
/// Returns not found when containerd has no such container, or containerd's error, or
/// unavailable or timed out when it does not reply.
async fn find_container(
    services: &Services,
    container_id: &ContainerId,
) -> Result<ContainerRecord, Error> {
    let request = GetContainerRequest {
        id: container_id.to_string(),
    };
    let target = Target::Container(container_id.clone());
    let mut containers = services.containers();
    let response = call_with_deadline(
        Operation::LoadContainer,
        &target,
        services.call_timeout(),
        containers.get(request),
    )
    .await?;
    response.container.ok_or_else(|| Error::Rejected {
        operation: Operation::LoadContainer,
        target,
        kind: ErrorKind::NotFound,
        reason: "containerd returned no record for the container".to_owned(),
    })
}
