//! Frames: how messages travel on a QUIC stream.
//!
//! Layout: a 5-byte header, `[version: u8][length: u32 little-endian]`, then `length` bytes of body, the
//! postcard (serde) encoding of one [`Msg`]. Invariants:
//! - the header is checked (version, `length <= limit`) before any body byte is allocated or read, so a
//!   peer cannot make a node allocate more than its configured maximum frame size;
//! - a body must decode to exactly one message with no bytes left over;
//! - decoding never panics: every failure is a typed [`FrameError`] (the frame decoder is fuzzed by a
//!   proptest over arbitrary bytes).

use quinn::{RecvStream, SendStream};
use thiserror::Error;

use crate::wire::Msg;

/// The frame format version this node speaks.
pub const VERSION: u8 = 1;
/// Bytes of the frame header.
pub const HEADER_LEN: usize = 5;
/// Default largest frame body a node accepts (64 MiB).
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The header names another format version.
    #[error("unsupported frame version {got} (this node speaks version {VERSION})")]
    Version {
        /// The version received.
        got: u8,
    },
    /// The header announces a body larger than the limit.
    #[error("frame body of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Fewer bytes than the header (or the announced body) needs.
    #[error("truncated frame: {got} of {expected} bytes")]
    Truncated {
        /// Bytes available.
        got: usize,
        /// Bytes needed.
        expected: usize,
    },
    /// The body is not the encoding of a message.
    #[error("frame body does not decode: {0}")]
    Body(String),
}

/// Why reading a frame from a stream failed.
#[derive(Debug, Error)]
pub enum RecvError {
    /// The stream ended cleanly at a frame boundary.
    #[error("stream closed by the peer")]
    Closed,
    /// The bytes received are not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or its connection failed.
    #[error("stream: {0}")]
    Stream(String),
}

/// Encodes `msg` as one frame.
pub fn encode(msg: &Msg) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(HEADER_LEN + msg.size_hint());
    out.extend_from_slice(&[VERSION, 0, 0, 0, 0]);
    let mut out = postcard::to_extend(msg, out).map_err(|e| FrameError::Body(e.to_string()))?;
    let len = out.len() - HEADER_LEN;
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        limit: u32::MAX as usize,
    })?;
    out[1..HEADER_LEN].copy_from_slice(&len32.to_le_bytes());
    Ok(out)
}

/// The body length a header announces, checked against the version and `limit`.
pub fn parse_header(header: &[u8; HEADER_LEN], limit: usize) -> Result<usize, FrameError> {
    if header[0] != VERSION {
        return Err(FrameError::Version { got: header[0] });
    }
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Decodes a frame body: exactly one message, nothing left over.
pub fn decode_body(body: &[u8]) -> Result<Msg, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes::<Msg>(body).map_err(|e| FrameError::Body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Body(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Decodes the first frame of `bytes`; returns the message and the bytes it used.
pub fn decode(bytes: &[u8], limit: usize) -> Result<(Msg, usize), FrameError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated {
            got: bytes.len(),
            expected: HEADER_LEN,
        })?;
    let len = parse_header(header, limit)?;
    let end = HEADER_LEN + len;
    let body = bytes.get(HEADER_LEN..end).ok_or(FrameError::Truncated {
        got: bytes.len(),
        expected: end,
    })?;
    Ok((decode_body(body)?, end))
}

/// Reads one frame from `recv`. A stream that ends before the first header byte is [`RecvError::Closed`]; one
/// that ends inside a frame is [`FrameError::Truncated`].
pub async fn read(recv: &mut RecvStream, limit: usize) -> Result<Msg, RecvError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(RecvError::Closed),
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            return Err(FrameError::Truncated {
                got,
                expected: HEADER_LEN,
            }
            .into())
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(RecvError::Stream(e.to_string())),
    }
    let len = parse_header(&header, limit)?;
    let mut body = vec![0u8; len];
    match recv.read_exact(&mut body).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            return Err(FrameError::Truncated {
                got: HEADER_LEN + got,
                expected: HEADER_LEN + len,
            }
            .into())
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(RecvError::Stream(e.to_string())),
    }
    crate::record::write(crate::record::Kind::Received, &[&header, &body]);
    Ok(decode_body(&body)?)
}

/// The largest LEB128 encoding of a length (a `u64`), as postcard writes it.
const MAX_VARINT: usize = 10;

/// The tag with which postcard begins a [`Msg::Data`] body (its variant index).
fn data_tag() -> Result<Vec<u8>, FrameError> {
    let mut empty = postcard::to_stdvec(&Msg::Data(crate::wire::Bytes(Vec::new())))
        .map_err(|e| FrameError::Body(e.to_string()))?;
    // An empty byte string ends in its length, one zero byte.
    empty.pop();
    Ok(empty)
}

/// The start of the frame of a [`Msg::Data`] carrying `len` payload bytes: the header, the variant's tag and
/// the payload's length. Invariant: `data_prefix(p.len()) ++ p == encode(&Msg::Data(Bytes(p)))`, so a
/// payload can be written after its prefix without being copied into one buffer.
pub fn data_prefix(len: usize) -> Result<Vec<u8>, FrameError> {
    let tag = data_tag()?;
    let mut out = Vec::with_capacity(HEADER_LEN + tag.len() + MAX_VARINT);
    out.extend_from_slice(&[VERSION, 0, 0, 0, 0]);
    out.extend_from_slice(&tag);
    let mut rest = len as u64;
    loop {
        let low = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    let body = out.len() - HEADER_LEN + len;
    let body32 = u32::try_from(body).map_err(|_| FrameError::TooLarge {
        len: body,
        limit: u32::MAX as usize,
    })?;
    out[1..HEADER_LEN].copy_from_slice(&body32.to_le_bytes());
    Ok(out)
}

/// Fills `buf` from `recv`; `before` bytes of a frame of `total` bytes were read already (for the error).
async fn fill(
    recv: &mut RecvStream,
    buf: &mut [u8],
    before: usize,
    total: usize,
) -> Result<(), RecvError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(quinn::ReadExactError::FinishedEarly(got)) => Err(FrameError::Truncated {
            got: before + got,
            expected: total,
        }
        .into()),
        Err(quinn::ReadExactError::ReadError(e)) => Err(RecvError::Stream(e.to_string())),
    }
}

/// Reads one frame from `recv` as [`read`] does, with the same checks and result, but a [`Msg::Data`]
/// payload is copied once, from the stream's buffers into the returned vector (instead of into a body
/// buffer and again out of it). Any other message is read whole and decoded.
pub async fn read_data(recv: &mut RecvStream, limit: usize) -> Result<Msg, RecvError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(RecvError::Closed),
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            return Err(FrameError::Truncated {
                got,
                expected: HEADER_LEN,
            }
            .into())
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(RecvError::Stream(e.to_string())),
    }
    let len = parse_header(&header, limit)?;
    let total = HEADER_LEN + len;
    let tag = data_tag()?;
    // The tag, then the payload's length, a byte at a time (at most tag + MAX_VARINT bytes, within the body).
    let mut prefix: Vec<u8> = Vec::with_capacity(tag.len() + MAX_VARINT);
    let mut payload_len: Option<u64> = None;
    while prefix.len() < len && prefix.len() < tag.len() + MAX_VARINT {
        let mut byte = [0u8; 1];
        fill(recv, &mut byte, HEADER_LEN + prefix.len(), total).await?;
        prefix.push(byte[0]);
        if prefix.len() <= tag.len() {
            if prefix[prefix.len() - 1] != tag[prefix.len() - 1] {
                break;
            }
            continue;
        }
        if byte[0] & 0x80 == 0 {
            let mut value = 0u128;
            for (k, b) in prefix[tag.len()..].iter().enumerate() {
                value |= u128::from(b & 0x7f) << (7 * k);
            }
            // A length beyond u64 is no postcard length: decoded below, and refused.
            payload_len = u64::try_from(value).ok();
            break;
        }
    }
    let well_formed =
        payload_len.is_some_and(|p| (prefix.len() as u64).checked_add(p) == Some(len as u64));
    if !well_formed {
        // Not a well-formed Data frame: read the rest and let the decoder say what it is (or why not).
        let mut body = prefix;
        let before = body.len();
        body.resize(len, 0);
        fill(recv, &mut body[before..], HEADER_LEN + before, total).await?;
        crate::record::write(crate::record::Kind::Received, &[&header, &body]);
        return Ok(decode_body(&body)?);
    }
    // The length the frame announced, so at most `limit`.
    let payload_len = len - prefix.len();
    let mut payload = Vec::with_capacity(payload_len);
    while payload.len() < payload_len {
        match recv.read_chunk(payload_len - payload.len(), true).await {
            Ok(Some(chunk)) => payload.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(FrameError::Truncated {
                    got: HEADER_LEN + prefix.len() + payload.len(),
                    expected: total,
                }
                .into())
            }
            Err(e) => return Err(RecvError::Stream(e.to_string())),
        }
    }
    crate::record::write(crate::record::Kind::Received, &[&header, &prefix, &payload]);
    Ok(Msg::Data(crate::wire::Bytes(payload)))
}

/// Writes `msg` as one frame to `send`.
pub async fn write(send: &mut SendStream, msg: &Msg) -> Result<(), RecvError> {
    let bytes = encode(msg)?;
    send.write_all(&bytes)
        .await
        .map_err(|e| RecvError::Stream(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Bytes, JobId};
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let msgs = [
            Msg::Ping,
            Msg::Data(Bytes(vec![1, 2, 3])),
            Msg::Hello {
                job: JobId([7; 16]),
                from: 2,
            },
            Msg::Failed("x".into()),
        ];
        for m in msgs {
            let bytes = encode(&m).unwrap();
            let (back, used) = decode(&bytes, 1 << 20).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(back, m);
        }
    }

    #[test]
    fn data_prefix_is_the_start_of_the_encoded_frame() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000, 2_097_152] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut frame = data_prefix(len).unwrap();
            frame.extend_from_slice(&payload);
            assert_eq!(
                frame,
                encode(&Msg::Data(Bytes(payload))).unwrap(),
                "len {len}"
            );
        }
    }

    #[test]
    fn header_checks_come_first() {
        let mut bytes = encode(&Msg::Data(Bytes(vec![0; 100]))).unwrap();
        assert!(matches!(
            decode(&bytes, 10),
            Err(FrameError::TooLarge { limit: 10, .. })
        ));
        assert!(matches!(
            decode(&bytes[..50], 1000),
            Err(FrameError::Truncated { got: 50, .. })
        ));
        bytes[0] = 9;
        assert_eq!(
            decode(&bytes, 1000).err(),
            Some(FrameError::Version { got: 9 })
        );
        let garbage = [VERSION, 3, 0, 0, 0, 250, 250, 250];
        assert!(matches!(decode(&garbage, 1000), Err(FrameError::Body(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// Arbitrary bytes never panic the decoder, and anything it accepts re-encodes to the same frame.
        #[test]
        fn decoder_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..512), limit in 0usize..1024) {
            if let Ok((msg, used)) = decode(&bytes, limit) {
                prop_assert!(used <= bytes.len());
                prop_assert!(used - HEADER_LEN <= limit);
                let again = encode(&msg).unwrap();
                let (msg2, _) = decode(&again, usize::MAX).unwrap();
                prop_assert_eq!(msg, msg2);
            }
        }

        /// Valid headers followed by arbitrary bodies never panic either.
        #[test]
        fn bodies_are_total(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = vec![VERSION];
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&body);
            let _ = decode(&bytes, 1 << 20);
        }
    }
}
