//! `avatar-local`: every route of the contract on one port, with no AWS and no Docker.
//! It serves the same router the Lambda functions run.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use shared::app::{App, StartupError};
use shared::config::Config;

#[derive(Parser)]
#[command(name = "avatar-local", version, about)]
struct Cli {
    /// Port to listen on (overrides PORT; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("avatar-local: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), StartupError> {
    let mut config = Config::load().await?;
    if let Some(port) = cli.port {
        config.port = port;
    }
    shared::telemetry::init(&config);
    let app = App::build(config).await?;

    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, app.config.port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| StartupError::Listen(address.to_string(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartupError::Listen(address.to_string(), e))?;
    tracing::info!("listening on http://{bound}");

    let (stop_background, background_stopped) = tokio::sync::watch::channel(());
    let heartbeat = {
        let app = app.clone();
        let mut stopped = background_stopped.clone();
        tokio::spawn(async move {
            app.heartbeat_until(async move {
                let _ = stopped.changed().await;
            })
            .await
        })
    };
    let served = shared::http::serve(listener, app, shutdown_signal()).await;
    drop(stop_background);
    let _ = heartbeat.await;
    tracing::info!("stopped");
    served.map_err(|e| StartupError::Listen(bound.to_string(), e))
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
