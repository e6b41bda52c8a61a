// Every option, a sync and an async body, a fallible body, and a renamed dependency.
use sagellm_bench::{workload, Prompts, Setup};

#[workload(
    name = "chat",
    prompt_tokens = 64,
    output_tokens = 16,
    requests = 4,
    warmup = 0,
    concurrency = [1, 2],
    seed = 7,
    shared_prefix = 32,
    goodput = "ttft:200,e2el:5000",
    num_runs = 3,
)]
fn chat(setup: &mut Setup) {
    setup.prompts(Prompts::from_texts(["hello there"]));
}

#[workload(rate = 2, requests = 3, ignore)]
async fn open_loop(setup: &mut Setup) {
    setup.check(|r| if r.output_tokens > 0 { Ok(()) } else { Err("empty".into()) });
}

#[workload(rate = 4, burstiness = 0.5, max_concurrency = 2, requests = 3, ignore)]
fn bursty_capped() {}

#[workload(rate = 2.5, arrival = "constant", requests = 3, ignore)]
async fn steady(setup: &mut Setup) {
    setup.check(|r| if r.output_tokens > 0 { Ok(()) } else { Err("empty".into()) });
}

#[workload]
fn defaults() -> Result<(), std::io::Error> {
    Ok(())
}

mod renamed {
    extern crate sagellm_bench as bench;
    #[bench::workload(crate = bench, concurrency = 3)]
    fn via_rename() {}
}

fn main() {}
