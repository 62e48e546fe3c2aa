//! Removes secrets from text before it reaches chat or logs: passwords, tokens, keys and connection-string credentials.

use std::sync::LazyLock;

use regex::Regex;

static RULES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // Authorization headers (before the key rule, which would eat the scheme word)
        (r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}", "$1 ***"),
        // scheme://user:password@host → scheme://user:***@host
        (r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]+):[^@\s]+@", "$1:***@"),
        // key=value and key: value for secret-looking keys
        (
            r#"(?i)\b((?:[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|apikey|api_key|access_key|private_key|auth)[a-z0-9_.-]*)["']?\s*[:=]\s*["']?)[^\s"',;&]+"#,
            "$1***",
        ),
        // --password x, -p x style flags
        (r"(?i)(--?(?:password|pass|token|secret)[ =])\S+", "$1***"),
    ]
    .into_iter()
    .filter_map(|(re, rep)| Regex::new(re).ok().map(|r| (r, rep)))
    .collect()
});

/// `text` with every credential it contains replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for (re, rep) in RULES.iter() {
        out = re.replace_all(&out, *rep).into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn connection_string_credentials_are_hidden() {
        let r = redact(
            "connecting to mongodb://admin:s3cr3t@mongodb-0.mongodb:27017/rocketchat?replicaSet=rs0",
        );
        assert!(!r.contains("s3cr3t"), "{r}");
        assert!(r.contains("mongodb://admin:***@mongodb-0"), "{r}");
    }

    #[test]
    fn password_and_token_assignments_are_hidden() {
        for line in [
            "MONGO_PASSWORD=hunter2 started",
            "password: hunter2",
            "\"adminPassword\": \"hunter2\"",
            "X-Auth-Token=hunter2",
            "mongodump --password hunter2 --gzip",
            "Authorization: Bearer abcdefghijklmnop",
        ] {
            let r = redact(line);
            assert!(
                !r.contains("hunter2") && !r.contains("abcdefghijklmnop"),
                "{line} -> {r}"
            );
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let s = "done dumping rocketchat.rocketchat_message (120431 documents)";
        assert_eq!(redact(s), s);
    }

    proptest! {
        #[test]
        fn a_secret_after_a_password_key_never_survives(secret in "[A-Za-z0-9]{6,20}") {
            let r = redact(&format!("db_password={secret} ok"));
            prop_assert!(!r.contains(&secret));
        }
    }
}
