//! A request's stream as an engine on a thread of its own fills it: [`TokenSink`].
//!
//! An engine that decodes on its own thread (a candle model, bindings to a C++ engine) pushes
//! each token into the sink the moment it has it. The sink stamps the token with the backend's
//! clock right there, so the time the event then spends in the channel, and waiting for the
//! runner's task to be scheduled, is not counted in TTFT or the inter-token gaps. The sink also
//! keeps the stream's contract for the engine: it ends with exactly one `Done` or `Error`, and a
//! sink dropped without either (the engine thread panicked or forgot) ends the stream with an
//! engine error instead of leaving the request hanging.

use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use crate::backend::clock::Clock;
use crate::backend::{ErrorKind, RequestError, StreamEvent, Usage};

/// The sending half of one request's stream; see the [module documentation](self).
///
/// ```
/// use sagellm_bench::{Clock, StreamEvent, TokenSink};
/// use futures::StreamExt;
///
/// let (mut sink, stream) = TokenSink::channel(&Clock::real());
/// std::thread::spawn(move || {
///     for word in ["Hello", ",", " world"] {
///         if !sink.push(word, 1) {
///             return; // nobody reads the stream any more: stop generating
///         }
///     }
///     sink.done(None);
/// });
/// let events: Vec<StreamEvent> = futures::executor::block_on(stream.collect());
/// assert_eq!(events.len(), 4); // three stamped tokens, then Done
/// ```
pub struct TokenSink {
    events: mpsc::UnboundedSender<StreamEvent>,
    clock: Clock,
    finished: bool,
}

impl TokenSink {
    /// A sink and the stream it fills, stamped with `clock` (the one [`Backend::clock`]
    /// returns). Return the stream from [`Backend::generate`]; hand the sink to the engine.
    ///
    /// [`Backend::clock`]: crate::Backend::clock
    /// [`Backend::generate`]: crate::Backend::generate
    pub fn channel(clock: &Clock) -> (TokenSink, BoxStream<'static, StreamEvent>) {
        let (events, inbox) = mpsc::unbounded_channel();
        let stream = futures::stream::unfold(inbox, |mut inbox| async move {
            inbox.recv().await.map(|event| (event, inbox))
        })
        .boxed();
        let sink = TokenSink {
            events,
            clock: clock.clone(),
            finished: false,
        };
        (sink, stream)
    }

    /// Sends `tokens` tokens of `text`, stamped now. Returns `false` when nobody reads the
    /// stream any more (the run stopped, or gave up on the request): the engine should stop
    /// generating for it. `tokens == 0` sends text that is not output (it does not count
    /// towards TTFT).
    pub fn push(&mut self, text: impl Into<String>, tokens: usize) -> bool {
        let event = StreamEvent::Tokens {
            text: text.into(),
            tokens,
        };
        self.stamp_and_send(event)
    }

    /// Sends `tokens` tokens of reasoning `text` (a reasoning model's thinking before its
    /// answer), stamped now; see [`StreamEvent::Reasoning`]. Returns `false` when nobody reads
    /// the stream any more.
    pub fn push_reasoning(&mut self, text: impl Into<String>, tokens: usize) -> bool {
        let event = StreamEvent::Reasoning {
            text: text.into(),
            tokens,
        };
        self.stamp_and_send(event)
    }

    /// Ends the stream successfully, with the token counts the engine knows.
    pub fn done(mut self, usage: Option<Usage>) {
        self.finished = true;
        self.stamp_and_send(StreamEvent::Done { usage });
    }

    /// Ends the stream with a failure of this kind.
    pub fn fail(mut self, kind: ErrorKind, message: impl Into<String>) {
        self.finished = true;
        self.stamp_and_send(StreamEvent::Error(RequestError::new(kind, message)));
    }

    /// Sends any event, stamped now; a `Done` or `Error` finishes the stream (what is sent after
    /// it is not read). For engines that build their events themselves; returns `false` when
    /// nobody reads the stream any more.
    pub fn send(&mut self, event: StreamEvent) -> bool {
        let last = matches!(event, StreamEvent::Done { .. } | StreamEvent::Error(_));
        let sent = self.stamp_and_send(event);
        self.finished |= last;
        sent
    }

    /// Whether the stream's reader is gone, so there is no point in generating more.
    pub fn is_abandoned(&self) -> bool {
        self.events.is_closed()
    }

    fn stamp_and_send(&mut self, event: StreamEvent) -> bool {
        let at: Duration = self.clock.now();
        self.events
            .send(StreamEvent::Stamped {
                at,
                event: Box::new(event),
            })
            .is_ok()
    }
}

impl Drop for TokenSink {
    fn drop(&mut self) {
        if !self.finished {
            let message = if std::thread::panicking() {
                "the engine panicked while generating this request"
            } else {
                "the engine dropped the request's token sink without finishing it"
            };
            self.stamp_and_send(StreamEvent::Error(RequestError::new(
                ErrorKind::Engine,
                message,
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstamped(event: StreamEvent) -> (Duration, StreamEvent) {
        match event {
            StreamEvent::Stamped { at, event } => (at, *event),
            other => panic!("not stamped: {other:?}"),
        }
    }

    #[tokio::test]
    async fn events_carry_the_time_they_were_pushed_not_the_time_they_were_read() {
        let clock = Clock::real();
        let (mut sink, mut stream) = TokenSink::channel(&clock);
        assert!(sink.push("a", 1));
        std::thread::sleep(Duration::from_millis(40));
        sink.push("b", 2);
        sink.done(None);
        // Nobody reads the stream for a while.
        std::thread::sleep(Duration::from_millis(100));
        let (at_a, a) = unstamped(stream.next().await.unwrap());
        let (at_b, _) = unstamped(stream.next().await.unwrap());
        let (at_done, done) = unstamped(stream.next().await.unwrap());
        let read_at = clock.now();
        assert_eq!(
            a,
            StreamEvent::Tokens {
                text: "a".into(),
                tokens: 1
            }
        );
        assert!(
            at_b - at_a >= Duration::from_millis(40),
            "{at_a:?} {at_b:?}"
        );
        assert!(at_done >= at_b);
        assert!(
            read_at - at_done >= Duration::from_millis(100),
            "stamped when read"
        );
        assert_eq!(done, StreamEvent::Done { usage: None });
        assert!(stream.next().await.is_none(), "the stream ends after Done");
    }

    #[tokio::test]
    async fn a_sink_dropped_unfinished_ends_the_stream_with_an_engine_error() {
        let (mut sink, mut stream) = TokenSink::channel(&Clock::real());
        sink.push("x", 1);
        drop(sink);
        stream.next().await.unwrap();
        let (_, last) = unstamped(stream.next().await.unwrap());
        assert!(
            matches!(&last, StreamEvent::Error(e) if e.kind == ErrorKind::Engine),
            "{last:?}"
        );
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_panicking_engine_thread_fails_the_request() {
        let (sink, mut stream) = TokenSink::channel(&Clock::real());
        let engine = std::thread::spawn(move || {
            let _sink = sink;
            panic!("out of memory in the engine");
        });
        assert!(engine.join().is_err());
        let (_, last) = unstamped(stream.next().await.unwrap());
        assert!(
            matches!(&last, StreamEvent::Error(e) if e.message.contains("panicked")),
            "{last:?}"
        );
    }

    #[test]
    fn push_says_when_nobody_listens() {
        let (mut sink, stream) = TokenSink::channel(&Clock::real());
        drop(stream);
        assert!(sink.is_abandoned());
        assert!(!sink.push("x", 1));
    }
}
