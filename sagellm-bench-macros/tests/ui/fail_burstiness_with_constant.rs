use sagellm_bench::workload;

#[workload(rate = 2.0, arrival = "constant", burstiness = 0.5)]
fn bursty_but_steady() {}

fn main() {}
