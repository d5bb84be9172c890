//! One integration test binary (each module is a surface of the system).

mod bus;
mod health;
mod interop;
mod limiter;
mod locks;
mod login;
mod routes;
mod secrets;
mod store;
