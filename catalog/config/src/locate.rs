//! Finding where in a TOML text a key lives, so that errors can name the line.

use toml_edit::{ImDocument, Item, Table};

/// 1-based line and column of a byte offset.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map(|newline| offset - newline)
        .unwrap_or(offset + 1);
    (line, column)
}

/// The line and column of a dotted key path such as `catalogs.pg.port`, or of the deepest table
/// on that path that exists (a missing key is reported at its table's header).
pub(crate) fn find_key(text: &str, dotted: &str) -> Option<(usize, usize)> {
    let document = ImDocument::parse(text).ok()?;
    let mut table: &Table = document.as_table();
    let mut best = None;
    for segment in dotted.split('.') {
        if let Some(key) = table.key(segment) {
            best = key.span().or(best);
        }
        match table.get(segment) {
            Some(Item::Table(inner)) => {
                best = inner.span().or(best);
                table = inner;
            }
            Some(Item::Value(value)) => {
                if let Some(inline) = value.as_inline_table() {
                    // Inline tables have no header; keep the key's position.
                    let _ = inline;
                }
                break;
            }
            _ => break,
        }
    }
    best.map(|span| line_and_column(text, span.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_falls_back_to_tables() {
        let text = "[a]\nx = 1\n\n[a.b]\ny = 2\n";
        assert_eq!(find_key(text, "a.x"), Some((2, 1)));
        assert_eq!(find_key(text, "a.b.y"), Some((5, 1)));
        assert_eq!(find_key(text, "a.b.missing"), Some((4, 1)));
    }
}
