//! The code under benchmark would live here; this example benchmarks an inference server, so
//! the crate holds only its bench target (`benches/support_bot.rs`).
