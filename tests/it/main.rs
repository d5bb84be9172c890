//! One integration test binary (each module is a surface of the system).

mod browser;
mod bus;
mod callback_fuzz;
mod chat_token;
mod connect;
mod deployment;
mod donations;
mod edge;
mod harness;
mod health;
mod hostile_provider;
mod interop;
mod lambda_binaries;
mod limiter;
mod locks;
mod login;
mod login_state;
mod metrics;
mod poller;
mod pollers;
mod routes;
mod secrets;
mod store;
mod template;
mod tokens;
mod validation;
