//! The small protocol helpers both simulators share: Meteor-style ids, password digests, EJSON dates and image references.

use serde_json::Value;
use sha2::{Digest, Sha256};

const ID_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz";

/// A Meteor-style 17-character random id (message, session and user ids).
pub fn new_message_id() -> String {
    (0..17)
        .map(|_| char::from(ID_ALPHABET[fastrand::usize(..ID_ALPHABET.len())]))
        .collect()
}

/// The SHA-256 digest in lowercase hex that Meteor clients send as `password.digest`.
pub fn password_digest(password: &str) -> String {
    Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A date as DDP carries it (`{"$date": ms}`), as a bare number of milliseconds, or as RFC 3339
/// text, in milliseconds since the epoch.
pub fn read_ejson_date(v: &Value) -> Option<i64> {
    match v {
        Value::Object(o) => o.get("$date").and_then(Value::as_i64),
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis()),
        _ => None,
    }
}

/// An image reference's repository and tag (`latest` when it names none; a digest is dropped).
pub fn split_image(image: &str) -> (&str, &str) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_without_a_tag_is_latest_and_a_registry_port_is_not_a_tag() {
        assert_eq!(split_image("reg:5000/app"), ("reg:5000/app", "latest"));
        assert_eq!(split_image("app:1.2@sha256:ab"), ("app", "1.2"));
    }

    #[test]
    fn ids_are_seventeen_characters_of_the_meteor_alphabet() {
        let id = new_message_id();
        assert_eq!(id.len(), 17);
        assert!(id.bytes().all(|b| ID_ALPHABET.contains(&b)));
    }
}
