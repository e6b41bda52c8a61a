//! What `cargo bench` prints by default: a line per workload, as criterion does, with the full
//! table behind `-v` and in the files.

use crate::report::{sources_note, Report, ReportError};
use crate::results::summary::Summary;

/// Prints one line per workload when the run ends: its key latencies, output throughput and
/// request counts; then the counts and where each figure comes from.
pub(super) struct BriefPrinter;

impl Report for BriefPrinter {
    fn run_finished(&mut self, summary: &Summary) -> Result<(), ReportError> {
        print!("{}", render(summary));
        Ok(())
    }
}

fn render(summary: &Summary) -> String {
    let width = summary.workloads.keys().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (name, m) in &summary.workloads {
        if m.total_requests > 0 && m.successful_requests == 0 {
            out.push_str(&format!(
                "{name:<width$}  nothing measured: all {} requests failed\n",
                m.failed_requests
            ));
            continue;
        }
        let failed = match m.failed_requests {
            0 => String::new(),
            n => format!(", {n} failed"),
        };
        out.push_str(&format!(
            "{name:<width$}  TTFT p50 {:>9.2} ms  TPOT {:>8.2} ms  E2E p99 {:>10.2} ms  {:>10.1} tok/s  {} ok{failed}\n",
            m.p50_ttft_ms, m.avg_tpot_ms, m.p99_e2el_ms, m.output_throughput_tps, m.successful_requests,
        ));
    }
    out.push_str(&format!(
        "Figures: {} (the full table: cargo bench -- -v)\n",
        sources_note(summary)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::EngineFigures;
    use crate::results::metrics::{aggregate, WallClock};
    use crate::results::record::test_record;
    use crate::results::summary::Provenance;

    /// Two requests each: TTFTs `first` ms, then three more tokens 10 ms apart; the second
    /// workload's second request fails.
    fn summary() -> Summary {
        let record = |index: usize, first: f64, failed: bool| {
            let times = [first, first + 10.0, first + 20.0, first + 30.0];
            test_record(index, 0.0, &times, failed.then_some("refused"))
        };
        let wall = WallClock {
            start_unix_s: 0.0,
            total_time_s: 0.16,
        };
        let workloads = [
            (
                "short_input",
                [record(0, 10.0, false), record(1, 30.0, false)],
            ),
            ("stress", [record(0, 10.0, false), record(1, 30.0, true)]),
        ]
        .into_iter()
        .map(|(name, records)| {
            let metrics = aggregate(name, "mock", "m", &records, wall, &EngineFigures::default());
            (name.to_string(), metrics)
        })
        .collect();
        Summary::from_metrics(
            Provenance::now("mock", "m", serde_json::Value::Null),
            workloads,
        )
    }

    #[test]
    fn one_line_per_workload_with_its_figures_and_failures() {
        let text = render(&summary());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // TTFT p50 of 10 and 30 ms is 20; TPOT is E2E per output token (docs/METRICS.md), the
        // mean of 40 / 4 and 60 / 4 = 12.5; E2E p99 between 40 and 60 is 40 + 0.99 * 20 = 59.8;
        // 8 tokens in 0.16 s are 50 tok/s.
        assert_eq!(
            lines[0],
            "short_input  TTFT p50     20.00 ms  TPOT    12.50 ms  E2E p99      59.80 ms        50.0 tok/s  2 ok"
        );
        // One success left: its own figures (TPOT 40 / 4), 4 tokens in 0.16 s.
        assert_eq!(
            lines[1],
            "stress       TTFT p50     10.00 ms  TPOT    10.00 ms  E2E p99      40.00 ms        25.0 tok/s  1 ok, 1 failed"
        );
        assert!(lines[2].starts_with("Figures: "), "{}", lines[2]);
    }

    /// No figures of a workload that measured nothing, not zeros that read as a fast engine.
    #[test]
    fn a_workload_whose_every_request_failed_says_so_instead_of_zeros() {
        let mut summary = summary();
        let stress = summary.workloads.get_mut("stress").unwrap();
        stress.successful_requests = 0;
        stress.failed_requests = 2;
        let text = render(&summary);
        assert_eq!(
            text.lines().nth(1),
            Some("stress       nothing measured: all 2 requests failed"),
            "{text}"
        );
        assert_eq!(summary.unmeasured_workloads(), ["stress"]);
    }
}
