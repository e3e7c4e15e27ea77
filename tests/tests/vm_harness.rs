//! The VM harness reports guests that fail: one that hangs is killed at the timeout, one whose
//! script stops early is not mistaken for a pass.

use std::time::Duration;

use tests::vm::VmRun;

/// A guest that never finishes is killed at the timeout and reported as failed, and a script
/// that stops early (here with `exit 3`) is not mistaken for a pass.
#[test]
fn hung_or_failed_guests_are_reported() {
    let Some(hung) = VmRun::new("smoke-hung")
        .script("pass started\nsleep 1000\n")
        .timeout(Duration::from_secs(3))
        .run()
    else {
        return;
    };
    assert!(hung.timed_out && !hung.ok(), "{}", hung.report());
    assert_eq!(hung.passed, ["started"], "{}", hung.report());

    let Some(early) = VmRun::new("smoke-exit")
        .script("pass first\nexit 3\npass never\n")
        .run()
    else {
        return;
    };
    assert_eq!(early.script_rc, Some(3), "{}", early.report());
    assert!(!early.ok());
    assert_eq!(early.passed, ["first"]);
}
