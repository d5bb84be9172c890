//! `avatar-local`: every route of the contract on one port, with no AWS and no Docker.
//! It serves the same router the Lambda functions run, runs on timers the jobs of the
//! scheduled functions: the DonationAlerts poller (`da-poll`) and the Twitch token validation
//! (`token-validate`), and runs the realtime bridge in-process. `--demo` adds a fake Twitch
//! and a fake DonationAlerts on loopback and points the configuration at them, so the whole
//! login, the DonationAlerts connection and donations arriving (pushed and polled) work
//! offline.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use fake_providers::donationalerts::{FakeDonationAlerts, FakeDonationAlertsConfig};
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig};
use shared::app::{App, StartupError};
use shared::config::Config;

/// How often `avatar-local` looks for Twitch tokens due for validation, and the longest one
/// look lasts (the next continues where it stopped).
const VALIDATE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
const VALIDATE_SLICE: std::time::Duration = std::time::Duration::from_secs(10);

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
            eprintln!("avatar-local: {}", shared::telemetry::error_chain(&e));
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), StartupError> {
    let shutdown = shared::app::shutdown_signal();
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
    shared::telemetry::init(&config.log_filter, config.deployment.log_format());
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
    let poller = match app.poller() {
        Some(poller) => {
            let mut stopped = background_stopped.clone();
            Some(tokio::spawn(async move {
                poller
                    .run(None, async move {
                        let _ = stopped.changed().await;
                    })
                    .await
            }))
        }
        None => {
            tracing::info!("DA_CLIENT_ID/DA_CLIENT_SECRET unset: no DonationAlerts polling");
            None
        }
    };
    // The realtime bridge, holding every shard no other bridge on this Redis holds.
    let bridge = app.realtime_bridge().map(|bridge| {
        let mut stopped = background_stopped.clone();
        tokio::spawn(async move {
            bridge
                .run(async move {
                    let _ = stopped.changed().await;
                })
                .await
        })
    });
    let validator = app.token_validator().map(|validator| {
        let mut stopped = background_stopped.clone();
        tokio::spawn(async move {
            validator
                .run_every(VALIDATE_EVERY, VALIDATE_SLICE, async move {
                    let _ = stopped.changed().await;
                })
                .await
        })
    });
    let served = shared::web::routes::serve(listener, app, shutdown).await;
    drop(stop_background);
    let _ = heartbeat.await;
    if let Some(validator) = validator {
        let _ = validator.await;
    }
    if let Some(bridge) = bridge {
        // Closes its sockets and releases its shards.
        let _ = bridge.await;
    }
    if let Some(poller) = poller {
        // Finishes its polls in flight (releasing their locks) and relays the outbox.
        let _ = poller.await;
    }
    tracing::info!("stopped");
    served.map_err(|e| StartupError::Listen(bound.to_string(), e))
}

/// The running fakes; they stop when this is dropped.
struct DemoProviders {
    twitch: tokio::task::JoinHandle<()>,
    donationalerts: tokio::task::JoinHandle<()>,
}

impl Drop for DemoProviders {
    fn drop(&mut self) {
        self.twitch.abort();
        self.donationalerts.abort();
    }
}

/// Starts the fake Twitch and the fake DonationAlerts and returns the variables that point
/// the configuration at them.
async fn start_demo_providers(
    config: &Config,
    ports: &[u16],
) -> Result<(DemoProviders, HashMap<String, String>), StartupError> {
    let twitch = FakeTwitch::new(FakeTwitchConfig::demo(config.twitch.redirect_uri.as_str()));
    let twitch_port = ports.first().copied().unwrap_or(3001);
    let (twitch_address, twitch_task) = twitch
        .spawn(twitch_port)
        .await
        .map_err(|e| StartupError::Listen(format!("127.0.0.1:{twitch_port}"), e))?;
    let donationalerts = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(
        config.donationalerts.redirect_uri.as_str(),
    ));
    let da_port = ports.get(1).copied().unwrap_or(3002);
    let (da_address, da_task) = donationalerts
        .spawn(da_port)
        .await
        .map_err(|e| StartupError::Listen(format!("127.0.0.1:{da_port}"), e))?;
    let mut vars: HashMap<String, String> =
        twitch.app_variables(twitch_address).into_iter().collect();
    vars.extend(donationalerts.app_variables(da_address));
    tracing::info!(
        "demo: fake Twitch at http://{twitch_address} (authorize page {}/authorize)",
        FakeTwitch::auth_base_url(twitch_address)
    );
    tracing::info!(
        "demo: fake DonationAlerts at http://{da_address}; make a donation with \
         curl -X POST http://{da_address}/_control/donations -H 'Content-Type: application/json' \
         -d '{{\"username\":\"Viewer\",\"message\":\"Hello!\",\"amount\":100,\"currency\":\"RUB\"}}'"
    );
    Ok((
        DemoProviders {
            twitch: twitch_task,
            donationalerts: da_task,
        },
        vars,
    ))
}
