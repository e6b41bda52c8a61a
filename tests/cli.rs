//! The `sagellm-benchmark` binary as a user runs it: files, field contract, determinism,
//! config files, error messages and exit statuses, report formats, and the committed sample
//! output.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

#[path = "common/binary.rs"]
mod binary;

use binary::{bin, run_ok};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn year1(dir: &Path) {
    run_ok(&[
        "run",
        "--workload",
        "year1",
        "--backend",
        "mock",
        "-q",
        "-o",
        dir.to_str().unwrap(),
    ]);
}

/// The fields the usage guide and docs/METRICS.md document for `<workload>_metrics.json`,
/// written out from those documents (not from the code): renaming or dropping one fails here.
const DOCUMENTED_METRIC_FIELDS: &[&str] = &[
    "schema_version",
    "workload",
    "backend",
    "model",
    "avg_ttft_ms",
    "p50_ttft_ms",
    "p95_ttft_ms",
    "p99_ttft_ms",
    "std_ttft_ms",
    "avg_tbt_ms",
    "avg_tpot_ms",
    "p50_tpot_ms",
    "p95_tpot_ms",
    "p99_tpot_ms",
    "std_tpot_ms",
    "avg_itl_ms",
    "p50_itl_ms",
    "p95_itl_ms",
    "p99_itl_ms",
    "std_itl_ms",
    "avg_e2el_ms",
    "p50_e2el_ms",
    "p95_e2el_ms",
    "p99_e2el_ms",
    "std_e2el_ms",
    "avg_throughput_tps",
    "output_throughput_tps",
    "input_throughput_tps",
    "total_throughput_tps",
    "request_throughput_rps",
    "total_input_tokens",
    "total_output_tokens",
    "total_requests",
    "successful_requests",
    "failed_requests",
    "error_rate",
    "peak_mem_mb",
    "avg_mem_mb",
    "kv_used_tokens",
    "kv_used_bytes",
    "prefix_hit_rate",
    "evict_count",
    "evict_ms",
    "spec_accept_rate",
    "total_time_s",
    "start_time",
    "end_time",
];

#[test]
fn year1_writes_every_documented_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    year1(dir.path());
    // The JSON files, exactly; charts (.svg) and index.html are checked in report_cli.rs.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".svg") && n != "index.html")
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "benchmark_summary.json",
            "long_input_metrics.json",
            "long_input_requests.jsonl",
            "short_input_metrics.json",
            "short_input_requests.jsonl",
            "stress_test_metrics.json",
            "stress_test_requests.jsonl",
        ]
    );
    let summary = read_json(&dir.path().join("benchmark_summary.json"));
    let overall = &summary["overall"];
    assert_eq!(overall["total_workloads"], 3);
    assert_eq!(overall["total_requests"], 18);
    assert_eq!(overall["successful_requests"], 18);
    assert_eq!(overall["failed_requests"], 0);
    let workloads = summary["workloads"].as_object().unwrap();
    assert_eq!(
        workloads.keys().collect::<Vec<_>>(),
        ["short_input", "long_input", "stress_test"]
    );
    for name in ["short_input", "long_input", "stress_test"] {
        let metrics = read_json(&dir.path().join(format!("{name}_metrics.json")));
        for field in DOCUMENTED_METRIC_FIELDS {
            assert!(
                metrics.get(field).is_some(),
                "{name}_metrics.json lacks `{field}`"
            );
            assert!(
                workloads[name].get(field).is_some(),
                "summary's {name} lacks `{field}`"
            );
        }
        assert_eq!(metrics["workload"], name);
        assert_eq!(metrics["backend"], "mock");
        let records =
            std::fs::read_to_string(dir.path().join(format!("{name}_requests.jsonl"))).unwrap();
        let count = records.lines().count() as u64;
        assert_eq!(Value::from(count), metrics["total_requests"]);
        for line in records.lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            for field in [
                "index",
                "start_ms",
                "ttft_ms",
                "token_times_ms",
                "success",
                "output_tokens",
            ] {
                assert!(r.get(field).is_some(), "a request record lacks `{field}`");
            }
        }
    }
    let provenance = &summary["provenance"];
    for field in [
        "tool_version",
        "backend",
        "model",
        "host",
        "start_time",
        "command",
    ] {
        assert!(
            provenance.get(field).is_some(),
            "provenance lacks `{field}`"
        );
    }
    let stress = &workloads["stress_test"];
    assert!(stress["p99_ttft_ms"].as_f64() > stress["p50_ttft_ms"].as_f64());
    assert!(stress["kv_used_tokens"].as_u64().unwrap() > 0);
    assert!(stress["kv_used_bytes"].as_u64().unwrap() > 0);
}

/// Drops what legitimately differs between two runs: wall-clock timestamps and provenance.
fn without_timestamps(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        if let Some(o) = v.as_object_mut() {
            o.remove("start_time");
            o.remove("end_time");
            o.remove("provenance");
            for child in o.values_mut() {
                strip(child);
            }
        }
    }
    strip(&mut v);
    v
}

#[test]
fn two_runs_write_identical_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    year1(a.path());
    year1(b.path());
    for file in [
        "benchmark_summary.json",
        "short_input_metrics.json",
        "stress_test_metrics.json",
    ] {
        assert_eq!(
            without_timestamps(read_json(&a.path().join(file))),
            without_timestamps(read_json(&b.path().join(file))),
            "{file} differs between two runs"
        );
    }
    for file in ["short_input_requests.jsonl", "stress_test_requests.jsonl"] {
        assert_eq!(
            std::fs::read(a.path().join(file)).unwrap(),
            std::fs::read(b.path().join(file)).unwrap()
        );
    }
}

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample_output")
}

/// The committed sample output is what the current code writes. If this fails after an
/// intended change, regenerate it with `scripts/regenerate-sample-output.sh` and review the diff.
#[test]
fn committed_sample_output_has_not_drifted() {
    let dir = tempfile::tempdir().unwrap();
    year1(dir.path());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !(name.ends_with(".json") || name.ends_with(".jsonl")) {
            continue; // charts and HTML carry the run's date
        }
        let committed = sample_dir().join(&name);
        assert!(committed.exists(), "examples/sample_output lacks {name}");
        if name.ends_with(".jsonl") {
            assert_eq!(
                std::fs::read_to_string(&committed).unwrap(),
                std::fs::read_to_string(dir.path().join(&name)).unwrap(),
                "{name} drifted"
            );
        } else {
            assert_eq!(
                without_timestamps(read_json(&committed)),
                without_timestamps(read_json(&dir.path().join(&name))),
                "{name} drifted"
            );
        }
    }
}

#[test]
fn report_prints_table_json_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    year1(dir.path());
    let input = dir.path().join("benchmark_summary.json");
    let input = input.to_str().unwrap();

    let table = stdout(&run_ok(&["report", "-i", input]));
    assert!(
        table.contains("short_input") && table.contains("stress_test"),
        "{table}"
    );
    assert!(table.contains("TTFT p50 / p95 / p99 (ms)"));
    assert!(
        table.contains("13.12"),
        "short_input's TTFT is 13.12 ms:\n{table}"
    );

    let json: Value = serde_json::from_str(&stdout(&run_ok(&[
        "report", "-i", input, "--format", "json",
    ])))
    .unwrap();
    assert_eq!(json["overall"]["total_requests"], 18);

    let md = stdout(&run_ok(&[
        "report", "--input", input, "--format", "markdown",
    ]));
    assert!(md.starts_with("# Benchmark report"), "{md}");
    assert!(
        md.contains("| Metric | short_input | long_input | stress_test |"),
        "{md}"
    );
    assert!(md.contains("|---|---:|---:|---:|"), "{md}");
    assert!(md.contains("| TTFT avg (ms) | 13.12 |"), "{md}");
}

#[test]
fn report_without_results_says_file_not_found_and_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .arg("report")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("File not found: ./benchmark_results/benchmark_summary.json"),
        "{err}"
    );
    assert!(
        err.contains("sagellm-benchmark run --workload year1 --backend mock"),
        "{err}"
    );
}

#[test]
fn report_on_a_corrupt_summary_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("benchmark_summary.json");
    std::fs::write(&path, "{\"workloads\": {").unwrap();
    let out = bin()
        .args(["report", "-i", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a valid benchmark summary"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cpu_without_model_gives_the_guides_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "run",
            "--backend",
            "cpu",
            "-o",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "Error: --model required for CPU backend"
    );
}

#[test]
fn a_cpu_model_that_does_not_exist_fails_before_writing_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "run",
            "--backend",
            "cpu",
            "--model",
            "./no/such/model.gguf",
            "-o",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file without results"
    );
}

#[test]
fn invalid_flag_values_name_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--backend", "tpu"], "--backend"),
        (&["run", "--workload", "shrot"], "--workload"),
        (&["report", "--format", "pdf"], "--format"),
    ];
    for (args, flag) in cases {
        let out = bin().args(*args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(flag), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn output_path_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taken");
    std::fs::write(&file, "x").unwrap();
    let out = bin()
        .args(["run", "-q", "-o", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
}

#[test]
fn config_overrides_request_count_and_rejects_misspelt_fields() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("workloads.toml");
    std::fs::write(&config, "[workloads.short_input]\nnum_requests = 2\n").unwrap();
    let out_dir = dir.path().join("out");
    run_ok(&[
        "run",
        "--workload",
        "short",
        "-q",
        "--config",
        config.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    let records = std::fs::read_to_string(out_dir.join("short_input_requests.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 2);
    assert_eq!(
        read_json(&out_dir.join("short_input_metrics.json"))["total_requests"],
        2
    );

    std::fs::write(&config, "[workloads.short_input]\nnum_request = 2\n").unwrap();
    let out = bin()
        .args([
            "run",
            "-q",
            "--config",
            config.to_str().unwrap(),
            "-o",
            out_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("workloads.toml")
            && err.contains("short_input")
            && err.contains("num_request"),
        "{err}"
    );
}

#[test]
fn documented_example_configs_show_eviction_and_prefix_reuse() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small_kv");
    run_ok(&[
        "run",
        "--workload",
        "stress",
        "-q",
        "--config",
        examples.join("small_kv_cache.toml").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let stress = read_json(&out.join("stress_test_metrics.json"));
    assert!(stress["evict_count"].as_u64().unwrap() > 0, "{stress}");

    let out = dir.path().join("prefix");
    run_ok(&[
        "run",
        "--workload",
        "all",
        "-q",
        "--config",
        examples.join("shared_prefix.toml").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let shared = read_json(&out.join("shared_prefix_metrics.json"));
    assert!(
        shared["prefix_hit_rate"].as_f64().unwrap() > 0.0,
        "{shared}"
    );
}

#[test]
fn verbose_logs_go_to_stderr_and_results_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&[
        "run",
        "--workload",
        "short",
        "-v",
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert!(stderr(&out).contains("DEBUG"), "{}", stderr(&out));
    assert!(stdout(&out).contains("short_input"));
    assert!(!stdout(&out).contains("DEBUG"));
}

#[test]
fn a_concurrency_sweep_runs_every_value_into_one_folder_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&[
        "run",
        "--workload",
        "short,long",
        "--concurrency",
        "1,2",
        "--num-requests",
        "2",
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    let summary = read_json(&dir.path().join("benchmark_summary.json"));
    let names: Vec<&str> = summary["workloads"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = [
        "short_input_c1",
        "short_input_c2",
        "long_input_c1",
        "long_input_c2",
    ];
    assert_eq!(names, expected);
    for name in expected {
        let m = read_json(&dir.path().join(format!("{name}_metrics.json")));
        assert_eq!(m["total_requests"], 2, "{name}");
    }
    // Two requests side by side share each decode step, so c2 is slower per request.
    let e2e = |name: &str| summary["workloads"][name]["avg_e2el_ms"].as_f64().unwrap();
    assert!(e2e("short_input_c2") > e2e("short_input_c1"));
    // The table's columns follow the sweep.
    let table = stdout(&out);
    let at = |name: &str| table.find(name).unwrap();
    assert!(at("short_input_c1") < at("short_input_c2"));
    assert!(at("short_input_c2") < at("long_input_c1"));
}

#[test]
fn a_constant_rate_sweep_keeps_its_schedule_and_reports_goodput() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&[
        "run",
        "--workload",
        "short",
        "--request-rate",
        "2,4",
        "--arrival",
        "constant",
        "--num-requests",
        "3",
        "--goodput",
        "e2el:1000000",
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    let records =
        std::fs::read_to_string(dir.path().join("short_input_r4_requests.jsonl")).unwrap();
    let scheduled: Vec<f64> = records
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["scheduled_ms"]
                .as_f64()
                .unwrap()
        })
        .collect();
    // 4 requests per second, evenly: 0, 250 and 500 ms.
    assert_eq!(scheduled, [0.0, 250.0, 500.0]);
    let m = read_json(&dir.path().join("short_input_r2_metrics.json"));
    // A 1000 s objective is met by every request: goodput is the request throughput.
    assert_eq!(m["goodput_fraction"], 1.0);
    assert_eq!(m["request_goodput_rps"], m["request_throughput_rps"]);
    assert_eq!(m["goodput_slo"], serde_json::json!({"e2el_ms": 1000000.0}));
    let table = stdout(&out);
    assert!(table.contains("Goodput (req/s / % of requests)"), "{table}");
    assert!(table.contains("e2el:1000000"), "{table}");
    assert!(table.contains("output tokens: usage"), "{table}");
    // Without --goodput the fields are absent, not zero.
    let plain = tempfile::tempdir().unwrap();
    run_ok(&[
        "run",
        "--workload",
        "short",
        "-q",
        "-o",
        plain.path().to_str().unwrap(),
    ]);
    let m = read_json(&plain.path().join("short_input_metrics.json"));
    assert!(m.get("request_goodput_rps").is_none() && m.get("goodput_slo").is_none());
}
