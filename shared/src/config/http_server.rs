//! The local server's connection limits (`HTTP_*`).

use std::time::Duration;

use super::Reader;

/// Limits of the local server's connections. Lambdas sit behind API Gateway, which
/// enforces its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpServerConfig {
    /// Longest a client may take to send a request's headers (`HTTP_HEADER_TIMEOUT_MS`).
    pub header_timeout: Duration,
    /// Longest a keep-alive connection may sit between requests (`HTTP_IDLE_TIMEOUT_MS`).
    pub idle_timeout: Duration,
    /// Longest a client may take to send a request body (`HTTP_BODY_TIMEOUT_MS`).
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog
    /// (`HTTP_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Connections served at once for one client address (an IPv6 client: its /64); one
    /// more from that address is closed at once (`HTTP_MAX_CONNECTIONS_PER_IP`).
    pub max_connections_per_ip: usize,
}

impl Reader<'_> {
    pub(super) fn http_server(&mut self) -> HttpServerConfig {
        let mut millis = |name, default| self.millis(name, default, 100, 3_600_000);
        HttpServerConfig {
            header_timeout: millis("HTTP_HEADER_TIMEOUT_MS", 10_000),
            idle_timeout: millis("HTTP_IDLE_TIMEOUT_MS", 60_000),
            body_timeout: millis("HTTP_BODY_TIMEOUT_MS", 30_000),
            max_connections: self.number("HTTP_MAX_CONNECTIONS", 4096, 1, 1_000_000) as usize,
            max_connections_per_ip: self.number("HTTP_MAX_CONNECTIONS_PER_IP", 256, 1, 1_000_000)
                as usize,
        }
    }
}
