//! Query-string parsing: `application/x-www-form-urlencoded` style pairs.

/// The decoded `key=value` pairs of a query string, in the order received.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    /// Decoded pairs; a key without `=` has an empty value.
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw (still percent-encoded) query string; `None` gives an empty query.
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|segment| !segment.is_empty())
            .map(|segment| {
                let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
                (percent_decode(key), percent_decode(value))
            })
            .collect();
        Self { pairs }
    }

    /// Returns the value of the first pair named `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes `%XX` escapes and `+` (as a space); malformed escapes are kept literally
/// and invalid UTF-8 is replaced with U+FFFD.
pub fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push((hi << 4) | lo);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one ASCII hex digit.
fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(percent_decode("San+Francisco"), "San Francisco");
        assert_eq!(percent_decode("a%20b%2Bc%2fd"), "a b+c/d");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode(""), "");
    }

    #[test]
    fn keeps_malformed_escapes() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%%41"), "%A");
    }

    #[test]
    fn replaces_invalid_utf8() {
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn parses_pairs() {
        let q = Query::parse(Some("city=New+York&max_price=500000&flag&&x=%3D"));
        assert_eq!(q.get("city"), Some("New York"));
        assert_eq!(q.get("max_price"), Some("500000"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("x"), Some("="));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn first_value_wins_and_keys_are_decoded() {
        let q = Query::parse(Some("a=1&a=2&max%5Fprice=7"));
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("max_price"), Some("7"));
    }

    #[test]
    fn empty_query() {
        assert_eq!(Query::parse(None), Query::default());
        assert_eq!(Query::parse(Some("")).get("a"), None);
    }
}
