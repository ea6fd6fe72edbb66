//! The text format of `COPY ... FROM STDIN`: tab-separated fields, `\N` for NULL,
//! backslash escapes for backslash, newline, carriage return and tab.

use std::io;

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::Transaction;

use crate::{Context, StoreError};

/// Rows in COPY text format, built in one buffer.
pub(crate) struct CopyBuffer {
    buf: Vec<u8>,
    at_row_start: bool,
}

impl CopyBuffer {
    fn with_capacity(bytes: usize) -> Self {
        CopyBuffer {
            buf: Vec::with_capacity(bytes),
            at_row_start: true,
        }
    }

    fn separate(&mut self) {
        if !self.at_row_start {
            self.buf.push(b'\t');
        }
        self.at_row_start = false;
    }

    pub(crate) fn null(&mut self) {
        self.separate();
        self.buf.extend_from_slice(b"\\N");
    }

    pub(crate) fn text(&mut self, value: &str) {
        self.separate();
        escape_into(&mut self.buf, value.as_bytes());
    }

    pub(crate) fn optional(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// Serialises `value` as JSON straight into the buffer.
    pub(crate) fn json(&mut self, value: &impl serde::Serialize) -> Result<(), StoreError> {
        self.separate();
        serde_json::to_writer(Escaping(&mut self.buf), value)
            .map_err(|e| StoreError::Invalid(format!("cannot serialise a record as JSON: {e}")))
    }

    fn end_row(&mut self) {
        self.buf.push(b'\n');
        self.at_row_start = true;
    }
}

/// Rows per COPY message. Each message goes out while the next is being built, so
/// the server parses one chunk while this process converts the next.
const CHUNK_ROWS: usize = 500;

/// Runs `statement` (a `COPY ... FROM STDIN`) with one row per item, written by
/// `write_row`; returns the number of rows copied.
pub(crate) async fn copy_in<T>(
    tx: &Transaction<'_>,
    statement: &str,
    items: &[T],
    bytes_per_row: usize,
    mut write_row: impl FnMut(&mut CopyBuffer, &T) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let sink = tx
        .copy_in::<_, Bytes>(statement)
        .await
        .context("starting COPY")?;
    futures::pin_mut!(sink);
    for chunk in items.chunks(CHUNK_ROWS) {
        let mut buf = CopyBuffer::with_capacity(chunk.len() * bytes_per_row);
        for item in chunk {
            write_row(&mut buf, item)?;
            buf.end_row();
        }
        sink.send(Bytes::from(buf.buf))
            .await
            .context("sending COPY data")?;
    }
    sink.finish().await.context("finishing COPY")
}

fn escape_into(buf: &mut Vec<u8>, bytes: &[u8]) {
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[plain_from..i]);
        buf.extend_from_slice(escaped);
        plain_from = i + 1;
    }
    buf.extend_from_slice(&bytes[plain_from..]);
}

struct Escaping<'a>(&'a mut Vec<u8>);

impl io::Write for Escaping<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        escape_into(self.0, bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_separators_and_marks_nulls() {
        let mut b = CopyBuffer::with_capacity(64);
        b.text("a\tb\nc\\d\re");
        b.null();
        b.optional(Some("plain"));
        b.json(&serde_json::json!({"k": "line\nbreak \\ slash"}))
            .unwrap();
        b.end_row();
        b.text("second");
        b.end_row();
        let text = String::from_utf8(b.buf).unwrap();
        assert_eq!(
            text,
            "a\\tb\\nc\\\\d\\re\t\\N\tplain\t{\"k\":\"line\\\\nbreak \\\\\\\\ slash\"}\nsecond\n"
        );
    }
}
