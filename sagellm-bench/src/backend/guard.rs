//! The stream contract, kept for backends the harness did not write: [`Guarded`] wraps a
//! registered backend so that whatever it does, each request ends as a record with its kind of
//! failure and the run goes on. A panic in `generate` or while its stream is polled is an
//! engine error; no event within the stall timeout, or no final event within the request
//! timeout, is a timeout; a stream that ends without `Done` or `Error` is already a protocol
//! error in the runner.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;

use crate::backend::clock::Clock;
use crate::backend::{
    Backend, BackendError, CountTokens, EngineFigures, ErrorKind, GenerationRequest, RequestError,
    StreamEvent,
};
use crate::workload::Workload;

/// The longest request or stall timeout accepted: a deadline further out overflows the clock.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a guarded request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest time from sending a request to its final event.
    pub request: Duration,
    /// Longest wait for the stream's next event.
    pub stall: Duration,
}

/// A backend whose requests always end; see the module documentation.
pub struct Guarded {
    inner: Arc<dyn Backend>,
    limits: Limits,
}

impl Guarded {
    pub fn new(inner: Arc<dyn Backend>, limits: Limits) -> Self {
        Guarded { inner, limits }
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

fn is_final(event: &StreamEvent) -> bool {
    match event {
        StreamEvent::Done { .. } | StreamEvent::Error(_) => true,
        StreamEvent::Stamped { event, .. } => is_final(event),
        StreamEvent::Tokens { .. }
        | StreamEvent::Reasoning { .. }
        | StreamEvent::PrefixCached { .. } => false,
    }
}

/// One guarded request's stream.
struct Watch {
    inner: BoxStream<'static, StreamEvent>,
    deadline: tokio::time::Instant,
    limits: Limits,
    /// The final event was passed on; what follows is the backend finishing up.
    finished: bool,
    /// Timeouts are real time only: a backend on a virtual clock is not watched.
    timed: bool,
    /// Timed out or panicked: the stream is over, whatever the backend would still do.
    over: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<StreamEvent> {
        if self.over {
            return None;
        }
        let poll = AssertUnwindSafe(self.inner.next()).catch_unwind();
        let polled = if self.timed {
            let stall = tokio::time::Instant::now() + self.limits.stall;
            // After the final event only the stall limit applies to finishing up.
            let (limit, stalled) = if self.finished || stall < self.deadline {
                (stall, true)
            } else {
                (self.deadline, false)
            };
            match tokio::time::timeout_at(limit, poll).await {
                Ok(polled) => polled,
                Err(_) => {
                    self.over = true;
                    // After the final event nothing more is owed: end quietly.
                    if self.finished {
                        return None;
                    }
                    let message = if stalled {
                        format!(
                            "the backend gave no event for {:.1} s (stall timeout)",
                            self.limits.stall.as_secs_f64()
                        )
                    } else {
                        format!(
                            "the request took longer than {:.1} s (request timeout)",
                            self.limits.request.as_secs_f64()
                        )
                    };
                    return Some(StreamEvent::Error(RequestError::new(
                        ErrorKind::Timeout,
                        message,
                    )));
                }
            }
        } else {
            poll.await
        };
        match polled {
            Ok(Some(event)) => {
                self.finished |= is_final(&event);
                Some(event)
            }
            Ok(None) => None,
            Err(payload) => {
                // A stream that panicked is not polled again.
                self.over = true;
                (!self.finished).then(|| {
                    StreamEvent::Error(RequestError::new(
                        ErrorKind::Engine,
                        format!("the backend panicked: {}", panic_text(&*payload)),
                    ))
                })
            }
        }
    }
}

#[async_trait]
impl Backend for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn clock(&self) -> Clock {
        self.inner.clock()
    }

    fn model_in_process(&self) -> bool {
        self.inner.model_in_process()
    }

    fn settings(&self) -> serde_json::Value {
        self.inner.settings()
    }

    async fn start_workload(&self, workload: &Workload) -> Result<(), BackendError> {
        self.inner.start_workload(workload).await
    }

    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let inner = AssertUnwindSafe(|| self.inner.generate(request));
        let inner = match std::panic::catch_unwind(inner) {
            Ok(stream) => stream,
            Err(payload) => {
                let error = RequestError::new(
                    ErrorKind::Engine,
                    format!("the backend panicked: {}", panic_text(&*payload)),
                );
                return futures::stream::once(async move { StreamEvent::Error(error) }).boxed();
            }
        };
        let watch = Watch {
            inner,
            deadline: tokio::time::Instant::now() + self.limits.request,
            limits: self.limits,
            finished: false,
            timed: matches!(self.inner.clock(), Clock::Real { .. }),
            over: false,
        };
        futures::stream::unfold(watch, |mut watch| async move {
            let event = watch.next().await?;
            Some((event, watch))
        })
        .boxed()
    }

    async fn finish_workload(&self) -> Result<EngineFigures, BackendError> {
        self.inner.finish_workload().await
    }

    async fn reset_statistics(&self) {
        self.inner.reset_statistics().await
    }

    fn output_token_counter(&self) -> Option<Arc<dyn CountTokens>> {
        self.inner.output_token_counter()
    }
}
