//! SVG charts of a run, drawn with plotters' SVG backend and written beside the JSON files.
//!
//! Per workload: the TTFT and TPOT distributions (CDFs with p50/p95/p99 marked), the inter-token
//! gap histogram, a timeline of every request (send, first token, last token) and streamed
//! tokens/s over time. Per run: the key metrics across workloads, and memory and KV figures.
//! [`overlay_cdf`] draws two or more runs' distributions on one chart, for comparisons.
//!
//! Text is written as SVG `<text>` elements and laid out by plotters' built-in size estimate
//! (neither of its font features is enabled), so no font file or fontconfig is needed to draw;
//! the browser that opens the SVG picks a sans-serif face.
//!
//! Every chart is drawn from the samples kept of the request records ([`WorkloadSamples`]) and
//! the metrics alone, so the same charts come back from the saved `<workload>_requests.jsonl`
//! files without a re-run.

use std::error::Error;

use indexmap::IndexMap;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::files::write_atomically;
use super::names;
use super::ReportError;
use crate::results::catalogue::{Metric, METRICS};
use crate::results::itl::ItlStats;
use crate::results::metrics::{percentile, WorkloadMetrics};
use crate::results::samples::{RequestSample, Samples, WorkloadSamples};
use crate::results::summary::{Provenance, Summary};
use crate::results::time_bins::TimeBins;
use crate::run::search::SearchOutcome;
use crate::workload::load::rate_label;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn Error>>;

const FONT: &str = "sans-serif";
const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
const TEXT: RGBColor = RGBColor(33, 37, 41);
const MUTED: RGBColor = RGBColor(108, 117, 125);
const GRID: RGBColor = RGBColor(222, 226, 230);
/// Colour-blind-safe series colours (Okabe and Ito).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
];
const FAILED: RGBColor = RGBColor(213, 40, 40);

/// One rendered chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File name in the output folder, e.g. `short_input_ttft_cdf.svg`.
    pub file_name: String,
    /// The workload it shows, or `None` for a chart of the whole run.
    pub workload: Option<String>,
    /// What it shows, e.g. "TTFT distribution".
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

/// Which run a chart belongs to: printed under every title.
#[derive(Debug, Clone)]
pub struct RunLabel(pub String);

impl RunLabel {
    pub fn of(provenance: &Provenance) -> Self {
        RunLabel(format!(
            "run: backend {}, model {}, started {}",
            provenance.backend, provenance.model, provenance.start_time_utc
        ))
    }
}

/// A per-request latency whose distribution can be drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Ttft,
    Tpot,
    /// Every gap between consecutive content events, pooled over requests.
    Itl,
    E2el,
}

impl Distribution {
    /// The samples of successful requests, ascending, as the metrics use them. For ITL, one
    /// value per gap: the middle of its histogram bucket (within 0.05 %); this grows with the
    /// number of tokens, so the run's own charts draw ITL from the histogram instead.
    pub fn samples(self, samples: &WorkloadSamples) -> Vec<f64> {
        let ok = samples.requests().iter().filter(|r| r.success());
        let mut samples: Vec<f64> = match self {
            Distribution::Ttft => ok.filter_map(RequestSample::ttft_ms).collect(),
            Distribution::Tpot => ok.filter_map(RequestSample::tpot_ms).collect(),
            Distribution::Itl => samples
                .itl()
                .buckets_ms()
                .flat_map(|(value, count)| std::iter::repeat(value).take(count as usize))
                .collect(),
            Distribution::E2el => ok.filter_map(RequestSample::e2el_ms).collect(),
        };
        samples.sort_by(f64::total_cmp);
        samples
    }

    fn name(self) -> &'static str {
        match self {
            Distribution::Ttft => "TTFT",
            Distribution::Tpot => "TPOT",
            Distribution::Itl => "inter-token gap",
            Distribution::E2el => "end-to-end latency",
        }
    }

    fn axis(self) -> &'static str {
        match self {
            Distribution::Ttft => "time to first token (ms)",
            Distribution::Tpot => "time per output token, first token included (ms)",
            Distribution::Itl => "gap between consecutive tokens (ms)",
            Distribution::E2el => "end-to-end latency (ms)",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Distribution::Ttft => "ttft",
            Distribution::Tpot => "tpot",
            Distribution::Itl => "itl",
            Distribution::E2el => "e2el",
        }
    }
}

/// The charts of one workload, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadChart {
    TtftCdf,
    TpotCdf,
    ItlHistogram,
    Timeline,
    TokensPerSecond,
}

impl WorkloadChart {
    pub const ALL: [WorkloadChart; 5] = [
        WorkloadChart::TtftCdf,
        WorkloadChart::TpotCdf,
        WorkloadChart::ItlHistogram,
        WorkloadChart::Timeline,
        WorkloadChart::TokensPerSecond,
    ];

    pub fn title(self) -> &'static str {
        match self {
            WorkloadChart::TtftCdf => "TTFT distribution",
            WorkloadChart::TpotCdf => "TPOT distribution",
            WorkloadChart::ItlHistogram => "Inter-token gaps",
            WorkloadChart::Timeline => "Request timeline",
            WorkloadChart::TokensPerSecond => "Streamed tokens/s over time",
        }
    }

    /// Its file name for `workload`, e.g. `short_input_ttft_cdf.svg`.
    pub fn file_name(self, workload: &str) -> String {
        let suffix = match self {
            WorkloadChart::TtftCdf => "ttft_cdf",
            WorkloadChart::TpotCdf => "tpot_cdf",
            WorkloadChart::ItlHistogram => "itl_histogram",
            WorkloadChart::Timeline => "timeline",
            WorkloadChart::TokensPerSecond => "tokens_per_s",
        };
        names::workload_chart_file(workload, suffix)
    }
}

/// The charts of the whole run, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunChart {
    KeyMetrics,
    MemoryKv,
    /// Latency against output throughput, a point per load of a sweep; drawn only for a run
    /// that holds a sweep (see [`sweeps`]).
    Sweep,
}

impl RunChart {
    pub const ALL: [RunChart; 3] = [RunChart::KeyMetrics, RunChart::MemoryKv, RunChart::Sweep];

    pub fn title(self) -> &'static str {
        match self {
            RunChart::KeyMetrics => "Key metrics across workloads",
            RunChart::MemoryKv => "Memory and KV cache",
            RunChart::Sweep => "Latency against throughput, by load",
        }
    }

    /// Its file name, e.g. `run_key_metrics.svg`.
    pub fn file_name(self) -> String {
        names::run_chart_file(match self {
            RunChart::KeyMetrics => "run_key_metrics",
            RunChart::MemoryKv => "run_memory_kv",
            RunChart::Sweep => "run_sweep_latency",
        })
    }
}

/// One sweep of a run: the workloads `run --concurrency 1,2,4` (or `--request-rate`) made of
/// one workload, `<base>_c<N>` (or `_r<RATE>`), in load order.
pub struct Sweep<'a> {
    /// The swept workload's own name, e.g. `short_input`.
    pub base: &'a str,
    /// `c` for concurrency, `r` for request rate.
    pub kind: char,
    /// (load, the name's suffix, e.g. `c4`, the metrics), by increasing load.
    pub points: Vec<(f64, &'a str, &'a WorkloadMetrics)>,
}

/// The sweeps in a summary, in the order their workloads ran: each base workload with two or
/// more loads of one kind. Read from the names, which `workload::load` gives every swept
/// workload, because the summary keeps no load shape.
pub fn sweeps(summary: &Summary) -> Vec<Sweep<'_>> {
    let mut found: Vec<Sweep<'_>> = Vec::new();
    for (name, metrics) in &summary.workloads {
        let Some((base, suffix)) = name.rsplit_once('_') else {
            continue;
        };
        let mut chars = suffix.chars();
        let kind = chars.next().unwrap_or(' ');
        let value = chars.as_str();
        let load = match kind {
            'c' if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                value.parse::<f64>().ok()
            }
            'r' => value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0),
            _ => None,
        };
        let Some(load) = load else { continue };
        match found.iter_mut().find(|s| s.base == base && s.kind == kind) {
            Some(sweep) => sweep.points.push((load, suffix, metrics)),
            None => found.push(Sweep {
                base,
                kind,
                points: vec![(load, suffix, metrics)],
            }),
        }
    }
    found.retain(|s| s.points.len() >= 2);
    for sweep in &mut found {
        sweep.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    found
}

/// Draws every chart of one workload.
pub fn workload_charts(
    run: &RunLabel,
    metrics: &WorkloadMetrics,
    samples: &WorkloadSamples,
) -> Result<Vec<Chart>, ReportError> {
    let workload = metrics.workload.as_str();
    let failed = samples.failed();
    let excluded = match failed {
        0 => String::new(),
        n => format!("; {n} failed request(s) not included"),
    };
    let without_failed = format!("{}{excluded}", run.0);
    let distribution =
        |area: &Area, d: Distribution| cdf(area, d, &[(String::new(), d.samples(samples))], true);
    WorkloadChart::ALL
        .iter()
        .map(|&kind| {
            let heading = format!("{}: {workload}", kind.title());
            let svg = match kind {
                WorkloadChart::TtftCdf => render(&heading, &without_failed, |area| {
                    distribution(area, Distribution::Ttft)
                }),
                WorkloadChart::TpotCdf => render(&heading, &without_failed, |area| {
                    distribution(area, Distribution::Tpot)
                }),
                WorkloadChart::ItlHistogram => render(&heading, &without_failed, |area| {
                    histogram(area, samples.itl())
                }),
                WorkloadChart::Timeline => {
                    render(&heading, &run.0, |area| timeline(area, samples.requests()))
                }
                WorkloadChart::TokensPerSecond => {
                    let note = format!("{}; tokens of failed requests included", run.0);
                    render(&heading, &note, |area| {
                        tokens_per_second(area, samples, metrics.output_throughput_tps)
                    })
                }
            }?;
            Ok(Chart {
                file_name: kind.file_name(workload),
                workload: Some(workload.to_string()),
                title: kind.title().to_string(),
                svg,
            })
        })
        .collect()
}

/// The charts of a capacity search (`sagellm-benchmark search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchChart {
    /// Goodput and each objective's percentile against the load, the answer marked.
    Capacity,
}

impl SearchChart {
    pub const ALL: [SearchChart; 1] = [SearchChart::Capacity];

    pub fn title(self) -> &'static str {
        match self {
            SearchChart::Capacity => "Capacity search: goodput and objectives against load",
        }
    }

    /// Its file name, e.g. `search_capacity.svg`.
    pub fn file_name(self) -> String {
        match self {
            SearchChart::Capacity => names::SEARCH_CHART_FILE.to_string(),
        }
    }
}

/// Draws the charts of a capacity search.
pub fn search_charts(outcome: &SearchOutcome) -> Result<Vec<Chart>, ReportError> {
    SearchChart::ALL
        .iter()
        .map(|&kind| {
            let note = format!(
                "{}: {}; {}",
                outcome.workload,
                crate::run::search::slo_words(&outcome.objective.slo),
                match (outcome.largest_passing, outcome.first_failing) {
                    (Some(p), Some(f)) => format!(
                        "largest passing {}, first failing {}",
                        rate_label(p),
                        rate_label(f)
                    ),
                    (Some(p), None) => format!("every probe passed, up to {}", rate_label(p)),
                    (None, Some(f)) => format!("no passing point; {} fails", rate_label(f)),
                    (None, None) => "no probe finished".to_string(),
                }
            );
            let svg = match kind {
                SearchChart::Capacity => {
                    render(kind.title(), &note, |area| capacity(area, outcome))
                }
            }?;
            Ok(Chart {
                file_name: kind.file_name(),
                workload: Some(outcome.workload.clone()),
                title: kind.title().to_string(),
                svg,
            })
        })
        .collect()
}

/// Two panels over the probed loads: the goodput fraction with the required fraction dashed,
/// and each objective's percentile as a share of its limit with 100 % dashed; passing probes
/// as dots, failing ones as crosses, the largest passing and the first failing load as
/// vertical lines.
fn capacity(area: &Area, outcome: &SearchOutcome) -> Drawn {
    let mut probes: Vec<&crate::run::search::Probe> =
        outcome.probes.iter().filter(|p| !p.cut_short).collect();
    probes.sort_by(|a, b| a.load.total_cmp(&b.load));
    if probes.is_empty() {
        return notice(area, "no probe finished");
    }
    let (legend, area) = area.split_vertically(LEGEND_ROW);
    let (top, bottom) = area.split_vertically(area.dim_in_pixel().1 / 2);
    let (x_lo, x_hi) = padded(outcome.low, outcome.high, 0.0);
    let q = rate_label((outcome.objective.fraction * 1000.0).round() / 10.0);
    let marks = [
        (outcome.largest_passing, PALETTE[2]),
        (outcome.first_failing, FAILED),
    ];
    // Passing probes as dots of the series' colour, failing ones as red crosses.
    let passed = |x: f64| probes.iter().any(|p| p.load == x && p.passed);

    // Goodput fraction, %.
    let mut chart = ChartBuilder::on(&top)
        .x_label_area_size(10)
        .y_label_area_size(86)
        .build_cartesian_2d(x_lo..x_hi, 0f64..105.0)?;
    let mut mesh = chart.configure_mesh();
    mesh.y_desc("goodput (% of requests)");
    mesh_styles(&mut mesh);
    mesh.draw()?;
    let required = outcome.objective.fraction * 100.0;
    chart.draw_series(DashedLineSeries::new(
        [(x_lo, required), (x_hi, required)],
        8,
        6,
        MUTED.stroke_width(2),
    ))?;
    let goodput: Vec<(f64, f64)> = probes
        .iter()
        .map(|p| (p.load, p.goodput_fraction * 100.0))
        .collect();
    chart.draw_series(LineSeries::new(goodput.clone(), PALETTE[0].stroke_width(2)))?;
    chart.draw_series(
        goodput
            .iter()
            .filter(|(x, _)| passed(*x))
            .map(|&p| Circle::new(p, 5, PALETTE[0].filled())),
    )?;
    chart.draw_series(
        goodput
            .iter()
            .filter(|(x, _)| !passed(*x))
            .map(|&p| Cross::new(p, 6, FAILED.stroke_width(3))),
    )?;
    for (at, color) in marks {
        if let Some(x) = at {
            chart.draw_series(LineSeries::new(
                [(x, 0.0), (x, 105.0)],
                color.stroke_width(2),
            ))?;
        }
    }

    // Each objective's percentile at the required fraction, as % of its limit.
    let slo = outcome.objective.slo;
    type Figure = fn(&crate::run::search::ObjectiveFigures) -> Option<f64>;
    let series: [(&str, Option<f64>, Figure); 3] = [
        ("TTFT", slo.ttft_ms, |f| f.ttft_ms),
        ("TBT", slo.tbt_ms, |f| f.tbt_ms),
        ("E2E", slo.e2el_ms, |f| f.e2el_ms),
    ];
    /// A legend label, the points, the colour.
    type Line = (String, Vec<(f64, f64)>, RGBColor);
    let lines: Vec<Line> = series
        .into_iter()
        .enumerate()
        .filter_map(|(i, (name, limit, value))| {
            let limit = limit?;
            let points = probes
                .iter()
                .filter_map(|p| value(&p.figures).map(|v| (p.load, 100.0 * v / limit)))
                .collect();
            Some((
                format!("p{q} {name} / {} ms", rate_label(limit)),
                points,
                PALETTE[(i + 3) % PALETTE.len()],
            ))
        })
        .collect();
    let top_y = lines
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|(_, y)| *y))
        .fold(150.0, f64::max)
        * 1.08;
    let mut chart = ChartBuilder::on(&bottom)
        .x_label_area_size(56)
        .y_label_area_size(86)
        .build_cartesian_2d(x_lo..x_hi, 0f64..top_y)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(outcome.dimension.unit())
        .y_desc("percentile / limit (%)");
    mesh_styles(&mut mesh);
    mesh.draw()?;
    chart.draw_series(DashedLineSeries::new(
        [(x_lo, 100.0), (x_hi, 100.0)],
        8,
        6,
        MUTED.stroke_width(2),
    ))?;
    for (_, points, color) in &lines {
        chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
        chart.draw_series(
            points
                .iter()
                .filter(|(x, _)| passed(*x))
                .map(|&p| Circle::new(p, 5, color.filled())),
        )?;
        chart.draw_series(
            points
                .iter()
                .filter(|(x, _)| !passed(*x))
                .map(|&p| Cross::new(p, 6, FAILED.stroke_width(3))),
        )?;
    }
    for (at, color) in marks {
        if let Some(x) = at {
            chart.draw_series(LineSeries::new(
                [(x, 0.0), (x, top_y)],
                color.stroke_width(2),
            ))?;
        }
    }
    let mut items: Vec<LegendItem> = vec![(
        format!("goodput (dashed: {q}% required)"),
        PALETTE[0],
        Swatch::Line,
    )];
    items.extend(
        lines
            .iter()
            .map(|(name, _, c)| (name.clone(), *c, Swatch::Line)),
    );
    items.push(("largest passing".into(), PALETTE[2], Swatch::Line));
    items.push(("first failing".into(), FAILED, Swatch::Cross));
    legend_row(&legend, &items)
}

/// Draws the charts of the whole run: key metrics across workloads, memory and KV figures.
pub fn run_charts(
    summary: &Summary,
    samples: &IndexMap<String, Samples>,
) -> Result<Vec<Chart>, ReportError> {
    let run = RunLabel::of(&summary.provenance);
    let sweeps = sweeps(summary);
    RunChart::ALL
        .iter()
        .filter(|&&kind| kind != RunChart::Sweep || !sweeps.is_empty())
        .map(|&kind| {
            let title = kind.title();
            let svg = match kind {
                RunChart::KeyMetrics => render(title, &run.0, |area| key_metrics(area, summary)),
                RunChart::Sweep => render(
                    title,
                    &format!("{}; a point per load, joined in load order", run.0),
                    |area| sweep_latency(area, &sweeps),
                ),
                RunChart::MemoryKv => {
                    let sources = summary
                        .workloads
                        .values()
                        .next()
                        .map(|m| {
                            format!(
                                "; memory: {}, KV: {}",
                                source_name(&m.sources.memory),
                                source_name(&m.sources.kv_cache)
                            )
                        })
                        .unwrap_or_default();
                    render(title, &format!("{}{sources}", run.0), |area| {
                        memory_and_kv(area, summary, samples)
                    })
                }
            }?;
            Ok(Chart {
                file_name: kind.file_name(),
                workload: None,
                title: title.to_string(),
                svg,
            })
        })
        .collect()
}

/// Every chart of a run: each workload's (in the summary's order), then the run's.
pub fn all_charts(
    summary: &Summary,
    samples: &IndexMap<String, Samples>,
) -> Result<Vec<Chart>, ReportError> {
    let run = RunLabel::of(&summary.provenance);
    let none = WorkloadSamples::default();
    let mut charts = Vec::new();
    for (name, metrics) in &summary.workloads {
        let of_workload = samples.get(name).map(|s| s.as_ref()).unwrap_or(&none);
        charts.extend(workload_charts(&run, metrics, of_workload)?);
    }
    charts.extend(run_charts(summary, samples)?);
    Ok(charts)
}

/// The distributions compared runs are drawn for, with the short key used in file names.
pub const OVERLAID: [(Distribution, &str); 3] = [
    (Distribution::Ttft, "ttft"),
    (Distribution::Tpot, "tpot"),
    (Distribution::E2el, "e2el"),
];

/// One overlaid chart per distribution in [`OVERLAID`], each with its file-name key.
pub fn overlay_charts(
    sets: &[(&str, &WorkloadSamples)],
    context: &str,
) -> Result<Vec<(&'static str, Chart)>, ReportError> {
    OVERLAID
        .iter()
        .map(|&(distribution, key)| Ok((key, overlay_cdf(distribution, sets, context)?)))
        .collect()
}

/// Draws the distribution of `distribution` for two or more runs' samples on one chart (a
/// baseline against a new run, or several servers), each set named by its label.
pub fn overlay_cdf(
    distribution: Distribution,
    sets: &[(&str, &WorkloadSamples)],
    context: &str,
) -> Result<Chart, ReportError> {
    let title = format!("{} distribution compared", distribution.name());
    let series: Vec<(String, Vec<f64>)> = sets
        .iter()
        .map(|(label, samples)| (label.to_string(), distribution.samples(samples)))
        .collect();
    let svg = render(&title, context, |area| {
        cdf(area, distribution, &series, false)
    })?;
    Ok(Chart {
        file_name: format!("compare_{}_cdf.svg", distribution.slug()),
        workload: None,
        title,
        svg,
    })
}

/// Writes charts into `dir`.
pub fn write_charts(dir: &std::path::Path, charts: &[Chart]) -> Result<(), ReportError> {
    charts
        .iter()
        .try_for_each(|c| write_atomically(&dir.join(&c.file_name), c.svg.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Drawing

/// Draws a chart with a title and a grey line under it, and returns the SVG with a `<title>`
/// element added for screen readers and tooltips.
fn render(
    title: &str,
    note: &str,
    draw: impl FnOnce(&Area) -> Drawn,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    let drawn: Drawn = (|| {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(66);
        head.draw(&Text::new(
            title.to_string(),
            (16, 10),
            (FONT, 28).into_font().style(FontStyle::Bold).color(&TEXT),
        ))?;
        head.draw(&Text::new(
            note.to_string(),
            (16, 40),
            (FONT, 17).into_font().color(&MUTED),
        ))?;
        draw(&body.margin(4, 12, 8, 20))?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| ReportError::Other(format!("could not draw the chart `{title}`: {e}")))?;
    Ok(with_title_element(svg, title))
}

/// Inserts `<title>` as the first child of the root `<svg>` element.
fn with_title_element(svg: String, title: &str) -> String {
    let Some(open_end) = svg
        .find("<svg")
        .and_then(|s| svg[s..].find('>').map(|e| s + e + 1))
    else {
        return svg;
    };
    let mut out = String::with_capacity(svg.len() + title.len() + 20);
    out.push_str(&svg[..open_end]);
    out.push_str("\n<title>");
    out.push_str(&escape_xml(title));
    out.push_str("</title>");
    out.push_str(&svg[open_end..]);
    out
}

fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn source_name<T: serde::Serialize>(source: &T) -> String {
    serde_json::to_value(source)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// A range around `lo..hi` with some air, never empty, never below `floor`.
fn padded(lo: f64, hi: f64, floor: f64) -> (f64, f64) {
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.06
    } else {
        (hi.abs() * 0.1).max(1.0)
    };
    ((lo - pad).max(floor), hi + pad)
}

/// Milliseconds or seconds, whichever keeps the axis numbers short.
#[derive(Clone, Copy)]
struct TimeUnit {
    per_ms: f64,
    name: &'static str,
}

impl TimeUnit {
    fn for_span(max_ms: f64) -> Self {
        if max_ms >= 10_000.0 {
            TimeUnit {
                per_ms: 1e-3,
                name: "s",
            }
        } else {
            TimeUnit {
                per_ms: 1.0,
                name: "ms",
            }
        }
    }
}

fn axis_style() -> TextStyle<'static> {
    (FONT, 20).into_font().color(&TEXT)
}

fn label_style() -> TextStyle<'static> {
    (FONT, 17).into_font().color(&TEXT)
}

fn notice(area: &Area, text: &str) -> Drawn {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        text.to_string(),
        (w as i32 / 2, h as i32 / 2),
        (FONT, 24)
            .into_font()
            .color(&MUTED)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    Ok(())
}

/// How a legend entry shows its series.
#[derive(Clone, Copy)]
enum Swatch {
    Bar,
    Line,
    Dashed,
    Cross,
}

type LegendItem = (String, RGBColor, Swatch);

/// Height of the legend row above a plot.
const LEGEND_ROW: u32 = 30;

/// Draws legend entries in one row, left to right, above the plot rather than on it, so no
/// legend ever hides data.
fn legend_row(area: &Area, items: &[LegendItem]) -> Drawn {
    let y = LEGEND_ROW as i32 / 2;
    let mut x = 70;
    let room = area.dim_in_pixel().0 as i32;
    // plotters cannot measure text without a font file; 0.53 em per character (7.3 px at the
    // legend's 17) leaves room for the average sans-serif face.
    let char_px = |size: f64| 7.3 * size / 17.0;
    // One entry's width: swatch, label, gap.
    let width = |items: &[LegendItem], size: f64| {
        items
            .iter()
            .map(|i| 28 + (i.0.chars().count() as f64 * char_px(size)) as i32 + 26)
            .sum::<i32>()
    };
    // A sweep's series share their name's start (`short_input_c1`, `short_input_c2`, ...):
    // written once in front, the row holds each series by its own part.
    let mut items = items.to_vec();
    let mut size = 17.0;
    if x + width(&items, size) > room {
        let names: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
        let prefix = fit_labels(&names, f64::INFINITY, size).prefix;
        if !prefix.is_empty() {
            for item in &mut items {
                item.0 = item.0[prefix.len()..].to_string();
            }
            let head = format!("{prefix}…:");
            area.draw(&Text::new(
                head.clone(),
                (x, y),
                label_style().pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
            x += (head.chars().count() as f64 * char_px(size)) as i32 + 12;
        }
    }
    // Then a smaller font, down to 12; what still does not fit is counted ("+3 more", 90 px
    // kept for it), never drawn over the edge.
    while size > 12.0 && x + width(&items, size) > room {
        size -= 1.0;
    }
    let mut shown = items.len();
    if x + width(&items, size) > room {
        while shown > 0 && x + width(&items[..shown], size) + 90 > room {
            shown -= 1;
        }
    }
    let more = items.len() - shown;
    let style = || {
        (FONT, size)
            .into_font()
            .color(&TEXT)
            .pos(Pos::new(HPos::Left, VPos::Center))
    };
    for (label, color, swatch) in &items[..shown] {
        match swatch {
            Swatch::Bar => area.draw(&Rectangle::new(
                [(x, y - 7), (x + 18, y + 7)],
                color.filled(),
            ))?,
            Swatch::Line => area.draw(&PathElement::new(
                vec![(x, y), (x + 22, y)],
                color.stroke_width(3),
            ))?,
            Swatch::Dashed => {
                for k in 0..3 {
                    area.draw(&PathElement::new(
                        vec![(x + k * 8, y), (x + k * 8 + 5, y)],
                        color.stroke_width(2),
                    ))?;
                }
            }
            Swatch::Cross => area.draw(&Cross::new((x + 9, y), 6, color.stroke_width(3)))?,
        }
        area.draw(&Text::new(label.clone(), (x + 28, y), style()))?;
        x += 28 + (label.chars().count() as f64 * char_px(size)) as i32 + 26;
    }
    if more > 0 {
        area.draw(&Text::new(
            format!("+{more} more"),
            (x, y),
            style().color(&MUTED),
        ))?;
    }
    Ok(())
}

fn mesh_styles<'a, X, Y>(mesh: &mut plotters::chart::MeshStyle<'a, '_, X, Y, SVGBackend<'a>>)
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>
        + plotters::coord::ranged1d::ValueFormatter<f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>
        + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    mesh.axis_desc_style(axis_style())
        .label_style(label_style())
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID);
}

/// Cumulative distribution(s): a step line per set of samples, with the samples as dots; for a
/// single set, p50, p95 and p99 as dashed vertical lines named in the legend.
fn cdf(
    area: &Area,
    distribution: Distribution,
    sets: &[(String, Vec<f64>)],
    mark_percentiles: bool,
) -> Drawn {
    let (legend, area) = area.split_vertically(LEGEND_ROW);
    let all = sets.iter().flat_map(|(_, s)| s.iter().copied());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let empty = !lo.is_finite();
    let (x0, x1) = if empty {
        (0.0, 1.0)
    } else {
        padded(lo, hi, 0.0)
    };
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(56)
        .y_label_area_size(76)
        .build_cartesian_2d(x0..x1, 0f64..100.0)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(distribution.axis())
        .y_desc("requests at or below x (%)");
    mesh_styles(&mut mesh);
    mesh.draw()?;
    if empty {
        return notice(&area, "no successful request: nothing to plot");
    }
    let mut items = Vec::new();
    for (i, (label, samples)) in sets.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let n = samples.len() as f64;
        let mut steps = vec![(x0, 0.0)];
        for (k, &v) in samples.iter().enumerate() {
            steps.push((v, k as f64 / n * 100.0));
            steps.push((v, (k + 1) as f64 / n * 100.0));
        }
        steps.push((x1, 100.0));
        chart.draw_series(LineSeries::new(steps, color.stroke_width(3)))?;
        let name = if label.is_empty() { "requests" } else { label };
        items.push((
            format!("{name} (n = {})", samples.len()),
            color,
            Swatch::Line,
        ));
        // Dots only where they stay distinguishable.
        if samples.len() <= 200 {
            chart.draw_series(
                samples
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| Circle::new((v, (k + 1) as f64 / n * 100.0), 4, color.filled())),
            )?;
        }
    }
    if mark_percentiles && sets.len() == 1 {
        let samples = &sets[0].1;
        for (p, color) in [(50.0, PALETTE[1]), (95.0, PALETTE[2]), (99.0, PALETTE[5])] {
            let v = percentile(samples, p);
            chart.draw_series(DashedLineSeries::new(
                [(v, 0.0), (v, 100.0)],
                8,
                6,
                color.stroke_width(2),
            ))?;
            items.push((format!("p{p:.0} = {v:.2} ms"), color, Swatch::Dashed));
        }
    }
    legend_row(&legend, &items)
}

/// Histogram of the pooled inter-token gaps, with p50 and p99 marked, the counts on a log axis. Drawn from the HDR
/// histogram: each of its buckets (at most 0.1 % of its value wide) falls whole into the chart
/// bin holding the bucket's middle.
fn histogram(area: &Area, itl: &ItlStats) -> Drawn {
    let (legend, area) = area.split_vertically(LEGEND_ROW);
    let (lo, hi) = match itl.count() {
        1.. => (itl.min_ms(), itl.max_ms()),
        0 => {
            let mut chart = ChartBuilder::on(&area)
                .x_label_area_size(56)
                .y_label_area_size(76)
                .build_cartesian_2d(0f64..1.0, 0f64..1.0)?;
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(Distribution::Itl.axis()).y_desc("gaps (count)");
            mesh_styles(&mut mesh);
            mesh.draw()?;
            return notice(&area, "no gap between tokens in a successful request");
        }
    };
    let bins = ((itl.count() as f64).sqrt().ceil() as usize).clamp(5, 40);
    let (b0, b1) = if hi > lo {
        (lo, hi)
    } else {
        let pad = (lo.abs() * 0.05).max(0.5);
        (lo - pad, hi + pad)
    };
    let width = (b1 - b0) / bins as f64;
    let mut counts = vec![0u64; bins];
    for (v, count) in itl.buckets_ms() {
        let i = (((v - b0) / width) as usize).min(bins - 1);
        counts[i] += count;
    }
    // Counts on a log axis: the bulk of the gaps holds thousands and the tail a handful, which
    // on a linear axis is a bar under a pixel high. Bars rise from ITL_FLOOR, so a bin of one
    // gap still shows (an empty bin draws nothing).
    let top = *counts.iter().max().unwrap_or(&1) as f64 * 2.0;
    let (x0, x1) = padded(b0, b1, 0.0);
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(56)
        .y_label_area_size(76)
        .build_cartesian_2d(x0.min(b0)..x1, (ITL_FLOOR..top).log_scale())?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(Distribution::Itl.axis())
        .y_desc("gaps (count, log scale)")
        .y_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        });
    mesh_styles(&mut mesh);
    mesh.draw()?;
    chart.draw_series(
        counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| {
                let left = b0 + i as f64 * width;
                Rectangle::new(
                    [(left, ITL_FLOOR), (left + width, c as f64)],
                    PALETTE[0].mix(0.85).filled(),
                )
            }),
    )?;
    let mut items = vec![(
        format!("{} gaps in {bins} bins of {width:.3} ms", itl.count()),
        PALETTE[0],
        Swatch::Bar,
    )];
    for (p, color) in [(50.0, PALETTE[1]), (99.0, PALETTE[5])] {
        let v = itl.percentile_ms(p);
        chart.draw_series(DashedLineSeries::new(
            [(v, ITL_FLOOR), (v, top)],
            8,
            6,
            color.stroke_width(2),
        ))?;
        items.push((format!("p{p:.0} = {v:.2} ms"), color, Swatch::Dashed));
    }
    legend_row(&legend, &items)
}

/// Where the bars of the gap histogram's log count axis start: below one, so a single gap
/// is a bar.
const ITL_FLOOR: f64 = 0.5;

/// One row per request: a thin line for scheduling lag (open loop), a bar from send to first
/// token (queueing and prefill), a bar from first to last token (decoding); failures in red.
/// More bars than this are no longer readable, and each bar is SVG text held in memory at the
/// end of a run (file, chart list, HTML): a longer workload's timeline draws every k-th request.
const TIMELINE_MAX_REQUESTS: usize = 2_000;

fn timeline(area: &Area, all: &[RequestSample]) -> Drawn {
    let (legend, area) = area.split_vertically(LEGEND_ROW);
    let stride = all.len().div_ceil(TIMELINE_MAX_REQUESTS).max(1);
    let shown: Vec<RequestSample> = all.iter().step_by(stride).copied().collect();
    let records = &shown[..];
    let failed_total = all.iter().filter(|r| !r.success()).count();
    let end = all.iter().map(|r| r.end_ms()).fold(0.0, f64::max);
    let unit = TimeUnit::for_span(end);
    let t = |ms: f64| ms * unit.per_ms;
    let n = all.iter().map(|r| r.index() + 1).max().unwrap_or(1);
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(56)
        .y_label_area_size(76)
        .build_cartesian_2d(0f64..t(end.max(1.0) * 1.02), -0.7f64..(n as f64 - 0.3))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(format!(
        "time since the workload's first send ({})",
        unit.name
    ))
    .y_desc(if stride == 1 {
        "request (index)".to_string()
    } else {
        format!("request (index; 1 in {stride} of {} drawn)", all.len())
    })
    .y_labels(n.min(20))
    .y_label_formatter(&|y| {
        if (y - y.round()).abs() < 1e-9 && *y >= 0.0 {
            format!("{}", y.round() as i64)
        } else {
            String::new()
        }
    });
    mesh_styles(&mut mesh);
    mesh.draw()?;
    if records.is_empty() {
        return notice(&area, "no request was measured");
    }
    let half = if n > 40 { 0.45 } else { 0.3 };
    let row = |r: &RequestSample| r.index() as f64;
    let mut items = Vec::new();
    let lagging: Vec<_> = records
        .iter()
        .filter_map(|r| r.scheduled_ms().map(|s| (s, r)))
        .filter(|(s, r)| r.start_ms() > *s)
        .collect();
    if !lagging.is_empty() {
        chart.draw_series(lagging.iter().map(|(s, r)| {
            PathElement::new(
                vec![(t(*s), row(r)), (t(r.start_ms()), row(r))],
                MUTED.stroke_width(2),
            )
        }))?;
        items.push(("scheduled to sent (lag)".to_string(), MUTED, Swatch::Line));
    }
    chart.draw_series(records.iter().map(|r| {
        let first = r.ttft_ms().unwrap_or(r.finish_ms());
        Rectangle::new(
            [
                (t(r.start_ms()), row(r) - half),
                (t(r.start_ms() + first), row(r) + half),
            ],
            PALETTE[1].filled(),
        )
    }))?;
    items.push((
        "sent to first token (queue + prefill)".to_string(),
        PALETTE[1],
        Swatch::Bar,
    ));
    // A failed request's bar runs to where its stream stopped.
    let streamed = |r: &RequestSample| {
        let first = r.ttft_ms()?;
        let last = if r.success() {
            r.e2el_ms().unwrap_or(first)
        } else {
            r.finish_ms()
        };
        Some((row(r), t(r.start_ms() + first), t(r.start_ms() + last)))
    };
    chart.draw_series(
        records
            .iter()
            .filter(|r| r.success())
            .filter_map(streamed)
            .map(|(y, a, b)| Rectangle::new([(a, y - half), (b, y + half)], PALETTE[0].filled())),
    )?;
    items.push((
        "first to last token (decode)".to_string(),
        PALETTE[0],
        Swatch::Bar,
    ));
    let failed: Vec<&RequestSample> = records.iter().filter(|r| !r.success()).collect();
    if failed_total > 0 {
        chart.draw_series(failed.iter().filter_map(|r| streamed(r)).map(|(y, a, b)| {
            Rectangle::new([(a, y - half), (b, y + half)], FAILED.mix(0.55).filled())
        }))?;
        chart.draw_series(
            failed
                .iter()
                .map(|r| Cross::new((t(r.end_ms()), row(r)), 7, FAILED.stroke_width(3))),
        )?;
        items.push((
            format!("failed ({failed_total}), where its stream stopped"),
            FAILED,
            Swatch::Cross,
        ));
    }
    legend_row(&legend, &items)
}

/// Streamed tokens per second in equal time bins across the workload (between 32 and 64 bins,
/// each a power-of-two multiple of 1/1024 ms, merged from the bins kept as requests finished),
/// with the workload's output throughput as a dashed line.
fn tokens_per_second(area: &Area, samples: &WorkloadSamples, output_tps: f64) -> Drawn {
    let (legend, area) = area.split_vertically(LEGEND_ROW);
    let bins = samples.streamed_tokens().coarsened(64);
    let width_ms = bins.width_ms();
    let end = samples
        .requests()
        .iter()
        .map(|r| r.end_ms())
        .fold(0.0, f64::max)
        .max(bins.sums().len() as f64 * width_ms);
    let unit = TimeUnit::for_span(end);
    let rates: Vec<f64> = bins
        .sums()
        .iter()
        .map(|&c| c / (width_ms / 1000.0))
        .collect();
    let top = rates.iter().copied().fold(output_tps, f64::max).max(1.0) * 1.08;
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(56)
        .y_label_area_size(86)
        .build_cartesian_2d(0f64..(end.max(1.0) * unit.per_ms), 0f64..top)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(format!(
        "time since the workload's first send ({})",
        unit.name
    ))
    .y_desc("streamed output tokens/s");
    mesh_styles(&mut mesh);
    mesh.draw()?;
    if bins.sums().iter().all(|&c| c == 0.0) {
        return notice(&area, "no token was streamed");
    }
    let bin_width = width_ms * unit.per_ms;
    chart.draw_series(rates.iter().enumerate().map(|(i, &rate)| {
        let left = i as f64 * bin_width;
        Rectangle::new(
            [(left, 0.0), (left + bin_width, rate)],
            PALETTE[2].mix(0.8).filled(),
        )
    }))?;
    chart.draw_series(DashedLineSeries::new(
        [(0.0, output_tps), (end * unit.per_ms, output_tps)],
        8,
        6,
        PALETTE[5].stroke_width(2),
    ))?;
    legend_row(
        &legend,
        &[
            (
                format!("tokens/s per {bin_width:.3} {} bin", unit.name),
                PALETTE[2],
                Swatch::Bar,
            ),
            (
                format!("workload output throughput {output_tps:.1} tokens/s"),
                PALETTE[5],
                Swatch::Dashed,
            ),
        ],
    )
}

/// The panels of the key-metrics chart, in order; each shows the catalogue's figures that name
/// it (p50 and p99, or a single figure) for every workload.
const KEY_PANELS: [&str; 6] = [
    "TTFT",
    "TPOT",
    "Inter-token gap",
    "End-to-end latency",
    "Output throughput",
    "Error rate",
];

/// Bar colours by position in a group; a group of one gets its own colour, so a single figure
/// is never mistaken for a p50.
fn bar_color(position: usize, group_size: usize) -> RGBColor {
    if group_size == 1 {
        PALETTE[2]
    } else {
        PALETTE[position % PALETTE.len()]
    }
}

fn key_metrics(area: &Area, summary: &Summary) -> Drawn {
    let (legend, area) = area.split_vertically(LEGEND_ROW);
    legend_row(
        &legend,
        &[
            ("p50".to_string(), bar_color(0, 2), Swatch::Bar),
            ("p99".to_string(), bar_color(1, 2), Swatch::Bar),
            (
                "whole-workload figure".to_string(),
                bar_color(0, 1),
                Swatch::Bar,
            ),
        ],
    )?;
    let metrics: Vec<&WorkloadMetrics> = summary.workloads.values().collect();
    let names: Vec<String> = summary.workloads.keys().cloned().collect();
    for (panel, cell) in KEY_PANELS.iter().zip(area.split_evenly((2, 3))) {
        let cell = cell.margin(4, 8, 4, 8);
        let bars: Vec<&Metric> = METRICS.iter().filter(|m| m.panel == Some(*panel)).collect();
        let unit = bars.first().map_or("", |m| m.unit.axis());
        let groups: Vec<Vec<f64>> = metrics
            .iter()
            .map(|w| {
                bars.iter()
                    .map(|m| m.unit.shown((m.value)(w).unwrap_or(0.0)))
                    .collect()
            })
            .collect();
        bar_panel(&cell, &format!("{panel} ({unit})"), unit, &names, &groups)?;
    }
    if metrics.is_empty() {
        notice(&area, "the run has no workload")?;
    }
    Ok(())
}

/// The width in pixels of `text` in a font of `size`, as this module estimates it without a
/// font file: plotters writes `size / 1.24` px into the SVG, and a sans-serif character
/// averages 0.53 em.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size / 1.24 * 0.53
}

/// Horizontal room kept between two labels, in pixels.
const LABEL_GAP: f64 = 8.0;

/// The x labels of groups, as [`fit_labels`] fits them.
struct Fitted {
    /// A label per group, blank for those left out.
    labels: Vec<String>,
    /// What every name began with and no label repeats, for the axis ("" for none).
    prefix: String,
    /// Every `step`-th group is labelled.
    step: usize,
    /// The font size the labels fit in.
    size: f64,
}

/// The smallest font x labels are shrunk to before some are left out.
const MIN_LABEL_SIZE: f64 = 12.0;

/// The x labels of groups `slot` pixels apart, in a font of at most `size`: the names less the
/// prefix they all share up to an `_` (a sweep's `short_input_c1`, `short_input_c2`, ... read
/// `c1`, `c2`), in the largest font down to [`MIN_LABEL_SIZE`] in which the widest fits its
/// slot; failing that, every k-th label alone (the others blank), so that no two labels
/// overlap whatever the number of groups.
fn fit_labels(names: &[String], slot: f64, size: f64) -> Fitted {
    let mut prefix = String::new();
    if names.len() >= 2 {
        let first = &names[0];
        let shared = names[1..].iter().fold(first.len(), |len, n| {
            first
                .bytes()
                .zip(n.bytes())
                .take(len)
                .take_while(|(a, b)| a == b)
                .count()
        });
        if let Some(cut) = first.get(..shared).and_then(|p| p.rfind('_')) {
            if names.iter().all(|n| n.len() > cut + 1) {
                prefix = first[..=cut].to_string();
            }
        }
    }
    let labels: Vec<String> = names
        .iter()
        .map(|n| n[prefix.len()..].to_string())
        .collect();
    let widest = |size: f64| {
        labels
            .iter()
            .map(|l| text_width(l, size))
            .fold(0.0, f64::max)
    };
    let mut size = size;
    while size > MIN_LABEL_SIZE && widest(size) + LABEL_GAP > slot {
        size -= 1.0;
    }
    let step = if slot > 0.0 {
        (((widest(size) + LABEL_GAP) / slot).ceil() as usize).max(1)
    } else {
        1
    };
    let labels = labels
        .into_iter()
        .enumerate()
        .map(|(i, l)| if i % step == 0 { l } else { String::new() })
        .collect();
    Fitted {
        labels,
        prefix,
        step,
        size,
    }
}

/// What the x axis of thinned or shortened labels says about them, e.g. `short_input_… (every
/// 2nd labelled)`; empty when every label is whole.
fn labels_note(prefix: &str, step: usize) -> String {
    let every = match step {
        1 => String::new(),
        2 => " (every 2nd labelled)".to_string(),
        3 => " (every 3rd labelled)".to_string(),
        k => format!(" (every {k}th labelled)"),
    };
    match (prefix.is_empty(), every.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!("workloads{every}"),
        _ => format!("{prefix}…{every}"),
    }
}

/// Grouped bars: one group per workload, one bar per value, each value printed above its bar
/// where it fits. The x labels are fitted to the groups' width ([`fit_labels`]).
fn bar_panel(
    area: &Area,
    title: &str,
    unit: &str,
    group_names: &[String],
    groups: &[Vec<f64>],
) -> Drawn {
    const Y_LABELS: u32 = 70;
    const LABEL_SIZE: f64 = 16.0;
    let top = groups.iter().flatten().copied().fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.18 } else { 1.0 };
    let n = groups.len().max(1);
    let plot_width = f64::from(area.dim_in_pixel().0.saturating_sub(Y_LABELS));
    let slot = plot_width / n as f64;
    let fitted = fit_labels(group_names, slot, LABEL_SIZE);
    let note = labels_note(&fitted.prefix, fitted.step);
    let labels = &fitted.labels;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 21).into_font().color(&TEXT))
        .x_label_area_size(if note.is_empty() { 34 } else { 54 })
        .y_label_area_size(Y_LABELS)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..top)?;
    let mut mesh = chart.configure_mesh();
    if !note.is_empty() {
        mesh.x_desc(note);
    }
    mesh.disable_x_mesh()
        .y_desc(unit)
        // With one unit per workload, plotters puts its x labels on the integers.
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            labels.get(i as usize).cloned().unwrap_or_default()
        })
        .y_labels(5)
        .axis_desc_style((FONT, 15).into_font().color(&MUTED))
        .label_style((FONT, fitted.size).into_font().color(&TEXT))
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .draw()?;
    for (g, bars) in groups.iter().enumerate() {
        let k = bars.len().max(1);
        let width = 0.72 / k as f64;
        for (b, value) in bars.iter().enumerate() {
            let left = g as f64 - 0.36 + b as f64 * width;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(left + 0.015, 0.0), (left + width - 0.015, *value)],
                bar_color(b, k).filled(),
            )))?;
            // The figure above its bar in the largest font (at most 14) in which it stays
            // within the bar's width; none below 9, where it would not be read anyway.
            let text = format_figure(*value);
            let room = slot * width - 4.0;
            let size = (14.0 * room / text_width(&text, 14.0).max(1.0)).min(14.0);
            if size >= 9.0 {
                chart.draw_series(std::iter::once(Text::new(
                    text,
                    (left + width / 2.0, *value),
                    (FONT, size)
                        .into_font()
                        .color(&TEXT)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )))?;
            }
        }
    }
    Ok(())
}

fn format_figure(v: f64) -> String {
    // Four digits no longer fit above a bar beside its neighbour.
    if v.abs() >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Top: peak and average memory per workload, and beside it on its own axis peak KV, as the
/// backend reported them (no backend records a per-step series, so none is drawn). Bottom: tokens held by the requests in
/// flight over time, derived from the request records: prompt plus tokens streamed so far, for
/// every request between its send and its end. That is the KV demand the workload placed on the
/// engine before any prefix sharing, not a measurement of the cache.
fn memory_and_kv(area: &Area, summary: &Summary, samples: &IndexMap<String, Samples>) -> Drawn {
    let (upper, lower) = area.split_vertically(area.dim_in_pixel().1 / 2);
    let (legend, upper) = upper.split_vertically(LEGEND_ROW);
    legend_row(
        &legend,
        &[
            ("peak memory".to_string(), bar_color(0, 2), Swatch::Bar),
            ("average memory".to_string(), bar_color(1, 2), Swatch::Bar),
            ("peak KV cache".to_string(), bar_color(0, 1), Swatch::Bar),
        ],
    )?;
    let names: Vec<String> = summary.workloads.keys().cloned().collect();
    let mb = 1024.0 * 1024.0;
    // Memory holds the weights (GBs) and the KV cache a few MB of them: on one axis the KV
    // bar is a line on the floor, so each has its own panel and axis.
    let (memory, kv) = upper
        .margin(0, 8, 0, 0)
        .split_horizontally(upper.dim_in_pixel().0 * 3 / 5);
    let memory_groups: Vec<Vec<f64>> = summary
        .workloads
        .values()
        .map(|m| vec![m.peak_mem_mb, m.avg_mem_mb])
        .collect();
    bar_panel(
        &memory,
        "Memory, as the backend reported it",
        "MB",
        &names,
        &memory_groups,
    )?;
    let kv_groups: Vec<Vec<f64>> = summary
        .workloads
        .values()
        .map(|m| vec![m.kv_used_bytes as f64 / mb])
        .collect();
    bar_panel(&kv, "Peak KV cache (own axis)", "MB", &names, &kv_groups)?;

    let series: Vec<(String, Vec<(f64, f64)>)> = summary
        .workloads
        .keys()
        .filter_map(|name| {
            samples
                .get(name)
                .map(|s| (name.clone(), tokens_in_flight(s.held_tokens())))
        })
        .collect();
    let end = series
        .iter()
        .flat_map(|(_, s)| s.last().map(|p| p.0))
        .fold(1.0, f64::max);
    let peak = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let unit = TimeUnit::for_span(end);
    let (caption, lower) = lower.margin(10, 0, 0, 0).split_vertically(26);
    let (w, _) = caption.dim_in_pixel();
    caption.draw(&Text::new(
        "Tokens held by requests in flight: prompt + streamed so far (derived from the request records, not measured)",
        (w as i32 / 2, 4),
        (FONT, 18)
            .into_font()
            .color(&TEXT)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    let (legend, lower) = lower.split_vertically(LEGEND_ROW);
    let mut chart = ChartBuilder::on(&lower)
        .x_label_area_size(50)
        .y_label_area_size(76)
        .build_cartesian_2d(0f64..end * unit.per_ms * 1.02, 0f64..peak * 1.1)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(format!(
        "time since each workload's first send ({})",
        unit.name
    ))
    .y_desc("tokens")
    .y_labels(5);
    mesh_styles(&mut mesh);
    mesh.draw()?;
    let mut items = Vec::new();
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart.draw_series(LineSeries::new(
            points.iter().map(|(t, v)| (t * unit.per_ms, *v)),
            color.stroke_width(2),
        ))?;
        items.push((name.clone(), color, Swatch::Line));
    }
    legend_row(&legend, &items)
}

/// The font size of a sweep's point labels.
const POINT_LABEL: f64 = 15.0;

/// A sweep's latency against its output throughput: TTFT on the left, TPOT on the right, p50
/// solid and p99 dashed, a point per load labelled with it (`c4`, `r2.5`) and joined in load
/// order, one colour per swept workload. Where the line turns up is where more load buys
/// latency instead of throughput.
fn sweep_latency(area: &Area, sweeps: &[Sweep<'_>]) -> Drawn {
    let (legend, area) = area.split_vertically(LEGEND_ROW);
    let mut items = Vec::new();
    for (i, sweep) in sweeps.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let by = if sweep.kind == 'c' {
            "concurrency"
        } else {
            "request rate"
        };
        items.push((format!("{} by {by}: p50", sweep.base), color, Swatch::Line));
        items.push(("p99".to_string(), color, Swatch::Dashed));
    }
    legend_row(&legend, &items)?;
    type Figure = fn(&WorkloadMetrics) -> f64;
    let panels: [(&str, Figure, Figure); 2] = [
        ("TTFT (ms)", |m| m.p50_ttft_ms, |m| m.p99_ttft_ms),
        ("TPOT (ms)", |m| m.p50_tpot_ms, |m| m.p99_tpot_ms),
    ];
    let (w, _) = area.dim_in_pixel();
    let (left, right) = area.split_horizontally(w / 2);
    for (cell, (name, p50, p99)) in [left, right].iter().zip(panels) {
        let cell = cell.margin(4, 8, 4, 8);
        let points = sweeps.iter().flat_map(|s| s.points.iter());
        let (x_top, y_top) = points.fold((0.0f64, 0.0f64), |(x, y), (_, _, m)| {
            (x.max(m.output_throughput_tps), y.max(p99(m)).max(p50(m)))
        });
        let x_top = if x_top > 0.0 { x_top * 1.15 } else { 1.0 };
        let y_top = if y_top > 0.0 { y_top * 1.2 } else { 1.0 };
        let mut chart = ChartBuilder::on(&cell)
            .caption(name, (FONT, 21).into_font().color(&TEXT))
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_top, 0f64..y_top)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc("output throughput (tok/s)")
            .y_desc(name)
            .x_labels(5)
            .y_labels(5);
        mesh_styles(&mut mesh);
        mesh.draw()?;
        let mut placed: Vec<(f64, f64, f64)> = Vec::new();
        for (i, sweep) in sweeps.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let at = |f: Figure| -> Vec<(f64, f64)> {
                sweep
                    .points
                    .iter()
                    .map(|(_, _, m)| (m.output_throughput_tps, f(m)))
                    .collect()
            };
            chart.draw_series(LineSeries::new(at(p50), color.stroke_width(3)))?;
            chart.draw_series(DashedLineSeries::new(at(p99), 8, 6, color.stroke_width(2)))?;
            for (points, size) in [(at(p50), 5), (at(p99), 4)] {
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, size, color.filled())),
                )?;
            }
            // Each load's name above its p99 point (the higher of its two), unless it would
            // cover a name already written: close points keep the first's.
            let mut shown = Vec::new();
            for (_, label, m) in &sweep.points {
                let at = (m.output_throughput_tps, p99(m).max(p50(m)));
                let (x, y) = chart.backend_coord(&at);
                let half = text_width(label, POINT_LABEL) / 2.0 + 2.0;
                let rect = (f64::from(x) - half, f64::from(x) + half, f64::from(y));
                let clear = placed.iter().all(|(l, r, py): &(f64, f64, f64)| {
                    rect.1 < *l || *r < rect.0 || (rect.2 - py).abs() >= POINT_LABEL
                });
                if clear {
                    placed.push(rect);
                    shown.push((at, label.to_string()));
                }
            }
            chart.draw_series(shown.into_iter().map(|(at, label)| {
                EmptyElement::at(at)
                    + Text::new(
                        label,
                        (0, -8),
                        (FONT, POINT_LABEL)
                            .into_font()
                            .color(&TEXT)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
            }))?;
        }
    }
    Ok(())
}

/// A step function (time in ms from the workload's start, tokens) of prompt plus streamed
/// tokens summed over the requests in flight, from the changes binned as requests finished:
/// the changes within a bin are applied together at its start (at most [`MAX_BINS`] steps, so
/// a request that ends as another starts draws no momentary spike).
///
/// [`MAX_BINS`]: crate::results::time_bins::MAX_BINS
fn tokens_in_flight(changes: &TimeBins) -> Vec<(f64, f64)> {
    let mut level = 0.0;
    let mut points = vec![(0.0, 0.0)];
    for (i, change) in changes.sums().iter().enumerate() {
        if *change == 0.0 {
            continue;
        }
        let t = i as f64 * changes.width_ms();
        points.push((t, level));
        level += change;
        points.push((t, level));
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record::RequestRecord;

    fn record(index: usize, start: f64, times: &[f64], failed: bool) -> RequestRecord {
        crate::results::record::test_record(index, start, times, failed.then_some("boom"))
    }

    #[test]
    fn tokens_in_flight_rises_and_returns_to_zero() {
        let records = [
            record(0, 0.0, &[10.0, 20.0], false),
            record(1, 5.0, &[15.0], false),
        ];
        let points = tokens_in_flight(WorkloadSamples::from_records(&records).held_tokens());
        let peak = points.iter().map(|p| p.1).fold(0.0, f64::max);
        // Both prompts and the first request's first token, at 10 ms; at 20 ms both requests
        // stream their last token and end at once.
        assert_eq!(peak, 8.0 + 8.0 + 1.0);
        assert_eq!(points.last().unwrap().1, 0.0);
    }

    /// A summary of workloads named `names`, each of two requests whose decode gaps grow with
    /// its position (so the sweep's points differ), and the mock's memory and KV figures.
    fn summary_of(names: &[&str]) -> (Summary, IndexMap<String, Samples>) {
        let mut workloads = IndexMap::new();
        let mut samples = IndexMap::new();
        for (i, name) in names.iter().enumerate() {
            let gap = 1.0 + i as f64;
            let records = [
                record(0, 0.0, &[10.0, 10.0 + gap, 10.0 + 2.0 * gap], false),
                record(1, 1.0, &[12.0, 12.0 + gap], false),
            ];
            let mut m = crate::results::metrics::aggregate(
                name,
                "mock",
                "m",
                &records,
                crate::results::metrics::WallClock {
                    start_unix_s: 0.0,
                    total_time_s: 0.02 + 0.01 * i as f64,
                },
                &Default::default(),
            );
            // Weights of GBs and a KV cache of a few MB, as the mock reports them.
            m.peak_mem_mb = 2100.0;
            m.avg_mem_mb = 2090.0;
            m.kv_used_bytes = 5 * 1024 * 1024;
            workloads.insert(name.to_string(), m);
            samples.insert(
                name.to_string(),
                std::sync::Arc::new(WorkloadSamples::from_records(&records)),
            );
        }
        let provenance = Provenance::now("mock", "m", serde_json::json!({}));
        (Summary::from_metrics(provenance, workloads), samples)
    }

    /// The drawn text elements: (content, left and right edge as this module estimates them,
    /// baseline y).
    fn texts(svg: &str) -> Vec<(String, f64, f64, f64)> {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            // Rotated texts (the y axes' descriptions) run along their axis, clear of the rest.
            .filter(|n| n.has_tag_name("text") && n.attribute("transform").is_none())
            .filter_map(|n| {
                let content = n.text()?.trim().to_string();
                if content.is_empty() {
                    return None;
                }
                let x: f64 = n.attribute("x")?.parse().ok()?;
                let y: f64 = n.attribute("y")?.parse().ok()?;
                let px: f64 = n.attribute("font-size")?.parse().ok()?;
                // font-size is already the written size: 0.53 em a character.
                let w = content.chars().count() as f64 * px * 0.53;
                let (l, r) = match n.attribute("text-anchor") {
                    Some("middle") => (x - w / 2.0, x + w / 2.0),
                    Some("end") => (x - w, x),
                    _ => (x, x + w),
                };
                Some((content, l, r, y))
            })
            .collect()
    }

    /// The pairs of texts that overlap: on one line (the same y), or within a line's height
    /// of each other for `labels` (placed freely, as a sweep's point labels are).
    fn overlaps(texts: &[(String, f64, f64, f64)], labels: &[&str]) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for (i, a) in texts.iter().enumerate() {
            for b in &texts[i + 1..] {
                let free = labels.contains(&a.0.as_str()) && labels.contains(&b.0.as_str());
                let height = if free { 12.0 } else { 1.0 };
                if (a.3 - b.3).abs() < height && a.1 < b.2 && b.1 < a.2 {
                    found.push((a.0.clone(), b.0.clone()));
                }
            }
        }
        found
    }

    #[test]
    fn bar_labels_never_overlap_whatever_the_number_of_workloads() {
        for n in [1, 2, 3, 4, 6, 8, 12, 20, 40] {
            // A sweep (names sharing `short_input_`) and workloads with nothing in common.
            let sweep: Vec<String> = (0..n)
                .map(|i| format!("short_input_c{}", 1 << (i % 12)))
                .collect();
            let distinct: Vec<String> = (0..n)
                .map(|i| format!("w{i}_{}", "x".repeat(i % 9 + 6)))
                .collect();
            for names in [sweep, distinct] {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let (summary, samples) = summary_of(&names);
                for chart in run_charts(&summary, &samples).unwrap() {
                    let drawn = texts(&chart.svg);
                    // A sweep's point labels are the names' suffixes.
                    let points: Vec<&str> =
                        names.iter().filter_map(|n| n.rsplit('_').next()).collect();
                    let clashes = overlaps(&drawn, &points);
                    assert!(
                        clashes.is_empty(),
                        "{n} workloads, {}: {clashes:?}",
                        chart.file_name
                    );
                }
            }
        }
    }

    #[test]
    fn a_sweeps_labels_drop_the_prefix_they_share() {
        let names: Vec<String> = [
            "short_input_c1",
            "short_input_c2",
            "short_input_c4",
            "short_input_c8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // 57 px a group: what each of 4 groups gets in a key-metrics panel.
        let f = fit_labels(&names, 57.0, 16.0);
        assert_eq!(f.labels, ["c1", "c2", "c4", "c8"]);
        assert_eq!(
            (f.prefix.as_str(), f.step, f.size),
            ("short_input_", 1, 16.0)
        );
        assert_eq!(labels_note(&f.prefix, f.step), "short_input_…");
        // The Year-1 run in a 77 px slot: "short_input" (11 characters) and the 8 px gap take
        // 11 * 15 / 1.24 * 0.53 + 8 = 78.5 px at 15, 73.8 px at 14.
        let year1: Vec<String> = ["short_input", "long_input", "stress_test"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = fit_labels(&year1, 77.0, 16.0);
        assert_eq!((f.labels.clone(), f.step, f.size), (year1, 1, 14.0));
        // Nothing shared: whole names, every 3rd where a name is 3 slots wide.
        let names: Vec<String> = ["alpha", "beta", "gamma"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = fit_labels(&names, 100.0, 16.0);
        let (labels, prefix) = (f.labels, f.prefix);
        assert_eq!(
            (labels, prefix),
            (
                vec!["alpha".to_string(), "beta".into(), "gamma".into()],
                String::new()
            )
        );
        let names: Vec<String> = (0..7).map(|i| format!("workload{i}")).collect();
        // 9 characters at 12 / 1.24 * 0.53 px = 46.2 px, plus the gap: 3 slots of 20 px.
        let f = fit_labels(&names, 20.0, 16.0);
        assert_eq!((f.step, f.size), (3, 12.0));
        assert_eq!(
            f.labels,
            ["workload0", "", "", "workload3", "", "", "workload6"]
        );
        assert_eq!(labels_note("", 3), "workloads (every 3rd labelled)");
    }

    #[test]
    fn sweeps_are_found_by_name_and_ordered_by_load() {
        let (summary, _) = summary_of(&[
            "short_input_c4",
            "short_input_c1",
            "stress_test",
            "long_input_c2",
            "short_input_r2.5",
            "short_input_r10",
            "lonely_c3",
            "odd_cx",
        ]);
        let found: Vec<(&str, char, Vec<&str>)> = sweeps(&summary)
            .iter()
            .map(|s| (s.base, s.kind, s.points.iter().map(|p| p.1).collect()))
            .collect();
        assert_eq!(
            found,
            [
                ("short_input", 'c', vec!["c1", "c4"]),
                ("short_input", 'r', vec!["r2.5", "r10"]),
            ]
        );
    }

    #[test]
    fn the_sweep_chart_is_drawn_for_a_sweep_only_with_a_labelled_point_per_load() {
        let (plain, samples) = summary_of(&["short_input", "long_input"]);
        let files: Vec<String> = run_charts(&plain, &samples)
            .unwrap()
            .into_iter()
            .map(|c| c.file_name)
            .collect();
        assert_eq!(files, ["run_key_metrics.svg", "run_memory_kv.svg"]);
        let names = [
            "short_input_c1",
            "short_input_c2",
            "short_input_c4",
            "short_input_c8",
        ];
        let (sweep, samples) = summary_of(&names);
        let charts = run_charts(&sweep, &samples).unwrap();
        let chart = charts
            .iter()
            .find(|c| c.file_name == "run_sweep_latency.svg")
            .expect("a sweep's chart");
        let drawn: Vec<String> = texts(&chart.svg).into_iter().map(|t| t.0).collect();
        for label in ["c1", "c2", "c4", "c8"] {
            // One label per panel (TTFT and TPOT).
            assert_eq!(drawn.iter().filter(|t| *t == label).count(), 2, "{label}");
        }
        assert!(drawn.iter().any(|t| t == "output throughput (tok/s)"));
        // Four points per line, two lines (p50, p99) per panel: 16 dots.
        let doc = roxmltree::Document::parse(&chart.svg).unwrap();
        let dots = doc
            .descendants()
            .filter(|n| n.has_tag_name("circle"))
            .count();
        assert_eq!(dots, 16);
    }

    /// Heights of the rects filled with `color`, in pixels.
    fn bar_heights(svg: &str, color: RGBColor) -> Vec<f64> {
        let fill = format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2);
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(fill.as_str()))
            .filter_map(|n| n.attribute("height")?.parse().ok())
            .collect()
    }

    #[test]
    fn the_kv_bar_has_its_own_axis_beside_gigabytes_of_memory() {
        let (summary, samples) = summary_of(&["short_input", "long_input"]);
        let charts = run_charts(&summary, &samples).unwrap();
        let memory = charts
            .iter()
            .find(|c| c.file_name == "run_memory_kv.svg")
            .unwrap();
        // The legend swatch (14 px) and one KV bar per workload. 5 MB beside 2100 MB on one
        // axis was 0.3 px; on its own axis it is the tallest thing there.
        let heights = bar_heights(&memory.svg, PALETTE[2]);
        assert_eq!(heights.len(), 3, "{heights:?}");
        let kv = heights.iter().copied().fold(0.0, f64::max);
        assert!(kv > 100.0, "KV bar {kv} px high");
    }

    #[test]
    fn the_gap_histograms_tail_shows_on_its_log_axis() {
        // 2,000 gaps of 10 ms and 2 of 300 ms.
        let mut times = Vec::new();
        let mut t = 0.0;
        for i in 0..2_002 {
            t += if i % 1_000 == 999 { 300.0 } else { 10.0 };
            times.push(t);
        }
        let records = [record(0, 0.0, &times, false)];
        let samples = WorkloadSamples::from_records(&records);
        let svg = render("itl", "note", |area| histogram(area, samples.itl())).unwrap();
        let bars = bar_heights(&svg, PALETTE[0]);
        // The legend swatch, the bulk's bin and the tail's: on a linear axis the tail's two
        // gaps were 0.4 px of a 400 px plot.
        assert_eq!(bars.len(), 3, "{bars:?}");
        let mut bars = bars;
        bars.sort_by(f64::total_cmp);
        // Below it the legend's 14 px swatch, above it the bulk.
        let tail = bars[1];
        assert!(tail > 20.0, "tail bar {tail} px high: {bars:?}");
        assert!(svg.contains("gaps (count, log scale)"));
    }

    #[test]
    fn title_element_is_escaped_and_first() {
        let svg = with_title_element("<svg a=\"1\">\n<rect/></svg>".into(), "a < b & c");
        assert!(svg.starts_with("<svg a=\"1\">\n<title>a &lt; b &amp; c</title>"));
    }

    /// 5,001 requests, every 1,000th failed: the timeline draws 1 in 3 (1,667 rows) and says
    /// so, and its legend counts all 6 failures though only 2 are drawn (indices 0 and 3,000).
    #[test]
    fn a_long_workloads_timeline_draws_a_bounded_subset() {
        let records: Vec<RequestRecord> = (0..5_001)
            .map(|i| {
                record(
                    i,
                    i as f64,
                    &[i as f64 + 2.0, i as f64 + 5.0],
                    i % 1_000 == 0,
                )
            })
            .collect();
        let samples = WorkloadSamples::from_records(&records);
        let svg = render("long", "note", |area| timeline(area, samples.requests())).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
        // Queue bars for 1,667 rows and decode bars for the 1,665 successful ones, plus the
        // frame and legend swatches: far below the 10,000 a bar per request would need.
        assert!((3_332..3_400).contains(&rects), "{rects} rects");
        assert!(svg.contains("1 in 3 of 5001 drawn"), "no subset note");
        assert!(
            svg.contains("failed (6)"),
            "legend must count every failure"
        );
    }

    #[test]
    fn a_workload_whose_every_request_failed_still_draws() {
        let records = [record(0, 0.0, &[], true), record(1, 1.0, &[4.0], true)];
        let run = RunLabel("run: test".into());
        let mut metrics = crate::results::metrics::aggregate(
            "all_failed",
            "mock",
            "m",
            &records,
            crate::results::metrics::WallClock {
                start_unix_s: 0.0,
                total_time_s: 0.005,
            },
            &Default::default(),
        );
        metrics.workload = "all_failed".into();
        let samples = WorkloadSamples::from_records(&records);
        let charts = workload_charts(&run, &metrics, &samples).unwrap();
        assert_eq!(charts.len(), WorkloadChart::ALL.len());
        for c in charts {
            roxmltree::Document::parse(&c.svg).unwrap();
        }
    }
}
