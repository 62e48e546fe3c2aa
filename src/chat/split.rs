//! Splitting a long text into messages the server accepts, at line or word boundaries, keeping code fences balanced.

const FENCE: &str = "```";

/// Splits `text` into chunks of at most `max_chars` characters (not bytes).
/// Prefers line breaks, then spaces; a code block cut in two is closed and reopened.
pub fn split_message(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(16);
    if text.chars().count() <= max_chars {
        return vec![text.to_string()];
    }
    // Room for a closing fence ("\n```") and a reopening one ("```\n").
    let budget = max_chars - 8;
    let mut out = Vec::new();
    let mut rest: &str = text;
    let mut reopen = false;
    while !rest.is_empty() {
        let prefix = if reopen { "```\n" } else { "" };
        if prefix.chars().count() + rest.chars().count() <= max_chars {
            out.push(format!("{prefix}{rest}"));
            break;
        }
        let cut = cut_point(rest, budget);
        let (head, tail) = rest.split_at(cut);
        let mut chunk = format!("{prefix}{}", head.trim_end_matches([' ', '\n']));
        let open = chunk.matches(FENCE).count() % 2 == 1;
        if open {
            chunk.push('\n');
            chunk.push_str(FENCE);
        }
        reopen = open;
        out.push(chunk);
        rest = tail.trim_start_matches([' ', '\n']);
    }
    out
}

/// Byte index where to cut so that the head has at most `budget` characters.
fn cut_point(s: &str, budget: usize) -> usize {
    let mut hard = s.char_indices().nth(budget).map_or(s.len(), |(i, _)| i);
    // Never cut through a run of backticks: it would break a fence in two.
    while hard > 0 && s[..hard].ends_with('`') && s[hard..].starts_with('`') {
        hard -= 1;
    }
    let window = &s[..hard];
    if let Some(i) = window.rfind('\n').filter(|&i| i > hard / 2) {
        return i + 1;
    }
    if let Some(i) = window.rfind(' ').filter(|&i| i > hard / 2) {
        return i + 1;
    }
    hard.max(s.chars().next().map_or(1, char::len_utf8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_short_text_is_one_message() {
        assert_eq!(split_message("hello", 100), vec!["hello"]);
    }

    #[test]
    fn a_long_text_is_cut_at_line_breaks() {
        let text = (0..50)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let parts = split_message(&text, 100);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(p.chars().count() <= 100);
            assert!(p.starts_with("line "), "{p:?}");
        }
    }

    #[test]
    fn a_code_block_cut_in_two_stays_a_code_block() {
        let body = (0..40)
            .map(|i| format!("pod-{i} Running"))
            .collect::<Vec<_>>()
            .join("\n");
        let text = format!("```\n{body}\n```");
        let parts = split_message(&text, 120);
        assert!(parts.len() > 1);
        for p in &parts {
            assert_eq!(p.matches("```").count() % 2, 0, "{p:?}");
        }
    }

    proptest! {
        #[test]
        fn every_chunk_fits_and_no_word_is_lost(text in "[a-z ```\n\u{e9}]{0,600}", max in 16usize..200) {
            let parts = split_message(&text, max);
            for p in &parts {
                prop_assert!(p.chars().count() <= max.max(16), "{:?}", p);
            }
            let words = |s: &str| s.replace("```", " ").split_whitespace().map(str::to_string).collect::<Vec<_>>().concat();
            let joined: String = parts.iter().map(|p| words(p)).collect();
            prop_assert_eq!(joined, words(&text));
        }
    }
}
