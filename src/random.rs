//! Unguessable values (confirmation codes, operation marks, message ids) drawn from the operating system's generator.

/// `len` characters drawn uniformly from `alphabet` (at most 256 symbols), from the operating
/// system's cryptographic generator. Confirmation codes and operation marks guard decisions, so
/// they must not be predictable from the clock or a thread id.
pub fn token(alphabet: &[u8], len: usize) -> String {
    let n = alphabet.len().clamp(1, 256);
    // Bytes at or above the largest multiple of `n` are dropped, so every symbol is equally likely.
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        if let Err(e) = getrandom::fill(&mut buf) {
            // Not seen on Linux after boot; a bot that cannot draw a code must not stop answering.
            tracing::error!(error = %e, "the operating system's random generator failed; using a weaker one");
            buf.iter_mut().for_each(|b| *b = fastrand::u8(..));
        }
        for b in buf {
            if (b as usize) < limit {
                out.push(alphabet[b as usize % n] as char);
                if out.len() == len {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_has_the_length_asked_and_only_the_alphabets_symbols() {
        let t = token(b"ABC", 40);
        assert_eq!(t.len(), 40);
        assert!(t.bytes().all(|b| b"ABC".contains(&b)), "{t}");
        assert_eq!(token(b"x", 3), "xxx");
        assert_eq!(token(b"abc", 0), "");
    }

    #[test]
    fn tokens_do_not_repeat_and_use_every_symbol() {
        let alphabet = b"0123456789";
        let many: std::collections::HashSet<String> =
            (0..1000).map(|_| token(alphabet, 12)).collect();
        assert_eq!(many.len(), 1000);
        let all: String = many.into_iter().collect();
        for s in alphabet {
            let share = all.bytes().filter(|b| b == s).count() as f64 / all.len() as f64;
            assert!((0.08..0.12).contains(&share), "{} {share}", *s as char);
        }
    }
}
