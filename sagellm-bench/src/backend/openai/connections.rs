//! The connections under the requests: counted as they open, opened ahead of the measured
//! requests, given back to the pool only with their body read to its end, and told apart as
//! new or reused when one fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::StreamExt;
use hyper_util::client::legacy::connect::HttpInfo;

use super::exchange::Events;
use super::{body, Shared};

/// Connects of the clients' connectors, counted as they start and end, and ramped.
pub(super) struct Connects {
    pub(super) started: AtomicU64,
    pub(super) ended: AtomicU64,
    /// Connects that gave a connection.
    pub(super) opened: AtomicU64,
    /// At most [`CONNECTS_AT_ONCE`] connects under way.
    ramp: tokio::sync::Semaphore,
}

impl Default for Connects {
    fn default() -> Self {
        Connects {
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            ramp: tokio::sync::Semaphore::new(CONNECTS_AT_ONCE),
        }
    }
}

/// Connects under way at once: a ramp, so that a thousand workers starting together do not
/// send a thousand SYNs at once and overflow the server's accept queue, whose dropped SYNs
/// come back only after the kernel's 1 s retransmission timeout, inside a TTFT. Measured on
/// loopback against the test server (one thread): 244 connects at once gave a p99 TTFT of
/// 1,067 ms where the server answered in 50 (docs/PERFORMANCE.md).
pub(super) const CONNECTS_AT_ONCE: usize = 128;

impl Connects {
    /// Counts one connect of a connector, as it starts and as it ends; it waits its turn in
    /// the ramp first.
    pub(super) fn count<C, E>(
        self: &Arc<Self>,
        connecting: impl std::future::Future<Output = Result<C, E>>,
    ) -> impl std::future::Future<Output = Result<C, E>> {
        let connects = self.clone();
        connects.started.fetch_add(1, Ordering::Relaxed);
        async move {
            // Never closed, so the permit always comes.
            let permit = connects.ramp.acquire().await;
            let connected = connecting.await;
            drop(permit);
            if connected.is_ok() {
                connects.opened.fetch_add(1, Ordering::Relaxed);
            }
            connects.ended.fetch_add(1, Ordering::Relaxed);
            connected
        }
    }
}

/// Longest wait for the end of a body after `[DONE]`.
pub(super) const BODY_END_LIMIT: Duration = Duration::from_millis(500);

/// Most connections opened ahead of a workload's measured requests: as many as an open loop
/// may keep in flight (`run::limits::MAX_OPEN_LOOP_IN_FLIGHT`); the runner has already checked
/// that the workload's concurrency fits the open-files limit.
pub(super) const MAX_PREOPENED: usize = 16_384;

/// Longest wait for each answer that opens a connection ahead of the measured requests.
pub(super) const PREOPEN_LIMIT: Duration = Duration::from_secs(10);

impl Shared {
    /// Reads what is left of a finished answer's body: at least the HTTP/1.1 chunked
    /// terminator, which uvicorn (vLLM's server) sends in a write of its own after `[DONE]`.
    /// Only a body read to its end gives its connection back to the pool; a dropped one closes
    /// it, and the next request would pay for a new connection inside its TTFT. The request's
    /// end was stamped at `Done`; this runs when the runner polls the stream once more, before
    /// the same worker sends its next request.
    pub(super) async fn read_to_end(&self, mut events: Events) {
        let rest = async { while events.next().await.is_some() {} };
        if tokio::time::timeout(BODY_END_LIMIT, rest).await.is_err() {
            self.counts.unended_bodies.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Makes sure `n` connections are open and idle in the pool, so the first `n` measured
    /// requests do not each pay for a handshake: `n` concurrent `GET /v1/models`, which reuse
    /// idle connections and open only the missing ones (through the connects' ramp). Their
    /// answers are not used, and a server without that route still answers (404) on a kept
    /// connection.
    pub(super) async fn open_connections(&self, n: usize) {
        let asks = (0..n.min(MAX_PREOPENED)).map(|_| async {
            let Ok(response) = self
                .client
                .get(&self.models_url)
                .timeout(PREOPEN_LIMIT)
                .send()
                .await
            else {
                return;
            };
            self.note_answered(&response);
            // Read to the end, so the connection goes back to the pool (a longer answer than
            // any model list closes it instead).
            let _ = body::read_capped(response, body::MODELS_BODY_LIMIT).await;
        });
        futures::future::join_all(asks).await;
        // A connect can outlive the answer it was started for (the pool gave that request a
        // connection that fell idle first) and still lands in the pool: wait for those too, so
        // none is counted among the measured requests' connections.
        let settled = async {
            let c = &self.connections;
            while c.ended.load(Ordering::Relaxed) < c.started.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let _ = tokio::time::timeout(PREOPEN_LIMIT, settled).await;
    }

    /// Remembers the connection an answer came on, to tell a reused connection from a new one.
    pub(super) fn note_answered(&self, response: &reqwest::Response) {
        if let Some(info) = response.extensions().get::<HttpInfo>() {
            self.answered_on
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(info.local_addr());
        }
    }

    /// True when `error` says the server closed the connection before any byte of its answer,
    /// and that connection had carried an answer before: a kept-alive connection the server
    /// dropped as the request went out. A new connection closed that way is a server refusing
    /// the request, not a stale connection, and is not retried.
    pub(super) fn closed_on_reuse(&self, error: &reqwest::Error) -> bool {
        if !closed_before_answer(error) {
            return false;
        }
        let mut local = None;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = cause {
            if let Some(client_error) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
                if let Some(connected) = client_error.connect_info() {
                    let mut extras = http::Extensions::new();
                    connected.get_extras(&mut extras);
                    local = extras.get::<HttpInfo>().map(HttpInfo::local_addr);
                }
            }
            cause = e.source();
        }
        local.is_some_and(|addr| {
            self.answered_on
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&addr)
        })
    }
}

/// True when `error` says the connection closed before any byte of the answer came (an
/// incomplete message, a reset, an end of file), not that it could not be opened or timed out.
fn closed_before_answer(error: &reqwest::Error) -> bool {
    if error.is_connect() || error.is_timeout() {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// Sends a request that measures nothing (a `/metrics` scrape, a `/tokenize` call) once more
/// when its connection closed before the answer. Their clients keep connections like the
/// requests' do, and a server that closes each connection after its answer (llama.cpp's)
/// otherwise fails them at random: `scripts/check-llama-server.sh` lost a `/tokenize` call,
/// and with it an exact prompt length, that way. Both requests change nothing on the server,
/// so a second send is safe; a measured request is retried only on a connection known to
/// have answered before (`Connections::closed_on_reuse`), since it is timed.
pub(super) async fn send_idempotent(
    request: reqwest::RequestBuilder,
) -> reqwest::Result<reqwest::Response> {
    let again = request.try_clone();
    match (request.send().await, again) {
        (Err(e), Some(again)) if closed_before_answer(&e) => again.send().await,
        (sent, _) => sent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A server on 127.0.0.1 whose first connection reads the request and closes without a
    /// byte of answer (a kept-alive connection dropped as a request went out on it), and whose
    /// later connections answer `ok`. Returns its URL and how many connections it accepted.
    fn closes_first_connection() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/tokenize", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                if n > 0 {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
            }
        });
        (url, accepted)
    }

    #[test]
    fn a_request_that_measures_nothing_is_sent_again_when_its_connection_closes_unanswered() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let (url, accepted) = closes_first_connection();
            let plain = client.post(&url).body("{}").send().await;
            assert!(plain.is_err(), "the first connection closes unanswered");
            assert!(closed_before_answer(&plain.unwrap_err()));

            let (url, accepted_again) = closes_first_connection();
            let answer = send_idempotent(client.post(&url).body("{}")).await.unwrap();
            assert_eq!(answer.text().await.unwrap(), "ok");
            assert_eq!(accepted_again.load(std::sync::atomic::Ordering::SeqCst), 2);
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

            // Nothing listens: a failure to connect is not a closed connection, sent once.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let refused = send_idempotent(client.get(format!("http://127.0.0.1:{port}/metrics")))
                .await
                .unwrap_err();
            assert!(refused.is_connect());
            assert!(!closed_before_answer(&refused));
        });
    }
}
