//! Lambda `auth-callback`: GET /auth/twitch/callback: completes the login.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::lambda::run_http_function(shared::web::routes::AUTH_CALLBACK_ROUTES).await
}
