//! CSV (RFC 4180) cells that are safe to open in a spreadsheet.

/// One cell: every field is quoted (quotes doubled), so commas, quotes and line breaks stay inside
/// it; a cell that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, or a leading tab or
/// carriage return) gets a `'` in front, so it is shown as text instead of being evaluated.
pub(crate) fn cell(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push('"');
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        out.push('\'');
    }
    out.push_str(&value.replace('"', "\"\""));
    out.push('"');
    out
}

/// Appends one record, CRLF-terminated.
pub(crate) fn push_row<S: AsRef<str>>(out: &mut String, cells: &[S]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&cell(c.as_ref()));
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        for (input, want) in [
            ("plain", "\"plain\""),
            ("", "\"\""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\r\nlines", "\"two\r\nlines\""),
            ("=1+2", "\"'=1+2\""),
            ("+1", "\"'+1\""),
            ("-1", "\"'-1\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\tx", "\"'\tx\""),
            (
                "=HYPERLINK(\"http://x\")",
                "\"'=HYPERLINK(\"\"http://x\"\")\"",
            ),
            ("a=b", "\"a=b\""),
        ] {
            assert_eq!(cell(input), want, "{input:?}");
        }
        let mut row = String::new();
        push_row(&mut row, &["a", "b,c"]);
        assert_eq!(row, "\"a\",\"b,c\"\r\n");
    }
}
