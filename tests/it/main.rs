//! One integration test binary (each module is a surface of the system).

mod browser;
mod bus;
mod callback_fuzz;
mod edge;
mod health;
mod interop;
mod limiter;
mod locks;
mod login;
mod routes;
mod secrets;
mod store;
