//! The capacity questions from `cargo bench`: a search over a `#[workload]`'s concurrency
//! against its `goodput` objectives, and repetitions asked by `num_runs` or `--num-runs`.

use std::path::Path;

use sagellm_bench::__private::run_harness;
use sagellm_bench::workload;

// TBT <= 12.2 ms on the flat mock (prefill free): each request's TBT is 8 + 0.4 c ms at
// concurrency c, so the capacity is 10 (tests/search.rs derives it).
#[workload(
    prompt_tokens = 32,
    output_tokens = 32,
    requests = 60,
    warmup = 0,
    goodput = "tbt:12.2"
)]
fn cap_flat() {}

#[workload(output_tokens = 8, requests = 4, num_runs = 3)]
fn cap_repeated() {}

fn bench(out: &Path, args: &[&str]) -> u8 {
    let config = out.join("flat.toml");
    std::fs::write(
        &config,
        "[mock]\nprefill_us_per_token = 0.0\nmax_batched_tokens = 65536\n",
    )
    .unwrap();
    let mut all = vec![
        "bench-binary",
        "--bench",
        "-q",
        "--backend",
        "mock",
        "--output",
        out.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    run_harness(all)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_workload_with_objectives_gets_its_capacity_searched() {
    let dir = tempfile::tempdir().unwrap();
    let code = bench(
        dir.path(),
        &["--search-concurrency", "1..64", "--exact", "cap_flat"],
    );
    assert_eq!(code, 0);
    let answer = json(&dir.path().join("search/cap_flat/search.json"));
    assert_eq!(answer["largest_passing"], 10.0);
    assert_eq!(answer["first_failing"], 11.0);
    assert!(dir
        .path()
        .join("search/cap_flat/probes/cap_flat_c10/benchmark_summary.json")
        .is_file());
}

#[test]
fn a_workload_without_objectives_cannot_be_searched() {
    let dir = tempfile::tempdir().unwrap();
    let code = bench(
        dir.path(),
        &["--search-concurrency", "1..8", "--exact", "cap_repeated"],
    );
    assert_eq!(code, 1);
    assert!(!dir.path().join("search").exists());
}

#[test]
fn num_runs_on_the_workload_repeats_the_run_and_the_flag_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["--exact", "cap_repeated"]), 0);
    let repeats = json(&dir.path().join("runs/repeats.json"));
    assert_eq!(repeats["runs"], 3);
    assert!(dir
        .path()
        .join("runs/run_3/cap_repeated_metrics.json")
        .is_file());
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        bench(dir.path(), &["--num-runs", "2", "--exact", "cap_repeated"]),
        0
    );
    assert_eq!(json(&dir.path().join("runs/repeats.json"))["runs"], 2);
}
