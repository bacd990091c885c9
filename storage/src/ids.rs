//! Identifiers. They are validated on parse, so a value of these types is
//! always safe to put in a file path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}: expected {len} lowercase hex characters")]
pub struct IdError {
    what: &'static str,
    len: usize,
    value: String,
}

fn parse_hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], IdError> {
    let err = || IdError {
        what,
        len: N * 2,
        // Internal: cap what we echo back; ids come from URLs and user files.
        value: s.chars().take(80).collect(),
    };
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return Err(err());
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0]).ok_or_else(err)?;
        let lo = hex_val(pair[1]).ok_or_else(err)?;
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Writes `bytes` as lowercase hex into `out`, twice as long.
fn fill_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// The id with these raw bytes.
            pub fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The id as lowercase hex ASCII, without allocating: headers and
            /// keys on the request path take it as bytes.
            pub fn hex(&self) -> [u8; $len * 2] {
                let mut out = [0u8; $len * 2];
                fill_hex(&self.0, &mut out);
                out
            }

            /// Builds the id from the leading bytes of a blake3 hash.
            pub fn from_hash(hash: &blake3::Hash) -> Self {
                let mut out = [0u8; $len];
                out.copy_from_slice(&hash.as_bytes()[..$len]);
                Self(out)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let hex = self.hex();
                f.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_hex::<$len>(s, $what).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// A function's id: 16 lowercase hex characters, the blake3 hash of its
    /// identity string.
    FunctionId, 8, "function id"
);
hex_id!(
    /// An outcome's id: 16 lowercase hex characters, the blake3 hash of its
    /// call key and content, so identical outcomes share one id.
    OutcomeId, 8, "outcome id"
);
hex_id!(
    /// The hash of a call's arguments (64 lowercase hex characters).
    CallKey, 32, "call key"
);

impl FunctionId {
    /// The id of the function with this identity string.
    pub fn for_identity(identity: &str) -> Self {
        Self::from_hash(&blake3::hash(identity.as_bytes()))
    }
}

impl OutcomeId {
    /// The id of an outcome: the call key (if any) followed by a fingerprint
    /// of the content that makes two outcomes "the same".
    pub fn for_content(call_key: Option<&CallKey>, fingerprint: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new();
        match call_key {
            Some(key) => hasher.update(&[1]).update(key.as_bytes()),
            None => hasher.update(&[0]),
        };
        hasher.update(fingerprint);
        Self::from_hash(&hasher.finalize())
    }
}

impl CallKey {
    /// Wraps a finished blake3 hash.
    pub fn from_blake3(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_id_roundtrips_through_hex() {
        let id = FunctionId::for_identity("GET http://a/b");
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<FunctionId>().unwrap(), id);
    }

    #[test]
    fn ids_reject_path_like_and_uppercase_input() {
        for bad in [
            "../../etc/passwd",
            "ABCDEF0123456789",
            "0123",
            "0123456789abcdeg",
            "",
        ] {
            let err = bad.parse::<FunctionId>().unwrap_err();
            assert!(err.to_string().contains("16 lowercase hex"), "{err}");
        }
    }

    #[test]
    fn golden_function_id() {
        // Internal: ids are part of the on-disk format; this must never change.
        assert_eq!(
            FunctionId::for_identity("GET http://127.0.0.1:3000/users/{id}").to_string(),
            blake3::hash(b"GET http://127.0.0.1:3000/users/{id}").to_hex()[..16]
        );
    }
}
