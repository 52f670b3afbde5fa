//! Hugging Face `tokenizer.json` through the `tokenizers` crate.

use std::collections::HashSet;
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer as HfInner};

use crate::{Tokenizer, TokenizerError};

/// A Hugging Face tokenizer behind the [`Tokenizer`] trait.
///
/// `add_bos = true` runs the file's post-processor (HF's `add_special_tokens`); `false` does
/// not. `parse_special = false` encodes special-token text as plain text (HF's
/// `encode_special_tokens`). Two copies of the HF tokenizer are kept, one per setting of
/// `encode_special_tokens`, so `encode` needs no lock.
///
/// BOS/EOS ids and the add_bos/add_eos defaults are *derived*: the post-processor is run on a
/// probe text and whatever it puts before the text is BOS, after it EOS. When it adds nothing,
/// the ids are looked up by the usual token texts (`<|begin_of_text|>`, `<s>`, ...), because
/// a `tokenizer.json` alone does not name them (that lives in `tokenizer_config.json`).
pub struct HfTokenizer {
    parsing: HfInner,
    plain: HfInner,
    special: HashSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    n_vocab: usize,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("n_vocab", &self.n_vocab)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::HfLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl HfTokenizer {
    /// Load a `tokenizer.json`.
    ///
    /// # Errors
    /// [`TokenizerError::Io`] when unreadable, [`TokenizerError::HfLoad`] when the
    /// `tokenizers` crate rejects it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<HfTokenizer, TokenizerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let inner = HfInner::from_bytes(&bytes).map_err(|e| load_err(path, e))?;
        HfTokenizer::from_inner(inner)
    }

    /// Build GPT-2's tokenizer from OpenAI's `encoder.json` (vocabulary) and `vocab.bpe`
    /// (merges): byte-level BPE with GPT-2's regex, no prefix space, `<|endoftext|>` special.
    ///
    /// # Errors
    /// [`TokenizerError::HfLoad`] when either file cannot be read or parsed.
    pub fn from_gpt2_files(
        encoder_json: impl AsRef<Path>,
        vocab_bpe: impl AsRef<Path>,
    ) -> Result<HfTokenizer, TokenizerError> {
        let (enc, merges) = (encoder_json.as_ref(), vocab_bpe.as_ref());
        let enc_s = enc
            .to_str()
            .ok_or_else(|| load_err(enc, "path is not UTF-8"))?;
        let merges_s = merges
            .to_str()
            .ok_or_else(|| load_err(merges, "path is not UTF-8"))?;
        let bpe = BPE::from_file(enc_s, merges_s)
            .build()
            .map_err(|e| load_err(enc, e))?;
        let mut inner = HfInner::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
        HfTokenizer::from_inner(inner)
    }

    /// Wrap an already-built HF tokenizer.
    ///
    /// # Errors
    /// [`TokenizerError::Hf`] if probing its post-processor fails.
    pub fn from_inner(inner: HfInner) -> Result<HfTokenizer, TokenizerError> {
        let mut parsing = inner;
        parsing.set_encode_special_tokens(false);
        let mut plain = parsing.clone();
        plain.set_encode_special_tokens(true);
        let special: HashSet<u32> = parsing
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let n_vocab = parsing.get_vocab_size(true);

        let probe = "a";
        let enc = |add: bool| -> Result<Vec<u32>, TokenizerError> {
            plain
                .encode(probe, add)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| TokenizerError::Hf(e.to_string()))
        };
        let (bare, decorated) = (enc(false)?, enc(true)?);
        let at = (0..=decorated.len().saturating_sub(bare.len()))
            .find(|&i| decorated[i..].starts_with(&bare))
            .unwrap_or(0);
        let prefix = &decorated[..at];
        let suffix = &decorated[(at + bare.len()).min(decorated.len())..];
        let by_text = |texts: &[&str]| texts.iter().find_map(|t| parsing.token_to_id(t));
        let bos = prefix.first().copied().or_else(|| {
            by_text(&[
                "<|begin_of_text|>",
                "<s>",
                "<bos>",
                "<|startoftext|>",
                "<|endoftext|>",
            ])
        });
        let eos = suffix
            .last()
            .copied()
            .or_else(|| by_text(&["<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"]));
        let eot = by_text(&["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"]);
        let unk = by_text(&["<unk>", "<|unk|>", "[UNK]"]);
        Ok(HfTokenizer {
            add_bos: !prefix.is_empty(),
            add_eos: !suffix.is_empty(),
            parsing,
            plain,
            special,
            bos,
            eos,
            eot,
            unk,
            n_vocab,
        })
    }

    fn check(&self, id: u32) -> Result<(), TokenizerError> {
        if (id as usize) < self.n_vocab {
            Ok(())
        } else {
            Err(TokenizerError::IdOutOfRange {
                id,
                n_vocab: self.n_vocab,
            })
        }
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let inner = if parse_special {
            &self.parsing
        } else {
            &self.plain
        };
        inner
            .encode(text, add_bos)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Hf(e.to_string()))
    }

    fn decode(&self, ids: &[u32], special: bool) -> Result<String, TokenizerError> {
        for &id in ids {
            self.check(id)?;
        }
        self.parsing
            .decode(ids, !special)
            .map_err(|e| TokenizerError::Hf(e.to_string()))
    }

    fn token_to_piece(&self, id: u32, special: bool) -> Result<Vec<u8>, TokenizerError> {
        self.check(id)?;
        if !special && self.special.contains(&id) {
            return Ok(Vec::new());
        }
        self.parsing
            .decode(&[id], false)
            .map(String::into_bytes)
            .map_err(|e| TokenizerError::Hf(e.to_string()))
    }

    fn vocab_size(&self) -> usize {
        self.n_vocab
    }

    fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    fn add_bos_default(&self) -> bool {
        self.add_bos
    }

    fn add_eos_default(&self) -> bool {
        self.add_eos
    }

    fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    fn backend_name(&self) -> String {
        "hf/tokenizer.json".to_string()
    }
}
