//! Walks the records of an uncompressed records section without copying or
//! allocating per record. Each length is checked against the bytes left.

use super::RecordError;

/// One record, borrowed from the records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Position in the batch (Kafka's `batch_index` in KIP-467 record errors).
    pub index: usize,
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: usize,
}

/// Iterator over `count` records; yields an error (and then stops) at the
/// first malformed record, or when bytes are left over after the last one.
pub struct Records<'a> {
    data: &'a [u8],
    pos: usize,
    index: usize,
    count: usize,
    failed: bool,
}

/// The records of a section declared (by the batch header) to hold `count`.
pub fn records(section: &[u8], count: i32) -> Records<'_> {
    Records {
        data: section,
        pos: 0,
        index: 0,
        // A negative count is caught by batch validation; here it reads nothing.
        count: usize::try_from(count).unwrap_or(0),
        failed: false,
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.index == self.count {
            if self.pos < self.data.len() {
                self.failed = true;
                return Some(Err(RecordError::corrupt(format!(
                    "{} bytes left after the {} records the batch declares",
                    self.data.len() - self.pos,
                    self.count
                ))));
            }
            return None;
        }
        let r = self.read_one();
        if r.is_err() {
            self.failed = true;
        }
        self.index += 1;
        Some(r)
    }
}

impl<'a> Records<'a> {
    fn read_one(&mut self) -> Result<RecordView<'a>, RecordError> {
        let index = self.index;
        let mut c = Cursor {
            data: self.data,
            pos: self.pos,
        };
        let len = c.varint()?;
        let len = usize::try_from(len)
            .map_err(|_| RecordError::corrupt(format!("record {index}: negative length {len}")))?;
        let body = c.take(len).map_err(|_| {
            RecordError::corrupt(format!(
                "record {index}: length {len} exceeds the {} bytes left",
                self.data.len() - c.pos
            ))
        })?;
        self.pos = c.pos;
        let mut r = Cursor { data: body, pos: 0 };
        let attributes = r.byte()? as i8;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key = r.nullable_bytes()?;
        let value = r.nullable_bytes()?;
        let header_count = r.varint()?;
        let header_count = usize::try_from(header_count)
            .map_err(|_| RecordError::corrupt(format!("record {index}: negative header count")))?;
        for _ in 0..header_count {
            let key_len = r.varint()?;
            let key_len = usize::try_from(key_len).map_err(|_| {
                RecordError::corrupt(format!("record {index}: negative header key length"))
            })?;
            r.take(key_len)?;
            r.nullable_bytes()?;
        }
        if r.pos != body.len() {
            return Err(RecordError::corrupt(format!(
                "record {index}: {} bytes left inside the record",
                body.len() - r.pos
            )));
        }
        Ok(RecordView {
            index,
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count,
        })
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn truncated() -> RecordError {
        RecordError::corrupt("record truncated")
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        let b = *self.data.get(self.pos).ok_or_else(Self::truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.pos.checked_add(n).ok_or_else(Self::truncated)?;
        let s = self.data.get(self.pos..end).ok_or_else(Self::truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Unsigned LEB128 of at most `max_bytes` bytes.
    fn uvarint(&mut self, max_bytes: u32) -> Result<u64, RecordError> {
        let mut v: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::corrupt("varint too long"))
    }

    fn varint(&mut self) -> Result<i32, RecordError> {
        let u = self.uvarint(5)?;
        let u = u32::try_from(u).map_err(|_| RecordError::corrupt("varint out of range"))?;
        Ok(((u >> 1) as i32) ^ -((u & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, RecordError> {
        let u = self.uvarint(10)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < -1 => Err(RecordError::corrupt(format!("negative length {n}"))),
            n => self.take(n as usize).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zigzag(v: i64, out: &mut Vec<u8>) {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if u < 0x80 {
                out.push(u as u8);
                return;
            }
            out.push((u as u8 & 0x7f) | 0x80);
            u >>= 7;
        }
    }

    fn record(key: Option<&[u8]>, value: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut body = vec![0u8];
        zigzag(5, &mut body);
        zigzag(1, &mut body);
        match key {
            Some(k) => {
                zigzag(k.len() as i64, &mut body);
                body.extend_from_slice(k);
            }
            None => zigzag(-1, &mut body),
        }
        zigzag(value.len() as i64, &mut body);
        body.extend_from_slice(value);
        zigzag(headers.len() as i64, &mut body);
        for (k, v) in headers {
            zigzag(k.len() as i64, &mut body);
            body.extend_from_slice(k);
            zigzag(v.len() as i64, &mut body);
            body.extend_from_slice(v);
        }
        let mut out = Vec::new();
        zigzag(body.len() as i64, &mut out);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn walks_keys_values_and_headers() {
        let mut section = record(Some(b"k"), b"v1", &[(b"h", b"x")]);
        section.extend(record(None, b"v2", &[]));
        let all: Vec<_> = records(&section, 2).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].key, Some(&b"k"[..]));
        assert_eq!(all[0].header_count, 1);
        assert_eq!(all[1].key, None);
        assert_eq!(all[1].value, Some(&b"v2"[..]));
        assert_eq!(all[1].index, 1);
    }

    #[test]
    fn lying_counts_and_lengths_are_errors() {
        let one = record(Some(b"k"), b"v", &[]);
        // More records declared than present.
        assert!(records(&one, 2).any(|r| r.is_err()));
        // Fewer declared than present.
        assert!(records(&one, 0).any(|r| r.is_err()));
        // A huge declared count costs nothing.
        assert!(records(&one, i32::MAX).take(3).any(|r| r.is_err()));
        // Record length beyond the section.
        let mut long = one.clone();
        long[0] = 0x7e;
        assert!(records(&long, 1).any(|r| r.is_err()));
        // Header count far beyond the bytes.
        let mut body = vec![0u8, 0, 0, 1, 0, 2, 0];
        zigzag(i32::MAX as i64, &mut body);
        let mut section = Vec::new();
        zigzag(body.len() as i64, &mut section);
        section.extend(body);
        assert!(records(&section, 1).any(|r| r.is_err()));
    }
}
