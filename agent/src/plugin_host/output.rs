//! Turning byte streams into log lines: line splitting with a length cap, output tails,
//! and the guest's own stdout/stderr.

use super::LogSink;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest log line passed on; longer lines are cut and marked.
pub const MAX_LINE: usize = 64 * 1024;
/// How much of a stream's end is kept (exec results, crash reports).
pub const TAIL: usize = 64 * 1024;

/// Sends one line (a `\n` is added) to the log, cutting it at [`MAX_LINE`] bytes.
pub fn send_line(log: &LogSink, prefix: &str, line: &[u8]) {
    if line.len() > MAX_LINE {
        send_cut(log, prefix, &line[..MAX_LINE], line.len() - MAX_LINE);
    } else {
        send_cut(log, prefix, line, 0);
    }
}

/// Sends `kept` as one line, marked if `dropped` bytes of it were cut off.
fn send_cut(log: &LogSink, prefix: &str, kept: &[u8], dropped: usize) {
    let mut out = Vec::with_capacity(prefix.len() + kept.len() + 48);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(kept);
    if dropped > 0 {
        out.extend_from_slice(format!(" [line truncated: {dropped} more bytes]").as_bytes());
    }
    out.push(b'\n');
    // A closed receiver means nobody listens any more; the action goes on regardless.
    let _ = log.send(out);
}

/// Splits a byte stream into lines for the log, holding at most [`MAX_LINE`] bytes of an
/// unfinished line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// Bytes of the current line dropped beyond [`MAX_LINE`].
    dropped: usize,
}

impl LineSplitter {
    /// Feeds bytes; complete lines go to `log`.
    pub fn push(&mut self, mut bytes: &[u8], log: &LogSink) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.append(&bytes[..i]);
                    self.emit(log);
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.append(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// Sends an unfinished last line, if any.
    pub fn finish(&mut self, log: &LogSink) {
        if !self.partial.is_empty() || self.dropped > 0 {
            self.emit(log);
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        let take = bytes.len().min(room);
        self.partial.extend_from_slice(&bytes[..take]);
        self.dropped += bytes.len() - take;
    }

    fn emit(&mut self, log: &LogSink) {
        let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
        send_cut(log, "", line, self.dropped);
        self.partial.clear();
        self.dropped = 0;
    }
}

/// The last [`TAIL`] bytes of a stream.
#[derive(Debug, Default)]
pub struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= TAIL {
            self.buf.clear();
            self.buf.extend_from_slice(&bytes[bytes.len() - TAIL..]);
            return;
        }
        self.buf.extend_from_slice(bytes);
        // Trim in batches so that appending stays amortised O(1).
        if self.buf.len() > 2 * TAIL {
            let excess = self.buf.len() - TAIL;
            self.buf.drain(..excess);
        }
    }

    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let start = self.buf.len().saturating_sub(TAIL);
        String::from_utf8_lossy(&self.buf[start..]).into_owned()
    }
}

/// Locks a mutex, ignoring poisoning (the data is plain bytes, always consistent).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The guest's stdout or stderr: every line goes to the action log as it is written,
/// and the end is kept for crash reports. Unlike `MemoryOutputPipe`, a chatty guest
/// never fills it up.
#[derive(Clone)]
pub struct GuestOutput {
    inner: Arc<Mutex<GuestOutputInner>>,
}

struct GuestOutputInner {
    log: LogSink,
    lines: LineSplitter,
    tail: Tail,
}

impl GuestOutput {
    pub fn new(log: LogSink) -> GuestOutput {
        GuestOutput {
            inner: Arc::new(Mutex::new(GuestOutputInner {
                log,
                lines: LineSplitter::default(),
                tail: Tail::default(),
            })),
        }
    }

    fn write(&self, bytes: &[u8]) {
        let mut inner = lock(&self.inner);
        let GuestOutputInner { log, lines, tail } = &mut *inner;
        tail.push(bytes);
        lines.push(bytes, log);
    }

    /// Sends an unfinished last line to the log.
    pub fn finish(&self) {
        let mut inner = lock(&self.inner);
        let GuestOutputInner { log, lines, .. } = &mut *inner;
        lines.finish(log);
    }

    /// The last bytes written, as text.
    pub fn tail(&self) -> String {
        lock(&self.inner).tail.text()
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(l) = rx.try_recv() {
            lines.push(String::from_utf8_lossy(&l).into_owned());
        }
        lines
    }

    #[test]
    fn splits_lines_across_chunks_and_cuts_long_ones() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut s = LineSplitter::default();
        s.push(b"hel", &tx);
        s.push(b"lo\nwor", &tx);
        s.push(b"ld\r\n", &tx);
        let long = vec![b'x'; MAX_LINE + 10];
        s.push(&long, &tx);
        s.push(b"\nlast", &tx);
        s.finish(&tx);
        let lines = collect(&mut rx);
        assert_eq!(lines[0], "hello\n");
        assert_eq!(lines[1], "world\n");
        assert!(lines[2].ends_with(" [line truncated: 10 more bytes]\n"));
        assert_eq!(
            lines[2].len(),
            MAX_LINE + " [line truncated: 10 more bytes]\n".len()
        );
        assert_eq!(lines[3], "last\n");
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::default();
        for i in 0..10_000u32 {
            t.push(format!("{i:08}\n").as_bytes());
        }
        let text = t.text();
        assert_eq!(text.len(), TAIL);
        assert!(text.ends_with("00009999\n"));
    }
}
