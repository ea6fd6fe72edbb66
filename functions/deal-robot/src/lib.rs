//! The deal robot: one Bitrix24 robot call in (the built-in Webhook robot or an
//! application robot), one forward job on the forward queue, and an answer in
//! milliseconds. Parsing, authentication and the route are the pure
//! [`b24_domain::forward::robot::accept_robot_call`]; this crate adds the HTTP answers,
//! the queue and the metrics (one EMF line per call: `RobotCallsAccepted` by route,
//! `RobotCallsRejected` by reason, or `QueueFailures` by route).

use std::sync::Arc;

use b24_config::Config;
use b24_domain::event::PortalIdentity;
use b24_domain::forward::job::ForwardJob;
use b24_domain::forward::robot::accept_robot_call;
use b24_domain::forward::route::ForwardRoute;
use b24_domain::ports::MessageQueue;
use b24_lambda::function_url::{queue_unavailable, queued, read_request, refusal};
use b24_lambda::metrics::{MetricSet, Metrics};
use lambda_http::{Body, Request, Response};

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "deal-robot";

/// What every invocation shares: the routes, the portals that may call, the forward
/// queue and where metrics go.
pub struct RobotState {
    pub routes: Vec<ForwardRoute>,
    pub portals: Vec<PortalIdentity>,
    pub queue: Arc<dyn MessageQueue<ForwardJob>>,
    pub metrics: Metrics,
}

impl RobotState {
    /// Metrics go to stdout, where Lambda's log capture finds them.
    pub fn new(config: &Config, queue: Arc<dyn MessageQueue<ForwardJob>>) -> RobotState {
        RobotState {
            routes: config.routes.values().cloned().collect(),
            portals: config.portal_identities(),
            queue,
            metrics: Metrics::stdout(),
        }
    }
}

/// Answers one robot call. Never fails and never panics: every input gets a 202 or a
/// 4xx, and only a queue that refuses the job gets a 503. A portal does not send a
/// robot call again, so that failure is logged with the job to replay.
pub async fn handle(state: &RobotState, request: Request) -> Response<Body> {
    let accepted = read_request(&request, |call| {
        accept_robot_call(call, &state.routes, &state.portals, chrono::Utc::now())
    });
    let job = match accepted {
        Ok(job) => job,
        Err(refused) => {
            tracing::warn!(status = refused.status(), reason = %refused, "robot call refused");
            // The route and portal are not proven here: only the reason is a dimension.
            state.metrics.emit(
                &MetricSet::new()
                    .dimension("Function", FUNCTION)
                    .dimension("Reason", refused.code())
                    .count("RobotCallsRejected", 1),
            );
            return refusal(refused.status(), &refused.to_string());
        }
    };
    let sent = state.queue.send(std::slice::from_ref(&job)).await;
    let outcome = if sent.is_ok() {
        "RobotCallsAccepted"
    } else {
        "QueueFailures"
    };
    state.metrics.emit(
        &MetricSet::new()
            .dimension("Function", FUNCTION)
            .dimension("Route", &job.route)
            .count(outcome, 1),
    );
    match sent {
        Ok(()) => {
            tracing::info!(
                route = %job.route,
                source = %job.source,
                deal_id = job.deal_id,
                waits_for_reply = job.waits_for_reply,
                "forward job queued"
            );
            queued()
        }
        Err(error) => {
            tracing::error!(
                route = %job.route,
                source = %job.source,
                deal_id = job.deal_id,
                robot_waits = job.waits_for_reply,
                forward_job = %replayable(&job).to_json(),
                %error,
                "the forward queue refused the robot call: replay forward_job \
                 (a robot that waits must be run again on the deal to be answered)"
            );
            queue_unavailable("the forward queue is unavailable; the call was logged")
        }
    }
}

/// The job as it may be logged and replayed: without the event token. The token is
/// short-lived but lets its holder answer the waiting robot, so it is treated as a
/// secret; without it the replayed job forwards the deal and answers nobody.
fn replayable(job: &ForwardJob) -> ForwardJob {
    ForwardJob {
        event_token: None,
        waits_for_reply: false,
        ..job.clone()
    }
}
