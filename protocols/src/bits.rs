//! Packed bit vectors: bit `i` lives in word `i / 64` at position `i % 64`; bits past the length are zero.

/// Clears the bits of `words` at positions `>= len`.
pub fn clear_tail(words: &mut [u64], len: usize) {
    let full = len / 64;
    let rem = len % 64;
    if full < words.len() {
        if rem == 0 {
            words[full..].fill(0);
        } else {
            words[full] &= (1u64 << rem) - 1;
            words[full + 1..].fill(0);
        }
    }
}

/// Number of words that hold `len` bits.
pub fn words_for(len: usize) -> usize {
    len.div_ceil(64)
}

/// How a bit-sliced vector is laid out: nodes of `words` words each, every node holding `len` valid bits
/// (positions `len..64 * words` of a node are padding, never sent and never opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Words per node (`words_for(len)`).
    pub words: usize,
    /// Valid bits per node.
    pub len: usize,
}

impl Layout {
    /// The layout of nodes of `len` valid bits.
    pub fn new(len: usize) -> Self {
        Self {
            words: words_for(len),
            len,
        }
    }

    /// The valid positions of word `index` of a vector in this layout, as a mask.
    pub fn valid(&self, index: usize) -> u64 {
        if self.words == 0 || index % self.words + 1 < self.words {
            return u64::MAX;
        }
        match self.len - (self.words - 1) * 64 {
            64 => u64::MAX,
            bits => (1u64 << bits) - 1,
        }
    }

    /// The valid-position masks of the first `count` words.
    pub fn masks(&self, count: usize) -> Vec<u64> {
        (0..count).map(|i| self.valid(i)).collect()
    }
}

/// Bit `i` of a packed vector.
pub fn get(words: &[u64], i: usize) -> bool {
    (words[i / 64] >> (i % 64)) & 1 == 1
}

/// `a ^= b` word by word.
pub fn xor_assign(a: &mut [u64], b: &[u64]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// `a ^ b` word by word.
pub fn xor(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(&x, &y)| x ^ y).collect()
}

/// `a & b` word by word.
pub fn and(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(&x, &y)| x & y).collect()
}

/// The `len` low bits of a packed vector as `ceil(len / 8)` little-endian bytes: the wire form.
pub fn to_bytes(words: &[u64], len: usize, out: &mut Vec<u8>) {
    let nbytes = len.div_ceil(8).min(8 * words.len());
    let (full, rest) = (nbytes / 8, nbytes % 8);
    out.reserve(nbytes);
    for w in &words[..full] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    if rest != 0 {
        out.extend_from_slice(&words[full].to_le_bytes()[..rest]);
    }
}

/// Reads `len` bits from `ceil(len / 8)` bytes; bits past `len` are cleared (and missing bytes read as zero).
pub fn from_bytes(bytes: &[u8], len: usize) -> Vec<u64> {
    let mut out = vec![0u64; words_for(len)];
    let used = &bytes[..bytes.len().min(len.div_ceil(8))];
    let mut chunks = used.chunks_exact(8);
    for (o, c) in out.iter_mut().zip(&mut chunks) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        *o = u64::from_le_bytes(b);
    }
    let rest = chunks.remainder();
    if let Some(o) = out.get_mut(used.len() / 8).filter(|_| !rest.is_empty()) {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        *o = u64::from_le_bytes(b);
    }
    clear_tail(&mut out, len);
    out
}

/// Transposes `len` 64-bit values into 64 bit-planes: plane `j` holds bit `j` of every value.
///
/// Output layout: `planes[j * words_for(len) + w]`, bit `i % 64` of word `i / 64` is bit `j` of `values[i]`.
pub fn to_planes(values: &[u64]) -> Vec<u64> {
    let w = words_for(values.len());
    let mut planes = vec![0u64; 64 * w];
    let mut block = [0u64; 64];
    for (word, chunk) in values.chunks(64).enumerate() {
        block[..chunk.len()].copy_from_slice(chunk);
        block[chunk.len()..].fill(0);
        transpose64(&mut block);
        for (j, &plane) in block.iter().enumerate() {
            planes[j * w + word] = plane;
        }
    }
    planes
}

/// Transposes a 64 x 64 bit matrix in place: bit `c` of row `r` moves to bit `r` of row `c`. Six rounds of
/// block swaps (the recursive method of Warren, Hacker's Delight, section 7-3, with bit 0 the least
/// significant): at block size `j`, rows `k` and `k + j` (bit `j` of `k` clear) exchange the columns with
/// bit `j` set in row `k` for those with it clear in row `k + j`.
fn transpose64(a: &mut [u64; 64]) {
    const MASKS: [(usize, u64); 6] = [
        (32, 0x0000_0000_FFFF_FFFF),
        (16, 0x0000_FFFF_0000_FFFF),
        (8, 0x00FF_00FF_00FF_00FF),
        (4, 0x0F0F_0F0F_0F0F_0F0F),
        (2, 0x3333_3333_3333_3333),
        (1, 0x5555_5555_5555_5555),
    ];
    for (j, m) in MASKS {
        for k in (0..64).filter(|k| k & j == 0) {
            let t = ((a[k] >> j) ^ a[k + j]) & m;
            a[k] ^= t << j;
            a[k + j] ^= t;
        }
    }
}

/// Packs `nodes` vectors of `len` bits, each stored in `words_for(len)` words, into one tight bit string of
/// `nodes * len` bits, as `ceil(nodes * len / 8)` bytes appended to `out`.
pub fn pack_nodes(words: &[u64], nodes: usize, len: usize, out: &mut Vec<u8>) {
    let w = words_for(len);
    let mut flat = vec![0u64; words_for(nodes * len)];
    for node in 0..nodes {
        let src = &words[node * w..(node + 1) * w];
        let base = node * len;
        for (i, &word) in src.iter().enumerate() {
            let valid = (len - i * 64).min(64);
            let word = if valid == 64 {
                word
            } else {
                word & ((1u64 << valid) - 1)
            };
            let off = base + i * 64;
            let (idx, shift) = (off / 64, off % 64);
            flat[idx] |= word << shift;
            if shift != 0 && idx + 1 < flat.len() {
                flat[idx + 1] |= word >> (64 - shift);
            }
        }
    }
    to_bytes(&flat, nodes * len, out);
}

/// Inverse of [`pack_nodes`]: `nodes` vectors of `len` bits, each in `words_for(len)` words, tails cleared.
pub fn unpack_nodes(bytes: &[u8], nodes: usize, len: usize) -> Vec<u64> {
    let w = words_for(len);
    let flat = from_bytes(bytes, nodes * len);
    let mut out = vec![0u64; nodes * w];
    for node in 0..nodes {
        let base = node * len;
        for i in 0..w {
            let valid = (len - i * 64).min(64);
            let off = base + i * 64;
            let (idx, shift) = (off / 64, off % 64);
            let mut word = flat[idx] >> shift;
            if shift != 0 && idx + 1 < flat.len() {
                word |= flat[idx + 1] << (64 - shift);
            }
            if valid < 64 {
                word &= (1u64 << valid) - 1;
            }
            out[node * w + i] = word;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_tail_is_cleared() {
        let v = vec![u64::MAX, 0x0123_4567_89ab_cdef];
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 100, 128] {
            let mut bytes = Vec::new();
            to_bytes(&v, len, &mut bytes);
            assert_eq!(bytes.len(), len.div_ceil(8));
            for (i, &b) in bytes.iter().enumerate() {
                assert_eq!(
                    b,
                    (v[i / 8] >> (8 * (i % 8))) as u8,
                    "little-endian byte {i}"
                );
            }
            // Missing bytes read as zero bits.
            let short = from_bytes(&bytes[..bytes.len() / 2], len);
            for i in 0..len {
                assert_eq!(get(&short, i), i < 8 * (bytes.len() / 2) && get(&v, i));
            }
            let back = from_bytes(&bytes, len);
            for i in 0..len {
                assert_eq!(get(&back, i), get(&v, i));
            }
            let mut expect = v[..words_for(len)].to_vec();
            clear_tail(&mut expect, len);
            assert_eq!(back, expect);
        }
    }

    #[test]
    fn node_packing_round_trips_tightly() {
        for len in [1usize, 5, 63, 64, 65, 130] {
            let nodes = 7;
            let w = words_for(len);
            let words: Vec<u64> = (0..nodes * w)
                .map(|i| (i as u64 + 1).wrapping_mul(0xd6e8_feb8_6659_fd93))
                .collect();
            let mut bytes = Vec::new();
            pack_nodes(&words, nodes, len, &mut bytes);
            assert_eq!(bytes.len(), (nodes * len).div_ceil(8));
            let back = unpack_nodes(&bytes, nodes, len);
            for node in 0..nodes {
                for i in 0..len {
                    assert_eq!(get(&back[node * w..], i), get(&words[node * w..], i));
                }
            }
        }
    }

    #[test]
    fn planes_hold_each_bit() {
        for len in [0u64, 1, 63, 64, 70, 129] {
            let values: Vec<u64> = (0..len)
                .map(|i| (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            let planes = to_planes(&values);
            let w = words_for(values.len());
            assert_eq!(planes.len(), 64 * w);
            for (i, &v) in values.iter().enumerate() {
                for j in 0..64 {
                    assert_eq!(get(&planes[j * w..(j + 1) * w], i), (v >> j) & 1 == 1);
                }
            }
            // Bits beyond the values are zero.
            for j in 0..64 {
                for i in values.len()..w * 64 {
                    assert!(!get(&planes[j * w..(j + 1) * w], i));
                }
            }
        }
    }
}
