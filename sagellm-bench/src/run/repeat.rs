//! Repeated runs (`--num-runs N`): the same workloads run N times on the same backend, one
//! after the other, each an ordinary run through [`crate::run::runner::run_with`] written by
//! its own reporters (the doors give each its own folder), so every repetition is kept. The
//! figures over the runs are `results::repeats`.
//!
//! Every repetition sends the same prompts (the workloads' seeds are kept), so the runs differ
//! only by what the engine and the machine do; the backend is built once (a model is loaded
//! once), and each workload starts as a run would (warm-up, then fresh statistics).

use std::sync::Arc;

use crate::backend::Backend;
use crate::results::summary::{Provenance, Summary};
use crate::run::hooks::{Report, ReportError};
use crate::run::runner::{RunControl, RunError};
use crate::workload::Workload;

/// The most repetitions one command may ask for.
pub const MAX_RUNS: usize = 1000;

/// What the repetitions left: each run's summary in order, the last one incomplete when an
/// interrupt cut it.
#[derive(Debug, Clone)]
pub struct Repeated {
    pub summaries: Vec<Summary>,
    /// Why the repetitions stopped before the last, when they did.
    pub stopped: Option<String>,
}

impl Repeated {
    /// The summaries of the runs that completed, with their 1-based run numbers.
    pub fn completed(&self) -> impl Iterator<Item = (usize, &Summary)> {
        self.summaries
            .iter()
            .enumerate()
            .filter(|(_, s)| s.complete)
            .map(|(i, s)| (i + 1, s))
    }
}

/// Runs `workloads` `runs` times; `reporter(i)` gives the reporters of run `i` (1-based). An
/// interrupt stops the run in flight (its files are written, marked incomplete) and the ones
/// after it.
pub fn repeat(
    backend: Arc<dyn Backend>,
    workloads: &[Workload],
    provenance: Provenance,
    runs: usize,
    reporter: &mut dyn FnMut(usize) -> Result<Box<dyn Report>, ReportError>,
    control: &RunControl,
) -> Result<Repeated, RunError> {
    if !(1..=MAX_RUNS).contains(&runs) {
        return Err(RunError::InvalidWorkload {
            workload: workloads
                .first()
                .map(|w| w.name.clone())
                .unwrap_or_default(),
            message: format!("--num-runs {runs} must be between 1 and {MAX_RUNS}"),
        });
    }
    let mut summaries = Vec::with_capacity(runs);
    for i in 1..=runs {
        if let Some(reason) = control.interrupt.reason() {
            return Ok(Repeated {
                summaries,
                stopped: Some(format!("{reason} before run {i} of {runs}")),
            });
        }
        let mut reports = reporter(i)?;
        let summary = crate::run::runner::run_with(
            backend.clone(),
            workloads,
            provenance.clone(),
            reports.as_mut(),
            control,
        )?;
        let cut = !summary.complete;
        summaries.push(summary);
        if cut {
            let reason = control
                .interrupt
                .reason()
                .unwrap_or_else(|| "stopped".into());
            return Ok(Repeated {
                summaries,
                stopped: Some(format!("{reason} during run {i} of {runs}")),
            });
        }
    }
    Ok(Repeated {
        summaries,
        stopped: None,
    })
}
