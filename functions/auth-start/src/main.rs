//! Lambda `auth-start`: GET /auth/twitch: 302 to the provider.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::lambda::run_http_function(shared::web::routes::AUTH_START_ROUTES).await
}
