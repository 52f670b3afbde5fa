//! The vocabulary embedded in a GGUF file, tokenized exactly as llama.cpp does.

use std::path::Path;

use bitnet_gguf::{GgufFile, GgufHeader};
use rustc_hash::FxHashMap;

use crate::bpe::{BpeModel, Scratch};
use crate::pretok::{PreKind, PreTokenizer};
use crate::unicode::char_to_byte;
use crate::vocab::{attr, Vocab};
use crate::{spm, Tokenizer, TokenizerError};

/// Which merging algorithm the vocabulary uses (`tokenizer.ggml.model`).
#[derive(Debug)]
enum Model {
    /// `llama`: SentencePiece-style, score-ordered merges over characters.
    Spm(spm::Segmenter),
    /// `gpt2`: byte-level BPE with a pre-tokenizer.
    Bpe {
        model: Box<BpeModel>,
        pre: PreTokenizer,
    },
}

/// The special-token ids llama.cpp tracks (`None` = `LLAMA_TOKEN_NULL`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialIds {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// End of turn (from `tokenizer.ggml.eot_token_id`, else detected by text as llama.cpp does).
    pub eot: Option<u32>,
    /// End of message (`<|eom_id|>`).
    pub eom: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Padding token.
    pub pad: Option<u32>,
}

/// A tokenizer built from a GGUF file's `tokenizer.*` metadata, behaviourally identical to
/// llama.cpp's `llama_vocab` for the SPM (`llama`) and BPE (`gpt2`) models.
///
/// Invariant: every id it returns is below [`Tokenizer::vocab_size`].
#[derive(Debug)]
pub struct GgufTokenizer {
    vocab: Vocab,
    model: Model,
    pre_name: Option<String>,
    special: SpecialIds,
    eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first.
    special_cache: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    warnings: Vec<String>,
}

/// What a `tokenizer.ggml.pre` name means to llama.cpp: the family, and the flags it sets.
struct PreSpec {
    kind: PreKind,
    ignore_merges: bool,
    add_bos: bool,
    clean_spaces: bool,
}

/// Pre-tokenizer names this crate implements, with llama.cpp's meaning.
const SUPPORTED_PRE: &[&str] = &[
    "default",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
    "deepseek-llm",
    "deepseek-coder",
    "falcon",
    "mpt",
    "starcoder",
    "refact",
    "command-r",
    "smollm",
    "codeshell",
    "exaone",
    "minerva-7b",
    "mellum2",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "exaone4",
    "olmo",
    "jais",
    "trillion",
    "granite-docling",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "stablelm2",
    "hunyuan",
    "solar-open",
    "grok-2",
    "qwen35",
];

/// Names llama.cpp knows whose pre-tokenizer this crate does not implement.
const KNOWN_UNSUPPORTED_PRE: &[&str] = &[
    "minicpm5",
    "deepseek-v3",
    "spark2_5",
    "youtu",
    "jais-2",
    "gemma4",
    "granite-embed-multi-311m",
    "mmbert",
    "sarvam-moe",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "whitespace",
    "poro-chat",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "viking",
    "tekken",
    "bloom",
    "gpt3-finnish",
    "exaone-moe",
    "chameleon",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "granite-embed-multi-97m",
    "tiny_aya",
    "cohere2moe",
    "superbpe",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "hunyuan-dense",
    "hy_v4",
    "joyai-llm",
    "kimi-k2",
    "ufakzeka",
    "afmoe",
    "laguna",
    "minimax-m2",
];

fn pre_spec(name: &str) -> Option<PreSpec> {
    let spec = |kind, ignore_merges, add_bos, clean_spaces| PreSpec {
        kind,
        ignore_merges,
        add_bos,
        clean_spaces,
    };
    Some(match name {
        "default" => spec(PreKind::Default, false, false, true),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => spec(PreKind::Llama3, true, true, true),
        // Same expression as Llama-3, without its ignore_merges / add_bos.
        "dbrx" | "smaug-bpe" => spec(PreKind::Llama3, false, false, true),
        "deepseek-llm" => spec(PreKind::DeepseekLlm, false, false, false),
        "deepseek-coder" => spec(PreKind::DeepseekCoder, false, false, false),
        "falcon" => spec(PreKind::Falcon, false, false, true),
        "mpt" => spec(PreKind::Gpt2, false, false, true),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            spec(PreKind::Starcoder, false, false, true)
        }
        "command-r" | "smollm" => spec(PreKind::Starcoder, false, false, false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "olmo" | "jais" => {
            spec(PreKind::Gpt2, false, false, true)
        }
        "trillion" | "granite-docling" => spec(PreKind::Gpt2, false, false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
        | "grok-2" => spec(PreKind::Qwen2, false, false, false),
        "megrez" | "stablelm2" => spec(PreKind::Qwen2, false, false, true),
        "qwen35" => spec(PreKind::Qwen35, false, false, false),
        _ => return None,
    })
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Most distinct words (SPM pieces, BPE words) remembered during one `encode` call.
const CACHE_LIMIT: usize = 1 << 16;

/// C's `isspace` in the "C" locale, which llama.cpp's lstrip/rstrip use.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// A piece of the input after special-token partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frag {
    /// Byte range of the input, still to be tokenized.
    Text(usize, usize),
    /// A special token found in the input.
    Token(u32),
}

impl GgufTokenizer {
    /// Open `path` and build its embedded tokenizer.
    ///
    /// # Errors
    /// [`TokenizerError::Gguf`] when the file is not valid GGUF; otherwise as
    /// [`GgufTokenizer::from_header`].
    pub fn open(path: impl AsRef<Path>) -> Result<GgufTokenizer, TokenizerError> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|source| TokenizerError::Gguf {
            path: path.to_path_buf(),
            source,
        })?;
        GgufTokenizer::from_header(&file, path)
    }

    /// Build the tokenizer from parsed GGUF metadata; `path` only names the file in errors.
    ///
    /// Unknown or missing `tokenizer.ggml.pre` values fall back to the default pre-tokenizer
    /// with a warning on stderr (also kept in [`GgufTokenizer::warnings`]).
    ///
    /// # Errors
    /// [`TokenizerError::UnsupportedModel`] for anything but `llama` and `gpt2`,
    /// [`TokenizerError::UnsupportedPreTokenizer`] for a llama.cpp pre-tokenizer this crate
    /// does not implement, [`TokenizerError::InvalidMerges`] for a BPE vocabulary without
    /// (well-formed) merges, [`TokenizerError::InvalidVocab`] for missing or inconsistent
    /// arrays or token texts llama.cpp cannot tell apart, [`TokenizerError::Gguf`] for wrongly
    /// typed keys.
    pub fn from_header(header: &GgufHeader, path: &Path) -> Result<GgufTokenizer, TokenizerError> {
        let p = || path.to_path_buf();
        let gguf_err = |source| TokenizerError::Gguf { path: p(), source };
        let invalid = |reason: String| TokenizerError::InvalidVocab { path: p(), reason };
        let meta = header.tokenizer().map_err(gguf_err)?;
        let mut warnings = Vec::new();

        let model_name = meta.model.ok_or_else(|| {
            invalid("no `tokenizer.ggml.model` key: this GGUF file carries no tokenizer".into())
        })?;
        if let Some(d) = meta.first_duplicate_token() {
            return Err(invalid(format!(
                "tokens {} and {} both read as {:?} (llama.cpp ends a token text at its first NUL \
                 byte and renames an empty one [EMPTY_<id>]); llama.cpp asserts that token texts \
                 are distinct and aborts on this vocabulary",
                d.first, d.second, d.text
            )));
        }
        let is_spm = match model_name {
            "llama" => true,
            "gpt2" => false,
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    path: p(),
                    model: other.to_string(),
                })
            }
        };

        // Flags and defaults, in llama.cpp's order: type defaults, then pre-tokenizer, then keys.
        let mut add_bos;
        let mut add_eos = false;
        let mut add_space_prefix;
        let clean_spaces;
        let mut pre_spec_found = None;
        if is_spm {
            add_bos = true;
            add_space_prefix = true;
            clean_spaces = false;
        } else {
            add_space_prefix = false;
            let spec = match meta.pre {
                None => {
                    warnings.push(
                        "missing pre-tokenizer type (`tokenizer.ggml.pre`), using 'default': \
                         generation quality will be degraded; consider regenerating the model"
                            .to_string(),
                    );
                    pre_spec("default")
                }
                Some(name) => match pre_spec(name) {
                    Some(spec) => Some(spec),
                    None if KNOWN_UNSUPPORTED_PRE.contains(&name) => {
                        return Err(TokenizerError::UnsupportedPreTokenizer {
                            path: p(),
                            pre: name.to_string(),
                            supported: SUPPORTED_PRE.join(", "),
                        })
                    }
                    None => {
                        warnings.push(format!(
                            "unknown pre-tokenizer type '{name}', using 'default': tokens will \
                             probably differ from the model's own tokenizer"
                        ));
                        pre_spec("default")
                    }
                },
            }
            .expect("'default' is a known pre-tokenizer");
            add_bos = spec.add_bos;
            clean_spaces = spec.clean_spaces;
            pre_spec_found = Some(spec);
        }
        if let Some(v) = meta.add_space_prefix {
            add_space_prefix = v;
        }

        // Tokens, scores, types.
        let tokens = meta
            .tokens
            .ok_or_else(|| invalid("no `tokenizer.ggml.tokens` array".into()))?;
        let n = tokens.len();
        if n == 0 {
            return Err(invalid("`tokenizer.ggml.tokens` is empty".into()));
        }
        if u32::try_from(n).is_err() {
            return Err(invalid(format!("{n} tokens do not fit 32-bit ids")));
        }
        let scores = match meta.scores {
            Some(s) if s.len() < n => {
                return Err(invalid(format!(
                    "`tokenizer.ggml.scores` has {} entries for {n} tokens",
                    s.len()
                )))
            }
            Some(s) => s[..n].to_vec(),
            None => vec![0.0; n],
        };
        let mut attrs = match meta.token_type {
            Some(t) if t.len() < n => {
                return Err(invalid(format!(
                    "`tokenizer.ggml.token_type` has {} entries for {n} tokens",
                    t.len()
                )))
            }
            Some(t) => t[..n].iter().map(|&t| attr::from_token_type(t)).collect(),
            None => vec![attr::NORMAL; n],
        };
        if let Some(i) = tokens.iter().position(String::is_empty) {
            warnings.push(format!(
                "empty token at index {i} (renamed [EMPTY_{i}], as llama.cpp does)"
            ));
        }

        // Special ids: type defaults, disabled when out of range, then the file's keys.
        let in_range = |id: u32| (id as usize) < n;
        let (mut bos, mut eos, mut unk) = if is_spm {
            (Some(1), Some(2), Some(0))
        } else {
            (Some(11), Some(11), None)
        };
        let mut eot = None;
        let mut eom = None;
        let mut pad = None;
        let mut fim: [Option<u32>; 6] = [None; 6];
        let opt_u32 = |key: &str| header.get_u32(key).ok().flatten();
        let mut apply = |slot: &mut Option<u32>, value: Option<u32>, key: &str| {
            if slot.is_some_and(|id| !in_range(id)) {
                *slot = None;
            }
            if let Some(v) = value {
                if in_range(v) {
                    *slot = Some(v);
                } else {
                    warnings.push(format!(
                        "bad special token `{key}` = {v} (vocabulary has {n}), ignored"
                    ));
                }
            }
        };
        apply(&mut bos, meta.bos_id, "tokenizer.ggml.bos_token_id");
        apply(&mut eos, meta.eos_id, "tokenizer.ggml.eos_token_id");
        apply(&mut eot, meta.eot_id, "tokenizer.ggml.eot_token_id");
        apply(
            &mut eom,
            opt_u32("tokenizer.ggml.eom_token_id"),
            "tokenizer.ggml.eom_token_id",
        );
        apply(&mut unk, meta.unk_id, "tokenizer.ggml.unknown_token_id");
        apply(&mut pad, meta.pad_id, "tokenizer.ggml.padding_token_id");
        for (slot, keys) in fim.iter_mut().zip([
            &[
                "tokenizer.ggml.fim_pre_token_id",
                "tokenizer.ggml.prefix_token_id",
            ][..],
            &[
                "tokenizer.ggml.fim_suf_token_id",
                "tokenizer.ggml.suffix_token_id",
            ][..],
            &[
                "tokenizer.ggml.fim_mid_token_id",
                "tokenizer.ggml.middle_token_id",
            ][..],
            &["tokenizer.ggml.fim_pad_token_id"][..],
            &["tokenizer.ggml.fim_rep_token_id"][..],
            &["tokenizer.ggml.fim_sep_token_id"][..],
        ]) {
            for key in keys {
                apply(slot, opt_u32(key), key);
            }
        }
        if let Some(v) = meta.add_bos {
            add_bos = v;
        }
        if let Some(v) = meta.add_eos {
            add_eos = v;
        }

        let vocab = Vocab::new(tokens, scores, std::mem::take(&mut attrs));
        let mut attrs = vocab.attrs.clone();
        // The (text, id) pairs of llama.cpp's token_to_id map: the last id of each text.
        let unique: Vec<(u32, &str)> = vocab
            .iter()
            .filter(|&(i, t)| vocab.id(t) == Some(i))
            .collect();

        // Detect EOT / EOM / FIM tokens by text when the file does not name them; such tokens
        // are forced to control type. llama.cpp takes the first match in its hash map's
        // iteration order, which is unspecified; we take the first text of the list that the
        // vocabulary has (`<|eot_id|>` before `<|end_of_text|>`, `<|im_end|>` before
        // `<|endoftext|>`), which is what llama.cpp reports for Llama-3 and ChatML models.
        let mut detect = |slot: &mut Option<u32>, list: &[&str]| {
            if slot.is_none() {
                if let Some(id) = list.iter().find_map(|t| vocab.id(t)) {
                    *slot = Some(id);
                    attrs[id as usize] |= attr::CONTROL;
                }
            }
        };
        detect(&mut eot, EOT_TEXTS);
        detect(&mut eom, &["<|eom_id|>"]);
        detect(&mut fim[0], FIM_PRE_TEXTS);
        detect(&mut fim[1], FIM_SUF_TEXTS);
        detect(&mut fim[2], FIM_MID_TEXTS);
        detect(&mut fim[3], FIM_PAD_TEXTS);
        detect(&mut fim[4], FIM_REP_TEXTS);
        detect(&mut fim[5], FIM_SEP_TEXTS);
        // Every text of the EOG list starts with '<', '[' or '_'.
        let candidate = |t: &str| matches!(t.as_bytes().first(), Some(b'<' | b'[' | b'_'));
        for &(id, text) in &unique {
            let a = &mut attrs[id as usize];
            if *a & attr::CONTROL != 0 && text.contains("unused") {
                *a |= attr::UNUSED;
            }
        }
        let mut eog: Vec<u32> = fim[3..].iter().flatten().copied().collect();
        for &(id, text) in unique.iter().filter(|(_, t)| candidate(t)) {
            if EOG_TEXTS.contains(&text) {
                eog.push(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        for &(id, text) in &unique {
            if matches!(
                text,
                "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
            ) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        let find = |eog: &[u32], t: &str| eog.iter().find(|&&id| vocab.text(id) == t).copied();
        let (has_return, has_call, has_flush) = (
            find(&eog, "<|return|>").is_some(),
            find(&eog, "<|call|>").or(find(&eog, "<|calls|>")).is_some(),
            find(&eog, "<|flush|>").is_some(),
        );
        if let Some(end) = find(&eog, "<|end|>") {
            if has_call && (has_return || has_flush) {
                eog.retain(|&id| id != end);
                attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        if find(&eog, "<|tool_response>")
            .or(find(&eog, "<|plamo:eos|>"))
            .is_some()
        {
            if let Some(s) = find(&eog, "</s>") {
                eog.retain(|&id| id != s);
                attrs[s as usize] = attr::NORMAL;
            }
        }

        let mut special_cache: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_cache.sort_by_key(|&id| std::cmp::Reverse(vocab.text(id).len()));

        // Per-model attribute fix-ups llama.cpp applies by name.
        let general_name = header
            .get_str("general.name")
            .ok()
            .flatten()
            .unwrap_or("")
            .to_lowercase();
        let arch = header
            .get_str("general.architecture")
            .ok()
            .flatten()
            .unwrap_or("");
        let pre_raw = meta.pre.unwrap_or("");
        let mut set = |text: &str, bit: u32, on: bool| {
            if let Some(id) = vocab.id(text) {
                let a = &mut attrs[id as usize];
                *a = if on { *a | bit } else { *a & !bit };
            }
        };
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code", "mmbert"]
            .iter()
            .any(|s| pre_raw.contains(s))
            || ["nomic-bert-moe", "jina-bert-v3"]
                .iter()
                .any(|s| arch.contains(s))
        {
            set("<mask>", attr::LSTRIP, true);
        } else if general_name.contains("phi-3") || general_name.contains("phi3") {
            for &id in &special_cache {
                attrs[id as usize] |= attr::RSTRIP;
            }
            let mut set = |text: &str, on: bool| {
                if let Some(id) = vocab.id(text) {
                    let a = &mut attrs[id as usize];
                    *a = if on {
                        *a | attr::RSTRIP
                    } else {
                        *a & !attr::RSTRIP
                    };
                }
            };
            set("</s>", true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(t, false);
            }
        } else if general_name.contains("modern-bert") {
            set("[MASK]", attr::LSTRIP, true);
        }
        let mut vocab = vocab;
        vocab.attrs = attrs;

        let model = if is_spm {
            Model::Spm(spm::Segmenter::new(&vocab))
        } else {
            let spec = pre_spec_found.expect("set for BPE");
            let merges = meta.merges.ok_or_else(|| TokenizerError::InvalidMerges {
                path: p(),
                reason:
                    "no `tokenizer.ggml.merges` array: a BPE (`gpt2`) vocabulary needs its merges"
                        .into(),
            })?;
            let model = BpeModel::new(&vocab, merges, spec.ignore_merges).map_err(|bad| {
                TokenizerError::InvalidMerges {
                    path: p(),
                    reason: format!(
                        "merge #{} {:?} is not two tokens separated by a space",
                        bad.index, bad.entry
                    ),
                }
            })?;
            Model::Bpe {
                model: Box::new(model),
                pre: PreTokenizer::new(spec.kind),
            }
        };

        for w in &warnings {
            eprintln!("warning: {}: {w}", path.display());
        }
        Ok(GgufTokenizer {
            vocab,
            model,
            pre_name: meta.pre.map(str::to_string),
            special: SpecialIds {
                bos,
                eos,
                eot,
                eom,
                unk,
                pad,
            },
            eog,
            special_cache,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            warnings,
        })
    }

    /// Warnings produced while loading (also printed to stderr then).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The `tokenizer.ggml.pre` value as stored (`None` when absent; SPM vocabularies may
    /// store one, which llama.cpp ignores, and so does this crate).
    pub fn pre_tokenizer(&self) -> Option<&str> {
        self.pre_name.as_deref()
    }

    /// The special-token ids, resolved as llama.cpp resolves them.
    pub fn special_ids(&self) -> &SpecialIds {
        &self.special
    }

    /// The raw bytes of `ids` as llama.cpp's `llama_vocab::detokenize(ids, special)` gives
    /// them (leading-space removal and `clean_spaces` included, no lossy UTF-8 conversion):
    /// DRY's sequence breakers are matched against these bytes.
    ///
    /// # Errors
    /// [`TokenizerError::IdOutOfRange`] for an id outside the vocabulary.
    pub fn detokenize_bytes(&self, ids: &[u32], special: bool) -> Result<Vec<u8>, TokenizerError> {
        for &id in ids {
            self.check(id)?;
        }
        Ok(self.detokenize(ids, special))
    }

    /// End-of-generation ids (EOS, EOT, EOM and the tokens llama.cpp recognises by text).
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether SPM text gets a leading space (`add_space_prefix`).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Whether decoding applies llama.cpp's `clean_spaces` pass (" ." → ".", " 's" → "'s", ...),
    /// which most BPE vocabularies enable and SPM, Qwen2, DeepSeek, Command-R and others do not.
    pub fn clean_spaces(&self) -> bool {
        self.clean_spaces
    }

    /// Number of BPE merges (0 for SPM).
    pub fn n_merges(&self) -> usize {
        match &self.model {
            Model::Spm(_) => 0,
            Model::Bpe { model, .. } => model.n_merges(),
        }
    }

    /// The text of token `id` as stored in the vocabulary (`▁` and GPT-2 byte characters
    /// included), or `None` when out of range.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.vocab.len()).then(|| self.vocab.text(id))
    }

    /// The longest token text of the vocabulary in bytes (at least 1). No token stands for more
    /// input text than its stored text (`▁` is 3 bytes for 1 space, a GPT-2 byte character 1–2
    /// bytes for 1 byte, `<0x0A>` 6 for 1), so `ceil(len / longest)` tokens is a lower bound on
    /// the tokenization of `len` bytes: a context check that needs no tokenizing.
    pub fn longest_token_bytes(&self) -> usize {
        (0..self.vocab.len())
            .map(|id| self.vocab.text(id as u32).len())
            .max()
            .unwrap_or(0)
            .max(1)
    }

    /// llama.cpp's `tokenizer_st_partition`: cut `text` at special tokens.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Frag> {
        let mut frags = vec![Frag::Text(0, text.len())];
        let bytes = text.as_bytes();
        for &id in &self.special_cache {
            let a = self.vocab.attr(id);
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = self.vocab.text(id);
            if !frags
                .iter()
                .any(|f| matches!(*f, Frag::Text(s, e) if text[s..e].contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Frag::Text(mut start, end) = f else {
                    next.push(f);
                    continue;
                };
                loop {
                    let Some(found) = text[start..end].find(needle) else {
                        if end > start {
                            next.push(Frag::Text(start, end));
                        }
                        break;
                    };
                    let m = start + found;
                    let mut left_end = m;
                    if a & attr::LSTRIP != 0 {
                        while left_end > start && c_isspace(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > start {
                        next.push(Frag::Text(start, left_end));
                    }
                    next.push(Frag::Token(id));
                    start = m + needle.len();
                    if a & attr::RSTRIP != 0 {
                        while start < end && c_isspace(bytes[start]) {
                            start += 1;
                        }
                    }
                    if start >= end {
                        break;
                    }
                }
            }
            frags = next;
        }
        frags
    }

    /// llama.cpp's `token_to_piece` with `lstrip` leading spaces removed.
    fn piece(&self, id: u32, special: bool, lstrip: bool) -> Vec<u8> {
        let a = self.vocab.attr(id);
        let text = self.vocab.text(id);
        let special_attr = attr::UNKNOWN | attr::CONTROL;
        if !special && a & special_attr != 0 {
            return Vec::new();
        }
        let mut out: Vec<u8> = if a & (special_attr | attr::USER_DEFINED) != 0 {
            text.as_bytes().to_vec()
        } else if a & attr::NORMAL != 0 {
            match self.model {
                Model::Spm(_) => text.replace('\u{2581}', " ").into_bytes(),
                Model::Bpe { .. } => decode_gpt2_text(text),
            }
        } else if a & attr::BYTE != 0 {
            let hex = text.get(3..5).unwrap_or("");
            vec![u8::from_str_radix(hex, 16).unwrap_or(0)]
        } else {
            Vec::new()
        };
        if lstrip && out.first() == Some(&b' ') {
            out.remove(0);
        }
        out
    }

    /// llama.cpp's `detokenize(tokens, remove_special = false, unparse_special = special)`.
    fn detokenize(&self, ids: &[u32], special: bool) -> Vec<u8> {
        let mut text = Vec::new();
        let mut remove_space = self.add_space_prefix;
        for &id in ids {
            text.extend(self.piece(id, special, remove_space));
            remove_space = false;
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        text
    }

    fn check(&self, id: u32) -> Result<(), TokenizerError> {
        if (id as usize) < self.vocab.len() {
            Ok(())
        } else {
            Err(TokenizerError::IdOutOfRange {
                id,
                n_vocab: self.vocab.len(),
            })
        }
    }
}

/// GPT-2 byte characters back to bytes; characters outside the map become
/// `[UNK_BYTE_0x..TEXT]` exactly as llama.cpp's `llama_decode_text` writes them.
fn decode_gpt2_text(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp's `clean_spaces` pass: " ?" " !" " ." " ," lose the space; " ' " loses both
/// spaces; " 's" " 'm" " 're" " 've" lose the space.
fn clean_up_spaces(text: &mut Vec<u8>) {
    if text.is_empty() {
        return;
    }
    // Pass 1: space before ? ! . ,
    let mut out = vec![text[0]];
    for i in 1..text.len() {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }
    // Pass 2: a lone apostrophe between spaces.
    // (llama.cpp overwrites the skipped space with NUL in place; later checks see the NUL.)
    let mut t = std::mem::take(&mut out);
    out.push(t[0]);
    let mut i = 1;
    while i < t.len() {
        let x = t[i];
        if x == b'\'' && i + 1 < t.len() && t[i - 1] == b' ' && t[i + 1] == b' ' {
            out.pop();
            out.push(x);
            t[i + 1] = 0;
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }
    // Pass 3: contractions.
    let t = std::mem::take(&mut out);
    out.push(t[0]);
    for i in 1..t.len() {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < t.len() {
            let x1 = t[i + 1];
            let drop = matches!(x1, b's' | b'm')
                || (i + 2 < t.len() && matches!((x1, t[i + 2]), (b'r', b'e') | (b'v', b'e')));
            if drop {
                out.pop();
            }
        }
        out.push(x);
    }
    *text = out;
}

impl Tokenizer for GgufTokenizer {
    fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos && self.add_bos {
            out.push(
                self.special
                    .bos
                    .ok_or(TokenizerError::MissingSpecialToken { which: "BOS" })?,
            );
        }
        let frags = if text.is_empty() {
            Vec::new()
        } else {
            self.partition(text, parse_special)
        };
        match &self.model {
            Model::Spm(segmenter) => {
                let mut prev_special = true;
                let mut buf = String::new();
                let mut scratch = spm::Scratch::default();
                let scratch = &mut scratch;
                let mut cache: FxHashMap<Box<str>, Vec<u32>> = FxHashMap::default();
                for f in frags {
                    match f {
                        Frag::Text(s, e) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('\u{2581}');
                            }
                            for c in text[s..e].chars() {
                                buf.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            segmenter.for_each(&buf, |piece| {
                                if let Some(ids) = cache.get(piece) {
                                    out.extend_from_slice(ids);
                                    return;
                                }
                                let at = out.len();
                                spm::tokenize(&self.vocab, piece, scratch, &mut out);
                                if cache.len() < CACHE_LIMIT {
                                    cache.insert(piece.into(), out[at..].to_vec());
                                }
                            });
                            prev_special = false;
                        }
                        Frag::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
                if !scratch.lost.is_empty() {
                    return Err(TokenizerError::Unrepresentable {
                        chars: std::mem::take(&mut scratch.lost).replace('\u{2581}', " "),
                        llama_cpp: "abort (std::out_of_range looking up a <0xXX> byte token)",
                    });
                }
            }
            Model::Bpe { model, pre } => {
                let mut scratch = Scratch::default();
                let mut cache: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
                for f in frags {
                    match f {
                        Frag::Text(s, e) => {
                            let fragment = &text[s..e];
                            for w in pre.split(fragment) {
                                let word = &fragment[w];
                                if let Some(ids) = cache.get(word) {
                                    out.extend_from_slice(ids);
                                    continue;
                                }
                                let at = out.len();
                                model.tokenize_word(
                                    &self.vocab,
                                    word.as_bytes(),
                                    &mut scratch,
                                    &mut out,
                                );
                                if cache.len() < CACHE_LIMIT {
                                    cache.insert(word, out[at..].to_vec());
                                }
                            }
                        }
                        Frag::Token(id) => out.push(id),
                    }
                }
                if !scratch.lost.is_empty() {
                    return Err(TokenizerError::Unrepresentable {
                        chars: scratch.lost,
                        llama_cpp: "drop them silently",
                    });
                }
            }
        }
        if add_bos && self.add_eos {
            out.push(
                self.special
                    .eos
                    .ok_or(TokenizerError::MissingSpecialToken { which: "EOS" })?,
            );
        }
        Ok(out)
    }

    fn decode(&self, ids: &[u32], special: bool) -> Result<String, TokenizerError> {
        for &id in ids {
            self.check(id)?;
        }
        Ok(String::from_utf8_lossy(&self.detokenize(ids, special)).into_owned())
    }

    fn token_to_piece(&self, id: u32, special: bool) -> Result<Vec<u8>, TokenizerError> {
        self.check(id)?;
        Ok(self.piece(id, special, false))
    }

    fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    fn bos_id(&self) -> Option<u32> {
        self.special.bos
    }

    fn eos_id(&self) -> Option<u32> {
        self.special.eos
    }

    fn eot_id(&self) -> Option<u32> {
        self.special.eot
    }

    fn unk_id(&self) -> Option<u32> {
        self.special.unk
    }

    fn add_bos_default(&self) -> bool {
        self.add_bos
    }

    fn add_eos_default(&self) -> bool {
        self.add_eos
    }

    fn is_special(&self, id: u32) -> bool {
        (id as usize) < self.vocab.len()
            && self.vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0
    }

    fn backend_name(&self) -> String {
        match (&self.model, &self.pre_name) {
            (Model::Spm(_), _) => "gguf/spm".to_string(),
            (Model::Bpe { .. }, Some(pre)) => format!("gguf/bpe (pre={pre})"),
            (Model::Bpe { .. }, None) => "gguf/bpe (pre=default)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SPM segmentation (cut before `▁` where no token joins across) must not change any
    /// result: compare with one llama.cpp-style session over the whole fragment.
    #[test]
    fn spm_segmentation_is_exact() {
        for name in ["llama-spm", "phi-3"] {
            let tok = GgufTokenizer::open(bitnet_fixtures::vocab(name)).unwrap();
            let Model::Spm(segmenter) = &tok.model else {
                panic!("{name} is SPM")
            };
            let mut texts: Vec<String> = bitnet_fixtures::test_vectors(name)
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            texts.push(texts.concat());
            let mut scratch = spm::Scratch::default();
            for text in texts {
                let escaped = format!("\u{2581}{}", text.replace(' ', "\u{2581}"));
                let mut whole = Vec::new();
                spm::tokenize(&tok.vocab, &escaped, &mut scratch, &mut whole);
                let mut pieces = Vec::new();
                let mut n = 0;
                segmenter.for_each(&escaped, |p| {
                    n += 1;
                    spm::tokenize(&tok.vocab, p, &mut scratch, &mut pieces)
                });
                assert_eq!(pieces, whole, "{name}: {text:?}");
                assert!(n >= 1);
            }
        }
    }

    #[test]
    fn clean_spaces_follows_llama_cpp_passes() {
        let clean = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            clean_up_spaces(&mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(clean("Hello , world ."), "Hello, world.");
        assert_eq!(clean("a ' b"), "a'b");
        // The space after a removed " ' " is overwritten with NUL in place, so the next
        // lone apostrophe no longer sees a space before it.
        assert_eq!(clean("a ' ' b"), "a'' b");
        assert_eq!(clean("it 's we 're I 'd"), "it's we're I 'd");
    }
}
