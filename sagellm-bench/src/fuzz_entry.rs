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
    use eventsource_stream::Eventsource;
    use futures::StreamExt;

    let Some((&cut, body)) = bytes.split_first() else {
        return;
    };
    let read_size = usize::from(cut % 64) + 1;
    let reads = body
        .chunks(read_size)
        .map(|c| Ok::<_, std::convert::Infallible>(c.to_vec()))
        .collect::<Vec<_>>();
    let mut events = futures::stream::iter(reads).eventsource();
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
