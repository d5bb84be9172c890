//! Lambda `chat-token`: GET /internal/chat-token/{twitchUserId}, behind API Gateway's AWS_IAM
//! authorizer: a Twitch token valid for at least five more minutes, for the chat bots; and
//! POST /internal/chat-token/{twitchUserId}/refused, where a bot reports a token Twitch
//! refused and gets one Twitch accepts.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::lambda::run_http_function(shared::web::routes::CHAT_TOKEN_ROUTES).await
}
