//! Response frames as a connection writes them.
//!
//! A frame is one or more buffers: the records of a fetch answer go out from
//! the buffers the log handed to the response (the tail cache's batches, or
//! the one buffer a store read filled) instead of being copied into the
//! frame. Everything else a response carries is encoded into a fresh buffer
//! between them.

use std::collections::HashMap;
use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Payloads shorter than this are copied: a separate buffer (and iovec) is
/// not worth it for them.
const SPLICE_MIN: usize = 16 * 1024;

/// A complete response frame, size prefix included.
pub struct ResponseFrame {
    chunks: Vec<Bytes>,
    len: usize,
}

impl ResponseFrame {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.len
    }

    /// What the connection writes: the frame's buffers in order, consumed as
    /// they are written.
    pub fn into_buf(self) -> FrameBuf {
        FrameBuf {
            chunks: self.chunks,
            at: 0,
            left: self.len,
        }
    }
}

impl From<Bytes> for ResponseFrame {
    fn from(b: Bytes) -> Self {
        ResponseFrame {
            len: b.len(),
            chunks: vec![b],
        }
    }
}

/// A frame being written (`Buf`, with vectored chunks for writers that
/// support them).
pub struct FrameBuf {
    chunks: Vec<Bytes>,
    at: usize,
    left: usize,
}

impl Buf for FrameBuf {
    fn remaining(&self) -> usize {
        self.left
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.get(self.at).map_or(&[], |c| &c[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, c) in dst.iter_mut().zip(self.chunks.iter().skip(self.at)) {
            *slot = IoSlice::new(c);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        self.left = self.left.saturating_sub(cnt);
        while cnt > 0 {
            let Some(c) = self.chunks.get_mut(self.at) else {
                return;
            };
            if cnt < c.len() {
                c.advance(cnt);
                return;
            }
            cnt -= c.len();
            self.at += 1;
        }
        // Skip empty chunks so `chunk()` is empty only at the end.
        while self.chunks.get(self.at).is_some_and(Bytes::is_empty) {
            self.at += 1;
        }
    }
}

/// An encoding buffer that takes registered payloads in by reference.
///
/// `kafka-protocol` encodes a bytes field with `put_slice`; when the slice is
/// exactly one of the registered payloads (same address and length), the
/// buffer ends its current piece and keeps a handle on the payload instead of
/// copying it. Any random access (`seek`, `range`, which the generated
/// encoders use for record batches only) first joins everything into one
/// buffer, so encoding stays correct whatever the message.
pub struct SpliceBuf {
    done: Vec<Bytes>,
    done_len: usize,
    cur: BytesMut,
    /// Registered payloads by start address.
    payloads: HashMap<usize, Bytes>,
}

impl SpliceBuf {
    /// `total` is the size of everything to be written; only what the
    /// registered payloads do not cover is allocated.
    pub fn new(total: usize, payloads: impl IntoIterator<Item = Bytes>) -> Self {
        let payloads: HashMap<usize, Bytes> = payloads
            .into_iter()
            .filter(|b| b.len() >= SPLICE_MIN)
            .map(|b| (b.as_ptr() as usize, b))
            .collect();
        let spliced: usize = payloads.values().map(Bytes::len).sum();
        SpliceBuf {
            done: Vec::new(),
            done_len: 0,
            cur: BytesMut::with_capacity(total.saturating_sub(spliced)),
            payloads,
        }
    }

    /// Everything written, as a frame.
    pub fn finish(mut self) -> ResponseFrame {
        if !self.cur.is_empty() || self.done.is_empty() {
            self.done.push(self.cur.freeze());
        }
        let len = self.done.iter().map(Bytes::len).sum();
        ResponseFrame {
            chunks: self.done,
            len,
        }
    }

    /// Back to one contiguous buffer (for random access).
    fn join(&mut self) {
        if self.done.is_empty() {
            return;
        }
        let mut all = BytesMut::with_capacity(self.done_len + self.cur.len());
        for c in self.done.drain(..) {
            all.extend_from_slice(&c);
        }
        all.extend_from_slice(&self.cur);
        self.cur = all;
        self.done_len = 0;
        self.payloads.clear();
    }

    fn registered(&self, src: &[u8]) -> Option<Bytes> {
        if src.len() < SPLICE_MIN {
            return None;
        }
        self.payloads
            .get(&(src.as_ptr() as usize))
            .filter(|b| b.len() == src.len())
            .cloned()
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, which upholds
// `BufMut`'s contract; `put_slice` only appends through safe calls.
unsafe impl BufMut for SpliceBuf {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut()`, which
        // is the inner buffer's.
        unsafe { self.cur.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.cur.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.registered(src) {
            Some(payload) => {
                if !self.cur.is_empty() {
                    let piece = self.cur.split().freeze();
                    self.done_len += piece.len();
                    self.done.push(piece);
                }
                self.done_len += payload.len();
                self.done.push(payload);
            }
            None => self.cur.extend_from_slice(src),
        }
    }
}

impl ByteBufMut for SpliceBuf {
    fn offset(&self) -> usize {
        self.done_len + self.cur.len()
    }

    fn seek(&mut self, offset: usize) {
        self.join();
        self.cur.seek(offset);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        self.join();
        self.cur.range(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(frame: ResponseFrame) -> Vec<u8> {
        let mut b = frame.into_buf();
        let mut out = Vec::new();
        while b.has_remaining() {
            let c = b.chunk().to_vec();
            b.advance(c.len());
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn registered_payloads_are_kept_by_reference() {
        let big = Bytes::from(vec![7u8; SPLICE_MIN + 3]);
        let other = Bytes::from(vec![9u8; SPLICE_MIN]);
        let mut buf = SpliceBuf::new(64, [big.clone()]);
        buf.put_i32(5);
        buf.put_slice(&big);
        buf.put_slice(&other);
        buf.put_u8(1);
        assert_eq!(buf.offset(), 4 + big.len() + other.len() + 1);
        let frame = buf.finish();
        assert_eq!(frame.chunks.len(), 3);
        assert_eq!(frame.chunks[1].as_ptr(), big.as_ptr());
        let mut want = 5i32.to_be_bytes().to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(&other);
        want.push(1);
        assert_eq!(frame.len(), want.len());
        assert_eq!(collect(frame), want);
    }

    #[test]
    fn a_copy_of_a_payload_is_not_spliced() {
        let big = Bytes::from(vec![1u8; SPLICE_MIN]);
        let copy = big.to_vec();
        let mut buf = SpliceBuf::new(0, [big]);
        buf.put_slice(&copy);
        assert_eq!(buf.finish().chunks.len(), 1);
    }

    #[test]
    fn random_access_joins_the_pieces() {
        let big = Bytes::from(vec![3u8; SPLICE_MIN]);
        let mut buf = SpliceBuf::new(8, [big.clone()]);
        buf.put_u8(1);
        buf.put_slice(&big);
        let end = buf.offset();
        buf.put_u16(0);
        buf.range(end..end + 2).copy_from_slice(&[0xab, 0xcd]);
        let frame = buf.finish();
        assert_eq!(frame.chunks.len(), 1);
        let out = collect(frame);
        assert_eq!(out.len(), 1 + SPLICE_MIN + 2);
        assert_eq!(&out[out.len() - 2..], &[0xab, 0xcd]);
    }

    #[test]
    fn partial_writes_advance_across_chunks() {
        let frame = ResponseFrame {
            chunks: vec![
                Bytes::from_static(b"ab"),
                Bytes::new(),
                Bytes::from_static(b"cde"),
            ],
            len: 5,
        };
        let mut b = frame.into_buf();
        b.advance(1);
        assert_eq!(b.chunk(), b"b");
        b.advance(2);
        assert_eq!(b.chunk(), b"de");
        assert_eq!(b.remaining(), 2);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(b.chunks_vectored(&mut slices), 1);
        b.advance(2);
        assert!(!b.has_remaining());
    }
}
