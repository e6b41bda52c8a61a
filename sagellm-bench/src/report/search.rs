//! A capacity search's files: one run folder per probe under `probes/`, `search.json` (the
//! answer and every probe, rewritten after each probe so an interrupted search leaves it), and
//! with the `charts` feature the chart of goodput and the objectives against load.

use std::path::{Path, PathBuf};

use super::names::{probe_dir, SEARCH_FILE};
use super::progress::ProgressBars;
use super::{Report, ReportError, Reports};
use crate::run::search::{Probe, ProbeReports, SearchOutcome};
use crate::workload::Workload;

/// Writes a search's files into `dir`, and with `print` a line per probe on stderr.
pub struct SearchFiles {
    dir: PathBuf,
    print: bool,
    progress: bool,
}

impl SearchFiles {
    /// The files of a search in `dir`; `print` tells each probe's verdict on stderr, `progress`
    /// adds each probe's progress bars.
    pub fn new(dir: impl Into<PathBuf>, print: bool, progress: bool) -> Self {
        SearchFiles {
            dir: dir.into(),
            print,
            progress,
        }
    }

    /// Writes the outcome's `search.json` and chart.
    pub fn finish(&self, outcome: &SearchOutcome) -> Result<(), ReportError> {
        write_outcome(&self.dir, outcome)
    }
}

impl ProbeReports for SearchFiles {
    fn probe_reporter(&mut self, workload: &Workload) -> Result<Box<dyn Report>, ReportError> {
        let mut reports = Reports::files(probe_dir(&self.dir, &workload.name));
        if self.progress {
            reports.push(Box::new(ProgressBars::on_stderr()));
        }
        Ok(Box::new(reports))
    }

    fn probe_finished(&mut self, probe: &Probe, so_far: &SearchOutcome) -> Result<(), ReportError> {
        if self.print {
            eprintln!("{}", probe_line(probe, so_far));
        }
        super::files::write_json(&self.dir.join(SEARCH_FILE), so_far)
    }
}

/// One probe's verdict in a line: `probe c8: pass (goodput 100%, p95 TTFT 20.3 ms)`.
pub fn probe_line(probe: &Probe, outcome: &SearchOutcome) -> String {
    let verdict = if probe.cut_short {
        "cut short"
    } else if probe.passed {
        "pass"
    } else {
        "FAIL"
    };
    let q = crate::workload::load::rate_label((outcome.objective.fraction * 1000.0).round() / 10.0);
    let f = &probe.figures;
    let mut figures = vec![format!(
        "goodput {:.1}% of {} requests",
        probe.goodput_fraction * 100.0,
        probe.requests
    )];
    for (name, value) in [("TTFT", f.ttft_ms), ("TBT", f.tbt_ms), ("E2E", f.e2el_ms)] {
        if let Some(v) = value {
            figures.push(format!("p{q} {name} {v:.1} ms"));
        }
    }
    let mut line = format!(
        "probe {}: {verdict} ({})",
        outcome.dimension.label(probe.load),
        figures.join(", ")
    );
    if let (false, Some(reason)) = (probe.passed, &probe.reason) {
        line.push_str(&format!(": {reason}"));
    }
    line
}

/// Writes `search.json` and, with the `charts` feature, `search_capacity.svg` into `dir`.
pub fn write_outcome(dir: &Path, outcome: &SearchOutcome) -> Result<(), ReportError> {
    super::files::write_json(&dir.join(SEARCH_FILE), outcome)?;
    #[cfg(feature = "charts")]
    {
        let charts = super::svg::search_charts(outcome)?;
        super::svg::write_charts(dir, &charts)?;
    }
    Ok(())
}
