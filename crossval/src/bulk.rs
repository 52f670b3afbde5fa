//! Bulk tokenizer parity (`xtask crossval-tokenizer`): many texts through the Rust tokenizer
//! and the C++ reference's, with the same `add_bos` / `parse_special`, counting mismatches.
//!
//! The random texts are built from fragments of the classes that break tokenizers in
//! practice, so a few thousand of them cover what llama.cpp's own random tokenizer test does.

use bitnet_cpp::{CppError, Session};
use bitnet_tokenizers::{Tokenizer, TokenizerError};
use serde::Serialize;

use crate::token_parity::first_difference;

/// Fragments of each failure class; a random text strings a few of them together.
const CLASSES: &[&[&str]] = &[
    // whitespace runs
    &[
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        " \n ",
        "\t\t ",
        "\r\n",
        "    \n\n\n",
    ],
    // NBSP, BOM, zero-width and other odd spaces
    &[
        "\u{a0}", "\u{feff}", "\u{200b}", "\u{2009}", "\u{3000}", "a\u{a0}b",
    ],
    // control characters
    &["\u{0}", "\u{1}", "\u{7}", "\u{1b}[0m", "\u{7f}", "\u{85}"],
    // digit runs
    &[
        "1",
        "12",
        "123",
        "1234",
        "12345",
        "3.14159",
        "2024-11-26",
        "1,000,000",
        "007",
        "99999999999",
    ],
    // contractions
    &[
        "don't", "I'm", "we've", "they'll", "she'd", "it's", "Y'ALL'RE", "O'Neil", "'s", "'t",
    ],
    // accents and combining marks
    &[
        "café",
        "cafe\u{301}",
        "naïve",
        "Ångström",
        "ñandú",
        "Zürich",
        "e\u{300}\u{316}",
        "Ελληνικά",
        "Русский",
    ],
    // CJK
    &[
        "中文",
        "日本語のテキスト",
        "한국어",
        "漢字かなカナ",
        "。",
        "、",
    ],
    // emoji and ZWJ sequences
    &[
        "🙂",
        "👍🏽",
        "👨\u{200d}👩\u{200d}👧",
        "🏳\u{fe0f}\u{200d}🌈",
        "❤️",
        "🇫🇷",
    ],
    // outside the BMP
    &["𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𐍈", "𝟘𝟙𝟚", "𠀀", "😀😃😄"],
    // special-token strings inside ordinary text
    &[
        "<s>",
        "</s>",
        "<unk>",
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<pad>",
    ],
    // ordinary words and punctuation
    &[
        "Hello",
        "world",
        "the",
        "quick brown fox",
        "tokenizer",
        ",",
        ".",
        "!?",
        "(x)",
        "\"quoted\"",
        "snake_case",
        "CamelCase",
        "https://example.com/a?b=c",
        "C++",
        "->",
        "==",
        "#include",
    ],
];

/// `n` texts from `seed`: the same arguments always give the same texts.
pub fn random_texts(n: usize, seed: u64) -> Vec<String> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..n)
        .map(|_| {
            let parts = 1 + next() % 8;
            let mut s = String::new();
            for _ in 0..parts {
                let class = CLASSES[(next() % CLASSES.len() as u64) as usize];
                s.push_str(class[(next() % class.len() as u64) as usize]);
                if next() % 3 == 0 {
                    s.push(' ');
                }
            }
            s
        })
        .collect()
}

/// One text whose tokens differ.
#[derive(Debug, Clone, Serialize)]
pub struct TextMismatch {
    /// Index of the text in the input.
    pub index: usize,
    /// The text.
    pub text: String,
    /// Rust ids.
    pub rust: Vec<u32>,
    /// C++ ids.
    pub cpp: Vec<i32>,
    /// First differing index.
    pub first_diff_idx: usize,
}

/// The result of a bulk comparison.
#[derive(Debug, Clone, Serialize)]
pub struct BulkReport {
    /// Texts compared.
    pub total: usize,
    /// Texts whose tokens differ.
    pub mismatches: usize,
    /// The first `max_report` mismatches.
    pub reported: Vec<TextMismatch>,
}

/// Errors of a bulk comparison.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// The Rust tokenizer failed.
    #[error("Rust tokenizer: {0}")]
    Rust(#[from] TokenizerError),
    /// The C++ reference failed.
    #[error(transparent)]
    Cpp(#[from] CppError),
}

/// Tokenize every text on both sides with the same flags and count the differences.
///
/// # Errors
/// The first failure of either tokenizer.
pub fn compare_texts(
    rust: &dyn Tokenizer,
    cpp: &mut Session,
    texts: &[String],
    add_bos: bool,
    parse_special: bool,
    max_report: usize,
    mut progress: impl FnMut(usize),
) -> Result<BulkReport, BulkError> {
    let mut report = BulkReport {
        total: texts.len(),
        mismatches: 0,
        reported: Vec::new(),
    };
    for (index, text) in texts.iter().enumerate() {
        let r = rust.encode(text, add_bos, parse_special)?;
        let c = cpp.tokenize(text, add_bos, parse_special)?;
        if let Some(first_diff_idx) = first_difference(&r, &c) {
            report.mismatches += 1;
            if report.reported.len() < max_report {
                report.reported.push(TextMismatch {
                    index,
                    text: text.clone(),
                    rust: r,
                    cpp: c,
                    first_diff_idx,
                });
            }
        }
        progress(index + 1);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_texts_are_deterministic_and_cover_every_class() {
        let a = random_texts(2000, 7);
        assert_eq!(a, random_texts(2000, 7));
        assert_ne!(a, random_texts(2000, 8));
        for class in CLASSES {
            assert!(
                a.iter().any(|t| class.iter().any(|f| t.contains(f))),
                "class {:?} never drawn",
                class[0]
            );
        }
    }
}
