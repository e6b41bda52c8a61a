//! The `sagellm-benchmark` binary of this build, run as a user runs it.

use std::process::{Command, Output};

/// A command for the binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
}

/// Runs the binary with `args`; panics with its stderr unless it succeeds.
pub fn run_ok(args: &[&str]) -> Output {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
