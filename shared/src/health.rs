//! `GET /health`: a superset of the Node app's report. Every figure is measured when the
//! report is made (Redis PING, a read on the store, the writer's own counters, heartbeats).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::app::App;
use crate::coordination::Mode;

/// How long the store may take to answer the health read before it counts as down.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Down,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    pub ok: bool,
    pub status: Status,
    pub version: &'static str,
    pub redis: RedisReport,
    pub sqlite: SqliteReport,
    pub scalability: ScalabilityReport,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisReport {
    /// `enabled` | `disabled` | `down`.
    pub status: &'static str,
    pub is_required: bool,
    pub latency_ms: Option<f64>,
    pub last_health_check: Option<LastCheck>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastCheck {
    pub success: bool,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqliteReport {
    /// `ok` | `down`.
    pub status: &'static str,
    /// As the database reports it now (`PRAGMA journal_mode`).
    pub journal_mode: Option<String>,
    pub writer_queue_depth: usize,
    pub last_commit_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalabilityReport {
    pub can_scale_horizontally: bool,
    pub mode: &'static str,
    /// Live instances (heartbeats within the last minute), this one included.
    pub instances: Option<u64>,
    /// Writes are queued to the single writer, off the request path.
    pub async_db_enabled: bool,
    /// Poll interval and concurrency adapt to the streamer count (the poller).
    pub dynamic_polling_enabled: bool,
    pub lazy_cache_enabled: bool,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// Builds the report; the caller maps `status` to 200 (ok, degraded) or 503 (down).
pub async fn report(app: &App) -> HealthReport {
    let required = app.config.redis.required;
    let (redis_check, sqlite) = tokio::join!(app.check_redis(), sqlite_report(app));
    let redis_up = redis_check.as_ref().is_none_or(|c| c.success);
    let redis = RedisReport {
        status: match &redis_check {
            None => "disabled",
            Some(c) if c.success => "enabled",
            Some(_) => "down",
        },
        is_required: required,
        latency_ms: redis_check.as_ref().and_then(|c| c.latency).map(millis),
        last_health_check: redis_check.as_ref().map(|c| LastCheck {
            success: c.success,
            timestamp: c
                .at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            error: c.error.clone(),
        }),
    };

    let mode = app.coordinator.mode();
    let instances = if redis_up {
        app.coordinator.heartbeat(&app.instance_id).await.ok()
    } else {
        None
    };
    let scalability = ScalabilityReport {
        can_scale_horizontally: mode == Mode::Distributed && redis_up,
        mode: mode.as_str(),
        instances,
        async_db_enabled: true,
        dynamic_polling_enabled: false,
        lazy_cache_enabled: false,
    };

    let status = if sqlite.status != "ok" || (required && !redis_up) {
        Status::Down
    } else if !redis_up {
        Status::Degraded
    } else {
        Status::Ok
    };
    HealthReport {
        ok: status != Status::Down,
        status,
        version: env!("CARGO_PKG_VERSION"),
        redis,
        sqlite,
        scalability,
    }
}

async fn sqlite_report(app: &App) -> SqliteReport {
    let stats = app.store.writer_stats();
    let probe = tokio::time::timeout(
        STORE_CHECK_TIMEOUT,
        app.store
            .read(|conn| conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))),
    )
    .await;
    let (journal_mode, error) = match probe {
        Ok(Ok(mode)) => (Some(mode), None),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(_) => (
            None,
            Some(format!("no answer within {STORE_CHECK_TIMEOUT:?}")),
        ),
    };
    let writer_alive = stats.alive.load(Ordering::Relaxed);
    let error = error.or_else(|| (!writer_alive).then(|| "the writer has stopped".to_owned()));
    SqliteReport {
        status: if error.is_none() { "ok" } else { "down" },
        journal_mode,
        writer_queue_depth: stats.queue_depth.load(Ordering::Relaxed),
        last_commit_ms: (stats.commits.load(Ordering::Relaxed) > 0)
            .then(|| stats.last_commit_us.load(Ordering::Relaxed) as f64 / 1000.0),
        error,
    }
}
