//! Test mode (without `--bench`, as under `cargo test --benches`): each workload once, briefly,
//! on the mock, reported in libtest's format so test runners can read it.

use std::time::Instant;

use super::registry::{set_up, Declared};
use crate::backend::mock::MockConfig;
use crate::backend::spec::BackendSpec;
use crate::report::collect::Collect;
use crate::results::summary::Provenance;
use crate::workload::Arrival;

/// Test mode: one short request per workload on the mock backend, reported like libtest.
pub(super) fn smoke_test(chosen: Vec<Declared>, filtered_out: usize, ignored: usize) -> u8 {
    let started = Instant::now();
    let count = chosen.len();
    println!(
        "\nrunning {count} test{}",
        if count == 1 { "" } else { "s" }
    );
    let (mut passed, mut failed) = (0, Vec::new());
    for d in chosen {
        let name = d.workload.name.clone();
        let outcome = set_up(vec![d]).and_then(|mut w| {
            let mut w = w.remove(0);
            w.warmup_requests = 0;
            w.output_tokens = w.output_tokens.min(16);
            // One request: a session's first turn, a trace's first request, or one of a kind.
            if let Some(sessions) = &mut w.sessions {
                (sessions.count, sessions.turns) = (1, 1);
            }
            match w.trace.as_ref().map(|t| t.first(1)) {
                Some(first) => w.set_trace(first),
                None => w.arrival = Arrival::Closed { concurrency: 1 },
            }
            w.num_requests = 1;
            let backend = BackendSpec::Mock {
                config: MockConfig::default(),
                model: None,
            }
            .build()
            .map_err(|e| e.to_string())?;
            let mut collect = Collect::default();
            let provenance = Provenance::now("mock", "mock", serde_json::Value::Null);
            crate::run::runner::run(backend, &[w], provenance, &mut collect)
                .map_err(|e| e.to_string())?;
            match collect
                .results()
                .first()
                .and_then(|r| r.samples.failures().first().map(|f| f.error.clone()))
            {
                Some(error) => Err(format!("the request failed: {error}")),
                None => Ok(()),
            }
        });
        match outcome {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(e) => {
                println!("test {name} ... FAILED");
                failed.push((name, e));
            }
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:\n");
        for (name, e) in &failed {
            println!("---- {name} ----\n{e}\n");
        }
        println!("failures:");
        for (name, _) in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; {ignored} ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        0
    } else {
        101
    }
}
