use sagellm_bench::workload;

#[workload(concurrency = 4, max_concurrency = 2)]
fn capped_closed_loop() {}

fn main() {}
