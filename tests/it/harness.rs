//! The harness's own waits: each gives up at its deadline, also while what it waits on keeps
//! producing something else (a child printing lines that never match, a check that never
//! answers), so a broken test fails instead of hanging.

use std::process::Command;
use std::time::Duration;

use avatar_tests::{ChildProcess, output_within, wait_until};

/// How long a wait under test may run before this test calls it hung: far beyond the
/// deadline the wait is given.
const HUNG: Duration = Duration::from_secs(30);

/// A child that prints a million lines at once, then one a second, forever; none says
/// "done". The flood keeps lines queued faster than a reader that scans every line so far
/// (as the store tests' checks do) can take them.
fn endless_printer() -> ChildProcess {
    ChildProcess::spawn(
        Command::new("sh").args(["-c", "seq 1 1000000; while :; do echo 0; sleep 1; done"]),
    )
}

fn says_done(lines: &[String]) -> bool {
    lines.iter().any(|line| line == "done")
}

/// Runs `wait` on a thread of its own and returns its panic message (`None` when it
/// returned); panics when it did neither within [`HUNG`].
fn outcome_of(wait: impl FnOnce() + Send + 'static) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(wait));
        let _ = tx.send(outcome.err().map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        }));
    });
    rx.recv_timeout(HUNG)
        .unwrap_or_else(|_| panic!("the wait did not give up within {HUNG:?}"))
}

#[test]
fn read_until_fails_at_its_deadline_while_the_child_keeps_printing_other_lines() {
    // Arrange
    let child = endless_printer();

    // Act
    let failure = outcome_of(move || {
        let mut lines = Vec::new();
        child.read_until(
            &mut lines,
            "a line saying done",
            Duration::from_secs(1),
            says_done,
        );
    });

    // Assert
    let message = failure.expect("read_until returned without the line it waited for");
    assert!(
        message.contains("timed out after 1s waiting for a line saying done"),
        "{message}"
    );
}

#[test]
fn remaining_lines_stops_at_its_deadline_while_the_child_keeps_printing() {
    // Arrange
    let child = endless_printer();

    // Act
    let failure = outcome_of(move || {
        let lines = child.remaining_lines(Duration::from_secs(1));
        assert!(!lines.is_empty());
    });

    // Assert: it returned what it read by then.
    assert_eq!(failure, None);
}

#[test]
fn a_command_that_does_not_finish_is_killed_at_its_deadline() {
    let failure = outcome_of(|| {
        output_within(Command::new("sleep").arg("600"), Duration::from_secs(1));
    });

    let message = failure.expect("output_within returned for a command still running");
    assert!(message.contains("did not finish within 1s"), "{message}");
}

#[tokio::test]
async fn wait_until_fails_at_its_deadline_while_a_check_hangs() {
    let waiting = tokio::spawn(wait_until(
        "a check that never answers",
        Duration::from_secs(1),
        std::future::pending::<bool>,
    ));

    let outcome = tokio::time::timeout(HUNG, waiting)
        .await
        .unwrap_or_else(|_| panic!("wait_until did not give up within {HUNG:?}"));

    let panic = outcome.expect_err("wait_until returned for a check that never answered");
    let payload = panic.into_panic();
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("timed out after 1s waiting for a check that never answers"),
        "{message}"
    );
}
