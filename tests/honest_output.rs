//! What a new user reads first, held to the truth: `--help`'s sections, the mock's simulated
//! time, the table in a pseudo-terminal nobody sized, plain-text logs, `report --input DIR`,
//! the workloads `--baseline` leaves out, and the links of a generated REPORT.md.

use std::path::Path;
use std::process::{Command, Output, Stdio};

#[path = "common/binary.rs"]
mod binary;

use binary::{bin, run_ok};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mock_run(dir: &Path, workload: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--workload",
        workload,
        "--backend",
        "mock",
        "-q",
        "-o",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_ok(&args)
}

/// `--help` as (heading, flags under it), in order; the flags are the long names.
fn sections(help: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') && !line.is_empty() {
            out.push((line.trim_end_matches(':').to_string(), Vec::new()));
        } else {
            // An option line starts with the flag (`-o, --output <DIR>`), indented 2 or 6;
            // its help is indented further.
            let lead = line.trim_start();
            let option = line.len() - lead.len() <= 6
                && (lead.starts_with("--")
                    || (lead.starts_with('-') && lead.chars().nth(2) == Some(',')));
            let flag = lead
                .split_whitespace()
                .find_map(|w| w.trim_end_matches(',').strip_prefix("--"));
            if let (true, Some(flag), Some(last)) = (option, flag, out.last_mut()) {
                last.1.push(flag.to_string());
            }
        }
    }
    out
}

fn heading_of<'a>(sections: &'a [(String, Vec<String>)], flag: &str) -> &'a str {
    let found: Vec<&str> = sections
        .iter()
        .filter(|(_, flags)| flags.iter().any(|f| f == flag))
        .map(|(h, _)| h.as_str())
        .collect();
    assert_eq!(found.len(), 1, "--{flag} under {found:?}");
    found[0]
}

#[test]
fn run_help_puts_every_flag_under_a_heading_that_fits() {
    let help = text(&run_ok(&["run", "--help"]).stdout);
    let s = sections(&help);
    // Written from what each flag is for, not read back from the code.
    for (flag, heading) in [
        ("workload", "Run"),
        ("config", "Run"),
        ("grace-period", "Run"),
        ("backend", "Backend"),
        ("model", "Backend"),
        ("dtype", "CPU backend"),
        ("threads", "CPU backend"),
        ("output", "Output"),
        ("verbose", "Output"),
        ("quiet", "Output"),
        ("num-runs", "Repeated runs"),
        (
            "shard",
            "Shards: one run from several client processes (docs/SHARDS.md)",
        ),
    ] {
        assert_eq!(heading_of(&s, flag), heading, "--{flag}\n{help}");
    }
    let server = "Server backends (openai, vllm, sglang, lmdeploy, llamacpp)";
    for flag in [
        "base-url",
        "api",
        "request-timeout",
        "metrics-url",
        "tokenizer",
    ] {
        assert_eq!(heading_of(&s, flag), server, "--{flag}");
    }
    // Nothing but the server flags under the server heading.
    let under_server = &s.iter().find(|(h, _)| h == server).unwrap().1;
    for flag in ["output", "config", "verbose", "quiet", "dtype", "threads"] {
        assert!(!under_server.iter().any(|f| f == flag), "--{flag}");
    }
}

#[test]
fn search_compare_and_report_help_keep_their_own_flags_out_of_the_server_heading() {
    let server = "Server backends (openai, vllm, sglang, lmdeploy, llamacpp)";
    for (command, flags) in [
        (
            "search",
            &["output", "config", "verbose", "quiet", "grace-period"][..],
        ),
        (
            "compare",
            &[
                "target", "result", "output", "config", "goodput", "verbose", "quiet",
            ][..],
        ),
    ] {
        let s = sections(&text(&run_ok(&[command, "--help"]).stdout));
        for flag in flags {
            assert_ne!(heading_of(&s, flag), server, "{command} --{flag}");
        }
    }
    let s = sections(&text(&run_ok(&["report", "--help"]).stdout));
    assert_eq!(heading_of(&s, "input"), "Input");
    assert_eq!(heading_of(&s, "format"), "Output");
    for flag in ["baseline", "fail-on-regression", "noise-threshold"] {
        assert_eq!(heading_of(&s, flag), "Baseline (report --baseline)");
    }
}

#[test]
fn compare_help_offers_only_the_backends_compare_accepts() {
    let help = text(&run_ok(&["compare", "--help"]).stdout);
    let backend = help.split("--backend <BACKEND>").nth(1).unwrap();
    let values = backend.split("[default:").next().unwrap();
    for offered in [
        "- openai:",
        "- vllm:",
        "- sglang:",
        "- lmdeploy:",
        "- llamacpp:",
    ] {
        assert!(values.contains(offered), "{offered} missing:\n{values}");
    }
    assert!(
        !values.contains("- mock:") && !values.contains("- cpu:"),
        "{values}"
    );
    let refused = bin()
        .args([
            "compare",
            "--backend",
            "cpu",
            "--result",
            "a=x",
            "--result",
            "b=y",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("invalid value 'cpu' for '--backend"));
}

#[test]
fn the_mock_says_its_times_are_simulated_in_json_table_markdown_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let out = mock_run(dir.path(), "short", &[]);
    assert!(text(&out.stdout).is_empty(), "-q prints nothing");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("benchmark_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        summary["workloads"]["short_input"]["sources"]["latency"],
        "simulated"
    );
    let input = dir.path().to_str().unwrap();
    let table = text(&run_ok(&["report", "--input", input]).stdout);
    let wall = table.lines().find(|l| l.contains("Wall time")).unwrap();
    assert!(wall.contains("(simulated)"), "{wall}");
    assert!(
        table.contains("latency and wall time: simulated"),
        "{table}"
    );
    assert!(!table.contains("latency: measured"), "{table}");
    let markdown = text(&run_ok(&["report", "--input", input, "--format", "markdown"]).stdout);
    assert!(markdown.contains("(simulated) |"), "{markdown}");
    assert!(markdown.contains("latency and wall time: simulated"));
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(html.contains("(simulated)") && html.contains("latency and wall time: simulated"));
}

#[test]
fn a_measured_run_still_says_measured() {
    // The test server answers over real HTTP, on the machine's clock.
    let server =
        sagellm_test_server::TestServer::start(sagellm_test_server::Script::paced(2, 1), 1)
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    run_ok(&[
        "run",
        "--workload",
        "short",
        "--backend",
        "openai",
        "--base-url",
        &server.url(),
        "--model",
        "m",
        "--num-requests",
        "2",
        "-q",
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    let table = text(&run_ok(&["report", "--input", dir.path().to_str().unwrap()]).stdout);
    assert!(table.contains("latency: measured"), "{table}");
    let wall = table.lines().find(|l| l.contains("Wall time")).unwrap();
    assert!(!wall.contains("simulated"), "{wall}");
}

/// `script` gives the binary a real pseudo-terminal; `stty cols N` sizes it as a container
/// runtime that never sets the size leaves it (0), or absurdly narrow.
#[test]
fn a_zero_width_pseudo_terminal_gets_a_table_of_normal_height() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("this test needs util-linux's `script` to open a pseudo-terminal");
    }
    let dir = tempfile::tempdir().unwrap();
    mock_run(dir.path(), "year1", &[]);
    let piped = run_ok(&["report", "--input", dir.path().to_str().unwrap()]);
    let piped_lines = text(&piped.stdout).lines().count();
    for cols in [0, 3, 20] {
        let shell = format!(
            "stty cols {cols} rows 0; '{}' report --input '{}'",
            env!("CARGO_BIN_EXE_sagellm-benchmark"),
            dir.path().display()
        );
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &shell, "/dev/null"])
            .env_remove("COLUMNS")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let shown = text(&out.stdout);
        let lines = shown.lines().count();
        // At 80 columns the cells wrap a little; squeezed into `cols` they broke every word
        // onto its own line (284 lines at 20 columns, 439 at 3).
        assert!(
            lines < piped_lines * 2,
            "{lines} lines at {cols} columns against {piped_lines} piped:\n{shown}"
        );
        // The table's own lines (the notes under it are prose, as wide as they are).
        let widest = shown
            .lines()
            .filter(|l| l.starts_with(['│', '┌', '└', '╞', '├']))
            .map(|l| l.trim_end().chars().count())
            .max()
            .unwrap();
        assert!((60..=80).contains(&widest), "{widest} columns wide");
    }
}

#[test]
fn verbose_logs_redirected_to_a_file_hold_no_colour_codes_and_no_debug_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "run",
            "--workload",
            "short",
            "--backend",
            "mock",
            "-v",
            "-q",
            "-o",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = text(&out.stderr);
    assert!(log.contains("DEBUG"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a redirected log:\n{log}"
    );
    assert!(!log.contains("Some("), "Debug Options in the log:\n{log}");
    // The mock's first request: TTFT 13.12 ms, written as a number.
    assert!(log.contains("ttft_ms=13.12"), "{log}");
}

#[test]
fn no_color_turns_colour_off_on_a_terminal_too() {
    let dir = tempfile::tempdir().unwrap();
    let shell = |no_color: &str| {
        format!(
            "{no_color} '{}' run --workload short --backend mock -v -q -o '{}' 2>&1",
            env!("CARGO_BIN_EXE_sagellm-benchmark"),
            dir.path().display()
        )
    };
    let on_terminal = |cmd: String| {
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    // On a terminal, colour: the control that shows the check below can fail.
    assert!(on_terminal(shell("")).contains('\u{1b}'));
    let plain = on_terminal(shell("NO_COLOR=1"));
    assert!(
        plain.contains("DEBUG") && !plain.contains('\u{1b}'),
        "{plain}"
    );
}

#[test]
fn report_input_takes_a_run_folder_and_says_what_a_bare_folder_lacks() {
    let dir = tempfile::tempdir().unwrap();
    mock_run(dir.path(), "short", &[]);
    let from_folder = run_ok(&["report", "--input", dir.path().to_str().unwrap()]);
    let file = dir.path().join("benchmark_summary.json");
    let from_file = run_ok(&["report", "--input", file.to_str().unwrap()]);
    assert_eq!(from_folder.stdout, from_file.stdout);
    let empty = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["report", "--input"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = text(&out.stderr);
    assert!(
        message.contains(&format!(
            "{} is a folder without benchmark_summary.json",
            empty.path().display()
        )),
        "{message}"
    );
}

#[test]
fn report_baseline_names_the_workloads_it_could_not_compare() {
    let new = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    mock_run(new.path(), "short,long", &[]);
    mock_run(old.path(), "short,stress", &[]);
    let out = run_ok(&[
        "report",
        "--input",
        new.path().to_str().unwrap(),
        "--baseline",
        old.path().to_str().unwrap(),
    ]);
    let notes = text(&out.stderr);
    assert!(
        notes.contains("has no workload long_input") && notes.contains("not compared"),
        "{notes}"
    );
    assert!(
        notes.contains("has no workload stress_test of the baseline"),
        "{notes}"
    );
    assert!(text(&out.stdout).contains("short_input"));
}

/// Every `](target)` link of a markdown file, resolved from the file's folder.
fn broken_links(markdown_file: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(markdown_file).unwrap();
    let dir = markdown_file.parent().unwrap();
    let links: Vec<String> = text
        .split("](")
        .skip(1)
        .map(|rest| rest.split(')').next().unwrap().replace("%20", " "))
        .collect();
    let broken = links
        .iter()
        .filter(|l| !dir.join(l).is_file())
        .cloned()
        .collect();
    (links.len(), broken)
}

#[test]
fn every_chart_link_of_a_generated_report_resolves_from_where_it_is_written() {
    let root = tempfile::tempdir().unwrap();
    let results = root.path().join("results");
    mock_run(&results, "short", &[]);
    let summary = results.join("benchmark_summary.json");
    // REPORT.md beside the results, in a sibling folder, and in the results folder itself,
    // each written from a working directory elsewhere (the issue's broken sample output).
    let elsewhere = root.path().join("cwd");
    let sibling = root.path().join("reports/ci");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(&sibling).unwrap();
    for target in [
        root.path().join("REPORT.md"),
        sibling.join("REPORT.md"),
        results.join("REPORT.md"),
    ] {
        let file = std::fs::File::create(&target).unwrap();
        let status = bin()
            .current_dir(&elsewhere)
            .args(["report", "--format", "markdown", "--input"])
            .arg(&summary)
            .stdout(file)
            .status()
            .unwrap();
        assert!(status.success());
        let (links, broken) = broken_links(&target);
        // The short workload's five charts and the run's two.
        assert_eq!(links, 7, "{}", target.display());
        assert!(broken.is_empty(), "{}: {broken:?}", target.display());
    }
    // Through a pipe there is no file to be relative to: the links are the results folder's
    // own, right for a REPORT.md kept with its results.
    let piped = run_ok(&[
        "report",
        "--format",
        "markdown",
        "--input",
        summary.to_str().unwrap(),
    ]);
    std::fs::write(results.join("PIPED.md"), &piped.stdout).unwrap();
    let (links, broken) = broken_links(&results.join("PIPED.md"));
    assert_eq!((links, broken.len()), (7, 0), "{broken:?}");
}

#[test]
fn the_committed_sample_reports_links_resolve() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample_output/REPORT.md");
    let (links, broken) = broken_links(&sample);
    assert!(links >= 17, "{links} links");
    assert!(broken.is_empty(), "{broken:?}");
}

#[test]
fn a_sweep_run_writes_its_latency_against_throughput_chart_into_the_report() {
    for sweep in [
        &["--concurrency", "1,2,4,8"][..],
        &["--request-rate", "1,2,4,8", "--arrival", "constant"][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut extra = sweep.to_vec();
        extra.extend(["--num-requests", "16"]);
        mock_run(dir.path(), "short", &extra);
        let chart = std::fs::read_to_string(dir.path().join("run_sweep_latency.svg")).unwrap();
        let letter = if sweep[0] == "--concurrency" {
            "c"
        } else {
            "r"
        };
        for load in ["1", "2", "4", "8"] {
            assert!(
                chart.contains(&format!("\n{letter}{load}\n")),
                "{sweep:?}: {letter}{load}"
            );
        }
        let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(
            html.contains("Latency against throughput, by load"),
            "{sweep:?}"
        );
        let report = dir.path().join("REPORT.md");
        let status = bin()
            .args(["report", "--format", "markdown", "--input"])
            .arg(dir.path())
            .stdout(std::fs::File::create(&report).unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(&report).unwrap();
        assert!(
            text.contains("[Latency against throughput, by load](run_sweep_latency.svg)"),
            "{text}"
        );
    }
    // One load is no sweep: no such chart.
    let dir = tempfile::tempdir().unwrap();
    mock_run(dir.path(), "short", &["--concurrency", "4"]);
    assert!(!dir.path().join("run_sweep_latency.svg").exists());
}
