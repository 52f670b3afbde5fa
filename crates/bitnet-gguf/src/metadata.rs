//! Typed access to the metadata a model or tokenizer needs.

use crate::error::GgufError;
use crate::reader::GgufHeader;
use crate::value::{Array, Value};

/// A model's hyper-parameters, read from `general.architecture` and the `<arch>.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelHparams {
    /// `general.architecture` (`llama`, `bitnet`, `bitnet-b1.58`, ...).
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// `<arch>.context_length`.
    pub context_length: Option<u64>,
    /// `<arch>.embedding_length` (hidden size).
    pub embedding_length: Option<u64>,
    /// `<arch>.block_count` (layers).
    pub block_count: Option<u64>,
    /// `<arch>.feed_forward_length`.
    pub feed_forward_length: Option<u64>,
    /// `<arch>.attention.head_count`.
    pub head_count: Option<u64>,
    /// `<arch>.attention.head_count_kv` (defaults to `head_count` in llama.cpp).
    pub head_count_kv: Option<u64>,
    /// `<arch>.attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: Option<f32>,
    /// `<arch>.rope.freq_base`.
    pub rope_freq_base: Option<f32>,
    /// `<arch>.rope.dimension_count`.
    pub rope_dimension_count: Option<u64>,
    /// `<arch>.vocab_size`, when the writer stored it.
    pub vocab_size: Option<u64>,
}

/// The `tokenizer.*` metadata, borrowed from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerMetadata<'a> {
    /// `tokenizer.ggml.model` (`llama` = SPM, `gpt2` = BPE, `bert`, `t5`, ...).
    pub model: Option<&'a str>,
    /// `tokenizer.ggml.pre` (BPE pre-tokenizer name).
    pub pre: Option<&'a str>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Option<&'a [String]>,
    /// `tokenizer.ggml.scores`.
    pub scores: Option<&'a [f32]>,
    /// `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type` values).
    pub token_type: Option<&'a [i32]>,
    /// `tokenizer.ggml.merges` (`"a b"` pairs, rank = index).
    pub merges: Option<&'a [String]>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`, as stored (llama.cpp has defaults when absent).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`, as stored.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`, as stored.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<&'a str>,
}

/// Two ids that llama.cpp's vocabulary loader reads as the same token text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateToken {
    /// The first id with this text.
    pub first: u32,
    /// The later id with the same text.
    pub second: u32,
    /// The text as llama.cpp sees it.
    pub text: String,
}

impl TokenizerMetadata<'_> {
    /// The first two tokens whose texts llama.cpp cannot tell apart, if any.
    ///
    /// llama.cpp (and bitnet.cpp) read each token text as a C string, so it ends at the first
    /// NUL; an empty text is renamed `[EMPTY_<id>]`; then they assert
    /// `id_to_token.size() == token_to_id.size()`, which aborts the process when two ids share
    /// a text. Checking this first turns that abort into an error that names both ids.
    pub fn first_duplicate_token(&self) -> Option<DuplicateToken> {
        let tokens = self.tokens?;
        let mut seen: std::collections::HashMap<std::borrow::Cow<'_, str>, u32> =
            std::collections::HashMap::with_capacity(tokens.len());
        for (id, text) in tokens.iter().enumerate() {
            let id = id as u32;
            let c_text = text.split('\0').next().unwrap_or("");
            let key = if c_text.is_empty() {
                std::borrow::Cow::Owned(format!("[EMPTY_{id}]"))
            } else {
                std::borrow::Cow::Borrowed(c_text)
            };
            if let Some(&first) = seen.get(&key) {
                return Some(DuplicateToken {
                    first,
                    second: id,
                    text: key.into_owned(),
                });
            }
            seen.insert(key, id);
        }
        None
    }
}

impl GgufHeader {
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| GgufError::WrongType {
                key: key.to_string(),
                expected,
                found: v.value_type(),
            }),
        }
    }

    /// A string value; `Ok(None)` when absent, an error when present with another type.
    ///
    /// # Errors
    /// [`GgufError::WrongType`].
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "string", Value::as_str)
    }

    /// A bool value.
    ///
    /// # Errors
    /// [`GgufError::WrongType`].
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "bool", Value::as_bool)
    }

    /// An integer of any stored integer type, as u64.
    ///
    /// # Errors
    /// [`GgufError::WrongType`], or [`GgufError::OutOfRange`] for negative values.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.typed(key, "integer", Value::as_i128)? {
            None => Ok(None),
            Some(v) => u64::try_from(v)
                .map(Some)
                .map_err(|_| GgufError::OutOfRange {
                    key: key.to_string(),
                    value: v,
                    expected: "u64",
                }),
        }
    }

    /// An integer of any stored integer type, as u32.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] or [`GgufError::OutOfRange`].
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        match self.typed(key, "integer", Value::as_i128)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| GgufError::OutOfRange {
                    key: key.to_string(),
                    value: v,
                    expected: "u32",
                }),
        }
    }

    /// A float (f32, f64 or integer) as f32.
    ///
    /// # Errors
    /// [`GgufError::WrongType`].
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "float", |v| v.as_f64().map(|x| x as f32))
    }

    /// An array value.
    ///
    /// # Errors
    /// [`GgufError::WrongType`].
    pub fn get_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        self.typed(key, "array", Value::as_array)
    }

    fn array_of<'a, T: ?Sized>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl FnOnce(&'a Array) -> Option<&'a T>,
    ) -> Result<Option<&'a T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => f(a).map(Some).ok_or_else(|| GgufError::WrongType {
                key: key.to_string(),
                expected,
                found: a.element_type(),
            }),
            Some(v) => Err(GgufError::WrongType {
                key: key.to_string(),
                expected,
                found: v.value_type(),
            }),
        }
    }

    /// `general.architecture`.
    ///
    /// # Errors
    /// [`GgufError::MissingKey`] when absent (a vocabulary-only file may lack it),
    /// [`GgufError::WrongType`] when not a string.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")?
            .ok_or_else(|| GgufError::MissingKey {
                key: "general.architecture".into(),
            })
    }

    /// Hyper-parameters of the model.
    ///
    /// # Errors
    /// As [`GgufHeader::architecture`], or a wrongly typed `<arch>.*` key.
    pub fn hparams(&self) -> Result<ModelHparams, GgufError> {
        let arch = self.architecture()?.to_string();
        let k = |suffix: &str| format!("{arch}.{suffix}");
        Ok(ModelHparams {
            name: self.get_str("general.name")?.map(str::to_string),
            context_length: self.get_u64(&k("context_length"))?,
            embedding_length: self.get_u64(&k("embedding_length"))?,
            block_count: self.get_u64(&k("block_count"))?,
            feed_forward_length: self.get_u64(&k("feed_forward_length"))?,
            head_count: self.get_u64(&k("attention.head_count"))?,
            head_count_kv: self.get_u64(&k("attention.head_count_kv"))?,
            rms_norm_eps: self.get_f32(&k("attention.layer_norm_rms_epsilon"))?,
            rope_freq_base: self.get_f32(&k("rope.freq_base"))?,
            rope_dimension_count: self.get_u64(&k("rope.dimension_count"))?,
            vocab_size: self.get_u64(&k("vocab_size"))?,
            architecture: arch,
        })
    }

    /// The tokenizer metadata.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] for a key stored with the wrong type.
    pub fn tokenizer(&self) -> Result<TokenizerMetadata<'_>, GgufError> {
        fn strings(a: &Array) -> Option<&[String]> {
            match a {
                Array::String(v) => Some(v.as_slice()),
                _ => None,
            }
        }
        Ok(TokenizerMetadata {
            model: self.get_str("tokenizer.ggml.model")?,
            pre: self.get_str("tokenizer.ggml.pre")?,
            tokens: self.array_of("tokenizer.ggml.tokens", "array of string", strings)?,
            scores: self.array_of("tokenizer.ggml.scores", "array of f32", |a| match a {
                Array::F32(v) => Some(v.as_slice()),
                _ => None,
            })?,
            token_type: self.array_of(
                "tokenizer.ggml.token_type",
                "array of i32",
                |a| match a {
                    Array::I32(v) => Some(v.as_slice()),
                    _ => None,
                },
            )?,
            merges: self.array_of("tokenizer.ggml.merges", "array of string", strings)?,
            bos_id: self.get_u32("tokenizer.ggml.bos_token_id")?,
            eos_id: self.get_u32("tokenizer.ggml.eos_token_id")?,
            eot_id: self.get_u32("tokenizer.ggml.eot_token_id")?,
            unk_id: self.get_u32("tokenizer.ggml.unknown_token_id")?,
            pad_id: self.get_u32("tokenizer.ggml.padding_token_id")?,
            add_bos: self.get_bool("tokenizer.ggml.add_bos_token")?,
            add_eos: self.get_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: self.get_bool("tokenizer.ggml.add_space_prefix")?,
            chat_template: self.get_str("tokenizer.chat_template")?,
        })
    }
}
