//! The entry points of the Lambda functions: configuration, logging and state once per cold
//! start, then either the function's slice of the route table (HTTP functions) or its
//! scheduled job (EventBridge schedules) under the Lambda runtime.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use tokio::time::Instant;

use crate::app::App;
use crate::http::{Function, function_router};
use crate::jobs::ScheduledJob;

/// A scheduled job stops this long before the invocation's deadline, leaving time to
/// return its result.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

pub async fn run_http_function(function: Function) -> Result<(), lambda_http::Error> {
    let app = App::from_env().await?;
    tracing::info!(function = function.binary(), "cold start complete");
    lambda_http::run(function_router(function, app)).await
}

/// Runs `name`'s job, built once by `build`, on every scheduled event until the runtime
/// stops the process.
pub async fn run_scheduled_function<J, E>(
    name: &'static str,
    build: impl FnOnce(&App) -> Result<J, E>,
) -> Result<(), lambda_runtime::Error>
where
    J: ScheduledJob,
    E: std::error::Error + Send + Sync + 'static,
{
    let app = App::from_env().await?;
    let job = std::sync::Arc::new(build(&app)?);
    tracing::info!(function = name, "cold start complete");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent>| {
        let job = job.clone();
        async move { Ok::<_, lambda_runtime::Error>(handle_scheduled(name, &*job, event).await) }
    }))
    .await
}

/// One scheduled invocation: the job runs until [`DEADLINE_MARGIN`] before the deadline
/// the runtime gave it.
pub async fn handle_scheduled<J: ScheduledJob>(
    name: &'static str,
    job: &J,
    event: LambdaEvent<EventBridgeEvent>,
) -> serde_json::Value {
    let remaining = event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let stop_at = Instant::now() + remaining.saturating_sub(DEADLINE_MARGIN);
    tracing::info!(
        function = name,
        detail_type = %event.payload.detail_type,
        remaining_ms = remaining.as_millis() as u64,
        "scheduled invocation"
    );
    let report = job.run(stop_at).await;
    tracing::info!(function = name, %report, "scheduled invocation done");
    report
}
