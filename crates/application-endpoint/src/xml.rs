//! Escaping for the XML bodies endpoints and conversations write (PIDF presence,
//! isComposing): one rule for all of them, so text round-trips the same way in each.

/// Appends `text` escaped for use as XML content or a double-quoted attribute value.
///
/// Tab, line feed and carriage return become character references so a reader's
/// end-of-line and attribute normalisation gives them back unchanged; characters XML
/// 1.0 cannot represent become U+FFFD.
///
/// ```
/// let mut out = String::new();
/// application_endpoint::xml::escape_into(&mut out, "a<b & \"c\"\n");
/// assert_eq!(out, "a&lt;b &amp; &quot;c&quot;&#10;");
/// ```
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}
