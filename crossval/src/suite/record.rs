//! What a suite writes: the run's header (its settings, identical in every shard) and one
//! record per item (a line of the `--out` JSONL file).

use serde::{Deserialize, Serialize};

use crate::logits_compare::LogitsSummary;
use crate::receipt::{RunConfiguration, RunStatus};

/// Version of the header and record layout; bumped when either changes shape (2: the
/// settings state the run configuration).
pub const SUITE_SCHEMA_VERSION: u32 = 2;

/// The settings of a suite run: everything that decides its results. Shards of one suite
/// have equal settings; [`crate::suite::merge`] refuses outputs whose settings differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteSettings {
    /// `prompts` (a JSONL file) or `text` (windows of a text, llama-perplexity's way).
    pub mode: String,
    /// The input file as given.
    pub input: String,
    /// Its sha256.
    pub input_sha256: String,
    /// Items in the whole input (before `--shard`).
    pub n_items: usize,
    /// The engine's model as given.
    pub model: String,
    /// Its sha256.
    pub model_sha256: String,
    /// The reference's model when it is another file (`--cpp-model`).
    pub cpp_model: Option<String>,
    /// Its sha256.
    pub cpp_model_sha256: Option<String>,
    /// The engine's HF tokenizer, when not the model's vocabulary.
    pub tokenizer: Option<String>,
    /// The reference: backend and library, as it reports them.
    pub reference: String,
    /// Context of both sides (text mode: the window).
    pub n_ctx: usize,
    /// The run configuration both sides computed with (KV cache types, flash attention,
    /// micro-batches, threads), as the reference resolved it and the engine too.
    pub run_configuration: RunConfiguration,
    /// Text mode: the most windows evaluated (`--chunks`).
    pub chunks: Option<usize>,
    /// Prompts mode: the template of items that name none.
    pub template: String,
    /// Prompts mode: the system prompt of items that give none.
    pub system_prompt: Option<String>,
    /// BOS forced off on both sides.
    pub no_bos: bool,
    /// Prompts mode: greedy steps of items that give no `max_tokens`.
    pub max_tokens: usize,
    /// Cosine tolerance deciding each position, and so each item.
    pub cos_tol: f64,
}

/// `--shard I/N`: the items whose 0-based index `k` has `k mod N = I − 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based shard number.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Whether the item with 0-based index `k` belongs to this shard.
    pub fn selects(&self, k: usize) -> bool {
        k % self.count == self.index - 1
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N` with `1 ≤ I ≤ N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("--shard {s:?}: expected I/N with 1 ≤ I ≤ N, e.g. 2/3");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The first thing in a suite's side file: what was run, and which shard of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteHeader {
    /// [`SUITE_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The settings (equal in every shard).
    pub settings: SuiteSettings,
    /// This output's shard; `None` for a run over every item.
    pub shard: Option<Shard>,
}

impl SuiteHeader {
    /// The header as every reader sees it: written to JSON and read back. A run summarises
    /// from this form too, so a single run and a merge of its shards start from equal bits.
    pub fn canonical(&self) -> SuiteHeader {
        let json = serde_json::to_string(self).expect("a header serializes");
        serde_json::from_str(&json).expect("a header reads back")
    }
}

/// The greedy steps of a prompt item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GreedySteps {
    /// Steps asked for.
    pub asked: usize,
    /// Steps on which both sides chose the same token within tolerance.
    pub matched: usize,
    /// The first step whose choice or logits differed.
    pub first_mismatch: Option<usize>,
}

/// The token pre-gate's finding for an item whose ids differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenMismatch {
    /// First differing index (or the shorter length when one is a prefix of the other).
    pub first_diff_idx: usize,
    /// The engine's id there, if it has one.
    pub rust_token: Option<u32>,
    /// The reference's id there, if it has one.
    pub cpp_token: Option<i32>,
    /// The engine's piece of that id.
    pub rust_piece: Option<String>,
    /// The reference's piece of that id.
    pub cpp_piece: Option<String>,
}

/// One line of the `--out` JSONL file: an item's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// 0-based position of the item in the input.
    pub index: usize,
    /// The item's id (text mode: `chunk-N`, 1-based as llama-perplexity counts).
    pub id: String,
    /// `ok`, `diverged`, `token_mismatch` or `error`.
    pub status: RunStatus,
    /// Prompts mode: the template applied.
    pub template: Option<String>,
    /// BOS added by the tokenizers.
    pub add_bos: bool,
    /// Special-token text parsed.
    pub parse_special: bool,
    /// The engine's token count.
    pub n_tokens: usize,
    /// The reference's token count.
    pub cpp_n_tokens: usize,
    /// Set when the pre-gate refused the item.
    pub token_mismatch: Option<TokenMismatch>,
    /// The per-position comparison of the evaluated positions.
    pub positions: Option<LogitsSummary>,
    /// Prompts mode: the greedy steps.
    pub greedy: Option<GreedySteps>,
    /// Tokens whose successor is known, so they enter the statistics.
    pub scored_tokens: usize,
    /// The item's own PPL(Q) (our engine) over its scored tokens.
    #[serde(with = "opt_float")]
    pub ppl_q: Option<f64>,
    /// The item's own PPL(base) (the reference).
    #[serde(with = "opt_float")]
    pub ppl_base: Option<f64>,
    /// Mean KL(p_base ‖ p_Q) over the scored tokens.
    #[serde(with = "opt_float")]
    pub mean_kl: Option<f64>,
    /// Largest KL over the scored tokens.
    #[serde(with = "opt_float")]
    pub max_kl: Option<f64>,
    /// What went wrong, for `error`.
    pub error: Option<String>,
    /// Wall-clock seconds the item took (both sides at once).
    pub seconds: f64,
}

/// `Option<f64>` with non-finite values kept (as `"NaN"`, `"inf"`, `"-inf"`), not turned into
/// `null` — which would read back as "not computed".
mod opt_float {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::logits_compare::float_repr;

    #[derive(Serialize, Deserialize)]
    struct Repr(#[serde(with = "float_repr")] f64);

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(Repr).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<Repr>::deserialize(d)?.map(|r| r.0))
    }
}
