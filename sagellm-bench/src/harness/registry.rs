//! The registry of `#[workload]` functions: declaration order, filters, and each body run on
//! its `Setup`.

use super::args::Args;
use crate::__private::Entry;
use crate::workload::setup::Setup;
use crate::workload::Workload;

/// A registered workload, expanded (a concurrency sweep gives several).
pub(super) struct Declared {
    pub(super) entry: &'static Entry,
    pub(super) workload: Workload,
}

pub(super) fn declared() -> Result<Vec<Declared>, String> {
    let mut entries: Vec<&'static Entry> = inventory::iter::<Entry>.into_iter().collect();
    // Declaration order: the registry's own order is unspecified.
    entries.sort_by_key(|e| (e.file, e.line, e.fn_name));
    let mut declared = Vec::new();
    for entry in entries {
        for workload in entry.workloads()? {
            declared.push(Declared { entry, workload });
        }
    }
    let mut names = std::collections::HashSet::new();
    for d in &declared {
        if !names.insert(d.workload.name.clone()) {
            return Err(format!(
                "two #[workload]s are named `{}` (one at {}:{}); give one a `name = \"...\"`",
                d.workload.name, d.entry.file, d.entry.line
            ));
        }
    }
    Ok(declared)
}

/// Whether `name` passes the positional filters, `--exact` and `--skip`.
pub(super) fn matches_filters(args: &Args, name: &str) -> bool {
    let matches = |f: &String| {
        if args.exact {
            name == f
        } else {
            name.contains(f.as_str())
        }
    };
    (args.filters.is_empty() || args.filters.iter().any(matches))
        && !args.skip.iter().any(|s| name.contains(s.as_str()))
}

/// The workloads to run, and how many were filtered out and ignored.
pub(super) fn selected(args: &Args, all: Vec<Declared>) -> (Vec<Declared>, usize, usize) {
    let mut chosen = Vec::new();
    let (mut filtered_out, mut ignored) = (0, 0);
    for d in all {
        if !matches_filters(args, &d.workload.name) {
            filtered_out += 1;
        } else if !args.bench_backend_fits(d.entry.backend) {
            // A workload written for another backend than the one chosen.
            filtered_out += 1;
        } else if (args.ignored && !d.entry.ignore)
            || (!args.ignored && !args.include_ignored && d.entry.ignore)
        {
            ignored += 1;
        } else {
            chosen.push(d);
        }
    }
    (chosen, filtered_out, ignored)
}

/// Runs each workload's function body on its `Setup`.
pub(super) fn set_up(declared: Vec<Declared>) -> Result<Vec<Workload>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for workload setup: {e}"))?;
    declared
        .into_iter()
        .map(|d| {
            let mut setup = Setup::new(d.workload);
            runtime.block_on((d.entry.setup)(&mut setup)).map_err(|e| {
                format!(
                    "workload `{}` ({}:{}) failed to set up: {e}",
                    setup.workload().name,
                    d.entry.file,
                    d.entry.line
                )
            })?;
            let workload = setup.into_workload();
            workload
                .validate()
                .map_err(|e| format!("workload `{}`: {e}", workload.name))?;
            Ok(workload)
        })
        .collect()
}
