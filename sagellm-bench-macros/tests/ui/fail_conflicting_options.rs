use sagellm_bench::workload;

#[workload(concurrency = 4, rate = 2.0)]
fn stress() {}

fn main() {}
