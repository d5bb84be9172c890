//! The bundle's functions: one binary (and crate) each in `functions/`, one resource each
//! in template.yaml. Which secrets each is given is `secrets::needed_by`; which routes each
//! serves, `web::routes`.

/// Every function of the bundle: one binary (and crate) each in `functions/`, one resource
/// each in template.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    Health,
    AuthStart,
    AuthCallback,
    Pages,
    ChatToken,
    DaPoll,
    TokenValidate,
}

/// What invokes a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// The HTTP API's routes: the function serves its route table (`web::routes`).
    Http,
    /// A schedule (EventBridge): the function serves no route.
    Scheduled,
}

impl Function {
    /// Every function, in template order.
    pub const ALL: &'static [Function] = &[
        Function::Health,
        Function::AuthStart,
        Function::AuthCallback,
        Function::Pages,
        Function::ChatToken,
        Function::DaPoll,
        Function::TokenValidate,
    ];

    /// The function's binary (and crate) name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::AuthStart => "auth-start",
            Self::AuthCallback => "auth-callback",
            Self::Pages => "pages",
            Self::ChatToken => "chat-token",
            Self::DaPoll => "da-poll",
            Self::TokenValidate => "token-validate",
        }
    }

    pub fn kind(self) -> FunctionKind {
        match self {
            Self::Health | Self::AuthStart | Self::AuthCallback | Self::Pages | Self::ChatToken => {
                FunctionKind::Http
            }
            Self::DaPoll | Self::TokenValidate => FunctionKind::Scheduled,
        }
    }
}
