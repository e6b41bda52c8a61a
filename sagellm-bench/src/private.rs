//! What `#[workload]` expands to calls into. Not a public API: names here may change.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;

pub use inventory;

pub use crate::backend::registered::{IntoBackend, RegisteredBackend};
pub use crate::harness::main_with_args as run_harness;

use crate::workload::load::LoadShape;
use crate::workload::setup::Setup;
use crate::workload::{OpenLoop, Workload};

/// One `#[workload]` function, registered at link time.
pub struct Entry {
    pub fn_name: &'static str,
    pub module_path: &'static str,
    pub file: &'static str,
    pub line: u32,
    pub ignore: bool,
    /// The backend the workload is for (`backend = "..."`): it runs only on that one.
    pub backend: Option<&'static str>,
    /// Applies the attribute's options.
    pub options: fn(&mut Options),
    /// Runs the function body on a [`Setup`].
    pub setup: for<'a> fn(&'a mut Setup) -> SetupFuture<'a>,
}

inventory::collect!(Entry);

/// The future a workload function's body becomes (sync bodies are ready at once).
pub type SetupFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

/// The attribute's options, as the generated code sets them. Each setter takes the type the
/// option needs, so a wrong type is reported at the user's expression.
#[derive(Debug, Default, Clone)]
pub struct Options {
    name: Option<String>,
    prompt_tokens: Option<usize>,
    output_tokens: Option<usize>,
    requests: Option<usize>,
    warmup: Option<usize>,
    concurrency: Option<Vec<usize>>,
    rate: Option<f64>,
    arrival: OpenLoop,
    burstiness: Option<f64>,
    max_concurrency: Option<usize>,
    seed: Option<u64>,
    shared_prefix: Option<usize>,
    goodput: Option<String>,
    num_runs: Option<usize>,
}

/// Defaults for options a `#[workload]` does not set.
pub const DEFAULT_PROMPT_TOKENS: usize = 128;
pub const DEFAULT_OUTPUT_TOKENS: usize = 128;
pub const DEFAULT_REQUESTS: usize = 10;

impl Options {
    pub fn name(&mut self, name: &str) {
        self.name = Some(name.to_string());
    }
    pub fn prompt_tokens(&mut self, tokens: usize) {
        self.prompt_tokens = Some(tokens);
    }
    pub fn output_tokens(&mut self, tokens: usize) {
        self.output_tokens = Some(tokens);
    }
    pub fn requests(&mut self, requests: usize) {
        self.requests = Some(requests);
    }
    pub fn warmup(&mut self, requests: usize) {
        self.warmup = Some(requests);
    }
    pub fn concurrency(&mut self, concurrency: usize) {
        self.concurrency = Some(vec![concurrency]);
    }
    pub fn concurrency_sweep(&mut self, values: &[usize]) {
        self.concurrency = Some(values.to_vec());
    }
    pub fn rate(&mut self, requests_per_second: impl Into<f64>) {
        self.rate = Some(requests_per_second.into());
    }
    /// `"constant"` or `"poisson"` (the macro checks the spelling).
    pub fn arrival(&mut self, kind: &str) {
        self.arrival = OpenLoop::parse(kind).unwrap_or_default();
    }
    pub fn burstiness(&mut self, shape: impl Into<f64>) {
        self.burstiness = Some(shape.into());
    }
    pub fn max_concurrency(&mut self, cap: usize) {
        self.max_concurrency = Some(cap);
    }
    pub fn seed(&mut self, seed: u64) {
        self.seed = Some(seed);
    }
    pub fn shared_prefix(&mut self, tokens: usize) {
        self.shared_prefix = Some(tokens);
    }
    /// `"ttft:200,tbt:50,e2el:5000"`, as `--goodput` takes it (read when the harness starts).
    pub fn goodput(&mut self, objectives: &str) {
        self.goodput = Some(objectives.to_string());
    }
    pub fn num_runs(&mut self, runs: usize) {
        self.num_runs = Some(runs);
    }
}

impl Entry {
    /// The repetitions this entry asks for (`num_runs = N`), if it does.
    pub fn num_runs(&self) -> Option<usize> {
        let mut o = Options::default();
        (self.options)(&mut o);
        o.num_runs
    }

    /// The workloads this entry declares: one, or one per value of a concurrency sweep (named
    /// `<name>_c<concurrency>`).
    pub fn workloads(&self) -> Result<Vec<Workload>, String> {
        let mut o = Options::default();
        (self.options)(&mut o);
        let name = o.name.clone().unwrap_or_else(|| self.fn_name.to_string());
        let mut base = Workload::new(
            &name,
            o.prompt_tokens.unwrap_or(DEFAULT_PROMPT_TOKENS),
            o.output_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS),
            o.requests.unwrap_or(DEFAULT_REQUESTS),
        );
        if let Some(w) = o.warmup {
            base.warmup_requests = w;
        }
        if let Some(seed) = o.seed {
            base.seed = seed;
        }
        if let Some(tokens) = o.shared_prefix {
            base.shared_prefix_tokens = tokens;
        }
        if let Some(rate) = o.rate {
            base.arrival = match o.burstiness {
                Some(burstiness) if burstiness != 1.0 => {
                    crate::workload::Arrival::Gamma { rate, burstiness }
                }
                _ => o.arrival.at(rate),
            };
        }
        base.max_concurrency = o.max_concurrency;
        if let Some(objectives) = &o.goodput {
            let slo = crate::workload::slo::Slo::parse(objectives).map_err(|e| {
                format!(
                    "#[workload] {name} at {}:{}: goodput = {objectives:?}: {e}",
                    self.file, self.line
                )
            })?;
            base.goodput = Some(slo);
        }
        let sweep = LoadShape {
            concurrency: o.concurrency.clone().unwrap_or_default(),
            ..LoadShape::default()
        };
        let workloads = sweep.expand(vec![base])?;
        for w in &workloads {
            w.validate().map_err(|e| {
                format!("#[workload] {} at {}:{}: {e}", w.name, self.file, self.line)
            })?;
        }
        Ok(workloads)
    }
}

/// Turns the `&mut Setup` the harness holds into the argument the user's function declares.
#[diagnostic::on_unimplemented(
    message = "a #[workload] function's argument must be `&mut Setup`, not `{Self}`",
    label = "expected `&mut sagellm_bench::Setup`"
)]
pub trait SetupArg<'a> {
    fn from_setup(setup: &'a mut Setup) -> Self;
}

impl<'a> SetupArg<'a> for &'a mut Setup {
    fn from_setup(setup: &'a mut Setup) -> Self {
        setup
    }
}

pub fn setup_arg<'a, T: SetupArg<'a>>(setup: &'a mut Setup) -> T {
    T::from_setup(setup)
}

/// What a workload function may return: nothing, or a `Result` whose error is reported.
#[diagnostic::on_unimplemented(
    message = "a #[workload] function must return `()` or `Result<(), E>` with `E: Display`, not `{Self}`"
)]
pub trait IntoSetupResult {
    fn into_setup_result(self) -> Result<(), String>;
}

impl IntoSetupResult for () {
    fn into_setup_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> IntoSetupResult for Result<(), E> {
    fn into_setup_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// What `#[workload]`'s probe finds under its name: a `#[test]` function where libtest builds
/// the target, its fallback `bool` constant everywhere else.
pub trait LibtestProbe {
    const BUILT_BY_LIBTEST: bool;
}

impl LibtestProbe for bool {
    const BUILT_BY_LIBTEST: bool = false;
}

impl<F: Fn()> LibtestProbe for F {
    const BUILT_BY_LIBTEST: bool = true;
}

/// Whether this target is built by libtest (rustc `--test`), judged by the probe.
pub const fn built_by_libtest<T: LibtestProbe>(_probe: &T) -> bool {
    T::BUILT_BY_LIBTEST
}

/// Whether `file` (a `file!()`) lies in a `benches` folder: a bench target's source.
///
/// `#[workload]` refuses to build in such a file when libtest builds it: a `[[bench]]` without
/// `harness = false` never calls `sagellm_bench::main()`, so `cargo bench` would print
/// `running 0 tests` and measure nothing. Integration tests (under `tests/`) and a library's
/// unit tests may use libtest freely.
pub const fn in_benches_folder(file: &str) -> bool {
    const DIR: &[u8] = b"benches";
    let path = file.as_bytes();
    let mut start = 0;
    while start + DIR.len() < path.len() {
        let at_component_start = start == 0 || matches!(path[start - 1], b'/' | b'\\');
        if at_component_start && matches!(path[start + DIR.len()], b'/' | b'\\') {
            let mut same = true;
            let mut i = 0;
            while i < DIR.len() {
                same &= path[start + i] == DIR[i];
                i += 1;
            }
            if same {
                return true;
            }
        }
        start += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Arrival;

    fn no_setup(_: &mut Setup) -> SetupFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    fn entry(options: fn(&mut Options)) -> Entry {
        Entry {
            fn_name: "shaped",
            module_path: "tests",
            file: "benches/x.rs",
            line: 7,
            ignore: false,
            backend: None,
            options,
            setup: no_setup,
        }
    }

    #[test]
    fn burstiness_and_max_concurrency_shape_the_open_loop() {
        // What `#[workload(rate = 4.0, burstiness = 0.5, max_concurrency = 8)]` expands to.
        let w = entry(|o| {
            o.rate(4.0);
            o.burstiness(0.5);
            o.max_concurrency(8);
        })
        .workloads()
        .unwrap();
        assert_eq!(
            w[0].arrival,
            Arrival::Gamma {
                rate: 4.0,
                burstiness: 0.5
            }
        );
        assert_eq!(w[0].max_concurrency, Some(8));
        // Burstiness 1 is the Poisson schedule itself.
        let w = entry(|o| {
            o.rate(4.0);
            o.burstiness(1);
        })
        .workloads()
        .unwrap();
        assert_eq!(w[0].arrival, Arrival::Poisson { rate: 4.0 });
        // A cap of 0 is refused where the workload is declared.
        let err = entry(|o| {
            o.rate(4.0);
            o.max_concurrency(0);
        })
        .workloads()
        .unwrap_err();
        assert!(
            err.contains("benches/x.rs:7") && err.contains("max_concurrency"),
            "{err}"
        );
    }

    #[test]
    fn bench_sources_are_told_from_tests_and_libraries() {
        for bench in [
            "benches/inference.rs",
            "benches/inference/main.rs",
            "crates/app/benches/x.rs",
            "/home/me/app/benches/x.rs",
            r"crates\app\benches\x.rs",
        ] {
            assert!(in_benches_folder(bench), "{bench}");
        }
        for other in [
            "tests/harness.rs",
            "src/lib.rs",
            "benches.rs",
            "mybenches/x.rs",
            "src/benches_helpers/x.rs",
            "benches",
            "",
        ] {
            assert!(!in_benches_folder(other), "{other}");
        }
    }
}
