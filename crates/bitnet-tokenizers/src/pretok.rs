//! BPE pre-tokenizers: how llama.cpp cuts text into words before merging.
//!
//! llama.cpp describes each pre-tokenizer as a list of regular expressions applied one after
//! the other, each one splitting every piece the previous ones produced (matches *and* the
//! text between matches become pieces). Four of those expressions (GPT-2's, Llama-3's,
//! Qwen2's and Qwen3.5's) are never run as regexes: llama.cpp recognises them and runs
//! hand-written splitters whose behaviour differs from the regex in corner cases. Those four
//! are hand-written here too ([`Custom`]), step for step. The others run through
//! `fancy-regex` on a *collapsed* copy of the text, reproducing what llama.cpp feeds to
//! `std::regex`: when an expression uses `\p{..}` classes, every non-ASCII code point is
//! replaced by one representative of its llama.cpp category (and non-ASCII whitespace by
//! U+000B); otherwise only non-ASCII whitespace is replaced. Matching the representative
//! with Unicode classes gives exactly what `std::regex` gives on llama.cpp's collapsed bytes.

use std::ops::Range;

use fancy_regex::Regex;

use crate::unicode::{flags, Flags};

/// The hand-written splitters (llama.cpp's `unicode_regex_split_custom_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Custom {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// Llama-3 family. `digits`: at most this many digits per word (3 for Llama-3, 1 for
    /// Qwen2); `marks`: letter runs also take combining marks (Qwen3.5).
    Llama3 { digits: usize, marks: bool },
}

/// How a regex step sees non-ASCII code points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collapse {
    /// The expression uses `\p{..}`: every non-ASCII code point becomes its category's
    /// representative.
    Categories,
    /// No `\p{..}`: only non-ASCII whitespace becomes U+000B.
    Whitespace,
}

#[derive(Debug)]
enum Step {
    Custom(Custom),
    Regex(Regex, Collapse),
}

/// A compiled pre-tokenizer: the steps llama.cpp runs for one `tokenizer.ggml.pre` type.
#[derive(Debug)]
pub(crate) struct PreTokenizer {
    steps: Vec<Step>,
}

/// The pre-tokenizer families this crate implements (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreKind {
    Default,
    Llama3,
    DeepseekLlm,
    DeepseekCoder,
    Falcon,
    Starcoder,
    Gpt2,
    Qwen2,
    Qwen35,
}

const GPT2_RE: &str =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

impl PreTokenizer {
    /// The steps of `kind`, with llama.cpp's expressions.
    pub(crate) fn new(kind: PreKind) -> PreTokenizer {
        let re = |s: &str| {
            let collapse = if s.contains("\\p{") {
                Collapse::Categories
            } else {
                Collapse::Whitespace
            };
            Step::Regex(
                Regex::new(s).expect("llama.cpp's pre-tokenizer expressions compile"),
                collapse,
            )
        };
        let gpt2 = || Step::Custom(Custom::Gpt2);
        debug_assert!(GPT2_RE.starts_with("'s"));
        let steps = match kind {
            PreKind::Default => vec![
                re("[\\p{P}\\$\\+<=>\\^~\\|]+"),
                gpt2(),
                re("\\p{N}+"),
                re("[0-9][0-9][0-9]"),
            ],
            PreKind::Llama3 => vec![Step::Custom(Custom::Llama3 {
                digits: 3,
                marks: false,
            })],
            PreKind::Qwen2 => vec![Step::Custom(Custom::Llama3 {
                digits: 1,
                marks: false,
            })],
            PreKind::Qwen35 => vec![Step::Custom(Custom::Llama3 {
                digits: 1,
                marks: true,
            })],
            PreKind::DeepseekLlm => vec![
                re("[\r\n]"),
                re("\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+"),
                re("\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+"),
                re("\\s+$"),
                re("[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+"),
                re("\\p{N}+"),
            ],
            PreKind::DeepseekCoder => vec![
                re("[\r\n]"),
                re("\\s?\\p{L}+"),
                re("\\s?\\p{P}+"),
                re("[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+"),
                re("\\p{N}"),
            ],
            PreKind::Falcon => vec![
                re("[\\p{P}\\$\\+<=>\\^~\\|`]+"),
                gpt2(),
                re("[0-9][0-9][0-9]"),
            ],
            PreKind::Starcoder => vec![re("\\p{N}"), gpt2()],
            PreKind::Gpt2 => vec![gpt2()],
        };
        PreTokenizer { steps }
    }

    /// Cut `text` into words, as byte ranges of `text` that tile it in order.
    pub(crate) fn split(&self, text: &str) -> Vec<Range<usize>> {
        if text.is_empty() {
            return Vec::new();
        }
        let cpts: Vec<char> = text.chars().collect();
        let cpt_flags: Vec<Flags> = cpts.iter().map(|&c| flags(c)).collect();
        // Piece lengths in code points; initially the whole text.
        let mut pieces = vec![cpts.len()];
        let mut collapsed: [Option<Vec<char>>; 2] = [None, None];
        for step in &self.steps {
            pieces = match step {
                Step::Custom(Custom::Gpt2) => split_gpt2(&cpts, &cpt_flags, &pieces),
                Step::Custom(Custom::Llama3 { digits, marks }) => {
                    split_llama3(&cpts, &cpt_flags, &pieces, *digits, *marks)
                }
                Step::Regex(re, collapse) => {
                    let slot = &mut collapsed[*collapse as usize];
                    let view =
                        slot.get_or_insert_with(|| collapse_text(&cpts, &cpt_flags, *collapse));
                    split_regex(re, view, &pieces)
                }
            };
        }
        // Code-point lengths → byte ranges.
        let mut ranges = Vec::with_capacity(pieces.len());
        let mut chars = text
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()));
        let mut start = chars.next().unwrap_or(0);
        for len in pieces {
            let end = if len == 0 {
                start
            } else {
                chars.nth(len - 1).unwrap_or(text.len())
            };
            ranges.push(start..end);
            start = end;
        }
        ranges
    }
}

/// The text as llama.cpp's `std::regex` sees it (see the module documentation).
fn collapse_text(cpts: &[char], cpt_flags: &[Flags], collapse: Collapse) -> Vec<char> {
    cpts.iter()
        .zip(cpt_flags)
        .map(|(&c, &f)| {
            if c.is_ascii() {
                c
            } else if f.is_whitespace() {
                '\u{0B}'
            } else if collapse == Collapse::Whitespace {
                c
            } else if f.is_number() {
                '\u{B2}' // SUPERSCRIPT TWO, No
            } else if f.is_letter() {
                '\u{AA}' // FEMININE ORDINAL INDICATOR, Lo
            } else if f.is_punctuation() {
                '\u{A1}' // INVERTED EXCLAMATION MARK, Po
            } else if f.is_accent_mark() {
                '\u{300}' // COMBINING GRAVE ACCENT, Mn
            } else if f.is_symbol() {
                '\u{A2}' // CENT SIGN, Sc
            } else {
                '\u{80}' // a C1 control: in no class the expressions use
            }
        })
        .collect()
}

/// One regex step: every match and every gap between matches becomes a piece.
fn split_regex(re: &Regex, view: &[char], pieces: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut start = 0;
    let mut buf = String::new();
    for &len in pieces {
        buf.clear();
        buf.extend(&view[start..start + len]);
        // Byte offset → code point offset, walking forward only.
        let mut cursor_byte = 0;
        let mut cursor_cpt = 0;
        let mut to_cpt = |byte: usize| {
            cursor_cpt += buf[cursor_byte..byte].chars().count();
            cursor_byte = byte;
            cursor_cpt
        };
        let mut prev = 0;
        let mut matches = Vec::new();
        for m in re.find_iter(&buf) {
            match m {
                Ok(m) => matches.push((m.start(), m.end())),
                // Backtracking limit: keep the rest of the piece whole rather than panic.
                Err(_) => break,
            }
        }
        for (s, e) in matches {
            let s = to_cpt(s);
            let e = to_cpt(e);
            if s > prev {
                out.push(s - prev);
            }
            if e > s {
                out.push(e - s);
            }
            prev = e;
        }
        if len > prev {
            out.push(len - prev);
        }
        start += len;
    }
    out
}

/// Shared cursor over one piece: llama.cpp's `_get_cpt` / `_get_flags` / `_add_token`.
struct Cursor<'a> {
    cpts: &'a [char],
    flags: &'a [Flags],
    ini: usize,
    end: usize,
    prev_end: usize,
    out: &'a mut Vec<usize>,
}

impl Cursor<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> Option<char> {
        (self.ini <= pos && pos < self.end).then(|| self.cpts[pos])
    }
    #[inline]
    fn flags(&self, pos: usize) -> Flags {
        if self.ini <= pos && pos < self.end {
            self.flags[pos]
        } else {
            Flags::NONE
        }
    }
    #[inline]
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
    /// `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (optionally case-insensitive): the match length.
    #[inline]
    fn contraction(&self, pos: usize, fold: bool) -> Option<usize> {
        if self.cpt(pos) != Some('\'') || pos + 1 >= self.end {
            return None;
        }
        let lower = |c: Option<char>| c.map(|c| if fold { c.to_ascii_lowercase() } else { c });
        let next = lower(self.cpt(pos + 1));
        if matches!(next, Some('s' | 't' | 'm' | 'd')) {
            return Some(2);
        }
        if pos + 2 < self.end {
            let next2 = lower(self.cpt(pos + 2));
            if matches!(
                (next, next2),
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
            ) {
                return Some(3);
            }
        }
        None
    }
}

fn split_gpt2(cpts: &[char], cpt_flags: &[Flags], pieces: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len() + cpts.len() / 3);
    let mut start = 0;
    for &len in pieces {
        let (ini, end) = (start, start + len);
        start = end;
        let mut c = Cursor {
            cpts,
            flags: cpt_flags,
            ini,
            end,
            prev_end: ini,
            out: &mut out,
        };
        let mut pos = ini;
        while pos < end {
            let cpt = c.cpt(pos);
            let f = c.flags(pos);
            if let Some(n) = c.contraction(pos, false) {
                pos += c.add(pos + n);
                continue;
            }
            let space = cpt == Some(' ');
            let mut f2 = if space { c.flags(pos + 1) } else { f };
            // <space>?\p{L}+
            if f2.is_letter() {
                pos += usize::from(space);
                while f2.is_letter() {
                    pos += 1;
                    f2 = c.flags(pos);
                }
                c.add(pos);
                continue;
            }
            // <space>?\p{N}+
            if f2.is_number() {
                pos += usize::from(space);
                while f2.is_number() {
                    pos += 1;
                    f2 = c.flags(pos);
                }
                c.add(pos);
                continue;
            }
            // <space>?[^\s\p{L}\p{N}]+
            let other =
                |f: Flags| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.any();
            if other(f2) {
                pos += usize::from(space);
                while other(f2) {
                    pos += 1;
                    f2 = c.flags(pos);
                }
                c.add(pos);
                continue;
            }
            let mut n_ws = 0;
            while c.flags(pos + n_ws).is_whitespace() {
                n_ws += 1;
            }
            // \s+(?!\S)
            if n_ws > 1 && c.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                c.add(pos);
                continue;
            }
            // \s+
            if n_ws > 0 {
                pos += n_ws;
                c.add(pos);
                continue;
            }
            pos += 1;
            c.add(pos);
        }
    }
    out
}

fn split_llama3(
    cpts: &[char],
    cpt_flags: &[Flags],
    pieces: &[usize],
    digits: usize,
    marks: bool,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len() + cpts.len() / 3);
    let mut start = 0;
    let wordy = |f: Flags| f.is_letter() || (marks && f.is_accent_mark());
    for &len in pieces {
        let (ini, end) = (start, start + len);
        start = end;
        let mut c = Cursor {
            cpts,
            flags: cpt_flags,
            ini,
            end,
            prev_end: ini,
            out: &mut out,
        };
        let mut pos = ini;
        while pos < end {
            let cpt = c.cpt(pos);
            let f = c.flags(pos);
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if let Some(n) = c.contraction(pos, true) {
                pos += c.add(pos + n);
                continue;
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+   (Qwen3.5: [\p{L}\p{M}]+)
            let crlf = |c: Option<char>| matches!(c, Some('\r' | '\n'));
            if !(crlf(cpt) || f.is_number()) && (wordy(f) || wordy(c.flags(pos + 1))) {
                pos += 1;
                while wordy(c.flags(pos)) {
                    pos += 1;
                }
                c.add(pos);
                continue;
            }
            // \p{N}{1,digits}
            if f.is_number() {
                let mut first = pos;
                while c.flags(pos).is_number() {
                    pos += 1;
                    if pos - first >= digits {
                        c.add(pos);
                        first = pos;
                    }
                }
                c.add(pos);
                continue;
            }
            // <space>?[^\s\p{L}\p{N}]+[\r\n]*   (Qwen3.5 also excludes \p{M})
            let other = |f: Flags| {
                !(f.is_whitespace()
                    || f.is_letter()
                    || f.is_number()
                    || (marks && f.is_accent_mark()))
            };
            let space = cpt == Some(' ');
            let mut f2 = if space { c.flags(pos + 1) } else { f };
            if other(f2) && f.any() {
                pos += usize::from(space);
                while other(f2) && f2.any() {
                    pos += 1;
                    f2 = c.flags(pos);
                }
                while crlf(c.cpt(pos)) {
                    pos += 1;
                }
                c.add(pos);
                continue;
            }
            let mut n_ws = 0;
            let mut last_crlf_end = 0;
            while c.flags(pos + n_ws).is_whitespace() {
                if crlf(c.cpt(pos + n_ws)) {
                    last_crlf_end = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            // \s*[\r\n]+
            if last_crlf_end > 0 {
                pos = last_crlf_end;
                c.add(pos);
                continue;
            }
            // \s+(?!\S)
            if n_ws > 1 && c.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                c.add(pos);
                continue;
            }
            // \s+
            if n_ws > 0 {
                pos += n_ws;
                c.add(pos);
                continue;
            }
            pos += 1;
            c.add(pos);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreKind, text: &str) -> Vec<String> {
        PreTokenizer::new(kind)
            .split(text)
            .into_iter()
            .map(|r| text[r].to_string())
            .collect()
    }

    #[test]
    fn every_family_compiles_and_tiles_the_text() {
        let text = "Hello  world's 12345 ,.!? \n\n\tüñí 中文 ١٢٣ 🦙 ";
        for kind in [
            PreKind::Default,
            PreKind::Llama3,
            PreKind::DeepseekLlm,
            PreKind::DeepseekCoder,
            PreKind::Falcon,
            PreKind::Starcoder,
            PreKind::Gpt2,
            PreKind::Qwen2,
            PreKind::Qwen35,
        ] {
            let w = words(kind, text);
            assert_eq!(w.concat(), text, "{kind:?}");
            assert!(w.iter().all(|w| !w.is_empty()), "{kind:?}: {w:?}");
        }
    }

    #[test]
    fn llama3_groups_digits_by_three_and_gpt2_keeps_them() {
        // From the regexes: \p{N}{1,3} versus ` ?\p{N}+`.
        assert_eq!(words(PreKind::Llama3, "1234567"), ["123", "456", "7"]);
        assert_eq!(words(PreKind::Gpt2, " 1234567"), [" 1234567"]);
        assert_eq!(words(PreKind::Qwen2, "123"), ["1", "2", "3"]);
        // `\s+(?!\S)` leaves the last space for the next word.
        assert_eq!(words(PreKind::Gpt2, "a   b"), ["a", "  ", " b"]);
        assert_eq!(words(PreKind::Llama3, "I'M"), ["I", "'M"]);
        assert_eq!(words(PreKind::Gpt2, "I'M"), ["I", "'", "M"]);
    }
}
