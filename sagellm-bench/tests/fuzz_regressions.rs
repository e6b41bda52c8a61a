//! The fuzz targets' entry points on their seed inputs and on every input that once crashed
//! (`fuzz/regressions/<target>/`), in the normal test suite: a fixed crash stays fixed without
//! anyone running the fuzzer.

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut found = Vec::new();
    for folder in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            found.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(!found.is_empty(), "no inputs for {target}");
    found
}

fn each(target: &str, entry: fn(&[u8])) {
    for (name, bytes) in inputs(target) {
        let outcome = std::panic::catch_unwind(|| entry(&bytes));
        assert!(outcome.is_ok(), "{target} panicked on {name}");
    }
}

#[test]
fn sse_stream() {
    each("sse_stream", sagellm_bench::__fuzz::sse_stream);
}

#[test]
fn summary() {
    each("summary", sagellm_bench::__fuzz::summary);
}

#[test]
fn saved_workload() {
    each("saved_workload", sagellm_bench::__fuzz::saved_workload);
}

#[test]
fn workload_config() {
    each("workload_config", sagellm_bench::__fuzz::workload_config);
}

#[test]
fn prompt_dataset() {
    each("prompt_dataset", sagellm_bench::__fuzz::prompt_dataset);
}

#[test]
fn prometheus() {
    each("prometheus", sagellm_bench::__fuzz::prometheus);
}

#[test]
fn report_inputs() {
    each("report_inputs", sagellm_bench::__fuzz::report_inputs);
}

#[test]
fn compare_inputs() {
    each("compare_inputs", sagellm_bench::__fuzz::compare_inputs);
}
