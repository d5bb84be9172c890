//! The entry points of the Lambda functions: configuration, logging and state once per cold
//! start, then either the function's slice of the route table (HTTP functions) or its
//! scheduled job (EventBridge schedules) under the Lambda runtime.
//!
//! Everything runs inside a `function` span (the function's name), and the runtime opens a
//! span per invocation carrying its `requestId`: every log line has both. The app's figures
//! go to stdout as CloudWatch EMF records ([`crate::metrics::emf`]): after each scheduled
//! run, and after each HTTP request that changed one.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use axum::response::Response;
use lambda_runtime::{LambdaEvent, service_fn};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::app::App;
use crate::bundle::Function;
use crate::domain::now_ms;
use crate::jobs::ScheduledJob;
use crate::metrics::Metrics;
use crate::metrics::emf::EmfContext;
use crate::web::routes::{Route, table_router};

/// A scheduled job stops this long before the invocation's deadline, leaving time to
/// return its result.
pub(crate) const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// Serves `table`, one function's table of [`crate::web::routes::ROUTE_TABLES`]. Its `main` names
/// the table itself, so the binary links that function's handlers and no other's.
pub async fn run_http_function(table: &'static [Route]) -> Result<(), lambda_http::Error> {
    let function = table.first().map(|route| route.function);
    let Some(function) = function.filter(|f| table.iter().all(|route| route.function == *f)) else {
        return Err("a function's route table names one function and at least one route".into());
    };
    let app = App::from_env_given(crate::secrets::needed_by(function)).await?;
    let name = function.binary();
    tracing::info!(function = name, "cold start complete");
    let emf = EmfOutput::new(&app, name);
    // The response is built, so the request's figures are counted; most requests change
    // none and print nothing.
    let router = table_router(table, app).layer(tower::util::MapResponseLayer::new(
        move |response: Response| {
            emf.print(false);
            response
        },
    ));
    lambda_http::run(router)
        .instrument(function_span(name))
        .await
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
    let function = Function::ALL
        .iter()
        .find(|function| function.binary() == name)
        .ok_or_else(|| format!("{name} is not a function of this bundle"))?;
    let app = App::from_env_given(crate::secrets::needed_by(*function)).await?;
    let job = Arc::new(build(&app)?);
    tracing::info!(function = name, "cold start complete");
    let emf = EmfOutput::new(&app, name);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent>| {
        let (job, emf) = (job.clone(), emf.clone());
        async move {
            Ok::<_, lambda_runtime::Error>(handle_scheduled(name, &*job, &emf, event).await)
        }
    }))
    .instrument(function_span(name))
    .await
}

/// The span every log line of a function carries (`function`).
fn function_span(name: &'static str) -> tracing::Span {
    tracing::info_span!("function", function = name)
}

/// One scheduled invocation: the job runs until [`DEADLINE_MARGIN`] before the deadline
/// the runtime gave it.
pub(crate) async fn handle_scheduled<J: ScheduledJob>(
    name: &'static str,
    job: &J,
    emf: &EmfOutput,
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
    // Every run, also an idle one: a zero is a data point, and the alarms see it.
    emf.print(true);
    tracing::info!(function = name, %report, "scheduled invocation done");
    report
}

/// Prints the app's EMF records on stdout, where Lambda's log agent takes them to CloudWatch
/// Logs (which turns them into metrics). Clones share the app's figures.
#[derive(Clone)]
pub(crate) struct EmfOutput {
    metrics: Arc<Metrics>,
    stack: Arc<str>,
    function: &'static str,
}

impl EmfOutput {
    pub fn new(app: &App, function: &'static str) -> Self {
        Self {
            metrics: app.metrics.clone(),
            stack: app.config.stack_name.as_str().into(),
            function,
        }
    }

    /// What changed since the previous record; with `always`, a record even if nothing did.
    pub fn print(&self, always: bool) {
        let context = EmfContext {
            stack: &self.stack,
            function: self.function,
            timestamp_ms: now_ms(),
        };
        let lines = self.metrics.emf_lines(&context, always);
        if lines.is_empty() {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        for line in lines {
            // Nowhere to report a closed stdout to: the log line would go the same way.
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }
}
