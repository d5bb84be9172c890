//! Lambda `da-poll`: the DonationAlerts poll, fired every minute by an EventBridge schedule;
//! it polls until shortly before the invocation's deadline.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::lambda::run_scheduled_function("da-poll", shared::app::da_poll_job).await
}
