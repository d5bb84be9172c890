//! Lambda `health`: GET /health.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::lambda::run_http_function(shared::web::routes::HEALTH_ROUTES).await
}
