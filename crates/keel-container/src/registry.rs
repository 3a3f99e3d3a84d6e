//! The map from container id to container actor, through which events are routed.

use dashmap::DashMap;
use keel_events::Router;
use keel_types::{ContainerEvent, ContainerId};
use ractor::ActorRef;

use crate::ContainerMsg;

/// The live container actors of one client, by container id.
#[derive(Debug, Default)]
pub struct Registry {
    containers: DashMap<ContainerId, ActorRef<ContainerMsg>>,
}

impl Registry {
    /// Returns the actor of `container_id`.
    pub fn get(&self, container_id: &ContainerId) -> Option<ActorRef<ContainerMsg>> {
        self.containers
            .get(container_id)
            .map(|entry| entry.value().clone())
    }

    /// Returns the number of tracked containers.
    pub fn len(&self) -> usize {
        self.containers.len()
    }

    /// Returns true when no container is tracked.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    /// Returns the actors of every tracked container.
    pub fn actors(&self) -> Vec<ActorRef<ContainerMsg>> {
        self.containers
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// Empties the registry and returns the ids it tracked, for a supervisor that lost its
    /// container actors and must load them again.
    pub fn take_ids(&self) -> Vec<ContainerId> {
        let ids: Vec<ContainerId> = self
            .containers
            .iter()
            .map(|entry| entry.key().clone())
            .collect();
        for container_id in &ids {
            self.containers.remove(container_id);
        }
        ids
    }

    pub(crate) fn insert(&self, container_id: ContainerId, actor: ActorRef<ContainerMsg>) {
        self.containers.insert(container_id, actor);
    }

    /// Removes `container_id` if it still maps to `actor`, so a stopping actor never removes
    /// its replacement.
    pub(crate) fn remove_if_same(
        &self,
        container_id: &ContainerId,
        actor: &ActorRef<ContainerMsg>,
    ) {
        self.containers.remove_if(container_id, |_, current| {
            current.get_id() == actor.get_id()
        });
    }
}

impl Router for Registry {
    fn route(&self, event: ContainerEvent) -> bool {
        let Some(actor) = self.get(&event.container_id) else {
            return false;
        };
        actor.cast(ContainerMsg::Event(event)).is_ok()
    }

    fn reconcile(&self) {
        for actor in self.actors() {
            let _ = actor.cast(ContainerMsg::Reconcile);
        }
    }
}
