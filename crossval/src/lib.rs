//! # bitnet-crossval
//!
//! The library half of bitnet-rs's cross-validation against the C++ references (llama.cpp and
//! Microsoft's bitnet.cpp). The `xtask crossval-per-token` command is a thin layer over three
//! independent pieces, each usable and testable on its own:
//!
//! * [`token_parity`] — the **token parity pre-gate**. Logits are only comparable when both sides
//!   evaluated the same token ids, so the ids are checked first.
//!   [`validate_token_parity`] is O(n) with early exit and performs no heap allocation when the
//!   sequences match (the common, silent case); on a mismatch it returns a
//!   [`TokenParityError`] that renders a report with both sequences, the first differing index,
//!   an aligned diff with decoded pieces, fix-it hints derived only from the evidence, and a
//!   copy-pasteable command. The caller supplies what only it knows (model path, tokenizer path,
//!   template, decoded pieces, BOS/EOS/special ids) through a [`ReportContext`].
//! * [`logits_compare`] — per-position metrics between two row-major logits matrices (cosine,
//!   L2 of the difference, max |Δ|, NMSE, KL(p_cpp ‖ p_rust), top-1 agreement, top-5 overlap)
//!   and a summary. A single cosine tolerance decides whether a position, and the whole
//!   comparison, is within tolerance. Shape problems (different vocabulary sizes, ragged rows,
//!   different position counts) are typed errors, never a silent "cosine 0".
//! * [`receipt`] — a versioned, documented JSON record of one cross-validation run (inputs and
//!   their hashes, token parity block, per-position metrics, decode steps, summary, thresholds,
//!   the C++ backend and its build, the machine), written atomically, plus
//!   [`validate_receipt`], a hand-written checker of the documented schema.
//!
//! These three modules have no dependency on the engine, the tokenizers or the C++ client: they
//! work on plain ids and `f32` slices, which keeps them easy to test exhaustively.
//!
//! [`runner`] drives the whole `crossval-per-token` flow over them, stage by stage, each stage
//! with its own status and exit code ([`RunStatus::exit_code`]); [`vocab_check`] is its
//! `--cpp-model` vocabulary gate, and [`bulk`] the engine of `crossval-tokenizer`.
//!
//! [`sampling`] hands the engine's sampling parameters to the reference in its protocol's
//! form, so the sampler chains of both sides can be compared token for token.
#![deny(missing_docs)]

pub mod bulk;
pub mod comparison;
pub mod config_gate;
pub mod locate;
pub mod logits_compare;
pub mod receipt;
pub mod run_configuration;
pub mod runner;
pub mod sampling;
pub mod stats;
pub mod steps;
pub mod suite;
pub mod token_parity;
pub mod verdict;
pub mod vocab_check;

pub use logits_compare::{
    compare_logits, compare_position, LogitsCompareError, LogitsComparison, LogitsMatrix,
    LogitsSummary, NonFinite, PositionMetrics, Side,
};
pub use receipt::{
    validate_receipt, CompilerInfo, CppBackendInfo, DecodeStep, Environment, Inputs, Receipt,
    ReceiptError, RunStatus, Thresholds, TokenParityBlock, TokenParityStatus, ToolInfo,
    RECEIPT_SCHEMA_VERSION,
};
pub use token_parity::{
    first_difference, shell_quote, should_colour, validate_token_parity, Hint, ReportContext,
    TokenParityChecker, TokenParityError, TokenSide,
};
