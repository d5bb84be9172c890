//! One integration test binary (each module is a surface of the system).

mod bus;
mod limiter;
mod locks;
mod store;
