//! Query-string parameters (`?token=…&lastEventId=…`), percent-decoded.

use std::borrow::Cow;

/// A query parameter's value, percent-decoded; `None` when absent or empty.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name && !value.is_empty()).then(|| percent_decode(value))
    })
}

/// Every value of a repeated query parameter (`topic=a&topic=b`), percent-decoded, in
/// order; an empty value (`topic=`) is kept, for the caller to refuse.
pub fn query_params<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> {
    query.split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

/// Decodes `%XX` and `+`; a malformed escape is kept as it is.
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_and_decoded() {
        assert_eq!(
            query_param("a=1&token=x.y.z", "token").as_deref(),
            Some("x.y.z")
        );
        assert_eq!(
            query_param("lastEventId=5-0", "lastEventId").as_deref(),
            Some("5-0")
        );
        assert_eq!(query_param("x=%41%2d+b", "x").as_deref(), Some("A- b"));
        assert_eq!(query_param("x=%4", "x").as_deref(), Some("%4"));
        assert_eq!(query_param("x=%zz", "x").as_deref(), Some("%zz"));
        assert_eq!(query_param("token=", "token"), None);
        assert_eq!(query_param("tokens=1", "token"), None);
        let all: Vec<_> = query_params("topic=a&x=1&topic=b%2Ec&topic=", "topic").collect();
        assert_eq!(all, ["a", "b.c", ""]);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fuzz_query_strings_decode_without_panic(query in "(\\PC|%[0-9a-fA-F]{0,2}|\\+|&|=){0,80}") {
                let _ = query_param(&query, "token");
                prop_assert_eq!(
                    query_params(&query, "topic").count(),
                    query.split('&').filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) == "topic").count()
                );
            }

            #[test]
            fn fuzz_encoded_values_decode_to_themselves(value in "\\PC{1,30}") {
                let encoded: String = value
                    .bytes()
                    .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                    .collect();
                let query = format!("a=1&token={encoded}&b");
                let decoded = query_param(&query, "token").map(|v| v.into_owned());
                prop_assert_eq!(decoded, Some(value));
            }
        }
    }
}
