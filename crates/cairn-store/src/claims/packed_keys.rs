//! How a `CanOffload` command's keys are written in the log and sent to
//! followers: integer keys as one byte string, 8 or 16 bytes a key.
//!
//! Why: the command is encoded three times on the leader (its log, one
//! stream per follower) and decoded and encoded again on each follower.
//! Listed one by one, each key costs an enum tag and a varint of up to 10
//! bytes, written through two serializer calls: encoding a 1,000-key
//! command took ~27 µs of the leader's critical path per encode, the
//! largest item after the apply. Packed, it is one copy each way, and
//! smaller (8 bytes for a 64-bit hash instead of 10–11).
//!
//! Used with `#[serde(with = "packed_keys")]` on a `Vec<ClaimKey>`; the
//! keys stay a `Vec<ClaimKey>` in memory. A list that is not all `U64` or
//! all `U128` (byte keys, or mixed kinds the apply will refuse) is written
//! listed, as before.

use serde::de::{self, Deserializer, EnumAccess, VariantAccess, Visitor};
use serde::ser::Serializer;
use serde::Serialize;

use super::types::ClaimKey;

/// The variants, in the order their index is written.
const VARIANTS: &[&str] = &["U64", "U128", "Listed"];

pub fn serialize<S: Serializer>(keys: &[ClaimKey], serializer: S) -> Result<S::Ok, S::Error> {
    if let Some(bytes) = pack::<8>(keys, |k| match k {
        ClaimKey::U64(v) => Some(v.to_le_bytes()),
        _ => None,
    }) {
        return serializer.serialize_newtype_variant("PackedKeys", 0, "U64", &Bytes(&bytes));
    }
    if let Some(bytes) = pack::<16>(keys, |k| match k {
        ClaimKey::U128(v) => Some(v.to_le_bytes()),
        _ => None,
    }) {
        return serializer.serialize_newtype_variant("PackedKeys", 1, "U128", &Bytes(&bytes));
    }
    serializer.serialize_newtype_variant("PackedKeys", 2, "Listed", keys)
}

/// The keys' fixed-width bytes, if every key has them.
fn pack<const N: usize>(
    keys: &[ClaimKey],
    bytes_of: impl Fn(&ClaimKey) -> Option<[u8; N]>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(keys.len() * N);
    for key in keys {
        out.extend_from_slice(&bytes_of(key)?);
    }
    Some(out)
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ClaimKey>, D::Error> {
    deserializer.deserialize_enum("PackedKeys", VARIANTS, KeysVisitor)
}

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = Vec<ClaimKey>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("packed or listed claim keys")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let (variant, access) = data.variant::<u32>()?;
        match variant {
            0 => access.newtype_variant_seed(Unpack(|b| ClaimKey::U64(u64::from_le_bytes(b)))),
            1 => access.newtype_variant_seed(Unpack(|b| ClaimKey::U128(u128::from_le_bytes(b)))),
            2 => access.newtype_variant::<Vec<ClaimKey>>(),
            other => Err(de::Error::unknown_variant(&other.to_string(), VARIANTS)),
        }
    }
}

/// Reads a byte string of `N`-byte keys, each made by the function (a
/// closure type, not a pointer, so that it is inlined into the loop).
struct Unpack<const N: usize, F>(F);

impl<'de, const N: usize, F: Fn([u8; N]) -> ClaimKey> de::DeserializeSeed<'de> for Unpack<N, F> {
    type Value = Vec<ClaimKey>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_bytes(self)
    }
}

impl<'de, const N: usize, F: Fn([u8; N]) -> ClaimKey> Visitor<'de> for Unpack<N, F> {
    type Value = Vec<ClaimKey>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a byte string of {N}-byte keys")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
        let chunks = bytes.chunks_exact(N);
        if !chunks.remainder().is_empty() {
            return Err(E::invalid_length(bytes.len(), &self));
        }
        Ok(chunks
            .map(|c| (self.0)(c.try_into().expect("chunks of N bytes")))
            .collect())
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Self::Value, E> {
        self.visit_bytes(&bytes)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Formats without a byte string type write one as a list of bytes.
        let mut bytes = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        self.visit_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Packed(#[serde(with = "super")] Vec<ClaimKey>);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Listed(Vec<ClaimKey>);

    fn round_trip(keys: Vec<ClaimKey>) -> Vec<u8> {
        let bytes = postcard::to_allocvec(&Packed(keys.clone())).unwrap();
        let back: Packed = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.0, keys);
        bytes
    }

    #[test]
    fn integer_keys_pack_to_fixed_width_bytes() {
        let keys: Vec<_> = (0..1_000u64)
            .map(|i| ClaimKey::U64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        let listed = postcard::to_allocvec(&Listed(keys.clone())).unwrap();
        let packed = round_trip(keys);
        // Tag, length varint (2 bytes), 8 bytes a key.
        assert_eq!(packed.len(), 1 + 2 + 8_000);
        assert!(listed.len() > 10_000, "listed: {} bytes", listed.len());

        let wide: Vec<_> = (0..300u128).map(|i| ClaimKey::U128(i << 70 | i)).collect();
        assert_eq!(round_trip(wide).len(), 1 + 2 + 16 * 300);
    }

    #[test]
    fn byte_keys_mixed_kinds_and_empty_lists_round_trip() {
        round_trip(vec![
            ClaimKey::Bytes(vec![1, 2, 3]),
            ClaimKey::Bytes(vec![]),
        ]);
        // Mixed kinds are refused by the apply, after they are decoded.
        round_trip(vec![ClaimKey::U64(7), ClaimKey::U128(7), ClaimKey::U64(8)]);
        let empty = round_trip(vec![]);
        // An empty list packs as U64 with no bytes.
        assert_eq!(empty, vec![0, 0]);
    }

    #[test]
    fn a_byte_string_that_is_not_whole_keys_is_refused() {
        // Variant U64, 9 bytes: one key and a stray byte.
        let bytes = [0u8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let err = postcard::from_bytes::<Packed>(&bytes).unwrap_err();
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
        // An unknown variant.
        assert!(postcard::from_bytes::<Packed>(&[3, 0]).is_err());
    }
}
