//! Maps between TOML keys and their positions in the source text, so errors can name a line.

use toml::de::{DeTable, DeValue};

/// 1-based line and column of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The byte offset where a dotted key (`rocketchat.url`) is written, if it is.
pub fn span_of_key(src: &str, dotted: &str) -> Option<usize> {
    let table = DeTable::parse(src).ok()?;
    let mut current = table.get_ref();
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (k, v) = current
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == *part)?;
        if i + 1 == parts.len() {
            return Some(k.span().start);
        }
        match v.get_ref() {
            DeValue::Table(t) => current = t,
            _ => return Some(k.span().start),
        }
    }
    None
}

/// The byte offset of the string `item` inside the list at `dotted`, whose parts may index an
/// array of tables (`environments.prod.policy.allow[0].commands`).
pub fn span_of_item(src: &str, dotted: &str, item: &str) -> Option<usize> {
    let table = DeTable::parse(src).ok()?;
    let mut current = table.get_ref();
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (name, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            Some((name, index)) => (name, Some(index.parse::<usize>().ok()?)),
            None => (*part, None),
        };
        let (_, v) = current.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
        let mut value = v.get_ref();
        if let Some(index) = index {
            match value {
                DeValue::Array(a) => value = a.get(index)?.get_ref(),
                _ => return None,
            }
        }
        match value {
            DeValue::Table(t) if i + 1 < parts.len() => current = t,
            DeValue::Array(a) if i + 1 == parts.len() => {
                return a.iter().find_map(|v| match v.get_ref() {
                    DeValue::String(s) if s.as_ref() == item => Some(v.span().start),
                    _ => None,
                });
            }
            _ => return None,
        }
    }
    None
}

/// The dotted key whose key or value covers `offset` (the deepest one), or "" if none does.
pub fn key_at_offset(src: &str, offset: usize) -> String {
    let Ok(table) = DeTable::parse(src) else {
        return String::new();
    };
    let mut path = Vec::new();
    if find(table.get_ref(), offset, &mut path) {
        path.join(".")
    } else {
        String::new()
    }
}

fn find(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (k, v) in table.iter() {
        let ks = k.span();
        let vs = v.span();
        path.push(k.get_ref().to_string());
        if ks.start <= offset && offset < ks.end.max(ks.start + 1) {
            return true;
        }
        match v.get_ref() {
            // Tables written as `[header]` have spans apart from their keys: search inside.
            DeValue::Table(t) if find(t, offset, path) => {
                return true;
            }
            // So do the entries of `[[array]]` tables.
            DeValue::Array(a)
                if a.iter().any(|item| match item.get_ref() {
                    DeValue::Table(t) => find(t, offset, path),
                    _ => false,
                }) =>
            {
                return true;
            }
            _ if vs.start <= offset && offset < vs.end => return true,
            _ => {}
        }
        path.pop();
    }
    false
}

/// The source with the `key = value` entry whose key starts at `offset` replaced by spaces
/// (newlines kept, so every other offset still holds); `None` when there is no such entry.
pub fn blank_entry(src: &str, offset: usize) -> Option<String> {
    let offset = floor_char_boundary(src, offset.min(src.len()));
    let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let (start, end) = if src[line_start..].trim_start().starts_with('[') {
        // An unknown table's header: the header and its body go, up to the next header (blanking
        // only the name would leave `[.test.schedule]`, an error of its own).
        let body = src[line_start..]
            .find('\n')
            .map_or(src.len(), |i| line_start + i + 1);
        let next = src[body..]
            .split_inclusive('\n')
            .scan(body, |at, line| {
                let here = *at;
                *at += line.len();
                Some((here, line))
            })
            .find(|(_, line)| line.trim_start().starts_with('['))
            .map_or(src.len(), |(at, _)| at);
        (line_start, next)
    } else {
        let table = DeTable::parse(src).ok()?;
        entry_at(table.get_ref(), offset)?
    };
    let mut out = String::with_capacity(src.len());
    for (i, ch) in src.char_indices() {
        if i >= start && i < end && ch != '\n' {
            out.extend(std::iter::repeat_n(' ', ch.len_utf8()));
        } else {
            out.push(ch);
        }
    }
    Some(out)
}

fn entry_at(table: &DeTable<'_>, offset: usize) -> Option<(usize, usize)> {
    for (k, v) in table.iter() {
        let ks = k.span();
        if ks.start == offset {
            return Some((ks.start, v.span().end.max(ks.end)));
        }
        match v.get_ref() {
            DeValue::Table(t) => {
                if let Some(found) = entry_at(t, offset) {
                    return Some(found);
                }
            }
            DeValue::Array(a) => {
                for item in a.iter() {
                    if let DeValue::Table(t) = item.get_ref()
                        && let Some(found) = entry_at(t, offset)
                    {
                        return Some(found);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// For a syntax error at `offset`: the dotted key written on that line (from the table headers
/// above it) and what is wrong, in words (`has no value after =`).
pub fn syntax_problem(src: &str, offset: usize, message: &str) -> (String, String) {
    let offset = floor_char_boundary(src, offset.min(src.len()));
    let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let line = &src[line_start..line_end];
    let table = src[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let Some((name, value)) = line.split_once('=') else {
        return (String::new(), message.trim().to_string());
    };
    let name = name.trim().trim_matches('"');
    if name.is_empty() || name.contains(char::is_whitespace) {
        return (String::new(), message.trim().to_string());
    }
    let key = match table {
        Some(t) if !t.is_empty() => format!("{t}.{name}"),
        _ => name.to_string(),
    };
    let value = value.split('#').next().unwrap_or_default().trim();
    let unclosed = ['"', '\'']
        .into_iter()
        .find(|q| value.starts_with(*q) && (value.len() == 1 || !value.ends_with(*q)));
    let what = if value.is_empty() {
        "has no value after `=`: write a number, \"a string\", true or false".to_string()
    } else if let Some(q) = unclosed {
        format!(
            "`{value}` opens a string with {q} that is not closed on this line: add the closing {q}"
        )
    } else {
        format!(
            "`{value}` is not a TOML value ({}); strings need quotes",
            message.trim()
        )
    };
    (key, what)
}
