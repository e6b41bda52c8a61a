//! Benchmark mode: every selected workload on the chosen backend, the same files as
//! `sagellm-benchmark run`, then the comparison with a baseline.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::args::Args;
use super::baselines::{load_baseline, BaselineWriter};
use super::brief::BriefPrinter;
use super::registry::{set_up, Declared};
use crate::backend::Backend;
use crate::compare::baseline::{self, CompareSettings, Saved};
use crate::report::collect::Collect;
use crate::report::names::{baseline_dir, NEW_RUN};
use crate::report::progress::ProgressBars;
use crate::report::table::TablePrinter;
use crate::report::Reports;
use crate::results::summary::Provenance;
use crate::run::config::Config;
use crate::run::interrupt::Interrupt;
use crate::run::runner::RunControl;

/// Where results go by default: `<target>/sagellm-bench`. The target folder is
/// `CARGO_TARGET_DIR`, else the one this bench binary was built into
/// (`<target>/<profile>/deps/<binary>`), else `./target`.
pub(super) fn default_output() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("sagellm-bench");
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf))?
    });
    from_exe
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("sagellm-bench")
}

/// Benchmark mode.
pub(super) fn bench(args: &Args, chosen: Vec<Declared>) -> Result<u8, String> {
    let root = args.output.clone().unwrap_or_else(default_output);
    let settings = CompareSettings {
        noise_threshold: args.noise_threshold,
        ..CompareSettings::default()
    };
    if !(args.noise_threshold.is_finite() && args.noise_threshold >= 0.0) {
        return Err(format!(
            "--noise-threshold must be a non-negative fraction (0.02 = 2%), not {}",
            args.noise_threshold
        ));
    }
    let names: Vec<String> = chosen.iter().map(|d| d.workload.name.clone()).collect();

    // Compare two saved baselines without running.
    if let (Some(new_name), Some(base_name)) = (&args.load_baseline, &args.baseline) {
        let mut comparisons = Vec::new();
        for name in &names {
            let new = load_baseline(&root, name, new_name)?;
            let base = load_baseline(&root, name, base_name)?;
            comparisons.push(baseline::compare(&base, &new, &settings));
        }
        return Ok(verdict(args, &comparisons, base_name));
    }
    if let Some(base_name) = &args.baseline {
        // Fail before running, not after.
        for name in &names {
            load_baseline(&root, name, base_name)?;
        }
    }

    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let asked_runs = chosen.iter().filter_map(|d| d.entry.num_runs()).max();
    let workloads = set_up(chosen)?;
    if workloads.is_empty() {
        println!("no workload matches; `cargo bench -- --list` lists them");
        return Ok(0);
    }
    // As the CLI does: every connection to a server is a file handle, and a closed loop whose
    // connections cannot all be open is refused before its first request, not failed in it.
    crate::run::limits::raise_open_files_limit();
    if args.backend.backend.is_server() {
        crate::run::limits::check_connections(&workloads)?;
    }
    let backend = create_backend(args, config)?;
    let provenance = Provenance::now(backend.name(), backend.model(), backend.settings());
    let runs = args
        .num_runs
        .map(|n| n as usize)
        .or(asked_runs)
        .unwrap_or(1);
    if args.search_concurrency.is_some() || args.search_rate.is_some() || runs > 1 {
        let control = RunControl {
            interrupt: Interrupt::on_signals()
                .map_err(|e| format!("cannot listen for SIGINT and SIGTERM: {e}"))?,
            ..RunControl::default()
        };
        return if runs > 1 && args.search_concurrency.is_none() && args.search_rate.is_none() {
            super::capacity::repeat_runs(
                args, &root, backend, provenance, &workloads, runs, &control,
            )
        } else {
            super::capacity::search_each(args, &root, backend, provenance, &workloads, &control)
        };
    }
    let collect = Collect::default();
    let mut reports = Reports::files(&root);
    if !args.quiet {
        reports.push(Box::new(ProgressBars::on_stderr()));
        if args.verbose {
            reports.push(Box::new(TablePrinter));
        } else {
            reports.push(Box::new(BriefPrinter));
        }
    }
    reports.push(Box::new(BaselineWriter::new(root.clone())));
    reports.push(Box::new(collect.clone()));
    {
        let control = RunControl {
            interrupt: Interrupt::on_signals()
                .map_err(|e| format!("cannot listen for SIGINT and SIGTERM: {e}"))?,
            ..RunControl::default()
        };
        let summary =
            crate::run::runner::run_with(backend, &workloads, provenance, &mut reports, &control)
                .map_err(|e| e.to_string())?;
        if !summary.complete {
            eprintln!(
                "Run incomplete ({}): results so far in {}; no baseline was saved",
                summary
                    .incomplete_reason
                    .as_deref()
                    .unwrap_or("stopped early"),
                root.display()
            );
            return Ok(130);
        }
        // Before any baseline is copied: a run that measured nothing never becomes one.
        if let Some(why) = crate::report::files::nothing_measured(&summary, &root) {
            eprintln!("Error: {why}; no baseline was saved");
            return Ok(1);
        }
    }

    let compare_with = args
        .baseline
        .clone()
        .or_else(|| args.save_baseline.clone())
        .unwrap_or_else(|| "base".to_string());
    let collected = collect.results();
    let mut comparisons = Vec::new();
    for result in &collected {
        let dir = baseline_dir(&root, &result.workload.name, &compare_with);
        if dir.exists() {
            let base = baseline::load(&dir).map_err(|e| e.to_string())?;
            comparisons.push(baseline::compare(&base, &Saved::from(result), &settings));
            #[cfg(feature = "charts")]
            write_overlays(&root, &result.workload.name, &compare_with, &base, result)?;
        }
    }
    // `--baseline` compares only; otherwise the run becomes the baseline it was compared with.
    if args.baseline.is_none() {
        for result in &collected {
            let name = &result.workload.name;
            let saved = baseline_dir(&root, name, NEW_RUN);
            let dir = baseline_dir(&root, name, &compare_with);
            baseline::copy(&saved, &dir).map_err(|e| e.to_string())?;
        }
    }
    if !args.quiet {
        println!("Results written to {}", root.display());
    }
    if comparisons.is_empty() {
        return Ok(0);
    }
    Ok(verdict(args, &comparisons, &compare_with))
}

/// The backend the arguments name, with the config's `[mock]` and `[cpu]` tables.
pub(super) fn create_backend(args: &Args, config: Config) -> Result<Arc<dyn Backend>, String> {
    let spec = args.backend.spec(&config).map_err(|e| e.to_string())?;
    spec.build().map_err(|e| e.to_string())
}

/// Draws the baseline's and the new run's TTFT, TPOT and E2E distributions on one chart each,
/// in `<root>/<workload>/`: `<metric>_vs_<baseline>.svg`.
#[cfg(feature = "charts")]
pub(super) fn write_overlays(
    root: &Path,
    workload: &str,
    base_name: &str,
    base: &Saved,
    new: &crate::results::WorkloadResult,
) -> Result<(), String> {
    let sets = [
        (base_name, base.samples.as_ref()),
        ("new", new.samples.as_ref()),
    ];
    let context = format!("{workload}: baseline `{base_name}` against this run");
    let charts = crate::report::svg::overlay_charts(&sets, &context).map_err(|e| e.to_string())?;
    for (key, chart) in charts {
        let file = root
            .join(workload)
            .join(crate::report::names::baseline_chart_file(key, base_name));
        crate::report::files::write_atomically(&file, chart.svg.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub(super) fn verdict(args: &Args, comparisons: &[baseline::Comparison], base_name: &str) -> u8 {
    if args.verbose {
        print!("{}", baseline::render(comparisons, base_name));
    } else {
        print!("{}", baseline::render_brief(comparisons, base_name));
    }
    let regressed = baseline::regressed(comparisons);
    if regressed.is_empty() {
        return 0;
    }
    let message = format!("regressed: {}", regressed.join(", "));
    if args.fail_on_regression {
        eprintln!("Error: {message}");
        1
    } else {
        if std::io::stderr().is_terminal() {
            eprintln!("warning: {message} (add --fail-on-regression to fail on it)");
        }
        0
    }
}
