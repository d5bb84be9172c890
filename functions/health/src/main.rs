//! Lambda `health`: GET /health behind the HTTP API.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let app = shared::app::App::from_env().await?;
    lambda_http::run(shared::http::router(app)).await
}
