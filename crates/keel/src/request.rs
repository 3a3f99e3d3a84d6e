//! Sending a request to an actor and waiting for its reply with a deadline.

use std::time::Duration;

use keel_types::{Error, Operation, Target};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

/// Sends the message built by `build` to `actor` and waits at most `timeout` for the reply.
///
/// # Errors
///
/// Returns the request's own error, timed out when the reply does not come in time, or
/// stopped when the actor is gone.
pub(crate) async fn request<M, T>(
    actor: &ActorRef<M>,
    operation: Operation,
    target: &Target,
    timeout: Duration,
    build: impl FnOnce(RpcReplyPort<Result<T, Error>>) -> M,
) -> Result<T, Error>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(result)) => result,
        Ok(CallResult::Timeout) => Err(Error::TimedOut {
            operation,
            target: target.clone(),
            timeout,
        }),
        Ok(CallResult::SenderError) | Err(_) => Err(stopped(operation, target)),
    }
}

/// Sends a request without a deadline, for waits that last as long as a process runs. The
/// reply still comes if the actor stops, because its reply port is dropped then.
pub(crate) async fn request_unbounded<M, T>(
    actor: &ActorRef<M>,
    operation: Operation,
    target: &Target,
    build: impl FnOnce(RpcReplyPort<Result<T, Error>>) -> M,
) -> Result<T, Error>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(build, None).await {
        Ok(CallResult::Success(result)) => result,
        _ => Err(stopped(operation, target)),
    }
}

/// Returns the error for a request whose actor is gone.
pub(crate) fn stopped(operation: Operation, target: &Target) -> Error {
    Error::Stopped {
        operation,
        target: target.clone(),
    }
}
