//! Logging: JSON lines in Lambda (CloudWatch parses them), readable lines locally; the
//! filter comes from `RUST_LOG`. Initialised once per process.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, Deployment};

pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only if a subscriber is already set (tests): keep that one.
    let _ = match config.deployment {
        Deployment::Lambda => builder.json().with_current_span(false).try_init(),
        Deployment::Local => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}
