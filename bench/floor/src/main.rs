//! The smallest `lambda_http` function: answers 200 to every request. Built like the real
//! functions (same profile, same runtime crates) so the cold-start and size benchmarks have
//! a floor to compare them with.

use lambda_http::{Body, Error, Request, Response, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|_request: Request| async {
        Ok::<_, Error>(Response::new(Body::from("ok")))
    }))
    .await
}
