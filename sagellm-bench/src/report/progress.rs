//! Live progress on stderr: one bar per workload with requests done, streamed tokens/s, elapsed
//! and remaining time.
//!
//! Drawn only when stderr is a terminal: in CI logs and pipes, redrawn bars are noise, so there
//! the reporter prints nothing at all. Results go to stdout and never mix with the bars.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Report, ReportError};
use crate::results::record::RequestRecord;
use crate::results::WorkloadResult;
use crate::workload::Workload;

/// Progress bars on stderr, one per workload as it runs.
pub struct ProgressBars {
    visible: bool,
    bar: Option<ProgressBar>,
    output_tokens: usize,
    /// Latest end of a finished request, from the workload's first send, in milliseconds.
    latest_end_ms: f64,
}

impl ProgressBars {
    /// Bars that draw only when stderr is a terminal.
    pub fn on_stderr() -> Self {
        Self::with_visibility(std::io::stderr().is_terminal())
    }

    /// Bars drawn (or not) regardless of where stderr goes; for tests and callers that know.
    pub fn with_visibility(visible: bool) -> Self {
        ProgressBars {
            visible,
            bar: None,
            output_tokens: 0,
            latest_end_ms: 0.0,
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{prefix:>14.bold} [{bar:32.cyan/blue}] {pos}/{len} requests  {msg}  elapsed {elapsed}  remaining {eta}",
        )
        .expect("the built-in progress template parses")
        .progress_chars("=> ")
    }
}

impl Report for ProgressBars {
    fn workload_started(&mut self, workload: &Workload) -> Result<(), ReportError> {
        if !self.visible {
            return Ok(());
        }
        let bar = ProgressBar::with_draw_target(
            Some(workload.own_requests() as u64),
            ProgressDrawTarget::stderr(),
        )
        .with_style(Self::style())
        .with_prefix(workload.name.clone())
        .with_message("– tokens/s");
        bar.tick();
        self.bar = Some(bar);
        self.output_tokens = 0;
        self.latest_end_ms = 0.0;
        Ok(())
    }

    fn request_finished(
        &mut self,
        _: &Workload,
        record: &RequestRecord,
    ) -> Result<(), ReportError> {
        let Some(bar) = &self.bar else {
            return Ok(());
        };
        self.output_tokens += record.stream_tokens;
        self.latest_end_ms = self.latest_end_ms.max(record.end_ms());
        // Tokens/s on the backend's own clock (virtual for the mock), so it agrees with the
        // figures the run reports; elapsed and remaining are wall-clock time.
        if self.latest_end_ms > 0.0 {
            let rate = self.output_tokens as f64 / (self.latest_end_ms / 1000.0);
            bar.set_message(format!("{rate:.1} tokens/s"));
        }
        bar.inc(1);
        Ok(())
    }

    fn workload_finished(&mut self, _: &WorkloadResult) -> Result<(), ReportError> {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bars_keep_no_state() {
        let mut bars = ProgressBars::with_visibility(false);
        bars.workload_started(&Workload::short_input()).unwrap();
        assert!(bars.bar.is_none());
    }
}
