//! Splitting a command line into words, quoted strings, `--flags` and `key=value` options.

use crate::error::UserError;

/// Longest command line accepted, in characters.
pub const MAX_LEN: usize = 2000;

/// One piece of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A word or a quoted string.
    Word(String),
    /// `--name`.
    Flag(String),
    /// `key=value` (unquoted key).
    Pair(String, String),
}

/// Splits `input`; unbalanced quotes, control characters and overlong input are errors.
pub fn tokenize(input: &str) -> Result<Vec<Token>, UserError> {
    if input.chars().count() > MAX_LEN {
        return Err(UserError::Malformed {
            problem: format!("that command is longer than {MAX_LEN} characters"),
        });
    }
    if let Some(c) = input.chars().find(|c| c.is_control() && !c.is_whitespace()) {
        return Err(UserError::Malformed {
            problem: format!(
                "that command contains a control character (U+{:04X})",
                c as u32
            ),
        });
    }
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        // A word runs to the next unquoted whitespace; quotes may appear anywhere in it
        // (`reason="hot fix"`), and a word that starts with a quote is always plain text.
        let mut word = String::new();
        let mut quoted_start = false;
        let mut first = true;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            let close = match c {
                '"' | '\'' => Some(c),
                '“' => Some('”'),
                '‘' => Some('’'),
                _ => None,
            };
            match close {
                Some(close) => {
                    quoted_start |= first;
                    let mut closed = false;
                    while let Some(q) = chars.next() {
                        if q == '\\' && close == '"' {
                            if let Some(n) = chars.next() {
                                word.push(n);
                            }
                            continue;
                        }
                        if q == close {
                            closed = true;
                            break;
                        }
                        word.push(q);
                    }
                    if !closed {
                        return Err(UserError::Malformed {
                            problem: format!("a quote ({c}) is not closed"),
                        });
                    }
                }
                None => word.push(c),
            }
            first = false;
        }
        out.push(if quoted_start {
            Token::Word(word)
        } else {
            classify(word)
        });
    }
    Ok(out)
}

fn classify(word: String) -> Token {
    // Chat clients turn `--` into an en or em dash.
    let dashed = word
        .strip_prefix("--")
        .or_else(|| word.strip_prefix('—'))
        .or_else(|| word.strip_prefix('–'));
    if let Some(name) = dashed
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Token::Flag(name.to_lowercase());
    }
    if let Some((k, v)) = word.split_once('=')
        && !k.is_empty()
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Token::Pair(k.to_lowercase(), v.to_string());
    }
    Token::Word(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Token {
        Token::Word(s.into())
    }

    #[test]
    fn words_quotes_flags_and_pairs_are_told_apart() {
        assert_eq!(
            tokenize(r#"deploy prod v3.1 --no-backup reason="hot fix" 'two words' key=v"#).unwrap(),
            vec![
                w("deploy"),
                w("prod"),
                w("v3.1"),
                Token::Flag("no-backup".into()),
                Token::Pair("reason".into(), "hot fix".into()),
                w("two words"),
                Token::Pair("key".into(), "v".into()),
            ]
        );
    }

    #[test]
    fn smart_quotes_and_dashes_from_chat_clients_work() {
        assert_eq!(
            tokenize("lock prod “db maintenance” —force").unwrap(),
            vec![
                w("lock"),
                w("prod"),
                w("db maintenance"),
                Token::Flag("force".into())
            ]
        );
    }

    #[test]
    fn an_unclosed_quote_is_an_error() {
        assert!(tokenize("lock prod \"oops").is_err());
    }

    #[test]
    fn control_characters_and_overlong_input_are_errors() {
        assert!(tokenize("deploy\u{7}prod").is_err());
        assert!(tokenize(&"a".repeat(MAX_LEN + 1)).is_err());
        assert_eq!(tokenize("deploy\tprod\n v1").unwrap().len(), 3);
    }
}
