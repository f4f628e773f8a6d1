//! How `qmoe` ends: its exit statuses, errors as one line each, a reader that went away, and
//! panics turned into one line that asks for a bug report.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done (for `bisect`: every stage of every layer matched) |
//! | 1 | `bisect` found a divergence, a NaN or an expert-choice difference |
//! | 2 | an error, usage errors included: one line on stderr naming the file, tensor or flag |
//! | 101 | a bug (a panic): one line on stderr, a backtrace only with `RUST_BACKTRACE` set |
//! | 141 | stdout was closed early (`qmoe inspect f --json \| head`): nothing printed |
//!
//! 141 is what a shell reports for a process ended by SIGPIPE (128 + 13), the status of `cat` or
//! `grep` in the same spot. qmoe returns it as a plain exit status instead of dying of the signal,
//! so it behaves the same on every platform and never prints a half-finished error.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

/// Status for an error the user can act on.
pub const ERROR: u8 = 2;
/// Status for a panic: a bug in qmoe.
pub const BUG: u8 = 101;
/// Status when the reader of stdout went away (128 + SIGPIPE).
pub const CLOSED_STDOUT: u8 = 141;

/// Replaces the default panic message and backtrace with one line that asks for a report, and
/// exits with [`BUG`]. With `RUST_BACKTRACE` set (and not `0`) the default report comes first.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        }
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // A failed write to stderr cannot be reported anywhere; a panic inside the hook would
        // abort, so the result is dropped.
        let _ = writeln!(
            std::io::stderr(),
            "qmoe: internal error (a bug): {}{at}; please report it",
            one_line(&what)
        );
        std::process::exit(BUG.into());
    }));
}

/// Prints `error` as one line (unless stdout was closed, which ends quietly) and returns the
/// status to exit with.
pub fn report(error: &anyhow::Error) -> ExitCode {
    if is_closed_stdout(error) {
        return ExitCode::from(CLOSED_STDOUT);
    }
    eprintln!("qmoe: {}", message(error));
    ExitCode::from(ERROR)
}

/// Ends a command-line parse that clap refused or answered itself: help and version go to stdout
/// with status 0; a usage error becomes one line with status [`ERROR`]; a bare `qmoe` prints the
/// help on stderr with status [`ERROR`], as clap does.
pub fn clap_exit(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    if !e.use_stderr() || e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
        let status = if e.use_stderr() { ERROR } else { 0 };
        return match e.print() {
            Err(io) if io.kind() == ErrorKind::BrokenPipe => ExitCode::from(CLOSED_STDOUT),
            _ => ExitCode::from(status),
        };
    }
    eprintln!("qmoe: {}", clap_line(&e.render().to_string()));
    ExitCode::from(ERROR)
}

/// An error chain as one line. Each cause is kept once: a message already contained in a kept
/// one, or in a later cause, is dropped (an `Io { path, source }` error shows its OS error in its
/// own text and again as its source; a file name added as context is often in the cause too).
pub fn message(error: &anyhow::Error) -> String {
    let msgs: Vec<String> = error.chain().map(|c| one_line(&c.to_string())).collect();
    let mut kept: Vec<&str> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let repeated_later = msgs[i + 1..].iter().any(|later| later.contains(m.as_str()));
        let said_already = kept.iter().any(|k| k.contains(m.as_str()));
        if !repeated_later && !said_already {
            kept.push(m);
        }
    }
    kept.join(": ")
}

/// clap's multi-line usage error as one line: the message, its tips, and the usage.
pub fn clap_line(rendered: &str) -> String {
    let mut text: Vec<&str> = Vec::new();
    let mut tips: Vec<&str> = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("For more information") {
            continue;
        }
        if let Some(u) = line.strip_prefix("Usage:") {
            usage = Some(u.trim());
        } else if line.starts_with("tip:") {
            tips.push(line);
        } else {
            text.push(line.strip_prefix("error:").map_or(line, str::trim));
        }
    }
    let mut out = text.join(" ");
    for tip in tips {
        out.push_str("; ");
        out.push_str(tip);
    }
    if let Some(u) = usage {
        out.push_str("; usage: ");
        out.push_str(u);
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether the error is a write to stdout that failed because its reader went away.
fn is_closed_stdout(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(ErrorKind::BrokenPipe))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_os_error_is_said_once() {
        let io = std::io::Error::from(ErrorKind::NotFound);
        let text = io.to_string();
        // The shape of qmoe_gguf's Io error: its text ends with its source's.
        #[derive(Debug)]
        struct PathErr(std::io::Error);
        impl std::fmt::Display for PathErr {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "/x.gguf: {}", self.0)
            }
        }
        impl std::error::Error for PathErr {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(PathErr(io)).context("/x.gguf");
        assert_eq!(message(&e), format!("/x.gguf: {text}"));
    }

    #[test]
    fn distinct_causes_are_all_kept_in_order() {
        let e = anyhow::anyhow!("tensor blk.0.ffn_up_exps.weight: not in the file")
            .context("model.gguf");
        assert_eq!(
            message(&e),
            "model.gguf: tensor blk.0.ffn_up_exps.weight: not in the file"
        );
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("a\n  b"));
        assert_eq!(message(&e.context("c").unwrap_err()), "c: a b");
    }

    #[test]
    fn a_broken_pipe_is_recognised_through_context_and_serde() {
        let io = || std::io::Error::from(ErrorKind::BrokenPipe);
        assert!(is_closed_stdout(
            &anyhow::Error::new(io()).context("stdout")
        ));
        let json = serde_json::Error::io(io());
        assert!(is_closed_stdout(&anyhow::Error::new(json)));
        let other = anyhow::Error::new(std::io::Error::from(ErrorKind::StorageFull));
        assert!(!is_closed_stdout(&other));
    }

    #[test]
    fn clap_errors_fold_into_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  --out <OUT>\n\nUsage: qmoe dequant --out <OUT> <FILE> <TENSOR>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_line(rendered),
            "the following required arguments were not provided: --out <OUT>; usage: qmoe dequant --out <OUT> <FILE> <TENSOR>"
        );
        let rendered = "error: unexpected argument '--jsn' found\n\n  tip: a similar argument exists: '--json'\n\nUsage: qmoe inspect --json <FILE>\n";
        assert_eq!(
            clap_line(rendered),
            "unexpected argument '--jsn' found; tip: a similar argument exists: '--json'; usage: qmoe inspect --json <FILE>"
        );
    }
}
