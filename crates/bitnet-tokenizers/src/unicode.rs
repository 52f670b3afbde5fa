//! Code point classes as llama.cpp's pre-tokenizers see them, and GPT-2's byte-to-unicode map.
//!
//! llama.cpp gives every code point one *category* flag (letter, number, accent mark,
//! punctuation, symbol, separator, control, or undefined for unassigned code points) plus a
//! separate *whitespace* flag for the Unicode `White_Space` set. The pre-tokenizers only ever
//! ask those questions, so that is all this module answers. Categories come from the
//! `unicode-general-category` crate; the Basic Multilingual Plane is tabulated once (64 Ki
//! entries, built in well under a millisecond) so the hot loop is an array index.

use std::sync::OnceLock;

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// Category and whitespace flags of one code point (llama.cpp's `unicode_cpt_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Flags(u16);

impl Flags {
    const UNDEFINED: u16 = 0x0001;
    const NUMBER: u16 = 0x0002;
    const LETTER: u16 = 0x0004;
    const SEPARATOR: u16 = 0x0008;
    const ACCENT_MARK: u16 = 0x0010;
    const PUNCTUATION: u16 = 0x0020;
    const SYMBOL: u16 = 0x0040;
    const CONTROL: u16 = 0x0080;
    const WHITESPACE: u16 = 0x0100;

    /// No flags at all: what llama.cpp's splitters see past the end of the text.
    pub(crate) const NONE: Flags = Flags(0);

    pub(crate) fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub(crate) fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub(crate) fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    pub(crate) fn is_accent_mark(self) -> bool {
        self.0 & Self::ACCENT_MARK != 0
    }
    pub(crate) fn is_punctuation(self) -> bool {
        self.0 & Self::PUNCTUATION != 0
    }
    pub(crate) fn is_symbol(self) -> bool {
        self.0 & Self::SYMBOL != 0
    }
    /// Any flag set (false only for [`Flags::NONE`], i.e. past the end of the text).
    pub(crate) fn any(self) -> bool {
        self.0 != 0
    }
}

/// The Unicode `White_Space` code points (the set llama.cpp's tables mark as whitespace).
const WHITESPACE: &[u32] = &[
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
    0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
];

fn compute(c: char) -> Flags {
    let category = match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Flags::LETTER,
        G::NonspacingMark | G::SpacingMark | G::EnclosingMark => Flags::ACCENT_MARK,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Flags::NUMBER,
        G::ConnectorPunctuation
        | G::DashPunctuation
        | G::OpenPunctuation
        | G::ClosePunctuation
        | G::InitialPunctuation
        | G::FinalPunctuation
        | G::OtherPunctuation => Flags::PUNCTUATION,
        G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol => Flags::SYMBOL,
        G::SpaceSeparator | G::LineSeparator | G::ParagraphSeparator => Flags::SEPARATOR,
        G::Control | G::Format | G::Surrogate | G::PrivateUse => Flags::CONTROL,
        // Unassigned, and any category a later Unicode version adds.
        _ => Flags::UNDEFINED,
    };
    let ws = if WHITESPACE.contains(&(c as u32)) {
        Flags::WHITESPACE
    } else {
        0
    };
    Flags(category | ws)
}

fn bmp_table() -> &'static [Flags] {
    static TABLE: OnceLock<Vec<Flags>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0u32..0x10000)
            .map(|cp| char::from_u32(cp).map_or(Flags(Flags::CONTROL), compute))
            .collect()
    })
}

/// The flags of `c`.
#[inline]
pub(crate) fn flags(c: char) -> Flags {
    let cp = c as u32;
    if cp < 0x10000 {
        bmp_table()[cp as usize]
    } else {
        compute(c)
    }
}

/// GPT-2's reversible byte → printable character map (`bytes_to_unicode`).
///
/// Printable Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) map to themselves; the other 68
/// bytes map, in byte order, to U+0100 onwards.
pub(crate) fn byte_to_char() -> &'static [char; 256] {
    static MAP: OnceLock<[char; 256]> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = ['\0'; 256];
        let mut next = 0x100u32;
        for (b, slot) in map.iter_mut().enumerate() {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            let cp = if printable {
                b as u32
            } else {
                let cp = next;
                next += 1;
                cp
            };
            *slot = char::from_u32(cp).expect("below U+0200");
        }
        map
    })
}

/// The inverse of [`byte_to_char`]: `None` for characters that are not a GPT-2 byte.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    static MAP: OnceLock<Vec<i16>> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        let mut map = vec![-1i16; 0x200];
        for (b, &c) in byte_to_char().iter().enumerate() {
            map[c as usize] = b as i16;
        }
        map
    });
    map.get(c as usize).and_then(|&b| u8::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_classes_match_llama_cpp_table() {
        // llama.cpp's unicode-data.cpp: '$' '+' '<' '^' '`' '|' '~' are symbols, the rest of the
        // ASCII non-alphanumerics are punctuation, space is a separator and whitespace.
        for c in "$+<=>^`|~".chars() {
            assert!(flags(c).is_symbol(), "{c:?}");
        }
        for c in "!\"#%&'()*,-./:;?@[\\]_{}".chars() {
            assert!(flags(c).is_punctuation(), "{c:?}");
        }
        assert!(flags(' ').is_whitespace() && !flags(' ').is_letter());
        assert!(flags('\u{3000}').is_whitespace());
        assert!(flags('7').is_number() && flags('é').is_letter());
        assert!(flags('\u{0301}').is_accent_mark());
        assert!(flags('\u{0378}').any() && !flags('\u{0378}').is_letter());
        assert!(!Flags::NONE.any());
    }

    #[test]
    fn gpt2_byte_map_is_a_bijection() {
        let map = byte_to_char();
        assert_eq!(map[b'!' as usize], '!');
        assert_eq!(map[b' ' as usize], 'Ġ');
        assert_eq!(map[b'\n' as usize], 'Ċ');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(map[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('a'), Some(b'a'));
        assert_eq!(char_to_byte('\u{1F600}'), None);
    }
}
