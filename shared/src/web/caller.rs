//! Who called an internal route: in AWS, the IAM identity API Gateway's AWS_IAM authorizer
//! let through (`requestContext.authorizer.iam.userArn` of the event), logged with every
//! chat token handed out so that each one says to whom.

use axum::extract::FromRequestParts;
use axum::http::Extensions;
use axum::http::request::Parts;

/// The caller's IAM ARN; `None` on the local server, whose bearer token names no one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Option<String>);

impl Caller {
    /// The ARN, for a log field (absent when there is none).
    pub fn arn(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(caller_arn(&parts.extensions)))
    }
}

/// The ARN in the API Gateway request context `lambda_http` puts in a request's extensions.
#[cfg(feature = "lambda")]
pub(crate) fn caller_arn(extensions: &Extensions) -> Option<String> {
    use lambda_http::request::RequestContext;
    #[allow(unreachable_patterns)] // only the HTTP API's context is compiled in
    match extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(context) => {
            context.authorizer.as_ref()?.iam.as_ref()?.user_arn.clone()
        }
        _ => None,
    }
}

/// Without the Lambda runtime no request carries an API Gateway context.
#[cfg(not(feature = "lambda"))]
pub(crate) fn caller_arn(_extensions: &Extensions) -> Option<String> {
    None
}

#[cfg(all(test, feature = "lambda"))]
mod tests {
    use super::*;

    #[test]
    fn the_arn_comes_from_the_iam_authorizer_of_the_request_context() {
        // The request context of an API Gateway v2 event through the AWS_IAM authorizer.
        let event: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/events/apigw-v2-get-chat-token-iam.json"
        ))
        .unwrap();
        let context = serde_json::from_value(event["requestContext"].clone())
            .expect("an HTTP API request context");
        let mut extensions = Extensions::new();
        extensions.insert(lambda_http::request::RequestContext::ApiGatewayV2(context));

        assert_eq!(
            caller_arn(&extensions).as_deref(),
            Some("arn:aws:iam::123456789012:user/chat-bot")
        );
        assert_eq!(caller_arn(&Extensions::new()), None);
    }
}
