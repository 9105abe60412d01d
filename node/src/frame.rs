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

/// The tag with which postcard begins a [`Msg::Data`] body (its variant index), computed once.
fn data_tag() -> Result<&'static [u8], FrameError> {
    static TAG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    if let Some(tag) = TAG.get() {
        return Ok(tag);
    }
    let mut empty = postcard::to_stdvec(&Msg::Data(crate::wire::Bytes(Vec::new())))
        .map_err(|e| FrameError::Body(e.to_string()))?;
    // An empty byte string ends in its length, one zero byte.
    empty.pop();
    Ok(TAG.get_or_init(|| empty))
}

/// Splits `body` (the start of a frame's body) into a [`Msg::Data`] prefix and the rest: `Some((prefix
/// length, payload length))` once `body` holds the whole prefix, `None` if it does not (yet) or is no
/// Data prefix.
fn parse_data_prefix(tag: &[u8], body: &[u8]) -> Option<(usize, u64)> {
    if !body.starts_with(tag) {
        return None;
    }
    let mut value = 0u128;
    for (k, b) in body[tag.len()..].iter().take(MAX_VARINT).enumerate() {
        value |= u128::from(b & 0x7f) << (7 * k);
        if b & 0x80 == 0 {
            return u64::try_from(value).ok().map(|v| (tag.len() + k + 1, v));
        }
    }
    None
}

/// The start of the frame of a [`Msg::Data`] carrying `len` payload bytes: the header, the variant's tag and
/// the payload's length. Invariant: `data_prefix(p.len()) ++ p == encode(&Msg::Data(Bytes(p)))`, so a
/// payload can be written after its prefix without being copied into one buffer.
pub fn data_prefix(len: usize) -> Result<Vec<u8>, FrameError> {
    let tag = data_tag()?;
    let mut out = Vec::with_capacity(HEADER_LEN + tag.len() + MAX_VARINT);
    out.extend_from_slice(&[VERSION, 0, 0, 0, 0]);
    out.extend_from_slice(tag);
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
    // Fast path: the first chunk holds the prefix (the tag and the payload's length), and its rest starts
    // the payload. Otherwise (a chunk boundary inside the prefix, or not a Data frame) the prefix is read a
    // byte at a time, as far as it goes.
    let mut prefix: Vec<u8> = Vec::with_capacity(tag.len() + MAX_VARINT);
    let mut payload: Vec<u8> = Vec::new();
    let mut parsed: Option<(usize, u64)> = None;
    if len > 0 {
        match recv.read_chunk(len, true).await {
            Ok(Some(chunk)) => {
                if let Some((used, p)) = parse_data_prefix(tag, &chunk.bytes) {
                    if (used as u64).checked_add(p) == Some(len as u64) {
                        prefix.extend_from_slice(&chunk.bytes[..used]);
                        payload.reserve_exact(len - used);
                        payload.extend_from_slice(&chunk.bytes[used..]);
                        parsed = Some((used, p));
                    }
                }
                if parsed.is_none() {
                    // Not parsed from this chunk: read the rest of the body and decode it whole.
                    let mut body = Vec::with_capacity(len);
                    body.extend_from_slice(&chunk.bytes);
                    let before = body.len();
                    body.resize(len, 0);
                    fill(recv, &mut body[before..], HEADER_LEN + before, total).await?;
                    if let Some((used, _)) = parse_data_prefix(tag, &body)
                        .filter(|(u, p)| (*u as u64).checked_add(*p) == Some(len as u64))
                    {
                        crate::record::write(crate::record::Kind::Received, &[&header, &body]);
                        return Ok(Msg::Data(crate::wire::Bytes(body.split_off(used))));
                    }
                    crate::record::write(crate::record::Kind::Received, &[&header, &body]);
                    return Ok(decode_body(&body)?);
                }
            }
            Ok(None) => {
                return Err(FrameError::Truncated {
                    got: HEADER_LEN,
                    expected: total,
                }
                .into())
            }
            Err(e) => return Err(RecvError::Stream(e.to_string())),
        }
    } else {
        // An empty body is no message: let the decoder say so.
        crate::record::write(crate::record::Kind::Received, &[&header]);
        return Ok(decode_body(&[])?);
    }
    // The length the frame announced, so at most `limit`.
    let payload_len = len - prefix.len();
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
