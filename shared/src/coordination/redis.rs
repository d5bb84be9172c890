//! Redis-backed coordination, shared by every instance (and by the Node app's locks).
//!
//! Connections are `ConnectionManager`s created once per process: they connect lazily (so a
//! process can start while Redis is down and recover when it returns), reconnect by
//! themselves, and every command runs under a timeout far below a Lambda timeout. Commands
//! whose repetition is harmless are retried once, because a connection found dead after a
//! Lambda freeze fails the first command sent on it.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, FromRedisValue, ServerErrorKind};
use tokio::time::Instant;

use super::gcra::{Priority, RateDecision, RateLimit, WAITING_GRACE};
use super::{
    CoordinationError, EVENT_DEDUPE_TTL, HEARTBEAT_WINDOW, INSTANCES_KEY, Lock, Published,
    clock_drift, event_dedupe_key, fence_key,
};
use super::{Reports, waiting_mark_key};
use crate::config::RedisUrl;
use crate::domain::event::{BROADCAST_CHANNEL, BusEvent, EVENT_STREAM, STREAM_MAXLEN};
use crate::secret::random_hex;

/// Longest any single command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);

/// Takes the lock and, only if it was free, bumps the fencing counter: one round trip.
/// Same key, value and `NX PX` semantics as node-redlock's acquire. A key already holding
/// our value means this is the retry of an acquisition whose answer was lost (a timeout, a
/// process stopped mid-command): the lock is ours, with the token that acquisition took.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
return 0
";

/// Compare-and-delete, as node-redlock's release.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Compare-and-pexpire: the TTL becomes ARGV[2] from now (node-redlock's extend semantics).
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Raises a fencing counter to at least ARGV[1]; returns the counter.
const RAISE_FENCE: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return wanted
end
return current
";

/// GCRA on the server's clock (see `gcra.rs`, which this mirrors step by step), for a caller
/// of a priority (see `gcra::Priority`) when the waiting marks are given: refused while a
/// more urgent class has a live waiting mark; a refused caller leaves (or lengthens) its
/// class's mark until its retry plus the grace. Without marks, a plain limiter.
/// KEYS: limiter, then optionally the waiting marks of every class, most urgent first.
/// ARGV: interval µs, tolerance µs, and with the marks the caller's class index and the
/// grace ms. Returns {allowed, retry_after_or_remaining, now_µs}.
const RATE_LIMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local prioritized = #KEYS > 1
local class = tonumber(ARGV[3] or '0')
local grace = tonumber(ARGV[4] or '0')
local function mark(retry_us)
  if not prioritized then return end
  local ttl = math.ceil(retry_us / 1000) + grace
  local key = KEYS[2 + class]
  if redis.call('PTTL', key) < ttl then
    redis.call('SET', key, '1', 'PX', ttl)
  end
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  mark(allow_at - now)
  return {0, string.format('%.0f', allow_at - now), string.format('%.0f', now)}
end
if prioritized then
  for c = 0, class - 1 do
    if redis.call('EXISTS', KEYS[2 + c]) == 1 then
      mark(interval)
      return {0, string.format('%.0f', interval), string.format('%.0f', now)}
    end
  end
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local remaining = 0
if now + tolerance >= new_tat then
  remaining = math.floor((now + tolerance - new_tat) / interval) + 1
end
return {1, remaining, string.format('%.0f', now)}
";

/// Sets every key to its value with one expiry. KEYS: the keys. ARGV: ttl ms, then the values.
const ADVERTISE: &str = r"
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
end
return #KEYS
";

/// Appends to the stream and publishes, once per eventId.
/// KEYS: dedupe marker, stream. ARGV: dedupe ttl s, maxlen, eventId, streamerId, type, data,
/// channel, envelope.
/// The marker is set only after XADD succeeded: a script that fails half-way keeps what it
/// wrote before the failure, and a marker without its entry would make every retry a
/// silent no-op (the event lost).
const PUBLISH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'eventId', ARGV[3], 'streamerId', ARGV[4], 'type', ARGV[5], 'data', ARGV[6])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return id
";

/// Records a heartbeat at the server's time and counts instances seen within the window.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
";

/// A Lua script sent as EVALSHA, falling back to EVAL on NOSCRIPT (as node-redlock does).
struct LuaScript {
    code: &'static str,
    sha: String,
}

impl LuaScript {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            sha: redis::Script::new(code).get_hash().to_owned(),
        }
    }

    fn command(&self, by_sha: bool, keys: &[&str], args: &[String]) -> Cmd {
        let mut cmd = if by_sha {
            let mut c = redis::cmd("EVALSHA");
            c.arg(&self.sha);
            c
        } else {
            let mut c = redis::cmd("EVAL");
            c.arg(self.code);
            c
        };
        cmd.arg(keys.len()).arg(keys).arg(args);
        cmd
    }
}

static ACQUIRE_SCRIPT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(ACQUIRE));
static RELEASE_SCRIPT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(RELEASE));
static EXTEND_SCRIPT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(EXTEND));
static RAISE_FENCE_SCRIPT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(RAISE_FENCE));
static RATE_LIMIT_SCRIPT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(RATE_LIMIT));
static ADVERTISE_SCRIPT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(ADVERTISE));
static PUBLISH_SCRIPT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(PUBLISH));
static HEARTBEAT_SCRIPT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(HEARTBEAT));

/// Whether repeating a command after an unknown outcome is harmless.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Once,
    Never,
}

/// One Redis server: a self-reconnecting connection plus its name for errors and logs.
#[derive(Clone)]
pub struct RedisServer {
    manager: ConnectionManager,
    server: String,
}

impl RedisServer {
    /// Prepares the connection without connecting (the first command connects).
    pub fn new(url: &RedisUrl, force_tls: bool) -> Result<Self, CoordinationError> {
        let server = url.host_port();
        let client = redis::Client::open(url.connection_url(force_tls)).map_err(|source| {
            CoordinationError::Redis {
                server: server.clone(),
                source,
            }
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|source| {
                CoordinationError::Redis {
                    server: server.clone(),
                    source,
                }
            })?;
        Ok(Self { manager, server })
    }

    async fn query<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        timeout: Duration,
        retry: Retry,
    ) -> Result<T, CoordinationError> {
        match self.query_once(cmd, timeout).await {
            Err(e) if retry == Retry::Once && is_transient(&e) => {
                self.query_once(cmd, timeout).await
            }
            other => other,
        }
    }

    async fn query_once<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<T, CoordinationError> {
        let mut conn = self.manager.clone();
        match tokio::time::timeout(timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(CoordinationError::Redis {
                server: self.server.clone(),
                source,
            }),
            Err(_) => Err(CoordinationError::Timeout {
                server: self.server.clone(),
                timeout,
            }),
        }
    }

    async fn eval<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        keys: &[&str],
        args: &[String],
        timeout: Duration,
        retry: Retry,
    ) -> Result<T, CoordinationError> {
        match self
            .query(&script.command(true, keys, args), timeout, retry)
            .await
        {
            Err(CoordinationError::Redis { source, .. })
                if source.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
            {
                self.query(&script.command(false, keys, args), timeout, retry)
                    .await
            }
            other => other,
        }
    }

    pub fn name(&self) -> &str {
        &self.server
    }
}

fn is_transient(error: &CoordinationError) -> bool {
    match error {
        CoordinationError::Redis { source, .. } => {
            source.is_io_error() || source.is_connection_dropped() || source.is_timeout()
        }
        CoordinationError::Timeout { .. } => true,
        CoordinationError::UnexpectedReply { .. } | CoordinationError::NoQuorum { .. } => false,
    }
}

/// Per-server time allowed for a lock command: a small share of the TTL, as Redlock asks,
/// so a dead server cannot eat the lock's validity.
fn lock_command_timeout(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(50), COMMAND_TIMEOUT)
}

#[derive(Clone)]
pub struct RedisCoordinator {
    inner: Arc<Servers>,
}

struct Servers {
    /// `REDIS_URL`: state, limiter, bus, heartbeats.
    main: RedisServer,
    /// `REDIS_LOCK_URLS` (default: the main server): the Redlock quorum.
    lock_servers: Vec<RedisServer>,
}

impl RedisCoordinator {
    /// Prepares connections to `url` (`REDIS_URL`) and the lock servers (no I/O yet).
    pub fn new(
        url: &RedisUrl,
        lock_urls: &[RedisUrl],
        force_tls: bool,
    ) -> Result<Self, CoordinationError> {
        let main = RedisServer::new(url, force_tls)?;
        let lock_servers = lock_urls
            .iter()
            .map(|u| {
                if u == url {
                    Ok(main.clone())
                } else {
                    RedisServer::new(u, force_tls)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Servers { main, lock_servers }),
        })
    }

    fn quorum(&self) -> usize {
        self.inner.lock_servers.len() / 2 + 1
    }

    pub fn main_server(&self) -> &str {
        self.inner.main.name()
    }

    pub async fn try_lock(
        &self,
        resource: &str,
        ttl: Duration,
    ) -> Result<Option<Lock>, CoordinationError> {
        let value = random_hex(16);
        let fence_key = fence_key(resource);
        let ttl_ms = ttl.as_millis().max(1).to_string();
        let timeout = lock_command_timeout(ttl);
        let start = Instant::now();
        let args = [value.clone(), ttl_ms];
        let keys = [resource, fence_key.as_str()];
        // Retried once: the script is idempotent for our value, and an answer lost to a
        // timeout (e.g. this process was stopped mid-command) must not fail the caller.
        let answers =
            join_all(self.inner.lock_servers.iter().map(|server| {
                server.eval::<i64>(&ACQUIRE_SCRIPT, &keys, &args, timeout, Retry::Once)
            }))
            .await;

        let granted: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, Ok(fence) if *fence > 0))
            .map(|(i, _)| i)
            .collect();
        let answered = answers.iter().filter(|a| a.is_ok()).count();
        let validity = ttl
            .saturating_sub(start.elapsed())
            .saturating_sub(clock_drift(ttl));

        if granted.len() >= self.quorum() && !validity.is_zero() {
            let fence = answers
                .iter()
                .filter_map(|a| a.as_ref().ok().copied())
                .max()
                .unwrap_or(0) as u64;
            let lock = Lock {
                resource: resource.to_owned(),
                value,
                fence,
                valid_until: start + validity,
            };
            if self.inner.lock_servers.len() == 1 || self.spread_fence(&lock, &granted).await {
                return Ok(Some(lock));
            }
            self.release(&lock).await.ok();
            return Err(CoordinationError::NoQuorum {
                reached: 0,
                needed: self.quorum(),
            });
        }

        // Not ours: undo partial grants (the script only deletes keys holding our value).
        if !granted.is_empty() {
            let lock = Lock {
                resource: resource.to_owned(),
                value,
                fence: 0,
                valid_until: start,
            };
            self.release(&lock).await.ok();
        }
        if answered < self.quorum() {
            let first_error = answers.into_iter().find_map(Result::err);
            if self.inner.lock_servers.len() == 1
                && let Some(error) = first_error
            {
                return Err(error);
            }
            return Err(CoordinationError::NoQuorum {
                reached: answered,
                needed: self.quorum(),
            });
        }
        Ok(None)
    }

    /// With several lock servers each keeps its own counter: write the token we took (the
    /// maximum) back to every server that granted us, so the next holder, whose quorum
    /// overlaps ours, counts on from at least this token.
    async fn spread_fence(&self, lock: &Lock, granted: &[usize]) -> bool {
        let key = fence_key(&lock.resource);
        let args = [lock.fence.to_string()];
        let keys = [key.as_str()];
        let written = join_all(granted.iter().map(|&i| {
            self.inner.lock_servers[i].eval::<i64>(
                &RAISE_FENCE_SCRIPT,
                &keys,
                &args,
                COMMAND_TIMEOUT,
                Retry::Once,
            )
        }))
        .await;
        written.iter().filter(|w| w.is_ok()).count() >= self.quorum()
    }

    pub async fn extend(
        &self,
        lock: &Lock,
        ttl: Duration,
    ) -> Result<Option<Lock>, CoordinationError> {
        let start = Instant::now();
        let args = [lock.value.clone(), ttl.as_millis().max(1).to_string()];
        let timeout = lock_command_timeout(ttl);
        let keys = [lock.resource.as_str()];
        let answers =
            join_all(self.inner.lock_servers.iter().map(|server| {
                server.eval::<i64>(&EXTEND_SCRIPT, &keys, &args, timeout, Retry::Once)
            }))
            .await;
        let extended = answers.iter().filter(|a| matches!(a, Ok(1))).count();
        let validity = ttl
            .saturating_sub(start.elapsed())
            .saturating_sub(clock_drift(ttl));
        if extended >= self.quorum() && !validity.is_zero() {
            return Ok(Some(Lock {
                valid_until: start + validity,
                ..lock.clone()
            }));
        }
        self.none_or_error(answers)
    }

    pub async fn release(&self, lock: &Lock) -> Result<bool, CoordinationError> {
        let args = [lock.value.clone()];
        let keys = [lock.resource.as_str()];
        let answers = join_all(self.inner.lock_servers.iter().map(|server| {
            server.eval::<i64>(&RELEASE_SCRIPT, &keys, &args, COMMAND_TIMEOUT, Retry::Once)
        }))
        .await;
        let released = answers.iter().filter(|a| matches!(a, Ok(1))).count();
        if released >= self.quorum() {
            return Ok(true);
        }
        self.none_or_error(answers).map(|_: Option<Lock>| false)
    }

    /// `Ok(None)` when enough servers answered (the answer was simply "not yours"), the error
    /// otherwise.
    fn none_or_error<T>(
        &self,
        answers: Vec<Result<i64, CoordinationError>>,
    ) -> Result<Option<T>, CoordinationError> {
        let answered = answers.iter().filter(|a| a.is_ok()).count();
        if answered >= self.quorum() {
            return Ok(None);
        }
        if self.inner.lock_servers.len() == 1
            && let Some(error) = answers.into_iter().find_map(Result::err)
        {
            return Err(error);
        }
        Err(CoordinationError::NoQuorum {
            reached: answered,
            needed: self.quorum(),
        })
    }

    pub(crate) async fn raise_fence(
        &self,
        resource: &str,
        at_least: u64,
    ) -> Result<(), CoordinationError> {
        let key = fence_key(resource);
        let args = [at_least.to_string()];
        let keys = [key.as_str()];
        let answers = join_all(self.inner.lock_servers.iter().map(|server| {
            server.eval::<i64>(
                &RAISE_FENCE_SCRIPT,
                &keys,
                &args,
                COMMAND_TIMEOUT,
                Retry::Once,
            )
        }))
        .await;
        self.none_or_error::<()>(answers).map(|_| ())
    }

    pub async fn put_once(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CoordinationError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let reply: Option<String> = self
            .inner
            .main
            .query(&cmd, COMMAND_TIMEOUT, Retry::Never)
            .await?;
        Ok(reply.is_some())
    }

    pub async fn take_once(&self, key: &str) -> Result<Option<String>, CoordinationError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(key);
        self.inner
            .main
            .query(&cmd, COMMAND_TIMEOUT, Retry::Never)
            .await
    }

    pub async fn rate_limit(
        &self,
        key: &str,
        limit: &RateLimit,
    ) -> Result<RateDecision, CoordinationError> {
        let args = [
            limit.interval_us().to_string(),
            limit.tolerance_us().to_string(),
        ];
        let reply = self
            .inner
            .main
            .eval(
                &RATE_LIMIT_SCRIPT,
                &[key],
                &args,
                COMMAND_TIMEOUT,
                Retry::Never,
            )
            .await?;
        self.rate_decision(reply)
    }

    pub async fn rate_limit_prioritized(
        &self,
        key: &str,
        limit: &RateLimit,
        priority: Priority,
    ) -> Result<RateDecision, CoordinationError> {
        let mut keys = vec![key.to_owned()];
        keys.extend(Priority::ALL.iter().map(|p| waiting_mark_key(key, *p)));
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let args = [
            limit.interval_us().to_string(),
            limit.tolerance_us().to_string(),
            priority.index().to_string(),
            WAITING_GRACE.as_millis().to_string(),
        ];
        let reply = self
            .inner
            .main
            .eval(
                &RATE_LIMIT_SCRIPT,
                &keys,
                &args,
                COMMAND_TIMEOUT,
                Retry::Never,
            )
            .await?;
        self.rate_decision(reply)
    }

    fn rate_decision(
        &self,
        (allowed, figure, now): (i64, String, String),
    ) -> Result<RateDecision, CoordinationError> {
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| CoordinationError::UnexpectedReply {
                    server: self.inner.main.name().to_owned(),
                    detail: format!("rate limiter returned {s:?}"),
                })
        };
        let figure = parse(&figure)?;
        let at_us = parse(&now)?;
        Ok(if allowed == 1 {
            RateDecision {
                allowed: true,
                retry_after: Duration::ZERO,
                remaining: figure as u32,
                at_us,
            }
        } else {
            RateDecision {
                allowed: false,
                retry_after: Duration::from_micros(figure),
                remaining: 0,
                at_us,
            }
        })
    }

    pub async fn publish(&self, event: &BusEvent) -> Result<Published, CoordinationError> {
        let dedupe_key = event_dedupe_key(&event.event_id);
        let args = [
            EVENT_DEDUPE_TTL.as_secs().to_string(),
            STREAM_MAXLEN.to_string(),
            event.event_id.clone(),
            event.streamer_id.clone(),
            event.kind.clone(),
            event.data.clone(),
            BROADCAST_CHANNEL.to_owned(),
            event.envelope.clone(),
        ];
        let reply: Option<String> = self
            .inner
            .main
            .eval(
                &PUBLISH_SCRIPT,
                &[&dedupe_key, EVENT_STREAM],
                &args,
                COMMAND_TIMEOUT,
                // Safe to repeat: the dedupe marker makes a second run a no-op.
                Retry::Once,
            )
            .await?;
        Ok(match reply {
            Some(_) => Published::Appended,
            None => Published::Duplicate,
        })
    }

    pub async fn heartbeat(&self, instance_id: &str) -> Result<u64, CoordinationError> {
        let args = [
            instance_id.to_owned(),
            HEARTBEAT_WINDOW.as_millis().to_string(),
        ];
        self.inner
            .main
            .eval(
                &HEARTBEAT_SCRIPT,
                &[INSTANCES_KEY],
                &args,
                COMMAND_TIMEOUT,
                Retry::Once,
            )
            .await
    }

    pub(crate) async fn report_figures(
        &self,
        reports: Reports,
        instance_id: &str,
        figures: &str,
    ) -> Result<(), CoordinationError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(reports.key()).arg(instance_id).arg(figures);
        let _: i64 = self
            .inner
            .main
            .query(&cmd, COMMAND_TIMEOUT, Retry::Once)
            .await?;
        Ok(())
    }

    pub(crate) async fn figures(
        &self,
        reports: Reports,
    ) -> Result<Vec<(String, String)>, CoordinationError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(reports.key());
        self.inner
            .main
            .query(&cmd, COMMAND_TIMEOUT, Retry::Once)
            .await
    }

    pub(crate) async fn forget_figures(
        &self,
        reports: Reports,
        instance_ids: &[String],
    ) -> Result<(), CoordinationError> {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(reports.key()).arg(instance_ids);
        let _: i64 = self
            .inner
            .main
            .query(&cmd, COMMAND_TIMEOUT, Retry::Once)
            .await?;
        Ok(())
    }

    /// Advertises live subscriptions: each streamer's key holds when it was subscribed (Unix
    /// ms) and lapses after `ttl` unless advertised again.
    pub(crate) async fn advertise_subscriptions(
        &self,
        subscribed: &[(String, i64)],
        ttl: Duration,
    ) -> Result<(), CoordinationError> {
        if subscribed.is_empty() {
            return Ok(());
        }
        for chunk in subscribed.chunks(500) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|(streamer, _)| super::subscription_key(streamer))
                .collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let mut args = vec![(ttl.as_millis() as u64).to_string()];
            args.extend(chunk.iter().map(|(_, since)| since.to_string()));
            let _: i64 = self
                .inner
                .main
                .eval(
                    &ADVERTISE_SCRIPT,
                    &keys,
                    &args,
                    COMMAND_TIMEOUT,
                    Retry::Once,
                )
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn withdraw_subscriptions(
        &self,
        streamers: &[String],
    ) -> Result<(), CoordinationError> {
        if streamers.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for streamer in streamers {
            cmd.arg(super::subscription_key(streamer));
        }
        let _: i64 = self
            .inner
            .main
            .query(&cmd, COMMAND_TIMEOUT, Retry::Once)
            .await?;
        Ok(())
    }

    pub(crate) async fn subscriptions(
        &self,
        streamers: &[String],
    ) -> Result<Vec<Option<i64>>, CoordinationError> {
        let mut found = Vec::with_capacity(streamers.len());
        for chunk in streamers.chunks(1000) {
            let mut cmd = redis::cmd("MGET");
            for streamer in chunk {
                cmd.arg(super::subscription_key(streamer));
            }
            let values: Vec<Option<i64>> = self
                .inner
                .main
                .query(&cmd, COMMAND_TIMEOUT, Retry::Once)
                .await?;
            found.extend(values);
        }
        Ok(found)
    }

    pub async fn ping(&self) -> Result<Duration, CoordinationError> {
        let start = Instant::now();
        let reply: String = self
            .inner
            .main
            .query(&redis::cmd("PING"), COMMAND_TIMEOUT, Retry::Never)
            .await?;
        if reply != "PONG" {
            return Err(CoordinationError::UnexpectedReply {
                server: self.inner.main.name().to_owned(),
                detail: format!("PING answered {reply:?}"),
            });
        }
        Ok(start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_commands_get_a_small_share_of_the_ttl() {
        assert_eq!(
            lock_command_timeout(Duration::from_millis(4500)),
            Duration::from_millis(450)
        );
        assert_eq!(
            lock_command_timeout(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(
            lock_command_timeout(Duration::from_secs(60)),
            COMMAND_TIMEOUT
        );
    }

    #[test]
    fn scripts_are_addressed_by_their_sha1() {
        let script = LuaScript::new(RELEASE);
        assert_eq!(script.sha.len(), 40);
        let packed = script
            .command(true, &["locks:x"], &["v".into()])
            .get_packed_command();
        assert!(String::from_utf8_lossy(&packed).contains("EVALSHA"));
    }
}
