use sagellm_bench::{workload, Setup};

#[workload]
fn short(setup: &mut Setup, extra: u32) {
    let _ = (setup, extra);
}

fn main() {}
