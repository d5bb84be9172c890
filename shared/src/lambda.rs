//! The entry point of every HTTP Lambda function: configuration, logging and state once per
//! cold start, then the function's slice of the route table under the Lambda runtime.

use crate::app::App;
use crate::http::{Function, function_router};

pub async fn run_http_function(function: Function) -> Result<(), lambda_http::Error> {
    let app = App::from_env().await?;
    tracing::info!(function = function.binary(), "cold start complete");
    lambda_http::run(function_router(function, app)).await
}
