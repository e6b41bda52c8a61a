//! `sagellm-test-server`: the scripted OpenAI-compatible server, as a program, for trying the
//! benchmark by hand or load-testing it from another process.
//!
//! ```text
//! sagellm-test-server --port 8000 --ttft-ms 20 --itl-ms 5 --tokens-per-chunk 1 --model test-model
//! sagellm-test-server --port 8000 --max-running 4   # a capacity of 4 streams; more queue
//! sagellm-test-server --port 8000 --no-comment      # no `: ping` line before the first chunk
//! ```

use std::time::Duration;

use sagellm_test_server::{ReasoningField, Script, TestServer};

const USAGE: &str = "usage: sagellm-test-server [--port N] [--ttft-ms MS] [--itl-ms MS] [--tokens-per-chunk N] [--model NAME] [--threads N] [--reasoning-tokens N] [--reasoning-itl-ms MS] [--reasoning-field reasoning_content|reasoning] [--tokens-per-word N] [--max-running N] [--no-comment]";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}\n{USAGE}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut script = Script::default();
    let (mut port, mut threads) = (8000u16, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        if flag == "--no-comment" {
            // No `: ping` line ahead of the first chunk (see `Script::comment_first`).
            script.comment_first = false;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{flag} takes a whole number, not `{value}`"))
        };
        match flag.as_str() {
            "--port" => {
                port =
                    u16::try_from(number()?).map_err(|_| format!("--port {value} is too large"))?
            }
            "--ttft-ms" => script.ttft = Duration::from_millis(number()?),
            "--itl-ms" => script.itl = Duration::from_millis(number()?),
            "--tokens-per-chunk" => script.tokens_per_chunk = number()? as usize,
            "--threads" => threads = number()? as usize,
            // A scripted capacity: beyond N streams at once, requests queue and TTFT grows.
            "--max-running" => script.max_running = Some(number()?.max(1) as usize),
            "--model" => script.model = value,
            "--reasoning-tokens" => script.reasoning_tokens = number()? as usize,
            "--reasoning-itl-ms" => script.reasoning_itl = Duration::from_millis(number()?),
            "--reasoning-field" => {
                script.reasoning_field = match value.as_str() {
                    "reasoning_content" => ReasoningField::ReasoningContent,
                    "reasoning" => ReasoningField::Reasoning,
                    _ => {
                        return Err(format!(
                            "--reasoning-field is reasoning_content or reasoning, not `{value}`"
                        ))
                    }
                }
            }
            "--tokens-per-word" => script.tokens_per_word = number()? as usize,
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    let server = TestServer::start_on(port, script, threads)
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    println!("listening on {}", server.url());
    loop {
        std::thread::park();
    }
}
