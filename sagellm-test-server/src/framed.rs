//! A streaming server framed by hand, byte for byte and write for write, for what the axum
//! server cannot script: where the HTTP/1.1 chunked body's terminator goes (uvicorn, the stack
//! vLLM's server runs on, sends it in a write of its own after `data: [DONE]`), whether the
//! server keeps a connection it advertised as kept alive (llama.cpp's server closes every
//! connection after its answer), a server dropping a kept connection as the next request
//! arrives on it, and a new connection's first answer delayed as a network handshake would
//! delay it. It counts the connections it accepts, which is what a client's reuse is judged by.
//!
//! It answers `POST /v1/completions` (and `/v1/chat/completions`, with the same text chunks)
//! with `max_tokens` one-token chunks, chunk k at `received + ttft + k * itl`, then a usage
//! chunk and `[DONE]`; `GET` of any path with a small JSON model list; any other `POST` (such as
//! a client's probe of `/tokenize`) with 404, as a server without that endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Where the chunked body's terminator (`0\r\n\r\n`) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminator {
    /// In the same write as `data: [DONE]`.
    SameWrite,
    /// In a write of its own, this long after `data: [DONE]` (zero: at once, a race with the
    /// client reading `[DONE]`).
    OwnWrite(Duration),
}

/// What the server does with a connection once an answer has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAnswer {
    /// Keeps it for the next request.
    Keep,
    /// Closes it, although the answer said `Connection: keep-alive`, as llama.cpp's server does.
    Close,
    /// Keeps it, but closes it without a byte when the next request arrives on it: a server
    /// whose idle timeout fired just as the client reused the connection.
    CloseOnNextRequest,
}

/// How the server frames its answers.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// From reading a request to writing its first content chunk.
    pub ttft: Duration,
    /// Between content chunks.
    pub itl: Duration,
    pub terminator: Terminator,
    pub after_answer: AfterAnswer,
    /// Added before the first answer on each new connection, standing for the round trips of
    /// a connection's set-up across a network.
    pub first_answer_delay: Duration,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(1),
            terminator: Terminator::SameWrite,
            after_answer: AfterAnswer::Keep,
            first_answer_delay: Duration::ZERO,
        }
    }
}

/// A running server; stops when dropped.
pub struct FramedServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Stats {
    connections: AtomicUsize,
    generations: AtomicUsize,
    dropped_generations: AtomicUsize,
    ttft_ns_total: AtomicU64,
    first_chunks: AtomicU64,
}

impl FramedServer {
    /// Starts a server on an ephemeral port of 127.0.0.1, on a thread and runtime of its own.
    pub fn start(framing: Framing) -> std::io::Result<FramedServer> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("framed-server")
            .enable_all()
            .build()?;
        let (task_stats, task_stop) = (stats.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("framed-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    while !task_stop.load(Ordering::Relaxed) {
                        let accepted =
                            tokio::time::timeout(Duration::from_millis(50), listener.accept())
                                .await;
                        let Ok(Ok((socket, _))) = accepted else {
                            continue;
                        };
                        task_stats.connections.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.set_nodelay(true);
                        tokio::spawn(serve_connection(socket, framing, task_stats.clone()));
                    }
                });
                runtime.shutdown_background();
            })?;
        Ok(FramedServer {
            addr,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// Generation requests answered (or begun) so far.
    pub fn generations(&self) -> usize {
        self.stats.generations.load(Ordering::Relaxed)
    }

    /// Generation requests read and then dropped with their connection, unanswered
    /// ([`AfterAnswer::CloseOnNextRequest`]).
    pub fn dropped_generations(&self) -> usize {
        self.stats.dropped_generations.load(Ordering::Relaxed)
    }

    /// Mean time from reading a request to writing its first content chunk: the server's TTFT.
    pub fn mean_server_ttft(&self) -> Option<Duration> {
        let n = self.stats.first_chunks.load(Ordering::Relaxed);
        (n > 0).then(|| Duration::from_nanos(self.stats.ttft_ns_total.load(Ordering::Relaxed) / n))
    }
}

impl Drop for FramedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request's head and body, as much as this server needs of them.
struct Request {
    method: String,
    path: String,
    max_tokens: usize,
}

impl Request {
    /// A completion request, as opposed to a model list or an endpoint this server lacks.
    fn is_generation(&self) -> bool {
        self.method != "GET" && self.path.ends_with("/completions")
    }
}

/// Reads one request; `None` when the client closed the connection or sent garbage.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 || buffer.len() > 1 << 20 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut words = head.split_whitespace();
    let method = words.next()?.to_string();
    let path = words.next()?.split('?').next()?.to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body: serde_json::Value =
        serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or_default();
    buffer.drain(..head_end + length);
    let max_tokens = body
        .get("max_tokens")
        .and_then(|v| v.as_u64())
        .unwrap_or(16)
        .max(1) as usize;
    Some(Request {
        method,
        path,
        max_tokens,
    })
}

/// One HTTP/1.1 chunk holding `data`.
fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

async fn serve_connection(mut socket: TcpStream, framing: Framing, stats: Arc<Stats>) {
    let mut buffer = Vec::new();
    let mut answered = 0usize;
    while let Some(request) = read_request(&mut socket, &mut buffer).await {
        let received = Instant::now();
        if answered > 0 && framing.after_answer == AfterAnswer::CloseOnNextRequest {
            if request.is_generation() {
                stats.dropped_generations.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if answered == 0 && !framing.first_answer_delay.is_zero() {
            tokio::time::sleep(framing.first_answer_delay).await;
        }
        answered += 1;
        let kept = if request.method == "GET" {
            let body = r#"{"object":"list","data":[{"id":"framed-model","object":"model"}]}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(head.as_bytes()).await.is_ok()
        } else if !request.is_generation() {
            let body = r#"{"error":{"message":"Not Found","code":404}}"#;
            let head = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(head.as_bytes()).await.is_ok()
        } else {
            stats.generations.fetch_add(1, Ordering::Relaxed);
            stream_answer(&mut socket, &request, received, framing, &stats)
                .await
                .is_ok()
        };
        if !kept || framing.after_answer == AfterAnswer::Close {
            let _ = socket.shutdown().await;
            return;
        }
    }
}

async fn stream_answer(
    socket: &mut TcpStream,
    request: &Request,
    received: Instant,
    framing: Framing,
    stats: &Stats,
) -> std::io::Result<()> {
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
              transfer-encoding: chunked\r\nconnection: keep-alive\r\nkeep-alive: timeout=5, max=100\r\n\r\n",
        )
        .await?;
    let n = request.max_tokens;
    for k in 0..n {
        tokio::time::sleep_until(received + framing.ttft + framing.itl * k as u32).await;
        let finish = if k + 1 == n { "\"length\"" } else { "null" };
        let data = format!(
            "data: {{\"id\":\"cmpl-framed\",\"object\":\"text_completion\",\"model\":\"framed-model\",\"choices\":[{{\"index\":0,\"text\":\"tok \",\"finish_reason\":{finish}}}]}}\n\n"
        );
        socket.write_all(&chunk(&data)).await?;
        if k == 0 {
            stats
                .ttft_ns_total
                .fetch_add(received.elapsed().as_nanos() as u64, Ordering::Relaxed);
            stats.first_chunks.fetch_add(1, Ordering::Relaxed);
        }
    }
    let usage = format!(
        "data: {{\"id\":\"cmpl-framed\",\"object\":\"text_completion\",\"model\":\"framed-model\",\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\n",
        n + 1
    );
    socket.write_all(&chunk(&usage)).await?;
    let mut done = chunk("data: [DONE]\n\n");
    match framing.terminator {
        Terminator::SameWrite => {
            done.extend_from_slice(b"0\r\n\r\n");
            socket.write_all(&done).await?;
        }
        Terminator::OwnWrite(after) => {
            socket.write_all(&done).await?;
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            socket.write_all(b"0\r\n\r\n").await?;
        }
    }
    Ok(())
}
