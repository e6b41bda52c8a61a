//! The raw floor of a streaming load generator: what the cheapest honest client costs, for
//! `scripts/bench-loadgen.py` to set the openai backend (and vLLM's `vllm-bench`) beside.
//!
//! One HTTP/1.1 connection per worker, opened before the clock starts (at most 128 connects
//! under way at once, as the openai backend ramps them), hyper's connection API with no pool,
//! the same `/v1/completions` request the backend sends. Per request it stamps the send, the
//! first body chunk that carries an SSE `data:` line (the server's leading `: ping` comment is
//! not a token) and the end of the body; nothing else. `--parse` adds what a client must do at
//! the least to know what it read: SSE framing and a JSON parse of each event's delta (the
//! parse floor).
//!
//! ```text
//! cargo run --release -p sagellm-bench --example loadgen_floor -- \
//!     --url http://127.0.0.1:18080 --concurrency 64 --requests 10000 [--parse] [--ttfts FILE]
//! ```
//!
//! It prints one JSON object: requests, failed, connections opened, the measured window's wall
//! time and requests/s, mean TTFT; `--ttfts FILE` writes each request's TTFT in ms, one a line.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;

const USAGE: &str = "usage: loadgen_floor --url http://HOST:PORT [--concurrency N] [--requests N] [--prompt-tokens N] [--output-tokens N] [--threads N] [--parse] [--ttfts FILE]";

struct Args {
    url: String,
    concurrency: usize,
    requests: usize,
    prompt_tokens: usize,
    output_tokens: usize,
    threads: usize,
    parse: bool,
    ttfts: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        concurrency: 64,
        requests: 10_000,
        prompt_tokens: 32,
        output_tokens: 64,
        // The openai backend's runtime has two workers (backend/clock.rs).
        threads: 2,
        parse: false,
        ttfts: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--parse" {
            args.parse = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || -> Result<usize, String> {
            value
                .parse()
                .map_err(|_| format!("{flag} takes a whole number, not `{value}`"))
        };
        match flag.as_str() {
            "--url" => args.url = value.trim_end_matches('/').to_string(),
            "--concurrency" => args.concurrency = number()?.max(1),
            "--requests" => args.requests = number()?,
            "--prompt-tokens" => args.prompt_tokens = number()?,
            "--output-tokens" => args.output_tokens = number()?.max(1),
            "--threads" => args.threads = number()?.max(1),
            "--ttfts" => args.ttfts = Some(value),
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    if args.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(args)
}

/// A request body sent in one piece.
struct Once(Option<Bytes>);

impl Body for Once {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// One request's stamps, relative to its send.
struct Timed {
    ttft: Option<Duration>,
    ok: bool,
}

/// The fields of a completion event the parse floor reads.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
}

#[derive(serde::Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("Error: {e}\n{USAGE}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let authority = args
        .url
        .strip_prefix("http://")
        .ok_or("--url must start with http://")?
        .to_string();
    let prompt = vec!["word"; args.prompt_tokens].join(" ");
    let body = Bytes::from(
        serde_json::json!({
            "model": "test-model",
            "prompt": prompt,
            "max_tokens": args.output_tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
        .to_string(),
    );
    let concurrency = args.concurrency.min(args.requests.max(1));
    // Connections first, off the clock, at most 128 connects at once.
    let ramp = Arc::new(tokio::sync::Semaphore::new(128));
    let mut connecting = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (ramp, authority) = (ramp.clone(), authority.clone());
        connecting.push(tokio::spawn(async move {
            let _permit = ramp.acquire().await.map_err(|e| e.to_string())?;
            let tcp = tokio::net::TcpStream::connect(&authority)
                .await
                .map_err(|e| format!("connect {authority}: {e}"))?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(connection);
            Ok::<_, String>(sender)
        }));
    }
    let mut senders = Vec::with_capacity(concurrency);
    for c in connecting {
        senders.push(c.await.map_err(|e| e.to_string())??);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for mut sender in senders {
        let (next, body, authority) = (next.clone(), body.clone(), authority.clone());
        let (total, parse) = (args.requests, args.parse);
        workers.push(tokio::spawn(async move {
            let mut timed = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let request = hyper::Request::post("/v1/completions")
                    .header(hyper::header::HOST, authority.as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Once(Some(body.clone())))
                    .map_err(|e| e.to_string())?;
                let sent = Instant::now();
                let one = match sender.send_request(request).await {
                    Ok(response) if response.status().is_success() => {
                        read(response.into_body(), sent, parse).await
                    }
                    _ => Timed {
                        ttft: None,
                        ok: false,
                    },
                };
                timed.push(one);
                if sender.ready().await.is_err() {
                    return Err("the server closed a kept connection".to_string());
                }
            }
            Ok::<_, String>(timed)
        }));
    }
    let mut all = Vec::with_capacity(args.requests);
    for w in workers {
        all.extend(w.await.map_err(|e| e.to_string())??);
    }
    let wall = start.elapsed().as_secs_f64();
    let ttfts: Vec<f64> = all
        .iter()
        .filter(|t| t.ok)
        .filter_map(|t| t.ttft)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    let failed = all.iter().filter(|t| !t.ok).count();
    if let Some(path) = &args.ttfts {
        let text: String = ttfts.iter().map(|t| format!("{t}\n")).collect();
        std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    let mean_ttft = ttfts.iter().sum::<f64>() / ttfts.len().max(1) as f64;
    println!(
        "{}",
        serde_json::json!({
            "client": if args.parse { "parse floor" } else { "raw floor" },
            "requests": all.len(),
            "failed": failed,
            "connections_opened": concurrency,
            "wall_s": wall,
            "request_throughput_rps": all.len() as f64 / wall,
            "mean_ttft_ms": mean_ttft,
        })
    );
    Ok(())
}

/// Reads a body to its end, stamping its first `data:` chunk; with `parse`, frames its events
/// and parses each one's JSON.
async fn read(mut body: Incoming, sent: Instant, parse: bool) -> Timed {
    let mut ttft = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut texts = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(_)) => return Timed { ttft, ok: false },
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        if ttft.is_none() && contains(&data, b"data:") {
            ttft = Some(sent.elapsed());
        }
        if parse {
            pending.extend_from_slice(&data);
            while let Some(end) = find(&pending, b"\n\n") {
                for line in pending[..end].split(|&b| b == b'\n') {
                    let Some(payload) = line.strip_prefix(b"data:") else {
                        continue;
                    };
                    let payload = payload.strip_prefix(b" ").unwrap_or(payload);
                    if payload == b"[DONE]" {
                        continue;
                    }
                    match serde_json::from_slice::<Event>(payload) {
                        Ok(event) => {
                            texts += event.choices.iter().filter(|c| c.text.is_some()).count()
                        }
                        Err(_) => return Timed { ttft, ok: false },
                    }
                }
                pending.drain(..end + 2);
            }
        }
    }
    // Kept so the parse cannot be optimised away.
    std::hint::black_box(texts);
    Timed {
        ok: ttft.is_some(),
        ttft,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}
