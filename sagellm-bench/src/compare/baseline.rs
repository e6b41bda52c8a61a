//! Saving, loading and comparing runs.
//!
//! A saved run of one workload is its metrics and its per-request records; compared, it is read
//! back as its metrics and the samples of its records. Two runs are compared
//! metric by metric: the relative change of the statistic, a 95% confidence interval for it from
//! a seeded bootstrap over the per-request samples (each run resampled with replacement, 2,000
//! times), and a verdict. The verdict is a regression (or an improvement) only when the whole
//! interval lies beyond the noise threshold in that direction; otherwise "no significant
//! change". Figures with a single value per run (peak memory) have no interval, and their
//! verdict compares the change itself against the threshold.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::report::files::{load_samples, write_atomically_with, write_json, RequestsLog};
use crate::report::names::{BASELINE_METRICS_FILE, BASELINE_REQUESTS_FILE};
use crate::report::ReportError;
use crate::results::catalogue::{Basis, Better, Metric, Stat, METRICS};
use crate::results::metrics::{percentile, WorkloadMetrics};
use crate::results::record::RequestRecord;
use crate::results::samples::Samples;
use crate::results::WorkloadResult;
use std::sync::Arc;

/// One workload's saved results.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub metrics: WorkloadMetrics,
    pub samples: Samples,
}

impl From<&WorkloadResult> for Saved {
    fn from(result: &WorkloadResult) -> Self {
        Saved {
            metrics: result.metrics.clone(),
            samples: result.samples.clone(),
        }
    }
}

/// A workload's baseline files being written into one folder as the run goes: each record is
/// appended to requests.jsonl as its request finishes, and metrics.json comes at the end.
pub struct BaselineFiles {
    dir: PathBuf,
    requests: RequestsLog,
}

impl BaselineFiles {
    /// Creates `dir` and an empty requests.jsonl in it.
    pub fn create(dir: &Path) -> Result<Self, ReportError> {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::io("create", dir, e))?;
        Ok(BaselineFiles {
            dir: dir.to_path_buf(),
            requests: RequestsLog::create(dir.join(BASELINE_REQUESTS_FILE))?,
        })
    }

    pub fn append(&mut self, record: &RequestRecord) -> Result<(), ReportError> {
        self.requests.append(record)
    }

    /// Puts requests.jsonl in index order and writes metrics.json.
    pub fn finish(self, metrics: &WorkloadMetrics) -> Result<(), ReportError> {
        self.requests.finish()?;
        write_json(&self.dir.join(BASELINE_METRICS_FILE), metrics)
    }
}

/// Copies the saved run in `from` into `to` (each file atomically, the records line by line).
pub fn copy(from: &Path, to: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(to).map_err(|e| ReportError::io("create", to, e))?;
    for name in [BASELINE_REQUESTS_FILE, BASELINE_METRICS_FILE] {
        let source = from.join(name);
        let mut file = crate::workload::input::open(&source)
            .map_err(|e| ReportError::io("read", &source, e))?;
        write_atomically_with(&to.join(name), |w| std::io::copy(&mut file, w).map(|_| ()))?;
    }
    Ok(())
}

/// Reads a saved run from `dir`.
pub fn load(dir: &Path) -> Result<Saved, ReportError> {
    load_files(
        &dir.join(BASELINE_METRICS_FILE),
        &dir.join(BASELINE_REQUESTS_FILE),
    )
}

/// Reads a workload's metrics and its records from the two files a run writes.
pub fn load_files(metrics: &Path, requests: &Path) -> Result<Saved, ReportError> {
    let read = |p: &Path| {
        crate::workload::input::read_to_string(p).map_err(|e| ReportError::io("read", p, e))
    };
    Ok(Saved {
        metrics: parse_metrics(&read(metrics)?, &metrics.display().to_string())?,
        samples: Arc::new(load_samples(requests)?),
    })
}

/// Parses the text of a `metrics.json` file; `name` names it in errors.
pub fn parse_metrics(text: &str, name: &str) -> Result<WorkloadMetrics, ReportError> {
    serde_json::from_str(text)
        .map_err(|e| ReportError::Other(format!("{name} is not a workload metrics file: {e}")))
}

/// Parses the text of a `requests.jsonl` file into whole records; `name` names it in errors.
pub fn parse_records(text: &str, name: &str) -> Result<Vec<RequestRecord>, ReportError> {
    crate::report::files::parse_requests(text, name)
}

/// How two runs are compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompareSettings {
    /// Relative changes within ±`noise_threshold` are noise (0.02 = 2%). For the error rate,
    /// an absolute difference in percentage points / 100.
    pub noise_threshold: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    pub seed: u64,
}

impl Default for CompareSettings {
    fn default() -> Self {
        CompareSettings {
            noise_threshold: 0.02,
            resamples: 2000,
            seed: 0,
        }
    }
}

/// The outcome for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    NoSignificantChange,
    /// Not enough data on one side (no successful request, a zero base value).
    NotComparable,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Improved => "improved",
            Verdict::Regressed => "regressed",
            Verdict::NoSignificantChange => "no significant change",
            Verdict::NotComparable => "not comparable",
        })
    }
}

/// The change of one metric between two runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricChange {
    pub metric: String,
    pub base: f64,
    pub new: f64,
    /// Relative change `new / base - 1` (absolute difference for the error rate).
    pub change: f64,
    /// 95% confidence interval of `change`, when per-request samples allow one.
    pub ci: Option<(f64, f64)>,
    pub verdict: Verdict,
}

/// Every key metric of one workload, compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub workload: String,
    pub changes: Vec<MetricChange>,
}

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &MetricChange> {
        self.changes
            .iter()
            .filter(|c| c.verdict == Verdict::Regressed)
    }
}

fn mean(v: &mut [f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(v, 50.0)
}

fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(v, 99.0)
}

/// The statistic's function.
fn stat_fn(stat: Stat) -> fn(&mut [f64]) -> f64 {
    match stat {
        Stat::Mean => mean,
        Stat::P50 => p50,
        Stat::P99 => p99,
    }
}

/// The figures a baseline comparison checks: the catalogue's entries with a basis.
fn key_metrics() -> impl Iterator<Item = (&'static Metric, Basis)> {
    METRICS
        .iter()
        .filter_map(|m| m.baseline.map(|basis| (m, basis)))
}

/// Compares `new` against `base`.
pub fn compare(base: &Saved, new: &Saved, settings: &CompareSettings) -> Comparison {
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let changes = key_metrics()
        .map(|(key, basis)| compare_one(key, basis, base, new, settings, &mut rng))
        .collect();
    Comparison {
        workload: new.metrics.workload.clone(),
        changes,
    }
}

fn compare_one(
    key: &Metric,
    basis: Basis,
    base: &Saved,
    new: &Saved,
    settings: &CompareSettings,
    rng: &mut ChaCha8Rng,
) -> MetricChange {
    let noise = settings.noise_threshold;
    let (base_value, new_value, change, ci) = match basis {
        Basis::Single => {
            let value = |m: &WorkloadMetrics| (key.value)(m).unwrap_or(0.0);
            let (b, n) = (value(&base.metrics), value(&new.metrics));
            (b, n, relative(b, n), None)
        }
        Basis::PerRequest { values, stat } => {
            let stat = stat_fn(stat);
            let pick = |s: &Saved| -> Vec<f64> {
                s.samples
                    .requests()
                    .iter()
                    .filter(|r| r.success())
                    .filter_map(&values)
                    .collect()
            };
            let (b, n) = (pick(base), pick(new));
            if b.is_empty() || n.is_empty() {
                return not_comparable(key, &b, &n, stat);
            }
            let (bv, nv) = (stat(&mut b.clone()), stat(&mut n.clone()));
            let ci = bootstrap(&b, &n, stat, relative, settings.resamples, rng);
            (bv, nv, relative(bv, nv), ci)
        }
        Basis::Failures => {
            let pick = |s: &Saved| -> Vec<f64> {
                s.samples
                    .requests()
                    .iter()
                    .map(|r| if r.success() { 0.0 } else { 1.0 })
                    .collect()
            };
            let (b, n) = (pick(base), pick(new));
            if b.is_empty() || n.is_empty() {
                return not_comparable(key, &b, &n, mean);
            }
            let (bv, nv) = (mean(&mut b.clone()), mean(&mut n.clone()));
            let difference = |b: f64, n: f64| Some(n - b);
            let ci = bootstrap(&b, &n, mean, difference, settings.resamples, rng);
            (bv, nv, Some(nv - bv), ci)
        }
    };
    let Some(change) = change else {
        return MetricChange {
            metric: key.label_with_unit(),
            base: base_value,
            new: new_value,
            change: 0.0,
            ci: None,
            verdict: if base_value == new_value {
                Verdict::NoSignificantChange
            } else {
                Verdict::NotComparable
            },
        };
    };
    MetricChange {
        metric: key.label_with_unit(),
        base: base_value,
        new: new_value,
        change,
        ci,
        verdict: judge(key, change, ci, noise),
    }
}

/// The verdict on a change of `key` and its interval: a regression (an improvement) only when
/// the whole interval lies beyond the noise threshold on the worse (better) side; without an
/// interval, the change itself against the threshold.
fn judge(key: &Metric, change: f64, ci: Option<(f64, f64)>, noise: f64) -> Verdict {
    // Orient so that "worse" is positive.
    let worse = |x: f64| {
        if key.better == Better::Higher {
            -x
        } else {
            x
        }
    };
    match ci {
        Some((lo, hi)) => {
            let (lo, hi) = if key.better == Better::Higher {
                (worse(hi), worse(lo))
            } else {
                (lo, hi)
            };
            if lo > noise {
                Verdict::Regressed
            } else if hi < -noise {
                Verdict::Improved
            } else {
                Verdict::NoSignificantChange
            }
        }
        None if worse(change) > noise => Verdict::Regressed,
        None if worse(change) < -noise => Verdict::Improved,
        None => Verdict::NoSignificantChange,
    }
}

/// Compares a repeated run of one workload with a repeated baseline, one value per run
/// (`--num-runs`): for every key figure, the change of its mean over the runs, and a 95%
/// Welch interval for the difference of the two means (Student t with the Welch-Satterthwaite
/// degrees of freedom, rounded down), divided by the baseline's mean for a relative change
/// (the error rate's stays a difference). What varies between runs is then in the interval,
/// which a bootstrap over the pooled requests of one run cannot see. A side with a single run
/// gives no interval; the change itself is judged against the noise threshold.
pub fn compare_runs(
    workload: &str,
    base: &[WorkloadMetrics],
    new: &[WorkloadMetrics],
    settings: &CompareSettings,
) -> Comparison {
    let changes = key_metrics()
        .map(|(key, basis)| {
            let values = |runs: &[WorkloadMetrics]| -> Vec<f64> {
                runs.iter().filter_map(|m| key.measured(m)).collect()
            };
            let (b, n) = (values(base), values(new));
            if b.is_empty() || n.is_empty() {
                return not_comparable(key, &b, &n, mean);
            }
            let (bm, nm) = (mean(&mut b.clone()), mean(&mut n.clone()));
            let absolute = matches!(basis, Basis::Failures);
            let scale = if absolute {
                Some(1.0)
            } else {
                (bm != 0.0).then_some(bm)
            };
            let Some(scale) = scale else {
                return MetricChange {
                    metric: key.label_with_unit(),
                    base: bm,
                    new: nm,
                    change: 0.0,
                    ci: None,
                    verdict: if bm == nm {
                        Verdict::NoSignificantChange
                    } else {
                        Verdict::NotComparable
                    },
                };
            };
            let change = if absolute { nm - bm } else { nm / bm - 1.0 };
            let ci = welch_half_width(&b, &n).map(|half| {
                let difference = nm - bm;
                ((difference - half) / scale, (difference + half) / scale)
            });
            MetricChange {
                metric: key.label_with_unit(),
                base: bm,
                new: nm,
                change,
                ci,
                verdict: judge(key, change, ci, settings.noise_threshold),
            }
        })
        .collect();
    Comparison {
        workload: workload.to_string(),
        changes,
    }
}

/// The half-width of the 95% Welch interval of `mean(new) - mean(base)`; `None` when a side
/// has fewer than two values.
fn welch_half_width(base: &[f64], new: &[f64]) -> Option<f64> {
    if base.len() < 2 || new.len() < 2 {
        return None;
    }
    let var = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)
    };
    let (vb, vn) = (var(base) / base.len() as f64, var(new) / new.len() as f64);
    let se2 = vb + vn;
    if se2 == 0.0 {
        return Some(0.0);
    }
    let df = se2 * se2 / (vb * vb / (base.len() as f64 - 1.0) + vn * vn / (new.len() as f64 - 1.0));
    Some(crate::results::repeats::t_975(df.floor().max(1.0) as usize) * se2.sqrt())
}

fn not_comparable(
    key: &Metric,
    base: &[f64],
    new: &[f64],
    stat: fn(&mut [f64]) -> f64,
) -> MetricChange {
    let value = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            stat(&mut v.to_vec())
        }
    };
    MetricChange {
        metric: key.label_with_unit(),
        base: value(base),
        new: value(new),
        change: 0.0,
        ci: None,
        verdict: Verdict::NotComparable,
    }
}

fn relative(base: f64, new: f64) -> Option<f64> {
    (base != 0.0).then(|| new / base - 1.0)
}

/// A 95% percentile-bootstrap interval for `change(stat(base*), stat(new*))`.
fn bootstrap(
    base: &[f64],
    new: &[f64],
    stat: fn(&mut [f64]) -> f64,
    change: impl Fn(f64, f64) -> Option<f64>,
    resamples: usize,
    rng: &mut ChaCha8Rng,
) -> Option<(f64, f64)> {
    let mut changes = Vec::with_capacity(resamples);
    let (mut b, mut n) = (
        Vec::with_capacity(base.len()),
        Vec::with_capacity(new.len()),
    );
    for _ in 0..resamples {
        b.clear();
        n.clear();
        b.extend((0..base.len()).map(|_| base[rng.gen_range(0..base.len())]));
        n.extend((0..new.len()).map(|_| new[rng.gen_range(0..new.len())]));
        if let Some(c) = change(stat(&mut b), stat(&mut n)) {
            changes.push(c);
        }
    }
    if changes.is_empty() {
        return None;
    }
    changes.sort_by(f64::total_cmp);
    Some((percentile(&changes, 2.5), percentile(&changes, 97.5)))
}

/// "workload metric" for every metric that regressed, in order.
pub fn regressed(comparisons: &[Comparison]) -> Vec<String> {
    comparisons
        .iter()
        .flat_map(|c| {
            c.regressions()
                .map(move |m| format!("{} {}", c.workload, m.metric))
        })
        .collect()
}

/// Renders comparisons as a terminal table, one block per workload.
pub fn render(comparisons: &[Comparison], base_name: &str) -> String {
    use comfy_table::presets::UTF8_FULL_CONDENSED;
    use comfy_table::{Cell, CellAlignment, Table};
    let mut out = String::new();
    for c in comparisons {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(["Metric", base_name, "new", "change", "95% CI", "verdict"]);
        for m in &c.changes {
            let (change, ci) = formatted_change(m);
            let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
            table.add_row(vec![
                Cell::new(&m.metric),
                right(format!("{:.3}", m.base)),
                right(format!("{:.3}", m.new)),
                right(change),
                right(ci),
                Cell::new(m.verdict.to_string()),
            ]);
        }
        out.push_str(&format!(
            "{}: compared with baseline `{base_name}`\n{table}\n",
            c.workload
        ));
    }
    out
}

/// Renders comparisons a line per workload, as criterion reports a change: the figures that
/// changed beyond the noise, each with its interval, and how many did not.
pub fn render_brief(comparisons: &[Comparison], base_name: &str) -> String {
    let width = comparisons
        .iter()
        .map(|c| c.workload.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in comparisons {
        let mut changed = Vec::new();
        let mut unchanged = 0;
        for m in &c.changes {
            match m.verdict {
                Verdict::Improved | Verdict::Regressed => {
                    let (change, ci) = formatted_change(m);
                    let ci = m.ci.map(|_| format!(" {ci}")).unwrap_or_default();
                    changed.push(format!("{} {} {change}{ci}", m.verdict, m.metric));
                }
                Verdict::NotComparable => changed.push(format!("{}: not comparable", m.metric)),
                Verdict::NoSignificantChange => unchanged += 1,
            }
        }
        let rest = match (changed.is_empty(), unchanged) {
            (true, n) => format!("no significant change in {n} figures"),
            (false, 0) => String::new(),
            (false, n) => format!("; {n} unchanged"),
        };
        out.push_str(&format!(
            "{:<width$}  vs `{base_name}`: {}{rest}\n",
            c.workload,
            changed.join("; ")
        ));
    }
    out
}

/// Renders comparisons as one compact markdown table, fit for a CI job summary.
pub fn render_markdown(comparisons: &[Comparison], base_name: &str) -> String {
    let mut out = format!(
        "## Compared with baseline `{}`\n\n| Workload | Metric | baseline | new | change | 95% CI | verdict |\n|---|---|---:|---:|---:|---:|---|\n",
        base_name.replace('`', "'")
    );
    for c in comparisons {
        for m in &c.changes {
            let (change, ci) = formatted_change(m);
            let verdict = match m.verdict {
                Verdict::Regressed => "**regressed**".to_string(),
                other => other.to_string(),
            };
            out.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | {change} | {ci} | {verdict} |\n",
                c.workload, m.metric, m.base, m.new
            ));
        }
    }
    out
}

/// The change and its interval as text: percent, or percentage points for the error rate.
fn formatted_change(m: &MetricChange) -> (String, String) {
    let points = m.metric == "Error rate";
    let fmt = |x: f64| {
        if points {
            format!("{:+.2} pp", x * 100.0)
        } else {
            format!("{:+.2}%", x * 100.0)
        }
    };
    let change = if m.verdict == Verdict::NotComparable {
        "n/a".to_string()
    } else {
        fmt(m.change)
    };
    let ci =
        m.ci.map(|(lo, hi)| format!("[{}, {}]", fmt(lo), fmt(hi)))
            .unwrap_or_else(|| "n/a".to_string());
    (change, ci)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::EngineFigures;
    use crate::results::metrics::{aggregate, WallClock};
    use crate::results::record::RawRequest;
    use crate::results::samples::WorkloadSamples;

    /// A run whose requests have these TTFTs and then 9 tokens 10 ms apart.
    fn run(ttfts: &[f64], scale: f64) -> Saved {
        let (metrics, records) = run_records(ttfts, scale);
        Saved {
            metrics,
            samples: Arc::new(WorkloadSamples::from_records(&records)),
        }
    }

    fn run_records(ttfts: &[f64], scale: f64) -> (WorkloadMetrics, Vec<RequestRecord>) {
        let records: Vec<RequestRecord> = ttfts
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let times: Vec<f64> = (0..10)
                    .map(|k| t * scale + k as f64 * 10.0 * scale)
                    .collect();
                RequestRecord::new(RawRequest {
                    index: i,
                    start_ms: i as f64 * 200.0,
                    prompt_tokens: 8,
                    token_counts: vec![1; times.len()],
                    finish_ms: *times.last().unwrap(),
                    token_times_ms: times,
                    ..RawRequest::default()
                })
            })
            .collect();
        let wall = WallClock {
            start_unix_s: 0.0,
            total_time_s: 2.0,
        };
        let metrics = aggregate("w", "mock", "m", &records, wall, &EngineFigures::default());
        (metrics, records)
    }

    /// The change of the median TTFT.
    fn p50_ttft(c: &Comparison) -> &MetricChange {
        c.changes
            .iter()
            .find(|m| m.metric == "TTFT p50 (ms)")
            .unwrap()
    }

    const TTFTS: &[f64] = &[10.0, 12.0, 11.0, 13.0, 9.0, 10.5, 11.5, 12.5, 9.5, 10.0];

    #[test]
    fn identical_runs_show_no_significant_change() {
        let a = run(TTFTS, 1.0);
        let c = compare(&a, &a.clone(), &CompareSettings::default());
        for m in &c.changes {
            assert_ne!(m.verdict, Verdict::Regressed, "{m:?}");
            assert_ne!(m.verdict, Verdict::Improved, "{m:?}");
        }
        assert_eq!(p50_ttft(&c).change, 0.0);
    }

    #[test]
    fn a_uniformly_slower_run_regresses_and_a_faster_one_improves() {
        let (a, slow, fast) = (run(TTFTS, 1.0), run(TTFTS, 1.3), run(TTFTS, 0.7));
        let c = compare(&a, &slow, &CompareSettings::default());
        let ttft = p50_ttft(&c);
        assert!((ttft.change - 0.3).abs() < 1e-9, "{ttft:?}");
        // The two runs are resampled independently, so the interval has a width, but it holds
        // the true +30% and lies wholly above the 2% threshold.
        let (lo, hi) = ttft.ci.unwrap();
        assert!(lo > 0.02 && lo <= 0.3 && 0.3 <= hi, "{lo} {hi}");
        assert_eq!(ttft.verdict, Verdict::Regressed);
        let tput = c
            .changes
            .iter()
            .find(|m| m.metric.starts_with("Throughput"))
            .unwrap();
        assert_eq!(
            tput.verdict,
            Verdict::Regressed,
            "lower throughput is a regression"
        );
        assert_eq!(c.regressions().count(), 5);
        let c = compare(&a, &fast, &CompareSettings::default());
        assert_eq!(p50_ttft(&c).verdict, Verdict::Improved);
        assert_eq!(c.regressions().count(), 0);
    }

    #[test]
    fn a_change_within_the_noise_threshold_is_not_significant() {
        let a = run(TTFTS, 1.0);
        let c = compare(&a, &run(TTFTS, 1.01), &CompareSettings::default());
        assert_eq!(p50_ttft(&c).verdict, Verdict::NoSignificantChange);
    }

    #[test]
    fn overlapping_noisy_samples_are_not_called_a_regression() {
        // The second run's TTFTs are the first's in another order plus one outlier swapped:
        // medians differ a little, the intervals straddle zero.
        let a = run(TTFTS, 1.0);
        let b = run(
            &[12.0, 10.0, 9.0, 13.0, 11.0, 10.5, 9.5, 12.5, 11.5, 10.2],
            1.0,
        );
        let c = compare(&a, &b, &CompareSettings::default());
        assert_eq!(
            p50_ttft(&c).verdict,
            Verdict::NoSignificantChange,
            "{:?}",
            p50_ttft(&c)
        );
    }

    #[test]
    fn save_copy_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (metrics, records) = run_records(TTFTS, 1.0);
        let mut files = BaselineFiles::create(&dir.path().join("new")).unwrap();
        // Appended in completion order, not index order.
        for r in records.iter().rev() {
            files.append(r).unwrap();
        }
        files.finish(&metrics).unwrap();
        copy(&dir.path().join("new"), &dir.path().join("base")).unwrap();
        let loaded = load(&dir.path().join("base")).unwrap();
        assert_eq!(loaded, run(TTFTS, 1.0));
        let text =
            std::fs::read_to_string(dir.path().join("base").join(BASELINE_REQUESTS_FILE)).unwrap();
        assert_eq!(parse_records(&text, "requests.jsonl").unwrap(), records);
        assert!(load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn repeated_runs_are_compared_with_a_welch_interval_by_hand() {
        use crate::backend::EngineFigures;
        use crate::results::metrics::{aggregate, WallClock};
        let runs = |values: &[f64]| -> Vec<WorkloadMetrics> {
            values
                .iter()
                .map(|&v| {
                    let wall = WallClock {
                        start_unix_s: 0.0,
                        total_time_s: 1.0,
                    };
                    let mut m = aggregate("w", "b", "m", &[], wall, &EngineFigures::default());
                    m.p50_ttft_ms = v;
                    m
                })
                .collect()
        };
        // Base TTFT p50 over 3 runs: 100, 102, 104 (mean 102, variance 4); new: 110, 112, 114
        // (mean 112, variance 4). Difference 10; standard error sqrt(4/3 + 4/3) = 1.63299316;
        // Welch df = (8/3)^2 / (2 (4/3)^2 / 2) = 4, t(0.975, 4) = 2.776445105: half-width
        // 4.53391587. Relative to the base mean 102: change 10/102 = 9.8%, interval
        // [(10 - 4.53391587) / 102, (10 + 4.53391587) / 102] = [5.36%, 14.25%]: regressed.
        let settings = CompareSettings::default();
        let c = compare_runs(
            "w",
            &runs(&[100.0, 102.0, 104.0]),
            &runs(&[110.0, 112.0, 114.0]),
            &settings,
        );
        let ttft = c
            .changes
            .iter()
            .find(|m| m.metric == "TTFT p50 (ms)")
            .unwrap();
        assert_eq!((ttft.base, ttft.new), (102.0, 112.0));
        assert!((ttft.change - 10.0 / 102.0).abs() < 1e-12);
        let (lo, hi) = ttft.ci.unwrap();
        assert!((lo - (10.0 - 4.53391587) / 102.0).abs() < 1e-8, "{lo}");
        assert!((hi - (10.0 + 4.53391587) / 102.0).abs() < 1e-8, "{hi}");
        assert_eq!(ttft.verdict, Verdict::Regressed);
        // Overlapping runs: 100, 110, 120 against 105, 115, 125: the interval holds 0.
        let c = compare_runs(
            "w",
            &runs(&[100.0, 110.0, 120.0]),
            &runs(&[105.0, 115.0, 125.0]),
            &settings,
        );
        let ttft = c
            .changes
            .iter()
            .find(|m| m.metric == "TTFT p50 (ms)")
            .unwrap();
        assert_eq!(ttft.verdict, Verdict::NoSignificantChange);
        // One run a side: no interval.
        let c = compare_runs("w", &runs(&[100.0]), &runs(&[150.0]), &settings);
        let ttft = c
            .changes
            .iter()
            .find(|m| m.metric == "TTFT p50 (ms)")
            .unwrap();
        assert_eq!((ttft.ci, ttft.verdict), (None, Verdict::Regressed));
    }

    #[test]
    fn the_brief_verdict_is_a_line_per_workload_naming_only_what_changed() {
        let change = |metric: &str, change: f64, ci: Option<(f64, f64)>, verdict| MetricChange {
            metric: metric.to_string(),
            base: 1.0,
            new: 1.0 + change,
            change,
            ci,
            verdict,
        };
        let comparisons = [
            Comparison {
                workload: "short".into(),
                changes: vec![
                    change(
                        "TTFT p50 (ms)",
                        0.001,
                        Some((-0.01, 0.01)),
                        Verdict::NoSignificantChange,
                    ),
                    change("TPOT avg (ms)", 0.0, None, Verdict::NoSignificantChange),
                ],
            },
            Comparison {
                workload: "stress_test".into(),
                changes: vec![
                    change(
                        "TTFT p99 (ms)",
                        0.3523,
                        Some((0.2, 0.5)),
                        Verdict::Regressed,
                    ),
                    change("Output throughput (tok/s)", 0.1, None, Verdict::Improved),
                    change("TPOT avg (ms)", 0.0, None, Verdict::NoSignificantChange),
                ],
            },
        ];
        assert_eq!(
            render_brief(&comparisons, "main"),
            "short        vs `main`: no significant change in 2 figures\n\
             stress_test  vs `main`: regressed TTFT p99 (ms) +35.23% [+20.00%, +50.00%]; \
             improved Output throughput (tok/s) +10.00%; 1 unchanged\n"
        );
    }
}
