//! Property tests of envelope opening (issue 21, fuzzing): whatever bytes arrive in place of a sealed envelope
//! (arbitrary, or a valid envelope with bits flipped, truncated or extended, in its struct or in its encoded
//! form), [`open`] never panics and refuses them; only the untouched envelope opens, to the exact plaintext.

use proptest::prelude::*;
use veil_node::envelope::{open, seal, Binding, OpeningKey, Purpose, Sealed};

/// Cases per property: enough to cover every field of the envelope, short enough for CI.
const CASES: u32 = 256;

fn binding() -> Binding {
    Binding {
        purpose: Purpose::InputShare,
        job: "job-fuzz".into(),
        party: 1,
        model: "model-fuzz".into(),
    }
}

/// A key and an envelope sealed to it, with its plaintext.
fn sample(plaintext: &[u8]) -> (OpeningKey, Sealed) {
    let key = OpeningKey::generate();
    let sealed = seal(&key.public(), &binding(), plaintext).expect("sealing a small plaintext");
    (key, sealed)
}

/// The envelope's fields laid end to end: ephemeral key, nonce, ciphertext.
fn flatten(s: &Sealed) -> Vec<u8> {
    [&s.ephemeral[..], &s.nonce[..], &s.ciphertext[..]].concat()
}

/// The inverse of [`flatten`], for bytes of at least 44 bytes.
fn unflatten(bytes: &[u8]) -> Option<Sealed> {
    let ephemeral: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
    let nonce: [u8; 12] = bytes.get(32..44)?.try_into().ok()?;
    Some(Sealed {
        ephemeral,
        nonce,
        ciphertext: bytes[44..].to_vec(),
    })
}

/// A change to valid bytes that leaves them different.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of byte `at` (taken modulo the length).
    Flip { at: usize, bit: u8 },
    /// Keep the first `keep` bytes (modulo the length).
    Truncate { keep: usize },
    /// Append bytes.
    Extend { tail: Vec<u8> },
    /// Overwrite a run of bytes from `at` (modulo the length) with `with`, which differs somewhere.
    Splice { at: usize, with: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(|tail| Mutation::Extend { tail }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, with)| Mutation::Splice { at, with }),
    ]
}

/// Applies `m` to `bytes` (non-empty); the result differs from `bytes`.
fn apply(m: &Mutation, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match m {
        Mutation::Flip { at, bit } => out[at % bytes.len()] ^= 1 << bit,
        Mutation::Truncate { keep } => out.truncate(keep % bytes.len()),
        Mutation::Extend { tail } => out.extend_from_slice(tail),
        Mutation::Splice { at, with } => {
            let at = at % bytes.len();
            for (i, b) in with.iter().enumerate() {
                match out.get_mut(at + i) {
                    Some(slot) => *slot = *b,
                    None => out.push(*b),
                }
            }
            if out == bytes {
                // The splice wrote the same bytes: make it a change.
                out[at] ^= 0x01;
            }
        }
    }
    assert_ne!(out, bytes, "a mutation must change the bytes");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// A valid envelope opens to its plaintext; any change to its fields makes it refused.
    #[test]
    fn mutated_envelopes_are_refused(
        plaintext in prop::collection::vec(any::<u8>(), 0..96),
        m in mutation(),
    ) {
        let (key, sealed) = sample(&plaintext);
        prop_assert_eq!(open(&key, &binding(), &sealed).unwrap(), plaintext);
        let changed = apply(&m, &flatten(&sealed));
        match unflatten(&changed) {
            Some(tampered) => prop_assert!(open(&key, &binding(), &tampered).is_err()),
            None => prop_assert!(changed.len() < 44),
        }
    }

    /// Arbitrary envelopes (random ephemeral key, including low-order points, nonce and ciphertext) are refused.
    #[test]
    fn arbitrary_envelopes_are_refused(
        ephemeral in prop_oneof![
            any::<[u8; 32]>(),
            Just([0u8; 32]),
            Just({ let mut one = [0u8; 32]; one[0] = 1; one }),
        ],
        nonce in any::<[u8; 12]>(),
        ciphertext in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let key = OpeningKey::generate();
        let sealed = Sealed { ephemeral, nonce, ciphertext };
        prop_assert!(open(&key, &binding(), &sealed).is_err());
    }

    /// The wire forms (postcard and JSON): mutated encodings of a valid envelope either fail to decode or
    /// decode to an envelope that is refused; decoding never panics.
    #[test]
    fn mutated_encodings_are_refused(
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
        m in mutation(),
    ) {
        let (key, sealed) = sample(&plaintext);
        let postcard_bytes = postcard::to_allocvec(&sealed).unwrap();
        let back: Sealed = postcard::from_bytes(&postcard_bytes).unwrap();
        prop_assert_eq!(open(&key, &binding(), &back).unwrap(), plaintext.clone());
        if let Ok(decoded) = postcard::from_bytes::<Sealed>(&apply(&m, &postcard_bytes)) {
            if decoded != sealed {
                prop_assert!(open(&key, &binding(), &decoded).is_err());
            }
        }
        let json_bytes = serde_json::to_vec(&sealed).unwrap();
        if let Ok(decoded) = serde_json::from_slice::<Sealed>(&apply(&m, &json_bytes)) {
            if decoded != sealed {
                prop_assert!(open(&key, &binding(), &decoded).is_err());
            }
        }
    }

    /// Arbitrary bytes never decode into something that panics the opener.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..160)) {
        let key = OpeningKey::generate();
        if let Ok(decoded) = postcard::from_bytes::<Sealed>(&bytes) {
            prop_assert!(open(&key, &binding(), &decoded).is_err());
        }
        if let Some(decoded) = unflatten(&bytes) {
            prop_assert!(open(&key, &binding(), &decoded).is_err());
        }
    }

    /// A valid envelope opened under another binding (job, party, model, purpose) is refused.
    #[test]
    fn envelopes_bound_elsewhere_are_refused(which in 0usize..4, party in 2u32..100) {
        let (key, sealed) = sample(b"share");
        let mut other = binding();
        match which {
            0 => other.job.push('x'),
            1 => other.party = party,
            2 => other.model.push('x'),
            _ => other.purpose = Purpose::WeightShare,
        }
        prop_assert!(open(&key, &other, &sealed).is_err());
    }
}
