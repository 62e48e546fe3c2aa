//! Chunked lists, as the API server serves them: `limit` caps a page, `continue` resumes after the last key.

use base64::Engine as _;
use serde_json::{Value, json};

use super::store::{ApiError, ns_name as key};

/// One page of a list and how to ask for the next.
#[derive(Debug, PartialEq)]
pub struct Page {
    pub items: Vec<Value>,
    /// The resourceVersion the list was started at: every page of one list reports the first's.
    pub rv: u64,
    /// Empty on the last page.
    pub next: String,
    /// Items after this page (only on a page that has a next).
    pub remaining: Option<usize>,
}

/// Cuts `items` (sorted by namespace, then name, as the store keeps them) into the page that
/// `limit` and `token` ask for. `rv` is the store's version now; a continued list keeps the
/// version its first page reported. A token that does not decode is a bad request.
pub fn page(
    items: Vec<Value>,
    rv: u64,
    limit: Option<&str>,
    token: Option<&str>,
) -> Result<Page, ApiError> {
    let bad = || ApiError::BadRequest {
        message: "continue key is not valid: the list must be started again".into(),
    };
    let (rv, after) = match token.filter(|t| !t.is_empty()) {
        None => (rv, None),
        Some(t) => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .map_err(|_| bad())?;
            let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
            let (Some(rv), Some(ns), Some(name)) =
                (v["rv"].as_u64(), v["ns"].as_str(), v["name"].as_str())
            else {
                return Err(bad());
            };
            (rv, Some((ns.to_string(), name.to_string())))
        }
    };
    let mut items: Vec<Value> = match &after {
        None => items,
        Some(last) => items.into_iter().filter(|o| key(o) > *last).collect(),
    };
    // 0, absent or unreadable: everything, as the API server does.
    let limit = limit
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let Some(limit) = limit.filter(|l| *l < items.len()) else {
        return Ok(Page {
            items,
            rv,
            next: String::new(),
            remaining: None,
        });
    };
    let remaining = items.len() - limit;
    items.truncate(limit);
    let (ns, name) = items.last().map(key).unwrap_or_default();
    let next = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rv, "ns": ns, "name": name}).to_string());
    Ok(Page {
        items,
        rv,
        next,
        remaining: Some(remaining),
    })
}

impl Page {
    /// The list's `metadata`: its version, and `continue` with `remainingItemCount` when more follow.
    pub fn metadata(&self) -> Value {
        let mut m = json!({"resourceVersion": self.rv.to_string()});
        if !self.next.is_empty() {
            m["continue"] = json!(self.next);
            m["remainingItemCount"] = json!(self.remaining);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(names: &[(&str, &str)]) -> Vec<Value> {
        names
            .iter()
            .map(|(ns, n)| json!({"metadata": {"namespace": ns, "name": n}}))
            .collect()
    }

    fn names(p: &Page) -> Vec<String> {
        p.items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    const ALL: &[(&str, &str)] = &[
        ("a", "p1"),
        ("a", "p2"),
        ("b", "p1"),
        ("b", "p3"),
        ("c", "p0"),
    ];

    #[test]
    fn a_list_without_a_limit_is_one_page_with_no_continue() {
        let p = page(pods(ALL), 9, None, None).unwrap();
        assert_eq!(p.items.len(), 5);
        assert_eq!(p.metadata(), json!({"resourceVersion": "9"}));
        let p = page(pods(ALL), 9, Some("0"), None).unwrap();
        assert_eq!(p.items.len(), 5);
    }

    #[test]
    fn pages_follow_one_another_to_the_end_and_keep_the_first_pages_version() {
        let first = page(pods(ALL), 9, Some("2"), None).unwrap();
        assert_eq!(names(&first), ["p1", "p2"]);
        assert_eq!(first.metadata()["remainingItemCount"], 3);
        // The store moved on meanwhile; the list still reports where it started.
        let second = page(pods(ALL), 12, Some("2"), Some(&first.next)).unwrap();
        assert_eq!(names(&second), ["p1", "p3"]);
        assert_eq!(second.rv, 9);
        let last = page(pods(ALL), 12, Some("2"), Some(&second.next)).unwrap();
        assert_eq!(names(&last), ["p0"]);
        assert!(last.next.is_empty());
        assert_eq!(last.metadata(), json!({"resourceVersion": "9"}));
    }

    #[test]
    fn an_object_deleted_between_pages_is_not_skipped_over_nor_repeated() {
        let first = page(pods(ALL), 9, Some("2"), None).unwrap();
        let without_b1 = pods(&[("a", "p1"), ("a", "p2"), ("b", "p3"), ("c", "p0")]);
        let second = page(without_b1, 10, Some("2"), Some(&first.next)).unwrap();
        assert_eq!(names(&second), ["p3", "p0"]);
        assert!(second.next.is_empty());
    }

    #[test]
    fn a_token_that_does_not_decode_is_a_bad_request() {
        for t in ["not base64!", "eyJ4IjoxfQ", "bm9uc2Vuc2U"] {
            assert!(
                matches!(
                    page(pods(ALL), 9, Some("2"), Some(t)),
                    Err(ApiError::BadRequest { .. })
                ),
                "{t}"
            );
        }
    }
}
