//! Server-sent events framed from a streamed body, on the per-chunk path of every request.
//!
//! The framing is the WHATWG event-stream format (an optional byte-order mark, lines ended by
//! CR LF, LF or CR, `:` comments, `field: value` lines with one leading space dropped, a blank
//! line dispatching the event; `data` lines joined by LF; an event without data is not
//! dispatched; an unfinished event at the end of the body is dropped). It does what the
//! `eventsource-stream` crate did here before, which a property test checks it against on
//! random streams cut at random points, at a fraction of the cost: that crate copied the
//! whole unread buffer after every line it parsed and allocated a string per read, per event
//! name and per event id, which made SSE framing a quarter of the client's CPU against a
//! server answering at once (docs/PERFORMANCE.md, "Beside the floor"). Here bytes are kept
//! once, lines are found with one scan and read in place, and an event costs the one string
//! of its data.
//!
//! `id` and `retry` are read by nobody here (a benchmark never reconnects a stream), so they are
//! skipped like unknown fields. Every line must be UTF-8, as the format requires.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::Stream;

/// One dispatched event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Event {
    /// The `event:` field; empty when the server sent none (a `message` event).
    pub event: String,
    /// The `data:` lines, joined by LF.
    pub data: String,
}

/// Why the stream of events ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SseError<E> {
    /// The body could not be read on.
    #[error(transparent)]
    Transport(E),
    /// A line is not UTF-8.
    #[error("a line of the stream is not UTF-8 ({0})")]
    Utf8(std::str::Utf8Error),
}

/// Events framed from `body`'s bytes.
pub(crate) struct SseStream<S> {
    body: S,
    /// Bytes read and not yet framed start at `start`.
    buffer: Vec<u8>,
    start: usize,
    /// True once the first line was read (a byte-order mark is dropped only there).
    started: bool,
    /// The event being built.
    event: String,
    data: String,
    ended: bool,
}

impl<S> SseStream<S> {
    pub(crate) fn new(body: S) -> Self {
        SseStream {
            body,
            buffer: Vec::new(),
            start: 0,
            started: false,
            event: String::new(),
            data: String::new(),
            ended: false,
        }
    }

    /// Frames the complete lines buffered until one dispatches an event.
    fn frame<E>(&mut self) -> Option<Result<Event, SseError<E>>> {
        loop {
            let rest = &self.buffer[self.start..];
            let cut = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
            let ending = match (rest[cut], rest.get(cut + 1)) {
                (b'\r', Some(b'\n')) => 2,
                // A CR last in what has arrived may be the first half of CR LF: wait.
                (b'\r', None) => return None,
                _ => 1,
            };
            let mut line = &rest[..cut];
            self.start += cut + ending;
            if !self.started {
                self.started = true;
                line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
            }
            let line = match std::str::from_utf8(line) {
                Ok(line) => line,
                Err(e) => return Some(Err(SseError::Utf8(e))),
            };
            if line.is_empty() {
                if self.data.is_empty() {
                    self.event.clear();
                    continue;
                }
                self.data.pop(); // the LF after the last data line
                let event = Event {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                };
                return Some(Ok(event));
            }
            let (name, value) = match line.split_once(':') {
                Some(("", _)) => continue, // a comment
                Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match name {
                "data" => {
                    // One allocation for the usual one-line event, not a growth at each push.
                    self.data.reserve(value.len() + 1);
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                "event" => {
                    self.event.clear();
                    self.event.push_str(value);
                }
                _ => {}
            }
        }
    }
}

impl<S, E> Stream for SseStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Event, SseError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.frame() {
                return Poll::Ready(Some(item));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            // What is left is part of one line: move it to the front before reading on.
            if this.start > 0 {
                this.buffer.drain(..this.start);
                this.start = 0;
            }
            match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.buffer.extend_from_slice(&bytes),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(SseError::Transport(e)))),
                // An unfinished event at the end is dropped, as the format says.
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    /// The events `reads` frame into, or the error that ended them.
    fn frame(reads: &[&[u8]]) -> Result<Vec<(String, String)>, String> {
        let body = futures::stream::iter(
            reads
                .iter()
                .map(|r| Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(r)))
                .collect::<Vec<_>>(),
        );
        futures::executor::block_on(async {
            let mut events = SseStream::new(body);
            let mut out = Vec::new();
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| e.to_string())?;
                out.push((event.event, event.data));
            }
            Ok(out)
        })
    }

    fn event(name: &str, data: &str) -> (String, String) {
        (name.to_string(), data.to_string())
    }

    #[test]
    fn the_formats_own_examples_frame_as_it_says() {
        // The WHATWG examples: multi-line data, a comment, a named event, an event without
        // data (not dispatched), a field without a colon, a value without its space.
        let stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\nevent: add\ndata: 73857293\n\nevent: none\n\ndata\n\ndata\ndata\n\ndata:";
        assert_eq!(
            frame(&[stream]).unwrap(),
            vec![
                event("", "first event"),
                event("", "second event"),
                event("", " third event"),
                event("add", "73857293"),
                event("", ""),
                event("", "\n"),
            ]
        );
    }

    #[test]
    fn a_stream_opening_with_a_byte_order_mark_is_read_without_it() {
        // The `eventsource-stream` crate, used here before, panicked on this stream.
        assert_eq!(
            frame(&["\u{feff}".as_bytes(), b"data: a\n\n"]).unwrap(),
            vec![event("", "a")]
        );
    }

    #[test]
    fn line_endings_of_every_kind_and_a_byte_order_mark_are_read() {
        let stream = "\u{feff}data: a\r\ndata: b\r\rdata: c\n\r\n";
        assert_eq!(
            frame(&[stream.as_bytes()]).unwrap(),
            vec![event("", "a\nb"), event("", "c")]
        );
        // A byte-order mark later in the stream is part of the line.
        let later = "data: a\n\n\u{feff}data: b\n\n";
        assert_eq!(frame(&[later.as_bytes()]).unwrap(), vec![event("", "a")]);
    }

    #[test]
    fn a_cr_at_the_end_of_a_read_waits_for_the_next_one() {
        // CR then LF in the next read is one line ending, not two (which would end the event
        // after its first line).
        assert_eq!(
            frame(&[b"data: a\r", b"\ndata: b\r\n\r\n"]).unwrap(),
            vec![event("", "a\nb")]
        );
    }

    #[test]
    fn events_split_anywhere_across_reads_frame_the_same() {
        let stream: &[u8] = "event: x\ndata: {\"é\": 1}\n\n: c\n\ndata: [DONE]\n\n".as_bytes();
        let whole = frame(&[stream]).unwrap();
        assert_eq!(whole, vec![event("x", "{\"é\": 1}"), event("", "[DONE]")]);
        for size in 1..stream.len() {
            let reads: Vec<&[u8]> = stream.chunks(size).collect();
            assert_eq!(frame(&reads).unwrap(), whole, "reads of {size} bytes");
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_ends_the_stream_with_an_error() {
        let error = frame(&[b"data: ok\n\ndata: \xff\xfe\n\n"]).unwrap_err();
        assert!(error.contains("not UTF-8"), "{error}");
    }

    proptest::proptest! {
        /// The same events as the `eventsource-stream` crate, which this framing replaced, for
        /// random streams of the format's pieces cut into random reads.
        #[test]
        fn frames_as_eventsource_stream_does(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "data: a", "data:b", "data", "data:  c", "event: e", "event:", "id: 1",
                // No byte-order mark: the crate panics on a stream that opens with one (it
                // slices the mark's 3 bytes at 1), which this framing drops instead.
                "retry: 10", ": comment", ":", "other: x", "da", "é",
                "\n", "\n", "\n", "\r", "\r\n", "\r\n",
            ]), 0..40),
            cuts in proptest::collection::vec(1usize..8, 1..20),
        ) {
            use eventsource_stream::Eventsource;
            let stream = pieces.concat();
            let bytes = stream.as_bytes();
            let mut reads = Vec::new();
            let mut at = 0;
            for size in cuts.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                // Whole characters only: the crate's UTF-8 errors fall at other points.
                let mut end = (at + size).min(bytes.len());
                while !stream.is_char_boundary(end) {
                    end += 1;
                }
                reads.push(&bytes[at..end]);
                at = end;
            }
            let ours = frame(&reads).unwrap();
            let theirs: Vec<(String, String)> = futures::executor::block_on(
                futures::stream::iter(
                    reads.iter().map(|r| Ok::<_, std::convert::Infallible>(r.to_vec())),
                )
                .eventsource()
                .map(|e| {
                    let e = e.unwrap();
                    let name = if e.event == "message" { String::new() } else { e.event };
                    (name, e.data)
                })
                .collect(),
            );
            let ours: Vec<(String, String)> = ours
                .into_iter()
                .map(|(name, data)| (if name == "message" { String::new() } else { name }, data))
                .collect();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }
}
