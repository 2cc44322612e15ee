//! Decoding the change-event stream of `GET /watch`.
//!
//! A node sends one JSON [`WatchEvent`] per line. HTTP chunks do not respect
//! line boundaries, so bytes are buffered by [`LineDecoder`] until a newline
//! arrives; only complete lines are parsed. Server-sent-event framing is
//! tolerated too (`data:` prefixes are stripped; `event:`, `id:`, `retry:` and
//! `:` comment lines are skipped), so the same decoder works whichever of the
//! two formats a node chooses.
//!
//! The stream promises:
//! - events come out in the order the node sent them;
//! - a line that does not parse yields one [`ClientError::Decode`] item and
//!   the stream goes on, so the subscriber decides whether an event it cannot
//!   read (say, a newer kind) forces it to drop its cache;
//! - a transport failure, an over-long line or silence longer than the idle
//!   timeout yields one error item and then ends the stream: heartbeats are
//!   periodic, so silence means the stream is broken, not that the group is
//!   quiet;
//! - a clean end of the body ends the stream (after any last unterminated
//!   line); subscribers should treat it as a broken stream and reconnect.

use std::pin::Pin;
use std::time::Duration;

use bazar_api::WatchEvent;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::error::{ClientError, Result};

/// Longest line accepted. Events are small (an index and a few keys); a
/// longer line means the stream is not what we think it is, and buffering it
/// without bound would let a broken server exhaust our memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A stream of change events, as returned by [`crate::Client::watch`].
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// Splits a byte stream into lines, whatever the chunk boundaries.
#[derive(Debug, Default)]
pub struct LineDecoder {
    buf: BytesMut,
    /// How far `buf` has been searched for a newline, so that a long line
    /// arriving in many chunks is scanned once, not once per chunk.
    scanned: usize,
}

impl LineDecoder {
    /// An empty decoder.
    pub fn new() -> LineDecoder {
        LineDecoder::default()
    }

    /// Appends a chunk. Fails once an unterminated line exceeds
    /// [`MAX_LINE_BYTES`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(chunk);
        if self.buf[self.scanned..].contains(&b'\n') {
            return Ok(());
        }
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(ClientError::Decode(format!("change stream line longer than {MAX_LINE_BYTES} bytes")));
        }
        Ok(())
    }

    /// The next complete line, without its `\n` (or `\r\n`).
    pub fn next_line(&mut self) -> Option<Bytes> {
        let pos = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
        match pos {
            Some(pos) => {
                let mut line = self.buf.split_to(self.scanned + pos + 1).freeze();
                self.scanned = 0;
                line.truncate(line.len() - 1);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                Some(line)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// What is left once the body has ended: a last line without a newline.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        if self.buf.is_empty() {
            return None;
        }
        let rest = self.buf.split().freeze();
        Some(rest)
    }
}

/// Parses one line of the stream: `None` for blank lines and SSE framing that
/// carries no event.
pub fn parse_event_line(line: &[u8]) -> Option<Result<WatchEvent>> {
    let line = line.trim_ascii();
    if line.is_empty() || line.starts_with(b":") {
        return None;
    }
    let json = if let Some(data) = line.strip_prefix(b"data:") {
        data.trim_ascii_start()
    } else if [&b"event:"[..], b"id:", b"retry:"].iter().any(|p| line.starts_with(p)) {
        return None;
    } else {
        line
    };
    Some(serde_json::from_slice(json).map_err(|e| {
        let shown = String::from_utf8_lossy(&json[..json.len().min(200)]).into_owned();
        ClientError::Decode(format!("bad change event {shown:?}: {e}"))
    }))
}

/// Turns a response body into a stream of events, ending it with an error
/// when no bytes arrive for `idle`.
pub fn event_stream<S, E>(body: S, idle: Duration) -> WatchStream
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
    E: Into<ClientError> + 'static,
{
    let state = State { body: Box::pin(body), lines: LineDecoder::new(), idle, done: false };
    futures::stream::unfold(state, State::next).boxed()
}

struct State<E> {
    body: Pin<Box<dyn Stream<Item = std::result::Result<Bytes, E>> + Send>>,
    lines: LineDecoder,
    idle: Duration,
    done: bool,
}

impl<E: Into<ClientError>> State<E> {
    async fn next(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if let Some(line) = self.lines.next_line() {
                match parse_event_line(&line) {
                    Some(item) => return Some((item, self)),
                    None => continue,
                }
            }
            if self.done {
                // The body ended: parse a last line that had no newline.
                let rest = self.lines.finish()?;
                return parse_event_line(&rest).map(|item| (item, self));
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => {
                    let err = ClientError::timeout(format!("change stream silent for {:?}", self.idle));
                    return self.fail(err);
                }
                Ok(None) => self.done = true,
                Ok(Some(Err(e))) => return self.fail(e.into()),
                Ok(Some(Ok(chunk))) => {
                    if let Err(e) = self.lines.push(&chunk) {
                        return self.fail(e);
                    }
                }
            }
        }
    }

    /// Yields `err` and ends the stream.
    fn fail(mut self, err: ClientError) -> Option<(Result<WatchEvent>, Self)> {
        self.done = true;
        self.lines = LineDecoder::new();
        Some((Err(err), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(index: u64, key: &str) -> WatchEvent {
        WatchEvent::Applied { index, keys: vec![key.to_string()] }
    }

    #[test]
    fn lines_split_across_chunk_boundaries_are_joined() {
        let text = b"{\"type\":\"applied\",\"index\":1,\"keys\":[\"book/1\"]}\r\n\
                     {\"type\":\"applied\",\"index\":2,\"keys\":[\"book/2\"]}\n";
        // Every split point, including inside "\r\n".
        for cut in 0..text.len() {
            let mut dec = LineDecoder::new();
            let mut lines = Vec::new();
            for part in [&text[..cut], &text[cut..]] {
                dec.push(part).unwrap();
                while let Some(line) = dec.next_line() {
                    lines.push(line);
                }
            }
            assert_eq!(dec.finish(), None, "cut at {cut}");
            let events: Vec<_> = lines.iter().filter_map(|l| parse_event_line(l)).map(Result::unwrap).collect();
            assert_eq!(events, vec![applied(1, "book/1"), applied(2, "book/2")], "cut at {cut}");
        }
    }

    #[test]
    fn sse_framing_and_blank_lines_are_skipped() {
        assert!(parse_event_line(b"").is_none());
        assert!(parse_event_line(b": keep-alive").is_none());
        assert!(parse_event_line(b"event: applied").is_none());
        assert!(parse_event_line(b"id: 7").is_none());
        let ev = parse_event_line(br#"data: {"type":"reset","applied_index":9,"reason":"gap"}"#);
        assert_eq!(ev.unwrap().unwrap(), WatchEvent::Reset { applied_index: 9, reason: "gap".into() });
    }

    #[test]
    fn unparsable_line_is_a_decode_error() {
        let err = parse_event_line(br#"{"type":"mystery"}"#).unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
    }

    #[test]
    fn overlong_line_is_refused() {
        let mut dec = LineDecoder::new();
        dec.push(&vec![b'x'; MAX_LINE_BYTES]).unwrap();
        assert!(dec.next_line().is_none());
        assert!(dec.push(b"xx").is_err());
    }

    #[tokio::test]
    async fn stream_yields_events_then_a_last_unterminated_line() {
        let chunks: Vec<std::result::Result<Bytes, ClientError>> = vec![
            Ok(Bytes::from_static(b"{\"type\":\"heartbeat\",\"node_id\":1,\"applied_index\":3,")),
            Ok(Bytes::from_static(b"\"commit_index\":3,\"leader_id\":null}\n\n{\"type\":\"applied\",")),
            Ok(Bytes::from_static(b"\"index\":4,\"keys\":[\"order/1\"]}")),
        ];
        let events: Vec<_> = event_stream(futures::stream::iter(chunks), Duration::from_secs(5)).collect().await;
        let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            events,
            vec![
                WatchEvent::Heartbeat { node_id: 1, applied_index: 3, commit_index: 3, leader_id: None },
                applied(4, "order/1"),
            ]
        );
    }

    #[tokio::test]
    async fn silent_stream_ends_with_a_timeout() {
        let body = futures::stream::pending::<std::result::Result<Bytes, ClientError>>();
        let mut stream = event_stream(body, Duration::from_millis(50));
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(stream.next().await.is_none());
    }
}
