//! Control characters of outside text made visible (`\n`, `\x1b`), so a printed or logged line stays one line and cannot drive the terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a line-based log as itself: C0 and C1 controls,
/// DEL, the line and paragraph separators and the bidirectional overrides (which reorder what
/// a reader sees).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `text` with every control character written as a visible escape (`\n`, `\r`, `\t`, `\x1b`,
/// `\u{202e}`); unchanged (and not copied) when it has none.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One formatted log record made safe: its final newline kept, tabs kept, colour sequences
/// (`ESC [ digits m`) kept when `colours` is on; every other control character escaped.
pub fn escape_log_record(record: &str, colours: bool) -> Cow<'_, str> {
    let body = record.strip_suffix('\n').unwrap_or(record);
    let tail = &record[body.len()..];
    let needs = body.chars().any(|c| c != '\t' && unsafe_char(c));
    if !needs {
        return Cow::Borrowed(record);
    }
    let mut out = String::with_capacity(record.len() + 8);
    let mut rest = body;
    while let Some(c) = rest.chars().next() {
        if c == '\x1b' && colours {
            let seq_len = colour_sequence_len(rest);
            if seq_len > 0 {
                out.push_str(&rest[..seq_len]);
                rest = &rest[seq_len..];
                continue;
            }
        }
        if c != '\t' && unsafe_char(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(tail);
    Cow::Owned(out)
}

/// The length of an SGR colour sequence at the start of `s` (`\x1b[1;31m`), or 0.
fn colour_sequence_len(s: &str) -> usize {
    let b = s.as_bytes();
    if b.len() < 3 || b[0] != 0x1b || b[1] != b'[' {
        return 0;
    }
    let params = b[2..]
        .iter()
        .take_while(|x| x.is_ascii_digit() || **x == b';')
        .count();
    match b.get(2 + params) {
        Some(b'm') => 3 + params,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_and_a_cursor_movement_become_visible_escapes() {
        let out = escape_controls("ok\n2026-12-04T10:31Z alice\x1b[1A\x1b[2K\r\u{202e}x");
        assert_eq!(
            out,
            "ok\\n2026-12-04T10:31Z alice\\x1b[1A\\x1b[2K\\r\\u{202e}x"
        );
    }

    #[test]
    fn plain_text_is_returned_without_a_copy() {
        assert!(matches!(
            escape_controls("deploy prod 7.0.0 → ✅"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_log_record_keeps_its_end_and_its_colours_but_not_a_cursor_movement() {
        let rec = "\x1b[32mINFO\x1b[0m refused command=ping\tx\x1b[1A\nforged\n";
        assert_eq!(
            escape_log_record(rec, true),
            "\x1b[32mINFO\x1b[0m refused command=ping\tx\\x1b[1A\\nforged\n"
        );
        assert_eq!(
            escape_log_record("\x1b[32mINFO\n", false),
            "\\x1b[32mINFO\n"
        );
    }
}
