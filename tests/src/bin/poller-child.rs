//! One poller process for the multi-process poller tests: builds the application from its
//! environment (as a `da-poll` instance would), prints `ready`, and runs the DonationAlerts
//! poller until its standard input closes; then it finishes its polls in flight, relays the
//! outbox, prints `stale-fences N` (polls whose record a newer lock holder had overtaken)
//! and `stopped`, and exits.
//!
//! With `--stop-holding-lock STREAMER`, the first time it takes that streamer's poll lock
//! it prints `stopped-holding-lock FENCE` and stops itself (SIGSTOP) until the test resumes
//! it: a poller paused past its lock's TTL, at the worst moment, on cue. It then prints
//! `fenced-out` when a poll's record is refused for a newer lock holder's, so the test can
//! close its input only once the resumed poll has tried to record (a poller told to stop
//! ends its polls in flight before they record).

use std::io::{BufRead as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use shared::app::App;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    stop_holding_lock: Option<String>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let log_filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|filter| filter.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::WARN));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(log_filter),
        )
        .with(cli.stop_holding_lock.map(|streamer| StopOnPollLock {
            streamer,
            done: AtomicBool::new(false),
        }))
        .init();
    let app = App::from_env().await.expect("the configuration is valid");
    let poller = app
        .poller()
        .expect("DA_CLIENT_ID and DA_CLIENT_SECRET are set");
    let (stdin_closed, stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        let _ = stdin_closed.send(());
    });
    say("ready");
    poller
        .run(None, async move {
            let _ = stop.await;
        })
        .await;
    let stale = poller.stats().stale_fences.load(Ordering::Relaxed);
    say(&format!("stale-fences {stale}"));
    say("stopped");
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Stops the process the first time the poll lock of `streamer` is taken.
struct StopOnPollLock {
    streamer: String,
    done: AtomicBool,
}

#[derive(Default)]
struct PollLockFields {
    message: String,
    streamer: String,
    fence: u64,
}

impl Visit for PollLockFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "fence" {
            self.fence = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "streamer" => self.streamer = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for StopOnPollLock {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = PollLockFields::default();
        event.record(&mut fields);
        if fields.message == "a newer poll of this streamer won; nothing written" {
            say("fenced-out");
        }
        if fields.message == "poll lock taken"
            && fields.streamer == self.streamer
            && !self.done.swap(true, Ordering::SeqCst)
        {
            say(&format!("stopped-holding-lock {}", fields.fence));
            // SAFETY: raise(2) with a standard signal; the process resumes on SIGCONT.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }
    }
}
