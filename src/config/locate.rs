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
            _ if vs.start <= offset && offset < vs.end => return true,
            _ => {}
        }
        path.pop();
    }
    false
}
