//! Entry points for the fuzz targets in `fuzz/` (and their regression tests): each takes the
//! bytes of one untrusted input, runs it through the same code a real run or report uses, and
//! must return without panicking whatever the bytes are. Not a public API.
//!
//! Errors are the expected outcome for most inputs and are dropped; only a panic, an abort or a
//! hang is a finding.

use crate::backend::openai::stream::{interpret, EventMeaning};
use crate::backend::EngineFigures;
use crate::compare::baseline::{self, CompareSettings, Saved};
use crate::report::{markdown, svg, table};
use crate::results::metrics::{aggregate_samples, WallClock};
use crate::results::samples::WorkloadSamples;
use crate::results::summary::Summary;
use crate::run::config::Config;
use crate::workload::setup::Prompts;

/// A server's response body as a byte stream: framed into events by the same SSE parser the
/// openai backend uses, each event read as the backend reads it. The first byte picks how the
/// rest is cut into network reads, so events split across reads are exercised too.
pub fn sse_stream(bytes: &[u8]) {
    use crate::backend::openai::sse::SseStream;
    use futures::StreamExt;

    let Some((&cut, body)) = bytes.split_first() else {
        return;
    };
    let read_size = usize::from(cut % 64) + 1;
    let reads = body
        .chunks(read_size)
        .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(c)))
        .collect::<Vec<_>>();
    let mut events = SseStream::new(futures::stream::iter(reads));
    futures::executor::block_on(async {
        while let Some(event) = events.next().await {
            let Ok(event) = event else { return };
            match interpret(&event.event, &event.data) {
                EventMeaning::Done | EventMeaning::Failed(..) => return,
                EventMeaning::Nothing => {}
                EventMeaning::Chunk(chunk) => {
                    // One token per content-bearing choice: never more tokens than there is
                    // output to show for them, unless tool calls carried them.
                    assert!(
                        chunk.tokens == 0
                            || !chunk.text.is_empty()
                            || data_has_tool_calls(&event.data)
                    );
                    assert!(chunk.reasoning_tokens == 0 || !chunk.reasoning_text.is_empty());
                }
            }
        }
    });
}

fn data_has_tool_calls(data: &str) -> bool {
    data.contains("tool_calls")
}

/// A `benchmark_summary.json`, as `report` reads it: parsed, then rendered as a table and as
/// markdown.
pub fn summary(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(summary) = Summary::parse(text) else {
        return;
    };
    let _ = table::render(&summary);
    let _ = markdown::render(&summary);
}

/// A workload's `requests.jsonl` (and, when the text parses as one, a `metrics.json`): parsed,
/// aggregated, compared with itself, and drawn.
pub fn saved_workload(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let _ = baseline::parse_metrics(text, "metrics.json");
    let Ok(records) = baseline::parse_records(text, "requests.jsonl") else {
        return;
    };
    let wall = WallClock {
        start_unix_s: 0.0,
        total_time_s: records.iter().map(|r| r.end_ms()).fold(0.0, f64::max) / 1000.0,
    };
    let samples = WorkloadSamples::from_records(&records);
    let metrics = aggregate_samples(
        "fuzz",
        "mock",
        "m",
        &samples,
        wall,
        &EngineFigures::default(),
    );
    let saved = Saved {
        metrics,
        samples: samples.into(),
    };
    let settings = CompareSettings {
        resamples: 20,
        ..CompareSettings::default()
    };
    let _ = baseline::compare(&saved, &saved, &settings);
    let run = svg::RunLabel("fuzz".into());
    let _ = svg::workload_charts(&run, &saved.metrics, &saved.samples);
}

/// A workload config file, as `run --config` reads it: parsed, every workload selected and
/// checked, and the start of each one's prompts and arrival schedule built.
pub fn workload_config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(config) = Config::parse(text, "fuzz.toml") else {
        return;
    };
    let Ok(workloads) = config.select("all") else {
        return;
    };
    for w in workloads {
        // Prompt building is linear in prompt_tokens (bounded at 2^20 by validation); a few
        // thousand keep the fuzzer fast without losing any branch.
        if w.prompt_tokens <= 4096 {
            let _ = w.prompt(0, false);
            let _ = w.prompt(1, true);
        }
        let _ = w.arrival.schedule(w.num_requests.min(64), w.seed);
    }
}

/// A prompt dataset, read both as JSON Lines and as ShareGPT.
pub fn prompt_dataset(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    for prompts in [
        Prompts::parse_jsonl(text, "prompts.jsonl"),
        Prompts::parse_sharegpt(text, "sharegpt.json"),
    ]
    .into_iter()
    .flatten()
    {
        assert!(!prompts.is_empty());
        let _ = prompts.get(prompts.len());
    }
}

/// The byte that separates the parts of an input made of several files (ASCII record
/// separator), e.g. a summary, a metrics file and a requests file.
pub const PART_SEPARATOR: u8 = 0x1e;

fn parts(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == PART_SEPARATOR)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// Two `/metrics` scrapes (before and after a workload, split at [`PART_SEPARATOR`]): parsed
/// and turned into the workload's figures as the openai backend does. No value that comes
/// out may be non-finite, negative, or a rate outside [0, 1].
pub fn prometheus(bytes: &[u8]) {
    let texts = parts(bytes);
    let before = texts.first().map_or("", String::as_str);
    let after = texts.get(1).map_or(before, String::as_str);
    let figures = crate::backend::openai::prometheus::figures_between(before, after);
    let shown = format!("{figures:?}");
    assert!(
        !shown.contains("NaN") && !shown.contains("inf"),
        "a non-finite figure: {shown}"
    );
    if let Some(kv) = &figures.kv {
        assert!(kv.prefix_hit_tokens <= kv.prefix_query_tokens, "{shown}");
        assert!(kv.evict_ms >= 0.0, "{shown}");
    }
    if let Some(spec) = &figures.spec {
        assert!(spec.accepted_tokens <= spec.draft_tokens, "{shown}");
    }
    if let Some(memory) = &figures.memory {
        assert!(memory.peak_mb >= 0.0, "{shown}");
    }
}

/// What `report` reads from a run's folder: a summary, a workload's metrics and its request
/// records (split at [`PART_SEPARATOR`]), laid in a folder as a run leaves them; loaded as
/// `report` loads them (a workload missing from an incomplete summary is rebuilt from its
/// records), then rendered as a table, markdown and the HTML report with its charts.
pub fn report_inputs(bytes: &[u8]) {
    let texts = parts(bytes);
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let summary = texts.first().cloned().unwrap_or_default();
    let workload = crate::results::summary::Summary::parse_checked(&summary)
        .ok()
        .and_then(|s| s.workloads.keys().next().cloned())
        .unwrap_or_else(|| "w".to_string());
    let files = [
        (crate::report::names::SUMMARY_FILE.to_string(), summary),
        (
            crate::report::names::metrics_file(&workload),
            texts.get(1).cloned().unwrap_or_default(),
        ),
        (
            crate::report::names::requests_file(&workload),
            texts.get(2).cloned().unwrap_or_default(),
        ),
        // A workload the summary does not list: a killed run's last one.
        (
            crate::report::names::requests_file("killed"),
            texts.get(3).cloned().unwrap_or_default(),
        ),
    ];
    for (name, text) in &files {
        if std::fs::write(dir.path().join(name), text).is_err() {
            return;
        }
    }
    let path = dir.path().join(crate::report::names::SUMMARY_FILE);
    let _ = baseline::parse_metrics(&files[1].1, "metrics.json");
    let Ok(saved) = crate::report::files::SavedRun::load(&path) else {
        return;
    };
    let _ = table::render(&saved.summary);
    let _ = markdown::render(&saved.summary);
    let _ = crate::report::html::write_report(dir.path(), &saved.summary, &saved.samples);
}

/// What `compare --result` and `report --baseline` read: two summaries, then two workloads'
/// metrics and records (split at [`PART_SEPARATOR`]: summary A, summary B, metrics A,
/// records A, metrics B, records B); compared side by side and as a baseline.
pub fn compare_inputs(bytes: &[u8]) {
    let texts = parts(bytes);
    let text = |i: usize| texts.get(i).map_or("", String::as_str);
    let runs: Vec<(String, String, Summary)> = [("a", text(0)), ("b", text(1))]
        .into_iter()
        .filter_map(|(name, t)| {
            let summary = Summary::parse_checked(t).ok()?;
            Some((name.to_string(), format!("{name}.json"), summary))
        })
        .collect();
    if runs.len() == 2 {
        let comparison = crate::compare::side_by_side::Comparison::new(&runs);
        let _ = comparison.to_markdown();
    }
    let side = |metrics: &str, records: &str| -> Option<Saved> {
        let metrics = baseline::parse_metrics(metrics, "metrics.json").ok()?;
        let records = baseline::parse_records(records, "requests.jsonl").ok()?;
        Some(Saved {
            metrics,
            samples: WorkloadSamples::from_records(&records).into(),
        })
    };
    if let (Some(base), Some(new)) = (side(text(2), text(3)), side(text(4), text(5))) {
        let settings = CompareSettings {
            resamples: 20,
            ..CompareSettings::default()
        };
        let comparison = baseline::compare(&base, &new, &settings);
        let _ = baseline::render(std::slice::from_ref(&comparison), "base");
    }
}
