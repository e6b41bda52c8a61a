//! The model driven directly on the calling thread, without the engine: for reference tests
//! (logits per position) and for the prefill/decode benchmark.

use std::time::{Duration, Instant};

use candle_core::Tensor;

use super::kv_cache::KvCache;
use super::load::{load, LoadOptions, LoadedModel};
use super::precision::{PrefillWeights, WeightDtype};
use super::source::resolve;
use super::weights::FormatLog;

/// A loaded model and its tokenizer.
pub struct DirectModel {
    loaded: LoadedModel,
}

/// Timings of one prefill followed by greedy decoding.
#[derive(Debug, Clone)]
pub struct Timed {
    /// Greedy output ids (the first comes from the prefill's logits).
    pub output: Vec<u32>,
    pub prefill: Duration,
    /// Time of the decode forward passes (`output.len() - 1` of them).
    pub decode: Duration,
}

impl DirectModel {
    /// Loads a model the way `--backend cpu --model` does (without setting thread counts), with
    /// the default `prefill_weights`.
    pub fn load(model: &str, dtype: WeightDtype) -> Result<Self, String> {
        Self::load_with(model, dtype, PrefillWeights::default())
    }

    /// Loads a model with prompt chunks multiplied as `prefill` says.
    pub fn load_with(
        model: &str,
        dtype: WeightDtype,
        prefill: PrefillWeights,
    ) -> Result<Self, String> {
        let files = resolve(model)?;
        Ok(DirectModel {
            loaded: load(&files, LoadOptions { dtype, prefill })?,
        })
    }

    /// Bytes of weight matrices read per forward pass.
    pub fn weight_bytes(&self) -> usize {
        self.loaded.model.weight_bytes()
    }

    /// The format each weight matrix is multiplied in, the fallbacks, the prefill copies.
    pub fn formats(&self) -> &FormatLog {
        &self.loaded.formats
    }

    pub fn architecture(&self) -> &'static str {
        self.loaded.model.architecture()
    }

    /// Token ids of `text` without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.loaded.codec.encode_plain(text)
    }

    /// Prompt ids exactly as the engine builds them for a workload request.
    pub fn prompt_ids(&self, text: &str, length: usize) -> Result<Vec<u32>, String> {
        self.loaded.codec.prompt_ids(text, length)
    }

    /// Logits of the last position after one prefill of `tokens`.
    pub fn prefill_logits(&self, tokens: &[u32]) -> Result<Vec<f32>, String> {
        let mut cache = KvCache::new(self.loaded.model.num_layers());
        let logits = self
            .loaded
            .model
            .forward(tokens, &mut cache)
            .map_err(|e| e.to_string())?;
        to_vec(&logits)
    }

    /// Logits at every position, feeding one token at a time through the KV cache.
    pub fn stepwise_logits(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, String> {
        let mut cache = KvCache::new(self.loaded.model.num_layers());
        tokens
            .iter()
            .map(|&t| {
                let logits = self
                    .loaded
                    .model
                    .forward(&[t], &mut cache)
                    .map_err(|e| e.to_string())?;
                to_vec(&logits)
            })
            .collect()
    }

    /// Prefills `prompt`, then decodes greedily to `count` output tokens, timing both phases.
    pub fn greedy_timed(&self, prompt: &[u32], count: usize) -> Result<Timed, String> {
        let mut cache = KvCache::new(self.loaded.model.num_layers());
        let err = |e: candle_core::Error| e.to_string();
        let started = Instant::now();
        let logits = self.loaded.model.forward(prompt, &mut cache).map_err(err)?;
        let mut next = argmax(&logits)?;
        let prefill = started.elapsed();
        let mut output = vec![next];
        let started = Instant::now();
        while output.len() < count {
            let logits = self
                .loaded
                .model
                .forward(&[next], &mut cache)
                .map_err(err)?;
            next = argmax(&logits)?;
            output.push(next);
        }
        Ok(Timed {
            output,
            prefill,
            decode: started.elapsed(),
        })
    }
}

impl DirectModel {
    /// llama-bench's `tg` test: from an empty cache, `count` forward passes of one token each,
    /// starting with `first` and feeding each greedy token back. Returns their total time.
    pub fn timed_generation(&self, first: u32, count: usize) -> Result<Duration, String> {
        let mut cache = KvCache::new(self.loaded.model.num_layers());
        let err = |e: candle_core::Error| e.to_string();
        let mut next = first;
        let started = Instant::now();
        for _ in 0..count {
            let logits = self
                .loaded
                .model
                .forward(&[next], &mut cache)
                .map_err(err)?;
            next = argmax(&logits)?;
        }
        Ok(started.elapsed())
    }

    /// llama-bench's `pp` test: one prefill of `prompt` into an empty cache. Returns its time.
    pub fn timed_prefill(&self, prompt: &[u32]) -> Result<Duration, String> {
        let mut cache = KvCache::new(self.loaded.model.num_layers());
        let started = Instant::now();
        let logits = self
            .loaded
            .model
            .forward(prompt, &mut cache)
            .map_err(|e| e.to_string())?;
        std::hint::black_box(logits);
        Ok(started.elapsed())
    }
}

/// Greedy decoding of several prompts side by side (see [`DirectModel::greedy_side_by_side`]).
#[derive(Debug, Clone)]
pub struct SideBySide {
    /// Per sequence, its greedy output ids (the first comes from its prefill).
    pub output: Vec<Vec<u32>>,
    /// Per sequence, the logits of each decode step (`output.len() - 1` of them).
    pub decode_logits: Vec<Vec<Vec<f32>>>,
    /// Time of the decode steps.
    pub decode: Duration,
}

impl DirectModel {
    /// Prefills each prompt on its own, then decodes all of them greedily to `count` output
    /// tokens each, one token per sequence per step: with `batched`, one batched forward pass
    /// per step (what the engine does); without, one forward pass per sequence per step.
    pub fn greedy_side_by_side(
        &self,
        prompts: &[Vec<u32>],
        count: usize,
        batched: bool,
    ) -> Result<SideBySide, String> {
        let model = &self.loaded.model;
        let err = |e: candle_core::Error| e.to_string();
        let mut caches = Vec::with_capacity(prompts.len());
        let mut output = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let mut cache = KvCache::new(model.num_layers());
            let logits = model.forward(prompt, &mut cache).map_err(err)?;
            output.push(vec![argmax(&logits)?]);
            caches.push(cache);
        }
        let mut decode_logits = vec![Vec::new(); prompts.len()];
        let started = Instant::now();
        for _ in 1..count {
            let last: Vec<u32> = output.iter().filter_map(|o| o.last().copied()).collect();
            let rows: Vec<Tensor> = if batched {
                let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
                let logits = model.decode_batch(&last, &mut refs).map_err(err)?;
                (0..prompts.len())
                    .map(|i| logits.get(i))
                    .collect::<candle_core::Result<_>>()
                    .map_err(err)?
            } else {
                last.iter()
                    .zip(caches.iter_mut())
                    .map(|(&token, cache)| model.forward(&[token], cache))
                    .collect::<candle_core::Result<_>>()
                    .map_err(err)?
            };
            for (i, row) in rows.iter().enumerate() {
                output[i].push(argmax(row)?);
                decode_logits[i].push(to_vec(row)?);
            }
        }
        Ok(SideBySide {
            output,
            decode_logits,
            decode: started.elapsed(),
        })
    }
}

fn to_vec(logits: &Tensor) -> Result<Vec<f32>, String> {
    logits.to_vec1::<f32>().map_err(|e| e.to_string())
}

fn argmax(logits: &Tensor) -> Result<u32, String> {
    logits
        .argmax(0)
        .and_then(|t| t.to_scalar::<u32>())
        .map_err(|e| e.to_string())
}
