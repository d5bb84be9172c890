//! `avatar-local`: every route of the contract on one port, with no AWS and no Docker.
//! It serves the same router the Lambda functions run. `--demo` adds a fake Twitch on
//! loopback and points the configuration at it, so the whole login works offline.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig};
use shared::app::{App, StartupError};
use shared::config::Config;

#[derive(Parser)]
#[command(name = "avatar-local", version, about)]
struct Cli {
    /// Port to listen on (overrides PORT; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Also start fake Twitch and DonationAlerts servers on loopback and use them.
    #[arg(long)]
    demo: bool,
    /// Ports of the fake Twitch and fake DonationAlerts (with --demo).
    #[arg(long, value_name = "TWITCH,DONATIONALERTS", value_delimiter = ',', num_args = 1, default_values_t = [3001u16, 3002u16])]
    demo_ports: Vec<u16>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.demo_ports.len() != 2 {
        eprintln!("avatar-local: --demo-ports takes two ports, e.g. --demo-ports 3001,3002");
        return ExitCode::from(2);
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("avatar-local: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), StartupError> {
    let mut vars = Config::load_vars().await?;
    if let Some(port) = cli.port {
        vars.insert("PORT".into(), port.to_string());
    }
    // Bind first, so that with port 0 the URLs derived from PORT name the real port.
    let wanted = Config::from_vars(&vars)?.port;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, wanted));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| StartupError::Listen(address.to_string(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartupError::Listen(address.to_string(), e))?;
    vars.insert("PORT".into(), bound.port().to_string());

    let mut config = Config::from_vars(&vars)?;
    shared::telemetry::init(&config);
    let _fakes = if cli.demo {
        let (fakes, demo_vars) = start_demo_providers(&config, &cli.demo_ports).await?;
        vars.extend(demo_vars);
        config = Config::from_vars(&vars)?;
        Some(fakes)
    } else {
        None
    };
    let app = App::build(config).await?;
    tracing::info!("listening on http://{bound}");
    if cli.demo {
        tracing::info!(
            "demo: open http://localhost:{}/ and click «Вход»",
            bound.port()
        );
    }

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

/// The running fakes; they stop when this is dropped.
struct DemoProviders {
    twitch: tokio::task::JoinHandle<()>,
}

impl Drop for DemoProviders {
    fn drop(&mut self) {
        self.twitch.abort();
    }
}

/// Starts the fake Twitch (DonationAlerts follows with its capability) and returns the
/// variables that point the configuration at it.
async fn start_demo_providers(
    config: &Config,
    ports: &[u16],
) -> Result<(DemoProviders, HashMap<String, String>), StartupError> {
    let twitch = FakeTwitch::new(FakeTwitchConfig::demo(config.twitch.redirect_uri.as_str()));
    let twitch_port = ports.first().copied().unwrap_or(3001);
    let (address, handle) = twitch
        .spawn(twitch_port)
        .await
        .map_err(|e| StartupError::Listen(format!("127.0.0.1:{twitch_port}"), e))?;
    let vars = twitch.app_variables(address).into_iter().collect();
    tracing::info!(
        "demo: fake Twitch at http://{address} (authorize page {}/authorize)",
        FakeTwitch::auth_base_url(address)
    );
    Ok((DemoProviders { twitch: handle }, vars))
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
