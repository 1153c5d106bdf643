//! Response frames as a list of byte segments, written with vectored I/O.
//!
//! Record data a Fetch read from storage (or the tail cache) is already in
//! reference-counted `Bytes`; encoding the response into one buffer would
//! copy all of it once more. [`SegmentedBuf`] is the encoder's buffer that
//! takes those `Bytes` by reference instead: when the encoder puts a slice
//! that is exactly one of them, the frame gets a new segment pointing at it.

use std::io::{self, IoSlice};
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use tokio::io::AsyncWriteExt;

/// Slices shorter than this are copied: a segment of their own would cost
/// more (an I/O vector entry, a split of the buffer) than the copy.
pub const MIN_REFERENCED: usize = 4096;

/// Most segments handed to one `writev`.
const MAX_IOV: usize = 64;

/// A complete response frame (size prefix included), in order.
#[derive(Debug, Clone)]
pub struct Frame {
    parts: Vec<Bytes>,
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Self {
        Frame { parts: vec![b] }
    }
}

impl Frame {
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Writes the whole frame, as few system calls as the segments allow.
    pub async fn write_to<W: AsyncWriteExt + Unpin>(&self, wr: &mut W) -> io::Result<()> {
        if let [only] = self.parts.as_slice() {
            return wr.write_all(only).await;
        }
        let (mut idx, mut off) = (0usize, 0usize);
        while idx < self.parts.len() {
            let slices: Vec<IoSlice<'_>> = self.parts[idx..]
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 0 { &b[off..] } else { &b[..] })
                .filter(|s| !s.is_empty())
                .take(MAX_IOV)
                .map(IoSlice::new)
                .collect();
            if slices.is_empty() {
                break;
            }
            let mut n = wr.write_vectored(&slices).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while n > 0 && idx < self.parts.len() {
                let left = self.parts[idx].len() - off;
                if n >= left {
                    n -= left;
                    idx += 1;
                    off = 0;
                } else {
                    off += n;
                    n = 0;
                }
            }
            while idx < self.parts.len() && self.parts[idx].len() == off {
                idx += 1;
                off = 0;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.parts.len()
    }
}

/// An encoding buffer that references the given `Bytes` instead of copying
/// them. Random access (`seek`/`range`) reaches only the part written since
/// the last referenced segment: message encoders never go back (only record
/// batch and compression encoders do, and they write into their own buffers).
pub struct SegmentedBuf {
    /// Finished segments, in order.
    parts: Vec<Bytes>,
    /// Bytes in `parts`.
    done: usize,
    /// Where the encoder writes now.
    head: BytesMut,
    /// Data to reference when the encoder puts exactly one of these.
    refs: Vec<Bytes>,
}

impl SegmentedBuf {
    pub fn new(refs: Vec<Bytes>) -> Self {
        SegmentedBuf {
            parts: Vec::new(),
            done: 0,
            head: BytesMut::with_capacity(256),
            refs,
        }
    }

    /// The encoded frame; `size_prefix` adds Kafka's 4-byte length in front.
    pub fn into_frame(mut self, size_prefix: bool) -> Result<Frame, String> {
        self.finish_head();
        if size_prefix {
            let size = i32::try_from(self.done).map_err(|_| "response too large".to_string())?;
            self.parts
                .insert(0, Bytes::copy_from_slice(&size.to_be_bytes()));
        }
        Ok(Frame { parts: self.parts })
    }

    fn finish_head(&mut self) {
        if !self.head.is_empty() {
            let head = self.head.split().freeze();
            self.done += head.len();
            self.parts.push(head);
        }
    }

    fn take_ref(&mut self, src: &[u8]) -> Option<Bytes> {
        if src.len() < MIN_REFERENCED {
            return None;
        }
        let i = self
            .refs
            .iter()
            .position(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())?;
        Some(self.refs.swap_remove(i))
    }
}

// SAFETY: every method delegates to `head`, a `BytesMut`, whose own
// implementation upholds the trait's contract.
unsafe impl BufMut for SegmentedBuf {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's guarantee about `cnt` is passed on unchanged.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.take_ref(src) {
            Some(b) => {
                self.finish_head();
                self.done += b.len();
                self.parts.push(b);
            }
            None => self.head.put_slice(src),
        }
    }
}

impl ByteBufMut for SegmentedBuf {
    fn offset(&self) -> usize {
        self.done + self.head.len()
    }

    fn seek(&mut self, offset: usize) {
        // Never reaches back into finished segments (see the type's doc).
        self.head.resize(offset.saturating_sub(self.done), 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let len = self.head.len();
        let start = r.start.saturating_sub(self.done).min(len);
        let end = r.end.saturating_sub(self.done).clamp(start, len);
        &mut self.head[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_registered_bytes_and_copies_the_rest() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let other = Bytes::from(vec![9u8; 10_000]);
        let mut buf = SegmentedBuf::new(vec![big.clone()]);
        buf.put_i32(42);
        buf.put_slice(&big);
        buf.put_slice(&other); // not registered: copied
        buf.put_slice(&big[..5000]); // part of it: copied
        buf.put_u8(1);
        let frame = buf.into_frame(true).unwrap();
        let mut expected = Vec::new();
        let body_len: i32 = 4 + 10_000 + 10_000 + 5000 + 1;
        expected.extend_from_slice(&body_len.to_be_bytes());
        expected.extend_from_slice(&42i32.to_be_bytes());
        expected.extend_from_slice(&big);
        expected.extend_from_slice(&other);
        expected.extend_from_slice(&big[..5000]);
        expected.push(1);
        assert_eq!(frame.to_vec(), expected);
        assert_eq!(frame.len(), expected.len());
        // size, head before, the referenced data, head after.
        assert_eq!(frame.segments(), 4);
    }

    #[tokio::test]
    async fn vectored_write_sends_every_byte_in_order() {
        let parts: Vec<Bytes> = (0..200u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; (i as usize * 37) % 5000]))
            .collect();
        let frame = Frame {
            parts: parts.clone(),
        };
        let (mut a, mut b) = tokio::io::duplex(1024);
        let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got)
                .await
                .unwrap();
            got
        });
        frame.write_to(&mut a).await.unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), expected);
    }
}
