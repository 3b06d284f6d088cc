//! Where a request's token is: `Authorization: Bearer`, then the cookie, then the query
//! parameter (DESIGN §4: first found wins). Browsers' `EventSource` cannot set headers, so
//! cookie and query are the browser paths; the header serves fetch-based clients and
//! workers.

use std::borrow::Cow;

use crate::vocab::query::query_param;

/// The token of a request, if it carries one.
pub fn token<'a>(
    headers: &'a http::HeaderMap,
    query: Option<&'a str>,
    cookie_name: &str,
    query_param_name: &str,
) -> Option<Cow<'a, str>> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            let token = token.trim();
            if !token.is_empty() {
                return Some(token.into());
            }
        }
    }
    for value in headers.get_all(http::header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, token)) = pair.trim().split_once('=') {
                if name == cookie_name && !token.is_empty() {
                    return Some(token.trim_matches('"').into());
                }
            }
        }
    }
    query_param(query?, query_param_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderValue, AUTHORIZATION, COOKIE};

    fn headers(pairs: &[(http::HeaderName, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn find(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
        token(headers, query, "sse_token", "token").map(Cow::into_owned)
    }

    #[test]
    fn header_then_cookie_then_query() {
        let all = headers(&[
            (AUTHORIZATION, "Bearer h.h.h"),
            (COOKIE, "a=1; sse_token=c.c.c"),
        ]);
        assert_eq!(find(&all, Some("token=q.q.q")).as_deref(), Some("h.h.h"));
        let cookie = headers(&[(COOKIE, "a=1; sse_token=\"c.c.c\"")]);
        assert_eq!(find(&cookie, Some("token=q.q.q")).as_deref(), Some("c.c.c"));
        assert_eq!(
            find(&http::HeaderMap::new(), Some("x=1&token=q.q.q")).as_deref(),
            Some("q.q.q")
        );
    }

    #[test]
    fn empty_or_foreign_credentials_are_no_token() {
        assert_eq!(find(&headers(&[(AUTHORIZATION, "Bearer  ")]), None), None);
        assert_eq!(find(&headers(&[(AUTHORIZATION, "Basic eDp5")]), None), None);
        assert_eq!(find(&headers(&[(COOKIE, "sse_token=; b=2")]), None), None);
        assert_eq!(find(&headers(&[(COOKIE, "other_token=x")]), None), None);
        assert_eq!(find(&http::HeaderMap::new(), Some("token=")), None);
        assert_eq!(find(&http::HeaderMap::new(), None), None);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fuzz_any_credentials_are_a_token_or_none(
                authorization in proptest::option::of(prop::collection::vec(any::<u8>(), 0..40)),
                cookies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..3),
                query in proptest::option::of("\\PC{0,60}|(token=[%+A-Za-z0-9.]{0,10}&?){0,3}"),
            ) {
                let mut map = http::HeaderMap::new();
                let mut cookies_only = http::HeaderMap::new();
                if let Some(value) = authorization.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                    map.append(AUTHORIZATION, value);
                }
                for cookie in cookies {
                    if let Ok(value) = HeaderValue::from_bytes(&cookie) {
                        map.append(COOKIE, value.clone());
                        cookies_only.append(COOKIE, value);
                    }
                }
                // What is found is never empty, wherever it comes from.
                if let Some(found) = find(&map, query.as_deref()) {
                    prop_assert!(!found.is_empty());
                }
                // A cookie's token never spans the separator of the cookie list. (A query
                // token may decode to anything, `%3B` to `;`: it is then no valid token.)
                if let Some(found) = find(&cookies_only, None) {
                    prop_assert!(!found.is_empty());
                    prop_assert!(!found.contains(';'));
                }
            }
        }
    }
}
