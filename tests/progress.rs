//! The progress bars appear on a terminal and nowhere else. A pseudo-terminal comes from
//! util-linux's `script`; where it is missing, the terminal case is skipped with a note.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sagellm-benchmark");

fn have_script() -> bool {
    Command::new("script")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs the CLI with stdout and stderr on a pseudo-terminal; returns what the terminal showed.
fn on_a_terminal(args: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", &format!("{BIN} {args}"), "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bars_are_drawn_on_a_terminal_and_not_with_quiet() {
    if !have_script() {
        eprintln!("skipped: `script` (util-linux) is not installed, so no pseudo-terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shown = on_a_terminal(&format!("run --workload short -o {}", dir.path().display()));
    assert!(shown.contains("short_input"), "{shown}");
    assert!(shown.contains("5/5 requests"), "no finished bar: {shown}");
    assert!(shown.contains("tokens/s"), "{shown}");

    let quiet = on_a_terminal(&format!(
        "run --workload short -q -o {}",
        dir.path().display()
    ));
    assert!(!quiet.contains("requests"), "--quiet drew a bar: {quiet}");
}

#[test]
fn nothing_is_drawn_when_output_is_piped() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "--workload", "short", "-o"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "stderr is not a terminal, yet: {stderr}");
    // The results still go to stdout.
    assert!(String::from_utf8_lossy(&out.stdout).contains("Benchmark results"));
    assert!(dir.path().join("index.html").is_file());
}
