//! Lambda `pages`: the landing page, the dashboard, session and account routes.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::lambda::run_http_function(shared::web::routes::PAGES_ROUTES).await
}
