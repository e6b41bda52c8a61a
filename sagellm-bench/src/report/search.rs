//! A capacity search's files: one run folder per probe under `probes/`, `search.json` (the
//! answer and every probe, rewritten after each probe so an interrupted search leaves it), and
//! with the `charts` feature the chart of goodput and the objectives against load.

use std::path::{Path, PathBuf};

use super::names::{probe_dir, PROBES_DIR, SEARCH_CHART_FILE, SEARCH_FILE};
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

    /// Moves an earlier search's `probes/`, `search.json` and chart out of the way, into
    /// `previous-search-<unix seconds>/`, so that a new search never mixes with its probes;
    /// returns that folder when there was something to move.
    pub fn move_earlier_aside(&self) -> Result<Option<PathBuf>, ReportError> {
        let earlier: Vec<PathBuf> = [PROBES_DIR, SEARCH_FILE, SEARCH_CHART_FILE]
            .iter()
            .map(|name| self.dir.join(name))
            .filter(|path| path.symlink_metadata().is_ok())
            .collect();
        if earlier.is_empty() {
            return Ok(None);
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut aside = self.dir.join(format!("previous-search-{stamp}"));
        let mut n = 1;
        while aside.exists() {
            n += 1;
            aside = self.dir.join(format!("previous-search-{stamp}-{n}"));
        }
        std::fs::create_dir_all(&aside).map_err(|e| ReportError::io("create", &aside, e))?;
        for path in earlier {
            let to = aside.join(path.file_name().unwrap_or_default());
            std::fs::rename(&path, &to).map_err(|e| ReportError::io("move", &path, e))?;
        }
        Ok(Some(aside))
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
