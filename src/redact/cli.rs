//! Our own judgement calls: which short option of which command-line client is a password, when a URL's `user:x@` part is one, and when a word after a key name looks random enough to be a secret.

use regex::Captures;

use super::MASK;
use super::rules::mask_group;

/// Each client and the letters of its options that take a password (or `user:password`).
const PASSWORD_LETTERS: &[(&str, &str)] = &[
    ("mysql", "p"),
    ("mysqldump", "p"),
    ("mysqladmin", "p"),
    ("mysqlimport", "p"),
    ("mariadb", "p"),
    ("mariadb-dump", "p"),
    ("mariadb-admin", "p"),
    ("mongo", "p"),
    ("mongosh", "p"),
    ("mongodump", "p"),
    ("mongorestore", "p"),
    ("mongoexport", "p"),
    ("mongoimport", "p"),
    ("mongostat", "p"),
    ("mongotop", "p"),
    ("sshpass", "p"),
    ("redis-cli", "a"),
    ("keydb-cli", "a"),
    ("valkey-cli", "a"),
    ("curl", "uU"),
    ("smbclient", "U"),
    ("ldapsearch", "w"),
    ("ldapadd", "w"),
    ("ldapmodify", "w"),
    ("ldapdelete", "w"),
    ("ldappasswd", "wsa"),
    ("mosquitto_pub", "P"),
    ("mosquitto_sub", "P"),
    ("zip", "P"),
    ("unzip", "P"),
    ("7z", "p"),
    ("7za", "p"),
    ("rar", "p"),
    ("unrar", "p"),
    ("sqlcmd", "P"),
    ("bcp", "P"),
    ("rabbitmqadmin", "p"),
    ("openssl", "k"),
];

/// Clients whose `-p` is a port, a path or a flag: their `-p` keeps a value that reads as one.
const P_IS_NOT_A_PASSWORD: &[&str] = &[
    "mkdir",
    "cp",
    "install",
    "ssh",
    "scp",
    "sftp",
    "rsync",
    "psql",
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "pg_basebackup",
    "pg_isready",
    "createdb",
    "dropdb",
    "createuser",
    "redis-cli",
    "redis-benchmark",
    "keydb-cli",
    "valkey-cli",
    "nc",
    "ncat",
    "ps",
    "pgrep",
    "pkill",
    "patch",
    "git",
    "diff",
    "tar",
    "read",
    "mktemp",
    "kubectl",
    "sed",
    "xargs",
    "nginx",
    "python",
    "python3",
    "pip",
    "npm",
    "cargo",
    "lsof",
    "netstat",
    "ss",
    "strace",
    "perf",
    "ln",
    "touch",
    "wait-for-it",
    "mongostat",
];

fn known(word: &str) -> bool {
    PASSWORD_LETTERS.iter().any(|(t, _)| *t == word) || P_IS_NOT_A_PASSWORD.contains(&word)
}

/// The client a short option at `at` belongs to: the last known command word before it in its
/// shell segment (after `|`, `;`, `&`, `(` or a backquote), as `set -x` or a log line prints it.
pub(super) fn command_word(text: &str, at: usize) -> Option<&str> {
    let before = text.get(..at)?;
    let line = before.rsplit(['\n', '\r']).next().unwrap_or(before);
    let segment = line
        .rsplit(['|', ';', '&', '(', '`'])
        .next()
        .unwrap_or(line);
    segment
        .split(|c: char| c.is_whitespace() || "\"'=,:{}[]".contains(c))
        .rev()
        .map(|w| w.rsplit('/').next().unwrap_or(w))
        .find(|w| known(w))
}

fn unquoted(v: &str) -> &str {
    v.trim_matches(['"', '\''])
}

fn looks_like_port_or_path(v: &str) -> bool {
    let v = unquoted(v);
    let port = v.split('/').next().unwrap_or(v);
    let proto = v.len() == port.len() || ["/tcp", "/udp", "/sctp"].contains(&&v[port.len()..]);
    // 5432, 8080:80, 127.0.0.1:8080:80, 53/udp
    (proto
        && !port.is_empty()
        && port
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
        && (port.len() <= 5 || port.contains(':')))
        || v.starts_with('/')
        || v.starts_with("./")
        || v.starts_with("../")
        || v.starts_with('~')
        || v.starts_with('$')
}

/// `-X VALUE` / `-XVALUE`: masked when X is the client's password letter; a `-p` of a client we
/// do not know is masked too unless it reads as a port or a path. Captures: 1 lead, 2 letter,
/// 3 space, 4 value.
pub(super) fn short_option(c: &Captures<'_>, text: &str) -> String {
    let whole = c.get(0).map_or("", |m| m.as_str());
    let (Some(letter), Some(value)) = (c.get(2), c.get(4)) else {
        return whole.to_string();
    };
    let spaced = c.get(3).is_some_and(|m| !m.as_str().is_empty());
    let v = value.as_str();
    if spaced && v.starts_with('-') || v == MASK {
        return whole.to_string();
    }
    let tool = command_word(text, letter.start());
    let letter = letter.as_str();
    let letters = tool.and_then(|t| PASSWORD_LETTERS.iter().find(|(n, _)| *n == t));
    let secret = match (tool, letters) {
        (_, Some((_, ls))) if ls.contains(letter) => true,
        // `-pX` glued is a password only for a client known to take it that way (not `-pass`).
        _ if !spaced => false,
        // Known or not, a `-p` value that is not a port or a path is taken for a password.
        (_, _) if letter == "p" => !looks_like_port_or_path(v),
        _ => false,
    };
    if !secret {
        return whole.to_string();
    }
    // `user:password` (curl -u) and `user%password` (smbclient -U) keep the user.
    if matches!(letter, "u" | "U") {
        let bare = unquoted(v);
        return match bare.find([':', '%']) {
            Some(i) if i + 1 < bare.len() => {
                let q = &v[..v.len() - v.trim_start_matches(['"', '\'']).len()];
                let user_end = q.len() + i + 1;
                let lead_len = value.start() - c.get(0).map_or(0, |m| m.start());
                format!("{}{}{MASK}{q}", &whole[..lead_len], &v[..user_end])
            }
            _ => whole.to_string(),
        };
    }
    mask_group(c, 4)
}

/// `--name VALUE` where the name says secret. Kept: a flag followed by another option, and a
/// plain `--key`/`--auth` whose value is a file path (`curl --key /etc/tls/key.pem`).
/// Captures: 1 lead with the name and separator, 2 name, 3 value.
pub(super) fn long_option(c: &Captures<'_>, _text: &str) -> String {
    let whole = c.get(0).map_or("", |m| m.as_str());
    let (Some(name), Some(value)) = (c.get(2), c.get(3)) else {
        return whole.to_string();
    };
    let v = value.as_str();
    let spaced = !whole[..value.start() - c.get(0).map_or(0, |m| m.start())].ends_with('=');
    if spaced && v.starts_with('-') || v == MASK {
        return whole.to_string();
    }
    let name = name.as_str().to_ascii_lowercase();
    let plain = ["key", "auth"].iter().any(|k| {
        name == *k
            || (name.ends_with(&format!("-{k}"))
                && !name.contains("secret")
                && !name.contains("api")
                && !name.contains("access")
                && !name.contains("private"))
    });
    if plain && looks_like_port_or_path(v) {
        return whole.to_string();
    }
    // `-pass pass:X` / `-passin env:VAR` (openssl): only `pass:` carries the secret itself.
    if let Some(rest) = unquoted(v).strip_prefix("pass:") {
        if rest.is_empty() {
            return whole.to_string();
        }
        let lead = &whole[..value.start() - c.get(0).map_or(0, |m| m.start())];
        return format!("{lead}pass:{MASK}");
    }
    if name.starts_with("pass") && (name.ends_with("in") || name.ends_with("out")) {
        return whole.to_string();
    }
    mask_group(c, 3)
}

/// scheme://user:PASS@host: the password goes, the user stays. `host:8080/path@x` is a port, not
/// a password. Captures: 1 scheme, user and colon, 2 password.
pub(super) fn url_password(c: &Captures<'_>, _text: &str) -> String {
    let whole = c.get(0).map_or("", |m| m.as_str());
    let Some(pass) = c.get(2) else {
        return whole.to_string();
    };
    let p = pass.as_str();
    let port = p.split('/').next().is_some_and(|head| {
        !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) && p.contains('/')
    });
    if port || p == MASK {
        return whole.to_string();
    }
    mask_group(c, 2)
}

/// `htpasswd -b[c] FILE USER PASS`, `htpasswd -nb USER PASS`. Captures: 1 flags, 2-4 words.
pub(super) fn htpasswd(c: &Captures<'_>, _text: &str) -> String {
    let whole = c.get(0).map_or("", |m| m.as_str());
    let flags = c.get(1).map_or("", |m| m.as_str());
    if !flags.contains('b') {
        return whole.to_string();
    }
    let group = if flags.contains('n') { 3 } else { 4 };
    match c.get(group) {
        Some(m) if m.as_str() != MASK => mask_group(c, group),
        _ => whole.to_string(),
    }
}

/// Shannon entropy of `word` in bits per character.
pub(super) fn entropy(word: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in word.bytes() {
        counts[b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether `word` reads as generated (a token, a key) rather than as a name or a checksum:
/// letters and digits mixed, and about as random as base64.
pub(super) fn looks_generated(word: &str) -> bool {
    let letters = word.bytes().any(|b| b.is_ascii_alphabetic());
    let digits = word.bytes().any(|b| b.is_ascii_digit());
    let hex_only = word.bytes().all(|b| b.is_ascii_hexdigit());
    letters && digits && !hex_only && entropy(word) >= 3.5
}

/// A long word right after a key name, masked when it looks generated. Captures: 1 key, 2 word.
pub(super) fn entropic_word(c: &Captures<'_>, _text: &str) -> String {
    let whole = c.get(0).map_or("", |m| m.as_str());
    match c.get(2) {
        Some(w) if looks_generated(w.as_str()) => mask_group(c, 2),
        _ => whole.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_word_is_the_last_known_client_in_the_shell_segment() {
        let t = "2026-11-30 INFO + echo x | /usr/bin/redis-cli -h redis -a PW ping";
        let at = t.find("-a").unwrap_or(0);
        assert_eq!(command_word(t, at), Some("redis-cli"));
        let t = "mkdir -p /backup && mysql -pX";
        assert_eq!(command_word(t, t.find("-pX").unwrap_or(0)), Some("mysql"));
        assert_eq!(command_word("run -p x", 4), None);
    }

    #[test]
    fn a_random_token_is_generated_and_a_name_or_checksum_is_not() {
        assert!(looks_generated("q8Zr2LxV0aPf7TnW3kYb"));
        assert!(!looks_generated("rocketchat-backup-nightly"));
        assert!(!looks_generated(
            "9f2c5d0e8b7a1f2e3d4c5b6a79881726354453627180919a8b7c6d5e4f3a2b1c0"
        ));
        assert!(entropy("") == 0.0);
    }
}
