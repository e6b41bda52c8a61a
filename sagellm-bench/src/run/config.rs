//! The workload config file (`--config`, TOML): overrides for the presets, new workloads, and
//! the parameters of the mock engine and of the cpu backend.
//!
//! ```toml
//! [mock]                      # simulated engine parameters (see MockConfig)
//! kv_blocks = 64
//!
//! [cpu]                       # cpu backend options (see CpuConfig)
//! kv_cache_tokens = 4096
//!
//! goodput = "ttft:200,e2el:5000"  # goodput objectives (ms) for every workload
//!
//! [workloads.short_input]     # override fields of a preset
//! num_requests = 2
//!
//! [workloads.shared_prefix]   # or define a new workload
//! prompt_tokens = 256
//! output_tokens = 64
//! num_requests = 20
//! concurrency = 10
//! shared_prefix_tokens = 192
//!
//! [workloads.steady]          # open loop: 4 requests/s, evenly spaced
//! prompt_tokens = 128
//! output_tokens = 64
//! num_requests = 40
//! rate = 4.0
//! arrival = "constant"        # or "poisson" (the default)
//!
//! [workloads.bursty]          # open loop: gamma gaps, at most 8 in flight
//! prompt_tokens = 128
//! output_tokens = 64
//! num_requests = 40
//! rate = 4.0
//! burstiness = 0.5            # 1 is Poisson; below 1 burstier, above 1 steadier
//! max_concurrency = 8
//! ```
//!
//! Errors name the file, the workload and the field.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

#[cfg(feature = "cpu")]
use crate::backend::cpu::CpuConfig;
use crate::backend::mock::MockConfig;
use crate::workload::session::{Sessions, ThinkTime};
use crate::workload::slo::Slo;
use crate::workload::trace::{parse_window, Trace, TraceFormat, TraceOptions};
use crate::workload::{Arrival, OpenLoop, Workload};

/// The fields a workload table may set.
pub const WORKLOAD_FIELDS: &[&str] = &[
    "prompt_tokens",
    "output_tokens",
    "num_requests",
    "warmup_requests",
    "concurrency",
    "rate",
    "arrival",
    "burstiness",
    "max_concurrency",
    "goodput",
    "seed",
    "shared_prefix_tokens",
    "sessions",
    "turns",
    "think_time",
    "system_prompt_tokens",
    "shared_system_prompt",
    "trace",
    "trace_format",
    "trace_speed",
    "trace_max_gap",
    "trace_window",
    "trace_block_size",
];

/// A parsed config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub mock: MockConfig,
    #[cfg(feature = "cpu")]
    pub cpu: CpuConfig,
    /// Goodput objectives for every workload (`goodput = "ttft:200,e2el:5000"` at the top).
    pub goodput: Option<Slo>,
    /// Workload name -> the fields the file sets, in file order.
    pub workloads: IndexMap<String, WorkloadPatch>,
}

/// The fields of one `[workloads.NAME]` table; `None` leaves the preset's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadPatch {
    pub prompt_tokens: Option<usize>,
    pub output_tokens: Option<usize>,
    pub num_requests: Option<usize>,
    pub warmup_requests: Option<usize>,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    /// How an open loop spaces its requests: `poisson` (the default) or `constant`.
    pub arrival: Option<OpenLoop>,
    /// Gamma gaps of this shape for the open loop (1: Poisson).
    pub burstiness: Option<f64>,
    /// An open loop's cap on requests in flight.
    pub max_concurrency: Option<usize>,
    /// Goodput objectives for this workload, over the file's own.
    pub goodput: Option<Slo>,
    pub seed: Option<u64>,
    pub shared_prefix_tokens: Option<usize>,
    /// Multi-turn: this many sessions (`prompt_tokens` is then each user message's length).
    pub sessions: Option<usize>,
    pub turns: Option<usize>,
    pub think_time: Option<ThinkTime>,
    pub system_prompt_tokens: Option<usize>,
    pub shared_system_prompt: Option<bool>,
    /// A trace to replay: its file (relative to the config file's folder), its format and the
    /// replay options.
    pub trace: Option<(PathBuf, TraceFormat)>,
    pub trace_options: TraceOptions,
}

/// A config file, or a workload selection, that cannot be used; each variant says where and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}; --config takes a TOML file (see docs/CONFIG.md)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{file}: not valid TOML: {source}")]
    Toml {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    /// A table or field of the file holds something that cannot be used; `message` names it.
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    /// The workload selection (`--workload`) is malformed or names no known workload.
    #[error("{message}")]
    Selection { selection: String, message: String },
    /// A workload's settings (a preset with its overrides, or a new workload) do not make a
    /// valid workload.
    #[error("workload `{workload}`: {message}")]
    Workload { workload: String, message: String },
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            crate::workload::input::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
            file: file.to_string(),
            source,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_string(),
            message,
        };
        let mut config = Config::default();
        for (key, value) in table {
            match key.as_str() {
                "mock" => {
                    config.mock = MockConfig::deserialize(value)
                        .map_err(|e| invalid(format!("[mock]: {}", e.message())))?;
                    config
                        .mock
                        .validate()
                        .map_err(|e| invalid(e.to_string()))?;
                }
                #[cfg(feature = "cpu")]
                "cpu" => {
                    config.cpu = CpuConfig::deserialize(value)
                        .map_err(|e| invalid(format!("[cpu]: {}", e.message())))?;
                    config
                        .cpu
                        .validate()
                        .map_err(|e| invalid(format!("[cpu]: {e}")))?;
                }
                #[cfg(not(feature = "cpu"))]
                "cpu" => {
                    return Err(invalid(
                        "[cpu]: the cpu backend is not compiled in (sagellm-bench's `cpu` feature is off)"
                            .to_string(),
                    ));
                }
                "goodput" => {
                    config.goodput = Some(parse_goodput(&value).map_err(|e| {
                        invalid(format!("`goodput`: {e}"))
                    })?);
                }
                "workloads" => {
                    let toml::Value::Table(workloads) = value else {
                        return Err(invalid(
                            "`workloads` must be a table of tables, like [workloads.short_input]"
                                .to_string(),
                        ));
                    };
                    let folder = Path::new(file).parent().unwrap_or(Path::new(""));
                    for (name, fields) in workloads {
                        let patch = parse_patch(&name, fields, folder)
                            .map_err(|e| invalid(format!("workload `{name}`: {e}")))?;
                        config.workloads.insert(name, patch);
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown table `{other}`{}; a config holds [mock], [cpu] and [workloads.NAME] tables and a `goodput` line",
                        did_you_mean(other, &["mock", "cpu", "workloads", "goodput"])
                    )))
                }
            }
        }
        Ok(config)
    }

    /// The workloads `selector` names, with this config's overrides applied and checked.
    ///
    /// `selector` is `year1` (the three presets), `all` (the presets and every workload the
    /// config defines), or a comma-separated list of names: `short`, `long`, `stress`, a preset's
    /// full name, or a workload the config defines.
    pub fn select(&self, selector: &str) -> Result<Vec<Workload>, ConfigError> {
        let selection = |message: String| ConfigError::Selection {
            selection: selector.to_string(),
            message,
        };
        let presets = Workload::year1();
        let mut names: Vec<String> = Vec::new();
        for part in selector.split(',').map(str::trim) {
            match part {
                "" => {
                    return Err(selection(format!(
                        "`{selector}` holds an empty workload name; give names separated by single commas, e.g. short,long"
                    )))
                }
                "year1" => names.extend(presets.iter().map(|w| w.name.clone())),
                "all" => {
                    names.extend(presets.iter().map(|w| w.name.clone()));
                    names.extend(self.workloads.keys().cloned());
                }
                "short" => names.push("short_input".into()),
                "long" => names.push("long_input".into()),
                "stress" => names.push("stress_test".into()),
                name if presets.iter().any(|w| w.name == name) => names.push(name.into()),
                name if self.workloads.contains_key(name) => names.push(name.into()),
                name => {
                    let mut known = vec!["year1", "all", "short", "long", "stress"];
                    known.extend(self.workloads.keys().map(String::as_str));
                    return Err(selection(format!(
                        "unknown workload `{name}`{}; choose one of: {} (or define it in a --config file)",
                        did_you_mean(name, &known),
                        known.join(", ")
                    )));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names.iter().map(|name| self.workload(name)).collect()
    }

    /// The named workload: a preset with this config's overrides, or one the config defines.
    fn workload(&self, name: &str) -> Result<Workload, ConfigError> {
        let preset = Workload::year1().into_iter().find(|w| w.name == name);
        let patch = self.workloads.get(name).cloned().unwrap_or_default();
        let fail = |message: String| ConfigError::Workload {
            workload: name.to_string(),
            message,
        };
        let mut w = match preset {
            Some(w) => w,
            None => {
                // A trace brings its lengths and count; sessions their count.
                let (replay, multi_turn) = (patch.trace.is_some(), patch.sessions.is_some());
                let missing: Vec<&str> = [
                    ("prompt_tokens", patch.prompt_tokens.is_none() && !replay),
                    ("output_tokens", patch.output_tokens.is_none() && !replay),
                    (
                        "num_requests",
                        patch.num_requests.is_none() && !replay && !multi_turn,
                    ),
                ]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(f, _)| *f)
                .collect();
                if !missing.is_empty() {
                    return Err(fail(format!(
                        "a new workload must set {}",
                        missing.join(", ")
                    )));
                }
                Workload::new(name, 0, 0, 0)
            }
        };
        let WorkloadPatch {
            prompt_tokens,
            output_tokens,
            num_requests,
            warmup_requests,
            concurrency,
            rate,
            arrival,
            burstiness,
            max_concurrency,
            goodput,
            seed,
            shared_prefix_tokens,
            sessions,
            turns,
            think_time,
            system_prompt_tokens,
            shared_system_prompt,
            trace,
            trace_options,
        } = patch;
        w.goodput = goodput.or(self.goodput);
        w.prompt_tokens = prompt_tokens.unwrap_or(w.prompt_tokens);
        w.output_tokens = output_tokens.unwrap_or(w.output_tokens);
        w.num_requests = num_requests.unwrap_or(w.num_requests);
        w.warmup_requests = warmup_requests.unwrap_or(w.warmup_requests);
        w.seed = seed.unwrap_or(w.seed);
        w.shared_prefix_tokens = shared_prefix_tokens.unwrap_or(w.shared_prefix_tokens);
        match (concurrency, rate) {
            (Some(_), Some(_)) => {
                return Err(fail(
                    "set either `concurrency` (closed loop) or `rate` (open loop), not both".into(),
                ))
            }
            (Some(concurrency), None) => w.arrival = Arrival::Closed { concurrency },
            (None, Some(rate)) => w.arrival = arrival.unwrap_or_default().at(rate),
            (None, None) => {}
        }
        if let (Some(kind), None) = (arrival, rate) {
            // A preset's own open loop takes the new spacing at its rate; a closed loop has none.
            match w.arrival.rate() {
                Some(rate) => w.arrival = kind.at(rate),
                None => {
                    return Err(fail(
                        "`arrival` spaces an open loop's requests; set `rate` (requests per second) with it".into(),
                    ))
                }
            }
        }
        if let Some(burstiness) = burstiness {
            match w.arrival {
                Arrival::Poisson { rate } | Arrival::Gamma { rate, .. } => {
                    w.arrival = if burstiness == 1.0 {
                        Arrival::Poisson { rate }
                    } else {
                        Arrival::Gamma { rate, burstiness }
                    }
                }
                _ => {
                    return Err(fail(
                        "`burstiness` shapes the random gaps of an open loop; set `rate` with it (and no `arrival = \"constant\"`)".into(),
                    ))
                }
            }
        }
        w.max_concurrency = max_concurrency.or(w.max_concurrency);
        if let Some(count) = sessions {
            let mut sessions = Sessions::synthetic(count, turns.unwrap_or(4), w.prompt_tokens);
            sessions.think_time = think_time.unwrap_or_default();
            sessions.system_prompt_tokens = system_prompt_tokens.unwrap_or(0);
            sessions.system_prompt_shared = shared_system_prompt.unwrap_or(false);
            if num_requests.is_some() {
                return Err(fail(
                    "a multi-turn workload sends sessions × turns requests; drop `num_requests`"
                        .into(),
                ));
            }
            w.set_sessions(sessions);
        }
        if let Some((file, format)) = trace {
            if sessions.is_some()
                || concurrency.is_some()
                || rate.is_some()
                || num_requests.is_some()
            {
                return Err(fail(
                    "a `trace` sets its requests and when each starts; drop `sessions`, `num_requests`, `concurrency` and `rate` (take a part of it with `trace_window`)".into(),
                ));
            }
            let trace =
                Trace::load(&file, format, trace_options).map_err(|e| fail(e.to_string()))?;
            w.set_trace(trace);
        }
        w.validate().map_err(fail)?;
        Ok(w)
    }
}

fn parse_patch(name: &str, fields: toml::Value, folder: &Path) -> Result<WorkloadPatch, String> {
    let toml::Value::Table(fields) = fields else {
        return Err(format!(
            "must be a table, like [workloads.{name}] followed by `field = value` lines"
        ));
    };
    let mut patch = WorkloadPatch::default();
    let mut trace_file: Option<PathBuf> = None;
    let mut trace_format: Option<TraceFormat> = None;
    for (field, value) in fields {
        let count = || -> Result<usize, String> {
            value
                .as_integer()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| {
                    format!("field `{field}` must be a non-negative integer, not {value}")
                })
        };
        match field.as_str() {
            "prompt_tokens" => patch.prompt_tokens = Some(count()?),
            "output_tokens" => patch.output_tokens = Some(count()?),
            "num_requests" => patch.num_requests = Some(count()?),
            "warmup_requests" => patch.warmup_requests = Some(count()?),
            "concurrency" => patch.concurrency = Some(count()?),
            "max_concurrency" => patch.max_concurrency = Some(count()?),
            "burstiness" => {
                patch.burstiness = Some(match value {
                    toml::Value::Float(f) => f,
                    toml::Value::Integer(i) => i as f64,
                    _ => {
                        return Err(format!(
                        "field `burstiness` must be a number above 0 (1 is Poisson), not {value}"
                    ))
                    }
                })
            }
            "shared_prefix_tokens" => patch.shared_prefix_tokens = Some(count()?),
            "seed" => patch.seed = Some(count()? as u64),
            "sessions" => patch.sessions = Some(count()?),
            "turns" => patch.turns = Some(count()?),
            "system_prompt_tokens" => patch.system_prompt_tokens = Some(count()?),
            "trace_block_size" => patch.trace_options.block_size = count()?,
            "shared_system_prompt" => {
                patch.shared_system_prompt = Some(value.as_bool().ok_or_else(|| {
                    format!("field `shared_system_prompt` must be true or false, not {value}")
                })?)
            }
            "think_time" => {
                let text = match &value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    _ => String::new(),
                };
                patch.think_time =
                    Some(ThinkTime::parse(&text).map_err(|e| format!("field `think_time`: {e}"))?);
            }
            "trace" => {
                let file = value.as_str().ok_or_else(|| {
                    format!("field `trace` must be the trace file's path, not {value}")
                })?;
                trace_file = Some(folder.join(file));
            }
            "trace_format" => {
                trace_format =
                    Some(value.as_str().and_then(TraceFormat::parse).ok_or_else(|| {
                        format!(
                            "field `trace_format` must be \"mooncake\" or \"jsonl\", not {value}"
                        )
                    })?);
            }
            "trace_speed" | "trace_max_gap" => {
                let number = match value {
                    toml::Value::Float(f) => f,
                    toml::Value::Integer(i) => i as f64,
                    _ => return Err(format!("field `{field}` must be a number, not {value}")),
                };
                if field == "trace_speed" {
                    patch.trace_options.speed = number;
                } else if number.is_finite() && number >= 0.0 {
                    patch.trace_options.max_gap = Some(std::time::Duration::from_secs_f64(number));
                } else {
                    return Err(format!(
                        "field `trace_max_gap` must be seconds from 0, not {value}"
                    ));
                }
            }
            "trace_window" => {
                let text = value.as_str().ok_or_else(|| {
                    format!("field `trace_window` must be a string like \"60..120\", not {value}")
                })?;
                patch.trace_options.window = Some(parse_window(text)?);
            }
            "rate" => {
                let rate = match value {
                    toml::Value::Float(f) => f,
                    toml::Value::Integer(i) => i as f64,
                    _ => {
                        return Err(format!(
                            "field `rate` must be a number of requests per second, not {value}"
                        ))
                    }
                };
                patch.rate = Some(rate);
            }
            "goodput" => patch.goodput = Some(parse_goodput(&value)?),
            "arrival" => {
                let kind = value.as_str().and_then(OpenLoop::parse).ok_or_else(|| {
                    format!("field `arrival` must be \"poisson\" or \"constant\", not {value}")
                })?;
                patch.arrival = Some(kind);
            }
            other => {
                return Err(format!(
                    "unknown field `{other}`{}; the fields are: {}",
                    did_you_mean(other, WORKLOAD_FIELDS),
                    WORKLOAD_FIELDS.join(", ")
                ))
            }
        }
    }
    match (trace_file, trace_format) {
        (Some(file), format) => patch.trace = Some((file, format.unwrap_or(TraceFormat::Mooncake))),
        (None, Some(_)) => return Err("field `trace_format` needs a `trace` file".into()),
        (None, None) => {}
    }
    let sets_trace_options = patch.trace_options != TraceOptions::default();
    if sets_trace_options && patch.trace.is_none() {
        return Err("the trace_* fields need a `trace` file".into());
    }
    let sets_session_fields =
        patch.turns.is_some() || patch.think_time.is_some() || patch.system_prompt_tokens.is_some();
    if sets_session_fields && patch.sessions.is_none() {
        return Err("turns, think_time, system_prompt_tokens and shared_system_prompt need `sessions` (the number of multi-turn sessions)".into());
    }
    Ok(patch)
}

/// Reads objectives written as `--goodput` takes them: "ttft:200,tbt:50,e2el:5000".
fn parse_goodput(value: &toml::Value) -> Result<Slo, String> {
    let text = value.as_str().ok_or_else(|| {
        format!("goodput must be a string like \"ttft:200,tbt:50,e2el:5000\", not {value}")
    })?;
    Slo::parse(text).map_err(|e| format!("goodput: {e}"))
}

/// " (did you mean `x`?)" when a known name is close to `given`, else "".
pub fn did_you_mean(given: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::levenshtein(given, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burstiness_and_max_concurrency_shape_an_open_loop() {
        let c = Config::parse(
            "[workloads.a]\nprompt_tokens = 8\noutput_tokens = 8\nnum_requests = 4\nrate = 4\nburstiness = 0.5\nmax_concurrency = 3\n\n[workloads.b]\nprompt_tokens = 8\noutput_tokens = 8\nnum_requests = 4\nconcurrency = 2\nmax_concurrency = 3\n\n[workloads.c]\nprompt_tokens = 8\noutput_tokens = 8\nnum_requests = 4\nrate = 4\narrival = \"constant\"\nburstiness = 2\n",
            "c.toml",
        )
        .unwrap();
        let a = &c.select("a").unwrap()[0];
        assert_eq!(
            a.arrival,
            Arrival::Gamma {
                rate: 4.0,
                burstiness: 0.5
            }
        );
        assert_eq!(a.max_concurrency, Some(3));
        let b = c.select("b").unwrap_err().to_string();
        assert!(b.contains("`b`") && b.contains("closed loop"), "{b}");
        let e = c.select("c").unwrap_err().to_string();
        assert!(e.contains("burstiness") && e.contains("constant"), "{e}");
    }

    #[test]
    fn overrides_a_preset_field() {
        let c = Config::parse("[workloads.short_input]\nnum_requests = 2\n", "c.toml").unwrap();
        let w = c.select("short").unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].num_requests, 2);
        assert_eq!(w[0].prompt_tokens, 128);
    }

    #[test]
    fn misspelt_field_names_file_workload_and_field() {
        let err =
            Config::parse("[workloads.short_input]\nnum_request = 2\n", "my.toml").unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { file, .. } if file == "my.toml"));
        let err = err.to_string();
        assert!(err.contains("my.toml"), "{err}");
        assert!(err.contains("short_input"), "{err}");
        assert!(err.contains("num_request"), "{err}");
        assert!(err.contains("did you mean `num_requests`"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = Config::parse(
            "[workloads.long_input]\nprompt_tokens = \"many\"\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("long_input") && err.contains("prompt_tokens"),
            "{err}"
        );
    }

    #[test]
    fn new_workload_needs_its_shape_and_runs_by_name() {
        let err = Config::parse("[workloads.mine]\nprompt_tokens = 10\n", "c.toml")
            .unwrap()
            .select("mine")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output_tokens") && err.contains("num_requests"),
            "{err}"
        );
        let c = Config::parse(
            "[workloads.mine]\nprompt_tokens = 10\noutput_tokens = 5\nnum_requests = 3\nrate = 2\n",
            "c.toml",
        )
        .unwrap();
        let w = c.select("mine").unwrap();
        assert_eq!(w[0].arrival, Arrival::Poisson { rate: 2.0 });
        assert_eq!(c.select("all").unwrap().len(), 4);
        assert_eq!(c.select("year1").unwrap().len(), 3);
    }

    #[test]
    fn sessions_and_traces_from_a_config_file() {
        let c = Config::parse(
            "[workloads.chat]\nprompt_tokens = 16\noutput_tokens = 8\nsessions = 3\nturns = 2\n\
             think_time = \"exp:250\"\nsystem_prompt_tokens = 40\nshared_system_prompt = true\nconcurrency = 3\n",
            "c.toml",
        )
        .unwrap();
        let w = &c.select("chat").unwrap()[0];
        let s = w.sessions.as_ref().unwrap();
        assert_eq!(
            (s.count, s.turns, s.user_tokens, s.system_prompt_tokens),
            (3, 2, 16, 40)
        );
        assert!(s.system_prompt_shared);
        assert_eq!(
            s.think_time,
            crate::workload::session::ThinkTime::Exponential(std::time::Duration::from_millis(250))
        );
        assert_eq!(w.num_requests, 6);
        // A trace's path is relative to the config file's folder.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.jsonl"),
            "{\"timestamp_ms\": 0, \"prompt_tokens\": 4, \"output_tokens\": 2}\n{\"timestamp_ms\": 500, \"prompt_tokens\": 6, \"output_tokens\": 2}\n",
        )
        .unwrap();
        let file = dir.path().join("c.toml");
        let text =
            "[workloads.replay]\ntrace = \"t.jsonl\"\ntrace_format = \"jsonl\"\ntrace_speed = 2\n";
        let c = Config::parse(text, &file.display().to_string()).unwrap();
        let w = &c.select("replay").unwrap()[0];
        assert_eq!((w.num_requests, w.arrival), (2, Arrival::Trace));
        assert_eq!(
            w.schedule().unwrap(),
            [
                std::time::Duration::ZERO,
                std::time::Duration::from_millis(250)
            ]
        );
        for (text, expected) in [
            ("[workloads.x]\nturns = 2\n", "need `sessions`"),
            ("[workloads.x]\ntrace_speed = 2\n", "need a `trace` file"),
            ("[workloads.x]\ntrace_format = \"csv\"\n", "trace_format"),
            ("[workloads.x]\nthink_time = \"soon\"\n", "think_time"),
        ] {
            let err = Config::parse(text, "c.toml").unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let err = Config::parse(
            "[workloads.short_input]\nsessions = 2\nnum_requests = 4\n",
            "c.toml",
        )
        .unwrap()
        .select("short")
        .unwrap_err()
        .to_string();
        assert!(err.contains("drop `num_requests`"), "{err}");
        let err = Config::parse("[workloads.r]\ntrace = \"missing.jsonl\"\n", "c.toml")
            .unwrap()
            .select("r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
    }

    #[test]
    fn arrival_chooses_the_open_loop_spacing() {
        let c = Config::parse(
            "[workloads.a]\nprompt_tokens = 4\noutput_tokens = 4\nnum_requests = 2\nrate = 4\narrival = \"constant\"\n\
             [workloads.b]\nprompt_tokens = 4\noutput_tokens = 4\nnum_requests = 2\nrate = 4\n\
             [workloads.c]\nprompt_tokens = 4\noutput_tokens = 4\nnum_requests = 2\nrate = 4\narrival = \"poisson\"\n\
             [workloads.stress_test]\narrival = \"constant\"\n",
            "c.toml",
        )
        .unwrap();
        let arrival = |name| c.select(name).unwrap()[0].arrival;
        assert_eq!(arrival("a"), Arrival::Constant { rate: 4.0 });
        assert_eq!(arrival("b"), Arrival::Poisson { rate: 4.0 });
        assert_eq!(arrival("c"), Arrival::Poisson { rate: 4.0 });
        // stress_test is a closed loop: `arrival` alone has no rate to space.
        let err = c.select("stress").unwrap_err().to_string();
        assert!(err.contains("set `rate`"), "{err}");
        let err = Config::parse("[workloads.a]\narrival = \"burst\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"poisson\" or \"constant\""), "{err}");
    }

    #[test]
    fn goodput_objectives_for_all_and_per_workload() {
        let c = Config::parse(
            "goodput = \"ttft:200\"\n[workloads.long_input]\ngoodput = \"e2el:5000,tbt:50\"\n",
            "c.toml",
        )
        .unwrap();
        let w = c.select("short,long").unwrap();
        assert_eq!(w[0].goodput, Some(Slo::parse("ttft:200").unwrap()));
        assert_eq!(
            w[1].goodput,
            Some(Slo {
                e2el_ms: Some(5000.0),
                tbt_ms: Some(50.0),
                ttft_ms: None
            })
        );
        let err = Config::parse("goodput = \"ttft:0\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("goodput") && err.contains("positive"), "{err}");
        let err = Config::parse("goodput = 5\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a string"), "{err}");
    }

    #[test]
    fn concurrency_and_rate_conflict() {
        let c = Config::parse(
            "[workloads.stress_test]\nrate = 2.0\nconcurrency = 3\n",
            "c.toml",
        )
        .unwrap();
        let err = c.select("stress").unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn mock_section_is_checked() {
        let c = Config::parse("[mock]\nkv_blocks = 40\n", "c.toml").unwrap();
        assert_eq!(c.mock.kv_blocks, 40);
        let err = Config::parse("[mock]\nkv_block = 40\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[mock]") && err.contains("kv_block"), "{err}");
        let err = Config::parse("[mock]\nkv_blocks = 0\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kv_blocks"), "{err}");
    }

    #[test]
    fn unknown_workload_lists_the_choices() {
        let err = Config::default().select("shrot").unwrap_err();
        assert!(matches!(&err, ConfigError::Selection { selection, .. } if selection == "shrot"));
        let err = err.to_string();
        assert!(err.contains("did you mean `short`"), "{err}");
        assert!(err.contains("year1"), "{err}");
    }
}
