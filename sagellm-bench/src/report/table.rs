//! The terminal table: one column per workload, one row per key figure.

use std::io::IsTerminal;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

use super::{
    incomplete_note, rows_for, sources_note, turn_rows, Report, ReportError, TURN_COLUMNS,
};
use crate::results::summary::Summary;

/// Renders the summary as a terminal table, with a header line and a footer of counts.
pub fn render(summary: &Summary) -> String {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    // On a terminal, its width, so a wide table wraps inside its cells rather than across the
    // lines (what comfy-table's own tty feature does).
    if std::io::stdout().is_terminal() {
        let reported = terminal_size::terminal_size().map(|(terminal_size::Width(w), _)| w);
        let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
        table.set_width(table_width(reported, columns));
    }
    let mut header = vec![Cell::new("Metric")];
    header.extend(summary.workloads.keys().map(Cell::new));
    table.set_header(header);
    for (label, cells) in rows_for(summary) {
        let mut row = vec![Cell::new(label)];
        row.extend(
            cells
                .into_iter()
                .map(|c| Cell::new(c).set_alignment(CellAlignment::Right)),
        );
        table.add_row(row);
    }
    let turns = turn_rows(summary);
    let turns = if turns.is_empty() {
        String::new()
    } else {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(TURN_COLUMNS);
        for row in turns {
            table.add_row(row.into_iter().enumerate().map(|(i, c)| {
                let cell = Cell::new(c);
                if i == 0 {
                    cell
                } else {
                    cell.set_alignment(CellAlignment::Right)
                }
            }));
        }
        format!("Per turn of the multi-turn sessions:\n{table}\n")
    };
    let p = &summary.provenance;
    let o = &summary.overall;
    let incomplete = incomplete_note(summary);
    let incomplete = if incomplete.is_empty() {
        incomplete
    } else {
        incomplete + "\n"
    };
    format!(
        "{incomplete}Benchmark results: backend {}, model {}\n{table}\n{turns}{} workloads, {} requests: {} successful, {} failed\nFigures: {}\n",
        p.backend, p.model, o.total_workloads, o.total_requests, o.successful_requests, o.failed_requests,
        sources_note(summary)
    )
}

/// Narrower than this, a terminal's width is taken as unknown: a pseudo-terminal nobody sized
/// (`stty cols 0`, a container's 0x0 pty) reports 0, and a table squeezed into a few columns
/// breaks every word onto its own line (hundreds of lines for a run).
const MIN_WIDTH: u16 = 40;
/// The width used when the terminal's is unknown: the classic terminal's.
const DEFAULT_WIDTH: u16 = 80;

/// The width to lay the table out in: the terminal's, else `$COLUMNS`, else [`DEFAULT_WIDTH`],
/// each only when it is at least [`MIN_WIDTH`].
fn table_width(reported: Option<u16>, columns: Option<u16>) -> u16 {
    [reported, columns]
        .into_iter()
        .flatten()
        .find(|w| *w >= MIN_WIDTH)
        .unwrap_or(DEFAULT_WIDTH)
}

/// Prints the table on stdout when the run ends.
pub struct TablePrinter;

impl Report for TablePrinter {
    fn run_finished(&mut self, summary: &Summary) -> Result<(), ReportError> {
        print!("{}", render(summary));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::table_width;

    #[test]
    fn an_unknown_or_absurd_terminal_width_falls_back() {
        assert_eq!(table_width(Some(132), Some(90)), 132);
        // A 0x0 pty, then $COLUMNS, then the default.
        assert_eq!(table_width(Some(0), Some(100)), 100);
        assert_eq!(table_width(Some(0), None), 80);
        assert_eq!(table_width(Some(12), Some(3)), 80);
        assert_eq!(table_width(None, None), 80);
        assert_eq!(table_width(Some(40), None), 40);
    }
}
