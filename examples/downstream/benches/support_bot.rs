//! Workloads of a (fictional) customer-support bot, benchmarked with sagellm-bench.
//!
//!   cargo bench                                   # all workloads, mock backend
//!   cargo bench -- --list
//!   cargo bench -- --backend vllm --base-url http://127.0.0.1:8000   # with the `openai` feature
//!   cargo bench -- --save-baseline before         # then, after a change:
//!   cargo bench -- --baseline before --fail-on-regression

use sagellm_bench::{workload, PromptError, Prompts, Setup};

/// Real support questions from our own file, at three concurrencies: `support_chat_c1`,
/// `support_chat_c4` and `support_chat_c8`.
#[workload(output_tokens = 48, requests = 12, concurrency = [1, 4, 8])]
fn support_chat(setup: &mut Setup) -> Result<(), PromptError> {
    setup.prompts(Prompts::jsonl(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/prompts.jsonl"
    ))?);
    // Answers must be complete: a truncated answer counts as a failed request.
    setup.check(|response| {
        if response.output_tokens == 48 {
            Ok(())
        } else {
            Err(format!("answer cut at {} tokens", response.output_tokens))
        }
    });
    Ok(())
}

/// Every request starts with the same long system prompt: the server's prefix cache should
/// serve most of each prompt.
#[workload(
    prompt_tokens = 512,
    output_tokens = 32,
    requests = 16,
    concurrency = 4,
    shared_prefix = 448
)]
fn system_prompt_reuse() {}

/// Traffic arriving on its own schedule: Poisson arrivals at 5 requests/s.
#[workload(prompt_tokens = 256, output_tokens = 64, requests = 20, rate = 5.0, seed = 11)]
async fn open_loop_traffic() {}

fn main() -> std::process::ExitCode {
    sagellm_bench::main()
}
