//! The raw floor of a streaming load generator: what the cheapest honest client costs, for
//! `scripts/bench-loadgen.py` to set the openai backend (and vLLM's `vllm-bench`) beside.
//!
//! One HTTP/1.1 connection per worker, opened before the clock starts (at most 128 connects
//! under way at once, as the openai backend ramps them), hyper's connection API with no pool,
//! the same `/v1/completions` request the backend sends. Per request it stamps the send, the
//! first body chunk that carries an SSE `data:` line (the server's leading `: ping` comment is
//! not a token) and the end of the body; nothing else. `--parse` adds what a client must do at
//! the least to know what it read: SSE framing and a JSON parse of each event's delta (the
//! parse floor). `--reqwest` sends the same requests and reads the same bytes through one
//! pooled `reqwest` client (the openai backend's HTTP stack, its connections opened the same
//! way before the clock), to price that stack against hyper's connection API alone.
//! `--hyper-util` does the same through hyper-util's pooled `client::legacy::Client` over its
//! `HttpConnector` (the layer reqwest wraps), and `--own-pool` through a pool of our own: a
//! `Mutex<Vec<_>>` of hyper `http1::SendRequest` handles, taken and given back once a body
//! has ended, a closed handle dropped and replaced by a new connection.
//!
//! ```text
//! cargo run --release -p sagellm-bench --example loadgen_floor -- \
//!     --url http://127.0.0.1:18080 --concurrency 64 --requests 10000 [--parse] \
//!     [--reqwest | --hyper-util | --own-pool] [--ttfts FILE]
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
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;

const USAGE: &str = "usage: loadgen_floor --url http://HOST:PORT [--concurrency N] [--requests N] [--prompt-tokens N] [--output-tokens N] [--threads N] [--parse] [--reqwest | --hyper-util | --own-pool] [--ttfts FILE]";

struct Args {
    url: String,
    concurrency: usize,
    requests: usize,
    prompt_tokens: usize,
    output_tokens: usize,
    threads: usize,
    parse: bool,
    layer: Layer,
    ttfts: Option<String>,
}

/// The HTTP layer the requests go through.
#[derive(Clone, Copy, PartialEq)]
enum Layer {
    /// hyper's connection API, one connection per worker, no pool.
    Raw,
    /// One pooled `reqwest` client.
    Reqwest,
    /// hyper-util's pooled legacy client over its `HttpConnector`.
    HyperUtil,
    /// Our own pool of hyper `http1::SendRequest` handles.
    OwnPool,
}

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Layer::Raw => "raw",
            Layer::Reqwest => "reqwest",
            Layer::HyperUtil => "hyper-util",
            Layer::OwnPool => "own-pool",
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        concurrency: 64,
        requests: 10_000,
        prompt_tokens: 32,
        output_tokens: 64,
        // Two workers, as the openai backend's runtime on more than two cores; on two cores
        // or fewer it runs one (backend/clock.rs), so `--threads 1` matches it there. Every
        // sitting in docs/PERFORMANCE.md ran this default.
        threads: 2,
        parse: false,
        layer: Layer::Raw,
        ttfts: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--parse" {
            args.parse = true;
            continue;
        }
        let layer = match flag.as_str() {
            "--reqwest" => Some(Layer::Reqwest),
            "--hyper-util" => Some(Layer::HyperUtil),
            "--own-pool" => Some(Layer::OwnPool),
            _ => None,
        };
        if let Some(layer) = layer {
            if args.layer != Layer::Raw {
                return Err("give one of --reqwest, --hyper-util, --own-pool".into());
            }
            args.layer = layer;
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

impl Timed {
    /// An answer that never came or came with an error status.
    const REFUSED: Timed = Timed {
        ttft: None,
        ok: false,
    };
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
    let (all, wall) = match args.layer {
        Layer::Raw => through_hyper(args, &authority, &body, concurrency).await?,
        Layer::Reqwest => through_reqwest(args, &body, concurrency).await?,
        Layer::HyperUtil => through_hyper_util(args, &authority, &body, concurrency).await?,
        Layer::OwnPool => through_own_pool(args, &authority, &body, concurrency).await?,
    };
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
            "client": match (args.layer, args.parse) {
                (Layer::Raw, false) => "raw floor".to_string(),
                (Layer::Raw, true) => "parse floor".to_string(),
                (layer, false) => format!("{} floor", layer.name()),
                (layer, true) => format!("{} parse floor", layer.name()),
            },
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

/// Every request through hyper's connection API: one connection per worker, no pool. Returns
/// each request's stamps and the measured window's wall time.
async fn through_hyper(
    args: &Args,
    authority: &str,
    body: &Bytes,
    concurrency: usize,
) -> Result<(Vec<Timed>, f64), String> {
    // Connections first, off the clock, at most 128 connects at once.
    let ramp = Arc::new(tokio::sync::Semaphore::new(128));
    let mut connecting = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (ramp, authority) = (ramp.clone(), authority.to_string());
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
        let (next, body, authority) = (next.clone(), body.clone(), authority.to_string());
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
                let response = sender.send_request(request).await;
                timed.push(read_answer(response, sent, parse).await);
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
    Ok((all, start.elapsed().as_secs_f64()))
}

/// Reads one answer's body to its end through a [`Reader`].
async fn read_answer<E>(
    response: Result<hyper::Response<hyper::body::Incoming>, E>,
    sent: Instant,
    parse: bool,
) -> Timed {
    let mut body = match response {
        Ok(response) if response.status().is_success() => response.into_body(),
        _ => return Timed::REFUSED,
    };
    let mut reader = Reader::new(sent, parse);
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break reader.end(),
            Some(Err(_)) => break reader.failed(),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if reader.feed(&data).is_err() {
                        break reader.failed();
                    }
                }
            }
        }
    }
}

/// The request every layer sends, to `uri` (a path, or an absolute URL for hyper-util).
fn completion(uri: &str, authority: &str, body: &Bytes) -> Result<hyper::Request<Once>, String> {
    hyper::Request::post(uri)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Once(Some(body.clone())))
        .map_err(|e| e.to_string())
}

/// Runs `concurrency` workers that take request numbers until `total` are sent, each request
/// through `one`; returns every request's stamps and the window's wall time.
async fn closed_loop<F, Fut>(
    total: usize,
    concurrency: usize,
    one: F,
) -> Result<(Vec<Timed>, f64), String>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Timed, String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (next, one) = (next.clone(), one.clone());
        workers.push(tokio::spawn(async move {
            let mut timed = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                timed.push(one().await?);
            }
            Ok::<_, String>(timed)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.map_err(|e| e.to_string())??);
    }
    Ok((all, start.elapsed().as_secs_f64()))
}

type Legacy =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Once>;

/// Every request through one pooled hyper-util legacy client (the layer under reqwest): its
/// connections opened first, off the clock, by as many requests at once as there are workers.
async fn through_hyper_util(
    args: &Args,
    authority: &str,
    body: &Bytes,
    concurrency: usize,
) -> Result<(Vec<Timed>, f64), String> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: Legacy =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
    let uri: Arc<str> = format!("http://{authority}/v1/completions").into();
    let authority: Arc<str> = authority.into();
    let body = body.clone();
    let one = move |parse: bool| {
        let (client, uri, authority, body) =
            (client.clone(), uri.clone(), authority.clone(), body.clone());
        async move {
            let request = completion(&uri, &authority, &body)?;
            let sent = Instant::now();
            Ok::<_, String>(read_answer(client.request(request).await, sent, parse).await)
        }
    };
    let opening: Vec<_> = (0..concurrency).map(|_| one(false)).collect();
    for t in futures::future::join_all(opening).await {
        if !t?.ok {
            return Err("a request opening the connections failed".into());
        }
    }
    let parse = args.parse;
    closed_loop(args.requests, concurrency, move || one(parse)).await
}

/// A pool of our own: idle hyper `http1::SendRequest` handles in a `Mutex<Vec<_>>`, the last
/// given back taken first; a handle whose connection closed is dropped and a new connection
/// opened in its place (through the same ramp as the raw floor's).
struct OwnPool {
    idle: std::sync::Mutex<Vec<hyper::client::conn::http1::SendRequest<Once>>>,
    authority: String,
    ramp: tokio::sync::Semaphore,
}

impl OwnPool {
    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Once>, String> {
        let _permit = self.ramp.acquire().await.map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("connect {}: {e}", self.authority))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// An idle handle ready for a request, or a new connection's.
    async fn take(&self) -> Result<hyper::client::conn::http1::SendRequest<Once>, String> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut sender) = idle else {
                return self.connect().await;
            };
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
    }

    fn give_back(&self, sender: hyper::client::conn::http1::SendRequest<Once>) {
        if !sender.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sender);
        }
    }
}

/// Every request through [`OwnPool`]: `concurrency` connections opened into it first, off the
/// clock; each request takes a handle and gives it back once its body has ended.
async fn through_own_pool(
    args: &Args,
    authority: &str,
    body: &Bytes,
    concurrency: usize,
) -> Result<(Vec<Timed>, f64), String> {
    let pool = Arc::new(OwnPool {
        idle: std::sync::Mutex::new(Vec::with_capacity(concurrency)),
        authority: authority.to_string(),
        ramp: tokio::sync::Semaphore::new(128),
    });
    let opened = futures::future::join_all((0..concurrency).map(|_| pool.connect())).await;
    for sender in opened {
        pool.give_back(sender?);
    }
    let (authority, body, parse): (Arc<str>, _, _) = (authority.into(), body.clone(), args.parse);
    closed_loop(args.requests, concurrency, move || {
        let (pool, authority, body) = (pool.clone(), authority.clone(), body.clone());
        async move {
            let mut sender = pool.take().await?;
            let request = completion("/v1/completions", &authority, &body)?;
            let sent = Instant::now();
            let timed = read_answer(sender.send_request(request).await, sent, parse).await;
            pool.give_back(sender);
            Ok(timed)
        }
    })
    .await
}

/// Every request through one pooled `reqwest` client, as the openai backend sends them; its
/// connections are opened first, off the clock, by as many requests at once as there are
/// workers.
async fn through_reqwest(
    args: &Args,
    body: &Bytes,
    concurrency: usize,
) -> Result<(Vec<Timed>, f64), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| format!("cannot build the client: {e}"))?;
    let url = format!("{}/v1/completions", args.url);
    let one = |client: reqwest::Client, url: String, body: Bytes, parse: bool| async move {
        let sent = Instant::now();
        let response = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .body(body)
            .send()
            .await;
        let mut response = match response {
            Ok(r) if r.status().is_success() => r,
            _ => return Timed::REFUSED,
        };
        let mut reader = Reader::new(sent, parse);
        loop {
            match response.chunk().await {
                Ok(None) => break reader.end(),
                Err(_) => break reader.failed(),
                Ok(Some(data)) => {
                    if reader.feed(&data).is_err() {
                        break reader.failed();
                    }
                }
            }
        }
    };
    let opening: Vec<_> = (0..concurrency)
        .map(|_| one(client.clone(), url.clone(), body.clone(), false))
        .collect();
    if futures::future::join_all(opening)
        .await
        .iter()
        .any(|t| !t.ok)
    {
        return Err("a request opening the connections failed".into());
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (next, client, url, body) = (next.clone(), client.clone(), url.clone(), body.clone());
        let (total, parse) = (args.requests, args.parse);
        workers.push(tokio::spawn(async move {
            let mut timed = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                timed.push(one(client.clone(), url.clone(), body.clone(), parse).await);
            }
            timed
        }));
    }
    let mut all = Vec::with_capacity(args.requests);
    for w in workers {
        all.extend(w.await.map_err(|e| e.to_string())?);
    }
    Ok((all, start.elapsed().as_secs_f64()))
}

/// One body's bytes as they arrive: the stamp of its first `data:` chunk and, with `parse`,
/// its events framed and each one's JSON parsed.
struct Reader {
    sent: Instant,
    parse: bool,
    ttft: Option<Duration>,
    pending: Vec<u8>,
    texts: usize,
}

impl Reader {
    fn new(sent: Instant, parse: bool) -> Self {
        Reader {
            sent,
            parse,
            ttft: None,
            pending: Vec::new(),
            texts: 0,
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), ()> {
        if self.ttft.is_none() && contains(data, b"data:") {
            self.ttft = Some(self.sent.elapsed());
        }
        if !self.parse {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        while let Some(end) = find(&self.pending, b"\n\n") {
            for line in self.pending[..end].split(|&b| b == b'\n') {
                let Some(payload) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let payload = payload.strip_prefix(b" ").unwrap_or(payload);
                if payload == b"[DONE]" {
                    continue;
                }
                let event = serde_json::from_slice::<Event>(payload).map_err(|_| ())?;
                self.texts += event.choices.iter().filter(|c| c.text.is_some()).count();
            }
            self.pending.drain(..end + 2);
        }
        Ok(())
    }

    fn end(self) -> Timed {
        // Kept so the parse cannot be optimised away.
        std::hint::black_box(self.texts);
        Timed {
            ok: self.ttft.is_some(),
            ttft: self.ttft,
        }
    }

    fn failed(self) -> Timed {
        Timed {
            ttft: self.ttft,
            ok: false,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}
