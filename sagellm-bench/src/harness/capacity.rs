//! Bench mode's capacity questions: `--search-concurrency` / `--search-rate` (a capacity
//! search per selected workload, as `sagellm-benchmark search`) and `--num-runs` or a
//! workload's `num_runs` (repetitions, as `sagellm-benchmark run --num-runs`).

use std::path::Path;
use std::sync::Arc;

use super::args::Args;
use crate::backend::Backend;
use crate::report::names::{repeat_dir, REPEATS_FILE};
use crate::report::progress::ProgressBars;
use crate::report::search::SearchFiles;
use crate::report::Reports;
use crate::results::repeats::RepeatSummary;
use crate::results::summary::{Provenance, Summary};
use crate::run::runner::RunControl;
use crate::run::search::{Dimension, Objective, SearchSpec, Step};
use crate::workload::{Arrival, OpenLoop, Workload};

/// The folder of the searches under the harness's output: `<root>/search/<workload>/`.
const SEARCH_DIR: &str = "search";
/// The folder of the repetitions: `<root>/runs/run_<i>/` and `<root>/runs/repeats.json`.
const RUNS_DIR: &str = "runs";

/// One capacity search per workload; 0 when every one found a passing load, 1 otherwise, 130
/// when interrupted.
pub(super) fn search_each(
    args: &Args,
    root: &Path,
    backend: Arc<dyn Backend>,
    provenance: Provenance,
    workloads: &[Workload],
    control: &RunControl,
) -> Result<u8, String> {
    let (low, high) = args
        .search_concurrency
        .or(args.search_rate)
        .ok_or("give --search-concurrency LOW..HIGH or --search-rate LOW..HIGH")?;
    let mut code = 0;
    for workload in workloads {
        // A rate search spaces requests as the workload does (Poisson unless it is constant).
        let dimension = match (args.search_concurrency, workload.arrival) {
            (Some(_), _) => Dimension::Concurrency,
            (None, Arrival::Constant { .. }) => Dimension::rate(OpenLoop::Constant),
            (None, _) => Dimension::rate(OpenLoop::Poisson),
        };
        let slo = args.goodput.or(workload.goodput).ok_or_else(|| {
            format!(
                "workload `{}` has no objectives to search against: give --goodput or the #[workload] option goodput = \"ttft:200\"",
                workload.name
            )
        })?;
        let spec = SearchSpec {
            workload: workload.clone(),
            dimension,
            low,
            high,
            objective: Objective {
                slo,
                fraction: args.slo_fraction,
                max_error_rate: args.max_error_rate,
            },
            step: args
                .search_step
                .unwrap_or_else(|| Step::default_for(dimension)),
            max_probes: args.max_probes,
            max_time: None,
        };
        spec.validate()
            .map_err(|e| format!("workload `{}`: {e}", workload.name))?;
        let dir = root.join(SEARCH_DIR).join(&workload.name);
        let mut files = SearchFiles::new(&dir, !args.quiet, false);
        files.move_earlier_aside().map_err(|e| e.to_string())?;
        let outcome = crate::run::search::search(
            backend.clone(),
            &spec,
            provenance.clone(),
            &mut files,
            control,
        )
        .map_err(|e| e.to_string())?;
        files.finish(&outcome).map_err(|e| e.to_string())?;
        println!("{}: {}", workload.name, outcome.verdict);
        if control.interrupt.is_requested() {
            return Ok(130);
        }
        if outcome.largest_passing.is_none() {
            code = 1;
        }
    }
    Ok(code)
}

/// `runs` repetitions of every workload into `<root>/runs/`; prints the table of means,
/// intervals and CVs.
pub(super) fn repeat_runs(
    args: &Args,
    root: &Path,
    backend: Arc<dyn Backend>,
    provenance: Provenance,
    workloads: &[Workload],
    runs: usize,
    control: &RunControl,
) -> Result<u8, String> {
    let dir = root.join(RUNS_DIR);
    let mut reporter = |i: usize| -> Result<Box<dyn crate::Report>, crate::ReportError> {
        let mut reports = Reports::files(repeat_dir(&dir, i));
        if !args.quiet {
            reports.push(Box::new(ProgressBars::on_stderr()));
        }
        Ok(Box::new(reports))
    };
    let repeated =
        crate::run::repeat::repeat(backend, workloads, provenance, runs, &mut reporter, control)
            .map_err(|e| e.to_string())?;
    let completed: Vec<(String, Summary)> = repeated
        .completed()
        .map(|(i, s)| (format!("run_{i}"), s.clone()))
        .collect();
    let mut summary = RepeatSummary::of(&completed, runs, args.cv_bound);
    summary.stopped = repeated.stopped.clone();
    crate::report::repeats::write(&dir, &summary).map_err(|e| e.to_string())?;
    if !args.quiet {
        print!("{}", crate::report::repeats::render(&summary));
    }
    println!(
        "Repeated runs written to {} ({} of {runs} runs; no baseline is saved from them)",
        dir.join(REPEATS_FILE).display(),
        summary.runs
    );
    if repeated.stopped.is_some() {
        return Ok(130);
    }
    if let Some(why) = crate::report::files::nothing_measured_in_runs(repeated.completed(), &dir) {
        eprintln!("Error: {why}");
        return Ok(1);
    }
    Ok(0)
}
