//! Bearer API keys. The key file holds one key per line (`#` comments and blank lines skipped), either
//! the key itself or `sha256:HEX` (the hex SHA-256 of the key); the gateway keeps only the hashes.
//!
//! A presented key is hashed and compared with every stored hash in constant time (`subtle`), without an
//! early exit, so neither the position of a match nor a prefix of a key leaks through timing.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Most keys a key file may hold.
pub const MAX_KEYS: usize = 10_000;
/// Largest key file, bytes.
pub const MAX_KEY_FILE_BYTES: u64 = 1 << 20;
/// Shortest key accepted in a key file (characters).
pub const MIN_KEY_LEN: usize = 16;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It could not be read.
    #[error("reading the API key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It is larger than [`MAX_KEY_FILE_BYTES`].
    #[error("the API key file has {bytes} bytes (at most {MAX_KEY_FILE_BYTES})")]
    TooLarge {
        /// Its size.
        bytes: u64,
    },
    /// A line is neither a key of at least [`MIN_KEY_LEN`] characters nor `sha256:` and 64 hex digits.
    #[error("line {line} of the API key file: use a key of at least {MIN_KEY_LEN} characters or sha256:<64 hex digits>")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
    /// No key at all (a gateway that nobody may call).
    #[error("the API key file holds no key")]
    Empty,
    /// More than [`MAX_KEYS`] keys.
    #[error("the API key file holds more than {MAX_KEYS} keys")]
    TooMany,
}

/// The SHA-256 hashes of the accepted keys. Invariant: never empty; never holds a key in the clear.
#[derive(Clone)]
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.hashes.len())
    }
}

fn hash(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Reads a key file (see the module doc).
    pub fn load(path: &Path) -> Result<ApiKeys, KeyFileError> {
        let read = |source| KeyFileError::Read {
            path: path.display().to_string(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(read)?.len();
        if bytes > MAX_KEY_FILE_BYTES {
            return Err(KeyFileError::TooLarge { bytes });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        ApiKeys::parse(&text)
    }

    /// Parses a key file's text (see the module doc).
    pub fn parse(text: &str) -> Result<ApiKeys, KeyFileError> {
        let mut hashes = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = KeyFileError::BadLine { line: i + 1 };
            let h = match line.strip_prefix("sha256:") {
                Some(hex_digits) => {
                    let mut h = [0u8; 32];
                    hex::decode_to_slice(hex_digits, &mut h).map_err(|_| bad)?;
                    h
                }
                None if line.len() >= MIN_KEY_LEN && !line.contains(char::is_whitespace) => {
                    hash(line.as_bytes())
                }
                None => return Err(bad),
            };
            if hashes.len() == MAX_KEYS {
                return Err(KeyFileError::TooMany);
            }
            hashes.push(h);
        }
        if hashes.is_empty() {
            return Err(KeyFileError::Empty);
        }
        Ok(ApiKeys { hashes })
    }

    /// Whether an `Authorization` header value (`Bearer KEY`) carries an accepted key.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(key) = authorization.and_then(|v| v.strip_prefix(b"Bearer ".as_slice())) else {
            return false;
        };
        let presented = hash(key.trim_ascii());
        let mut found = subtle::Choice::from(0);
        for h in &self.hashes {
            found |= h.ct_eq(&presented);
        }
        found.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_hashes_are_accepted_and_nothing_else() {
        let hashed = hex::encode(hash(b"second-key-0123456789"));
        let keys = ApiKeys::parse(&format!(
            "# team keys\nfirst-key-0123456789\n\nsha256:{hashed}\n"
        ))
        .unwrap();
        assert!(keys.accepts(Some(b"Bearer first-key-0123456789")));
        assert!(keys.accepts(Some(b"Bearer second-key-0123456789")));
        assert!(!keys.accepts(Some(b"Bearer first-key-012345678")));
        assert!(!keys.accepts(Some(b"first-key-0123456789")));
        assert!(!keys.accepts(Some(b"Bearer ")));
        assert!(!keys.accepts(None));
        assert!(!format!("{keys:?}").contains("first"));
    }

    #[test]
    fn bad_key_files_are_refused() {
        assert!(matches!(
            ApiKeys::parse("# none\n"),
            Err(KeyFileError::Empty)
        ));
        assert!(matches!(
            ApiKeys::parse("short\n"),
            Err(KeyFileError::BadLine { line: 1 })
        ));
        assert!(matches!(
            ApiKeys::parse("ok-key-0123456789abc\nsha256:zz\n"),
            Err(KeyFileError::BadLine { line: 2 })
        ));
    }
}
