//! What every command shares: the top-level help, the exit-status convention, and what a user
//! sees when qmoe has a bug.

use crate::support::{assert_quiet_close, closed_reader, fails, ok, qmoe};

#[test]
fn help_teaches_with_examples_and_lists_every_command() {
    let h = ok(&["--help"]);
    assert!(
        h.contains("Examples:") && h.contains("qmoe gen-model --preset tiny"),
        "{h}"
    );
    for sub in ["bisect", "inspect", "dequant", "gen-model", "env"] {
        assert!(h.contains(sub), "{sub} missing from --help");
        ok(&[sub, "--help"]);
    }
    assert!(
        h.contains("141") && h.contains("101"),
        "the exit statuses are documented: {h}"
    );
}

#[test]
fn unknown_commands_and_flags_are_one_line_usage_errors() {
    fails(&["frobnicate"], &["frobnicate"]);
    fails(&["--verbose"], &["--verbose"]);
    // A bare `qmoe` shows the help on stderr, as clap does, and exits 2.
    let out = qmoe().assert().code(2).get_output().clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage:"));
}

#[test]
fn help_into_a_closed_pipe_is_quiet() {
    assert_quiet_close(&closed_reader(&["--help"]), false);
}

/// `qmoe env --quick` made to panic (exit 101), with `RUST_BACKTRACE=1` when asked.
fn panicking_run(backtrace: bool) -> std::process::Output {
    let mut cmd = qmoe();
    cmd.env("QMOE_PANIC_FOR_TEST", "1").args(["env", "--quick"]);
    if backtrace {
        cmd.env("RUST_BACKTRACE", "1");
    }
    cmd.assert().code(101).get_output().clone()
}

#[test]
fn a_panic_is_one_line_that_asks_for_a_report() {
    let out = panicking_run(false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("qmoe: internal error (a bug): QMOE_PANIC_FOR_TEST is set at "),
        "{err}"
    );
    assert!(err.trim_end().ends_with("please report it"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn rust_backtrace_brings_the_default_report_back() {
    let out = panicking_run(true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("panicked") && err.contains("qmoe: internal error (a bug)"),
        "{err}"
    );
}
