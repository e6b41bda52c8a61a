//! Bounded reads of what a server sends: no answer may take memory, time or disk in proportion
//! to what a broken or hostile server chooses to send. Error bodies, model lists and metrics
//! pages are read up to a cap; a streamed answer's lines are checked as they arrive, so one
//! endless line fails its request instead of growing a buffer the parser rescans.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{Stream, StreamExt};

/// Most of an error answer's body read: its message is clipped to a few hundred characters
/// anyway.
pub(crate) const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Most of a `/v1/models` answer read.
pub(crate) const MODELS_BODY_LIMIT: usize = 1024 * 1024;

/// Most of a `/metrics` page read (vLLM's, with every histogram of several engines, is a few
/// hundred kilobytes).
pub(crate) const METRICS_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Longest line of a streamed answer: one server-sent event's line, a chunk of JSON holding a
/// few tokens (with log-probabilities, a few kilobytes).
pub(crate) const STREAM_LINE_LIMIT: usize = 4 * 1024 * 1024;

/// Reads `response`'s body up to `limit` bytes; `Ok((text, cut))`, where `cut` says the body
/// was longer. What was read is decoded leniently (UTF-8 with replacement characters).
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(String, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((String::from_utf8_lossy(&body).into_owned(), true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((String::from_utf8_lossy(&body).into_owned(), false))
}

/// Why a streamed body could not be read on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyFault {
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    #[error("a line of the stream is longer than {} MiB", STREAM_LINE_LIMIT / (1024 * 1024))]
    LineTooLong,
}

/// `bytes` with every line checked against [`STREAM_LINE_LIMIT`] as it arrives, in time
/// linear in the bytes; the first line past it ends the stream with [`BodyFault::LineTooLong`].
/// `received` counts the bytes as they arrive.
pub(crate) fn line_limited(
    bytes: impl Stream<Item = Result<Bytes, reqwest::Error>>,
    received: Arc<AtomicUsize>,
) -> impl Stream<Item = Result<Bytes, BodyFault>> {
    let mut line = 0usize;
    let mut failed = false;
    bytes
        .map(move |chunk| {
            let chunk = chunk?;
            received.fetch_add(chunk.len(), Ordering::Relaxed);
            // The line running on from earlier chunks ends at this chunk's first newline; the
            // lines between its first and last newline are shorter than the chunk (which is a
            // socket read, well under the limit).
            let longest = match chunk.iter().position(|&b| b == b'\n') {
                Some(first) => {
                    let ended = line + first;
                    line =
                        chunk.len() - chunk.iter().rposition(|&b| b == b'\n').unwrap_or(first) - 1;
                    ended.max(line)
                }
                None => {
                    line += chunk.len();
                    line
                }
            };
            if longest > STREAM_LINE_LIMIT {
                return Err(BodyFault::LineTooLong);
            }
            Ok(chunk)
        })
        .take_while(move |item| {
            let go = !failed;
            failed |= matches!(item, Err(BodyFault::LineTooLong));
            futures::future::ready(go)
        })
}
