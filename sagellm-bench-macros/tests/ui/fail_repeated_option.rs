use sagellm_bench::workload;

#[workload(requests = 5, requests = 6)]
fn short() {}

fn main() {}
