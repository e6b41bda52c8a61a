//! Latency objectives (SLOs) a workload sets for goodput: what the workload asks for. Checking
//! requests against them is in `results::goodput`.

use serde::{Deserialize, Serialize};

/// Latency objectives in milliseconds; a request meets an objective when its figure is at most
/// the limit. `None` sets no objective on that figure.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Slo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Time to first token, at most.
    pub ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Mean time between tokens of a request, at most.
    pub tbt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// End-to-end latency, at most.
    pub e2el_ms: Option<f64>,
}

/// The keys `--goodput` accepts, each with what it limits.
pub const SLO_KEYS: &[(&str, &str)] = &[
    ("ttft", "time to first token"),
    ("tbt", "time between tokens (vLLM's tpot)"),
    ("e2el", "end-to-end latency"),
];

impl Slo {
    /// True when no objective is set.
    pub fn is_empty(&self) -> bool {
        *self == Slo::default()
    }

    /// Parses `ttft:200,tbt:50,e2el:5000` (any subset, milliseconds; vLLM's space-separated
    /// form is accepted too).
    pub fn parse(text: &str) -> Result<Slo, String> {
        let mut slo = Slo::default();
        let keys = SLO_KEYS
            .iter()
            .map(|(k, _)| *k)
            .collect::<Vec<_>>()
            .join(", ");
        for item in text.split([',', ' ']).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once(':').ok_or_else(|| {
                format!("`{item}` must be KEY:MILLISECONDS, e.g. ttft:200,tbt:50,e2el:5000")
            })?;
            let ms = match value.trim().parse::<f64>() {
                Ok(ms) if ms.is_finite() && ms > 0.0 => ms,
                _ => {
                    return Err(format!(
                        "`{item}`: the limit must be a positive number of milliseconds"
                    ))
                }
            };
            let slot = match key.trim() {
                "ttft" => &mut slo.ttft_ms,
                "tbt" => &mut slo.tbt_ms,
                "e2el" => &mut slo.e2el_ms,
                "tpot" => {
                    return Err(
                        "`tpot` here is e2el/n; the objective vLLM calls tpot is our time between tokens: use tbt:MS"
                            .to_string(),
                    )
                }
                other => return Err(format!("unknown objective `{other}`; use {keys}")),
            };
            if slot.replace(ms).is_some() {
                return Err(format!("`{key}` is given twice"));
            }
        }
        if slo.is_empty() {
            return Err(format!(
                "no objective given; use KEY:MILLISECONDS with KEY one of {keys}, e.g. ttft:200,e2el:5000"
            ));
        }
        Ok(slo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_subset_and_refuses_bad_items() {
        assert_eq!(
            Slo::parse("ttft:200,tbt:50,e2el:5000").unwrap(),
            Slo {
                ttft_ms: Some(200.0),
                tbt_ms: Some(50.0),
                e2el_ms: Some(5000.0)
            }
        );
        assert_eq!(
            Slo::parse("e2el:1.5").unwrap(),
            Slo {
                e2el_ms: Some(1.5),
                ..Slo::default()
            }
        );
        assert_eq!(
            Slo::parse("ttft:200 tbt:50").unwrap(),
            Slo::parse("ttft:200,tbt:50").unwrap()
        );
        for (bad, words) in [
            ("", "no objective"),
            ("ttft", "KEY:MILLISECONDS"),
            ("ttft:0", "positive number"),
            ("ttft:-5", "positive number"),
            ("ttft:soon", "positive number"),
            ("ttft:NaN", "positive number"),
            ("itl:5", "unknown objective `itl`"),
            ("tpot:5", "use tbt:MS"),
            ("ttft:5,ttft:6", "given twice"),
        ] {
            let err = Slo::parse(bad).unwrap_err();
            assert!(err.contains(words), "{bad}: {err}");
        }
    }
}
