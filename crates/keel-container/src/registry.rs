//! The map from container id to container actor, through which events are routed.

use std::time::Duration;

use dashmap::{DashMap, DashSet};
use keel_events::Router;
use keel_types::{ContainerEvent, ContainerId};
use ractor::{ActorId, ActorRef};
use tokio::sync::Notify;

use crate::ContainerMsg;
use crate::process::{ReportedExitTable, StdioLinkTable};

/// The live container actors of one client, by container id, and which actor replaced each
/// failed one, so handles made for the failed actor reach its replacement.
#[derive(Debug, Default)]
pub struct Registry {
    containers: DashMap<ContainerId, ActorRef<ContainerMsg>>,
    /// For each container actor that failed (or died with a failed supervisor), the actor
    /// that took over its container. Entries go when the replacement stops normally.
    successors: DashMap<ActorId, ActorRef<ContainerMsg>>,
    /// Wakes the callers of [`Registry::wait_for_successor`] when a successor is recorded.
    replaced: Notify,
    /// Failed container actors whose replacement is being started. They are marked before
    /// they leave the map of containers, so a handle never takes one for a deleted container.
    replacing: DashSet<ActorId>,
    /// Ids whose create had an unknown outcome and whose record is being removed; creates and
    /// loads of them wait until it is gone.
    undoing: DashSet<ContainerId>,
    /// The stdio links of the processes whose streams were handed out, which a replacing
    /// actor takes over.
    pub(crate) links: StdioLinkTable,
    /// The exits the containers reported for their current tasks, which a replacing actor
    /// does not report again.
    pub(crate) exits: ReportedExitTable,
}

impl Registry {
    /// Marks `container_id` as having a record that a failed create may have left.
    pub(crate) fn mark_undoing(&self, container_id: ContainerId) {
        self.undoing.insert(container_id);
    }

    /// Returns true while the record a failed create of `container_id` may have left is
    /// being removed.
    pub(crate) fn is_undoing(&self, container_id: &ContainerId) -> bool {
        self.undoing.contains(container_id)
    }

    /// Ends [`Registry::mark_undoing`] for `container_id`.
    pub(crate) fn clear_undoing(&self, container_id: &ContainerId) {
        self.undoing.remove(container_id);
    }

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

    /// Empties the registry and returns each container it tracked with the id of its actor,
    /// for a supervisor that lost its container actors and must load them again.
    pub fn take_all(&self) -> Vec<(ContainerId, ActorId)> {
        let tracked: Vec<(ContainerId, ActorId)> = self
            .containers
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().get_id()))
            .collect();
        for (container_id, actor) in &tracked {
            self.replacing.insert(*actor);
            self.containers.remove(container_id);
        }
        tracked
    }

    /// Marks the failed actor `failed` as being replaced, before it leaves the map.
    pub(crate) fn mark_replacing(&self, failed: ActorId) {
        self.replacing.insert(failed);
    }

    /// Ends [`Registry::mark_replacing`] for an actor that will get no replacement.
    pub(crate) fn clear_replacing(&self, failed: ActorId) {
        self.replacing.remove(&failed);
    }

    /// Returns true while a replacement for the failed actor `actor` is being started.
    pub fn is_being_replaced(&self, actor: ActorId) -> bool {
        self.replacing.contains(&actor)
    }

    /// Returns the actor that now serves the container `actor` served: `actor` itself, or
    /// the last of the actors that replaced it after failures.
    pub fn current(&self, actor: &ActorRef<ContainerMsg>) -> ActorRef<ContainerMsg> {
        self.last_successor(actor.get_id())
            .unwrap_or_else(|| actor.clone())
    }

    /// Returns the last actor in the chain of replacements that starts at `actor`, or `None`
    /// when nothing replaced it.
    fn last_successor(&self, actor: ActorId) -> Option<ActorRef<ContainerMsg>> {
        let mut last = None;
        let mut current = actor;
        while let Some(next) = self.successors.get(&current) {
            current = next.value().get_id();
            last = Some(next.value().clone());
        }
        last
    }

    /// Waits at most `timeout` until an actor replaces `actor`, and returns the one that
    /// now serves its container.
    pub async fn wait_for_successor(
        &self,
        actor: &ActorRef<ContainerMsg>,
        timeout: Duration,
    ) -> Option<ActorRef<ContainerMsg>> {
        let deadline = keel_connection::deadline_after(timeout);
        loop {
            // Registered before the check, so a successor recorded in between still wakes it.
            let replaced = self.replaced.notified();
            let current = self.current(actor);
            if current.get_id() != actor.get_id() {
                return Some(current);
            }
            if tokio::time::timeout_at(deadline, replaced).await.is_err() {
                return None;
            }
        }
    }

    /// Records that `successor` took over the container of the failed actor `failed`.
    pub(crate) fn record_successor(&self, failed: ActorId, successor: ActorRef<ContainerMsg>) {
        self.successors.insert(failed, successor);
        self.replacing.remove(&failed);
        self.replaced.notify_waiters();
    }

    /// Forgets the replacements that lead to the actor `stopped`, which stopped normally.
    pub(crate) fn forget_successors_of(&self, stopped: ActorId) {
        if self.successors.is_empty() {
            return;
        }
        let keys: Vec<ActorId> = self.successors.iter().map(|entry| *entry.key()).collect();
        let ending_here: Vec<ActorId> = keys
            .into_iter()
            .filter(|key| {
                self.last_successor(*key)
                    .is_some_and(|last| last.get_id() == stopped)
            })
            .collect();
        for key in ending_here {
            self.successors.remove(&key);
        }
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
        self.remove_if_id(container_id, actor.get_id());
    }

    /// Removes `container_id` if it still maps to the actor `actor`.
    pub(crate) fn remove_if_id(&self, container_id: &ContainerId, actor: ActorId) {
        self.containers
            .remove_if(container_id, |_, current| current.get_id() == actor);
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
