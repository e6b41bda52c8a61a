//! The `cpu` backend: a real language model run in this process with candle.
//!
//! `--model` names a GGUF file (llama family), a Hugging Face folder (llama, GPT-2, OPT), or a
//! hub id fetched into the Hugging Face cache. One engine thread owns the model and serves every
//! request (see [`engine`] for the scheduling policy); each token is sent to the runner the
//! moment it is sampled, so TTFT and TBT are the runner's own clock readings. KV figures are the
//! sizes of the real cache tensors. See docs/CPU.md.

mod attention;
mod direct;
mod engine;
mod gpt2;
mod kv_cache;
mod linear;
mod llama;
mod load;
mod model;
mod opt;
mod packed;
mod precision;
mod prefix_cache;
mod q4_1;
mod q5_0;
mod q8;
mod source;
mod text;
mod weights;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[doc(hidden)]
pub use direct::{DirectModel, SideBySide, Timed};
pub use precision::{PrefillWeights, WeightDtype};
pub use weights::{Fallback, FormatLog};

use self::engine::{Command, Engine, EngineStats};
use super::{
    Backend, BackendError, EngineFigures, ErrorKind, FigureSource, GenerationRequest, StreamEvent,
};
use crate::backend::sink::TokenSink;
use crate::workload::Workload;

/// Inference threads when none is set: every core this process may use up to two, and one
/// fewer above two. Measured on the project's 2-core machine under the full Year-1 run, 2
/// threads beat 1 although the runner's tokio workers and memory sampler then share the cores
/// with the engine (wall 65 s against 89 s, stress_test p50 TTFT 3.9 s against 6.0 s;
/// docs/PERFORMANCE.md): the engine's threads wait at each product's barrier for microseconds,
/// which the runner's short wake-ups fit in. Above two cores one is left to the runner, whose
/// timestamps are the measurement (not measured: no larger machine here).
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cores <= 2 {
        cores
    } else {
        cores - 1
    }
}

/// More inference threads than this is a typo, not a machine: each is an OS thread.
const MAX_THREADS: usize = 1024;

/// Sequences decoded together when none is set (docs/PERFORMANCE.md).
pub const DEFAULT_MAX_BATCH: usize = 16;

/// Prompt tokens prefilled per round when none is set (docs/PERFORMANCE.md, chunked prefill).
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

/// The `[cpu]` table of a workload config; `--dtype` and `--threads` override it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuConfig {
    /// Weight format: auto, keep, f32, q8_0, q4_0, q4k, q6k.
    pub dtype: WeightDtype,
    /// Which weights prompt chunks are multiplied with: f32_copy, dequantize, quantized.
    pub prefill_weights: PrefillWeights,
    /// Inference threads (candle's pools are per process: the first model loaded sets them).
    pub threads: Option<usize>,
    /// 0 is greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling threshold (with temperature > 0).
    pub top_p: Option<f64>,
    /// Seeds sampling (request n uses seed + n).
    pub seed: u64,
    /// Stop at end-of-sequence instead of generating exactly the workload's output length.
    pub stop_at_eos: bool,
    /// Reuse the KV cache of earlier prompts that start the same way.
    pub prefix_caching: bool,
    /// KV budget in tokens (running sequences plus kept prefixes); kept prefixes beyond it are
    /// evicted, least recently used first.
    pub kv_cache_tokens: usize,
    /// Most running sequences decoded together in one forward pass; 1 decodes them one at a
    /// time (sequential round-robin).
    pub max_batch: usize,
    /// Most prompt tokens prefilled in one round, over every waiting prompt: a longer prompt is
    /// prefilled in chunks, with one decode step of every running sequence between two
    /// chunks. 0 prefills each arriving prompt whole before the round's decode step.
    pub prefill_chunk: usize,
}

impl Default for CpuConfig {
    fn default() -> Self {
        CpuConfig {
            dtype: WeightDtype::Auto,
            prefill_weights: PrefillWeights::default(),
            threads: None,
            temperature: 0.0,
            top_p: None,
            seed: 42,
            stop_at_eos: false,
            prefix_caching: true,
            kv_cache_tokens: 8192,
            max_batch: DEFAULT_MAX_BATCH,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
        }
    }
}

impl CpuConfig {
    /// Rejects settings that cannot sample: said when the config is read, not mid-run.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && (0.0..=100.0).contains(&self.temperature)) {
            return Err(format!(
                "temperature must lie between 0 (greedy) and 100, not {}",
                self.temperature
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("top_p must lie in (0, 1], not {p}"));
            }
            if self.temperature == 0.0 {
                return Err(
                    "top_p samples, so it needs a temperature above 0 (0 is greedy decoding)"
                        .to_string(),
                );
            }
        }
        if self.max_batch == 0 {
            return Err(
                "max_batch must be at least 1 (1 decodes one sequence at a time)".to_string(),
            );
        }
        if let Some(threads) = self.threads {
            if !(1..=MAX_THREADS).contains(&threads) {
                return Err(format!(
                    "threads (--threads) must be between 1 and {MAX_THREADS}, not {threads}"
                ));
            }
        }
        Ok(())
    }
}

/// A model running in this process.
pub struct CpuBackend {
    model: String,
    settings: serde_json::Value,
    commands: std::sync::mpsc::Sender<Command>,
    stats: Arc<Mutex<EngineStats>>,
}

impl CpuBackend {
    /// Loads `model` (a path or a hub id) and starts its engine thread.
    pub fn load(model: &str, config: &CpuConfig) -> Result<Self, BackendError> {
        config.validate().map_err(BackendError::Setup)?;
        let threads = config.threads.unwrap_or_else(default_threads);
        set_thread_count(threads);
        let files = source::resolve(model).map_err(BackendError::Setup)?;
        let started = std::time::Instant::now();
        let options = load::LoadOptions {
            dtype: config.dtype,
            prefill: config.prefill_weights,
        };
        let loaded = load::load(&files, options).map_err(BackendError::Setup)?;
        if let Some(summary) = loaded.formats.fallback_summary() {
            // Said once, when the model loads: the run's figures are of these formats.
            tracing::warn!("{model}: {summary}");
        }
        // Every [cpu] setting as configured, then what loading found out.
        let mut settings = serde_json::to_value(config)
            .map_err(|e| BackendError::Setup(format!("cannot record the settings: {e}")))?;
        if let Some(map) = settings.as_object_mut() {
            map.insert("threads".into(), serde_json::json!(effective_threads()));
            for (key, value) in [
                (
                    "architecture",
                    serde_json::json!(loaded.model.architecture()),
                ),
                (
                    "weight_bytes_per_token",
                    serde_json::json!(loaded.model.weight_bytes()),
                ),
                ("weight_formats", serde_json::json!(loaded.formats.used)),
                (
                    "weight_fallbacks",
                    serde_json::json!(loaded.formats.fallbacks),
                ),
                (
                    "prefill_copy_bytes",
                    serde_json::json!(loaded.formats.prefill_copy_bytes),
                ),
                (
                    "scheduling",
                    serde_json::json!(scheduling(config.max_batch, config.prefill_chunk)),
                ),
                ("load_s", serde_json::json!(started.elapsed().as_secs_f64())),
            ] {
                map.insert(key.into(), value);
            }
        }
        let stats = Arc::new(Mutex::new(EngineStats::default()));
        let engine = Engine::new(loaded, config.clone(), stats.clone());
        let (commands, inbox) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cpu-engine".to_string())
            .spawn(move || engine.run(inbox))
            .map_err(|e| BackendError::Setup(format!("cannot start the engine thread: {e}")))?;
        Ok(CpuBackend {
            model: model.to_string(),
            settings,
            commands,
            stats,
        })
    }
}

/// The engine's scheduling policy in words, for the report's settings.
fn scheduling(max_batch: usize, prefill_chunk: usize) -> String {
    let prefill = match prefill_chunk {
        0 => "prefill new arrivals whole".to_string(),
        n => format!("prefill up to {n} prompt tokens of the waiting requests"),
    };
    let decode = match max_batch {
        1 => String::new(),
        n => format!(", up to {n} sequences per forward pass"),
    };
    format!("{prefill}, then one decode step per running sequence, round-robin{decode}")
}

/// Sets candle's thread count unless the environment already does (`CANDLE_NUM_THREADS`,
/// `RAYON_NUM_THREADS`); candle reads it when its pools first start.
fn set_thread_count(threads: usize) {
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, threads.to_string());
        }
    }
}

/// The thread count candle uses, as the environment says.
fn effective_threads() -> Option<usize> {
    std::env::var("CANDLE_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
}

#[async_trait]
impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn model_in_process(&self) -> bool {
        true
    }

    fn settings(&self) -> serde_json::Value {
        self.settings.clone()
    }

    async fn start_workload(&self, _workload: &Workload) -> Result<(), BackendError> {
        let (done, ack) = oneshot::channel();
        self.commands
            .send(Command::ClearPrefixCache(done))
            .map_err(|_| BackendError::Setup("the cpu engine thread has stopped".to_string()))?;
        ack.await
            .map_err(|_| BackendError::Setup("the cpu engine thread has stopped".to_string()))?;
        if let Ok(mut s) = self.stats.lock() {
            s.reset();
        }
        Ok(())
    }

    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        // The engine thread pushes each token into the sink as it samples it, stamped there.
        let (events, stream) = TokenSink::channel(&self.clock());
        if let Err(std::sync::mpsc::SendError(Command::Generate { events, .. })) =
            self.commands.send(Command::Generate { request, events })
        {
            events.fail(ErrorKind::Engine, "the cpu engine thread has stopped");
        }
        stream
    }

    async fn reset_statistics(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.reset();
        }
    }

    async fn finish_workload(&self) -> Result<EngineFigures, BackendError> {
        let kv = self.stats.lock().map(|s| s.kv).unwrap_or_default();
        Ok(EngineFigures {
            kv: Some(kv),
            memory: None,
            spec: None,
            source: Some(FigureSource::Measured),
            connections: None,
            server_timings: None,
            spec_mean_acceptance_length: None,
        })
    }
}
