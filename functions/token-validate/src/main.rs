//! Lambda `token-validate`: validates the stored Twitch tokens that are due (Twitch requires
//! every token to be validated hourly), fired by an EventBridge schedule; it works until
//! shortly before the invocation's deadline and the next invocation continues.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::lambda::run_scheduled_function("token-validate", shared::app::token_validate_job).await
}
