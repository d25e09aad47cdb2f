//! Key ranges as etcd clients compute them.

/// The end of the range holding every key that starts with `prefix`, as
/// etcd's `GetPrefixRangeEnd`: increment the last byte below 0xff and drop
/// what follows it. A prefix of only 0xff bytes (or an empty one) has no
/// such end; `"\0"` (every key from the start key on) is returned instead.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("non-empty") = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// Which keys an operation addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSpec<'a> {
    pub prefix: bool,
    pub from_key: bool,
    pub range_end: Option<&'a [u8]>,
}

/// `(key, range_end)` on the wire for `key` and `spec`, mirroring etcd's
/// `WithPrefix` / `WithFromKey` / `WithRange`: an empty key with prefix or
/// from-key means every key (`"\0"`, `"\0"`). Prefix wins over from-key,
/// which wins over an explicit range end.
pub(crate) fn resolve(key: &[u8], spec: &RangeSpec<'_>) -> (Vec<u8>, Vec<u8>) {
    if spec.prefix {
        if key.is_empty() {
            return (vec![0], vec![0]);
        }
        return (key.to_vec(), prefix_range_end(key));
    }
    if spec.from_key {
        let key = if key.is_empty() {
            vec![0]
        } else {
            key.to_vec()
        };
        return (key, vec![0]);
    }
    (
        key.to_vec(),
        spec.range_end.map(<[u8]>::to_vec).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_range_end(b"foo"), b"fop".to_vec());
        assert_eq!(prefix_range_end(b"a"), b"b".to_vec());
        assert_eq!(prefix_range_end(&[0x01, 0xfe]), vec![0x01, 0xff]);
    }

    #[test]
    fn prefix_end_drops_trailing_ff() {
        assert_eq!(prefix_range_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_range_end(&[0x01, 0xff, 0xff]), vec![0x02]);
        assert_eq!(prefix_range_end(&[0xff, 0x10, 0xff]), vec![0xff, 0x11]);
    }

    #[test]
    fn prefix_end_without_successor_is_zero_byte() {
        assert_eq!(prefix_range_end(&[0xff]), vec![0]);
        assert_eq!(prefix_range_end(&[0xff, 0xff]), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }

    #[test]
    fn ranges_resolve_like_etcd() {
        let prefix = RangeSpec {
            prefix: true,
            ..Default::default()
        };
        assert_eq!(resolve(b"", &prefix), (vec![0], vec![0]));
        assert_eq!(resolve(b"a/", &prefix), (b"a/".to_vec(), b"a0".to_vec()));
        let from = RangeSpec {
            from_key: true,
            ..Default::default()
        };
        assert_eq!(resolve(b"", &from), (vec![0], vec![0]));
        assert_eq!(resolve(b"k", &from), (b"k".to_vec(), vec![0]));
        let explicit = RangeSpec {
            range_end: Some(b"z"),
            ..Default::default()
        };
        assert_eq!(resolve(b"a", &explicit), (b"a".to_vec(), b"z".to_vec()));
        assert_eq!(
            resolve(b"a", &RangeSpec::default()),
            (b"a".to_vec(), vec![])
        );
    }
}
