//! Text a provider sent, cut to a bounded length before it is kept, logged or published.

use std::borrow::Cow;

/// What a cut text ends with.
pub(crate) const CUT_MARKER: char = '…';

/// `text` as it is when it has at most `max_chars` characters (Unicode scalar values);
/// otherwise its first `max_chars - 1` followed by [`CUT_MARKER`], so the result has
/// exactly `max_chars`. Never splits a character.
pub(crate) fn truncated(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some(_) => {
            let keep = max_chars.saturating_sub(1);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            let mut cut = String::with_capacity(end + CUT_MARKER.len_utf8());
            cut.push_str(&text[..end]);
            if max_chars > 0 {
                cut.push(CUT_MARKER);
            }
            Cow::Owned(cut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_within_the_limit_is_kept_as_it_is() {
        assert!(matches!(truncated("hello", 5), Cow::Borrowed("hello")));
        assert_eq!(truncated("", 3), "");
    }

    #[test]
    fn longer_text_is_cut_to_exactly_the_limit_ending_in_the_marker() {
        assert_eq!(truncated("hello world", 6), "hello…");
        let letters = "ё".repeat(10);
        let cut = truncated(&letters, 4);
        assert_eq!(cut, "ёёё…");
        assert_eq!(cut.chars().count(), 4);
        assert_eq!(truncated("ab", 0), "");
    }
}
