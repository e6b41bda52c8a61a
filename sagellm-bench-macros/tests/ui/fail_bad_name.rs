use sagellm_bench::workload;

#[workload(name = "../escape")]
fn short() {}

fn main() {}
