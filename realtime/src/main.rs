//! `realtime`: the DonationAlerts push bridge, a long-lived process (an ECS Fargate service
//! in AWS). It holds the realtime sockets of the streamers in the shards it leases and
//! records every pushed donation; the scheduled poller reconciles behind it.

use std::process::ExitCode;

use shared::app::App;

// One thread: the bridge's work is thousands of mostly idle sockets, woken by pings every
// 25 s; with several workers, waking each other costs more CPU than the work (measured with
// 5,000 sockets: 2.75% of a core idle on two workers). SQLite runs on threads of its own.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let app = match App::realtime_from_env().await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("realtime: {}", shared::telemetry::error_chain(&e));
            return ExitCode::from(2);
        }
    };
    let Some(bridge) = app.realtime_bridge() else {
        tracing::error!("DA_CLIENT_ID/DA_CLIENT_SECRET unset: the bridge has nothing to do");
        return ExitCode::from(2);
    };
    tracing::info!(instance = %app.instance_id, "realtime bridge started");
    bridge.run(shared::app::shutdown_signal()).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
