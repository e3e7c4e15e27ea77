//! The VM harness reports guests that fail: one that hangs is killed at the timeout, one that
//! never reaches its script is told apart from one that hangs, and one whose script stops early
//! is not mistaken for a pass.

use std::time::Duration;

use tests::vm::VmRun;

/// A guest that never finishes is killed at the script timeout and reported as hung (it did
/// boot), and a script that stops early (here with `exit 3`) is not mistaken for a pass.
///
/// The script timeout counts from the guest's first line, so a slow boot on a loaded machine
/// cannot turn the hung guest into one that "never booted"; the boot has its own, ample
/// deadline.
#[test]
fn hung_or_failed_guests_are_reported() {
    let Some(hung) = VmRun::new("smoke-hung")
        .script("pass started\nsleep 1000\n")
        .timeout(Duration::from_secs(15))
        .run()
    else {
        return;
    };
    assert!(hung.timed_out && !hung.ok(), "{}", hung.report());
    assert!(hung.booted(), "{}", hung.report());
    assert!(hung.verdict().starts_with("hung"), "{}", hung.report());
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
    assert!(early.verdict().contains("error"), "{}", early.report());
}

/// A guest killed before its script starts (here a boot deadline no kernel can meet) is
/// reported as "never booted", not as hung.
#[test]
fn a_guest_that_never_boots_is_told_from_a_hung_one() {
    let Some(run) = VmRun::new("smoke-noboot")
        .script("pass started\n")
        .boot_timeout(Duration::from_millis(1))
        .run()
    else {
        return;
    };
    assert!(run.timed_out && !run.ok(), "{}", run.report());
    assert!(!run.booted() && run.passed.is_empty(), "{}", run.report());
    assert!(
        run.verdict().starts_with("never booted"),
        "{}",
        run.report()
    );
}
