//! One item, start to finish, on a [`ComparisonSession`]: the pre-gate, the logits of both
//! sides, the per-position comparison, the statistics of each scored token, the greedy steps.

use bitnet_inference::perplexity::Plan;
use bitnet_tokenizers::Tokenizer;

use crate::comparison::{ComparisonSession, SideError};
use crate::logits_compare::{compare_logits, compare_position, LogitsComparison, LogitsMatrix};
use crate::receipt::RunStatus;
use crate::stats::{CorpusStats, TokenStat};
use crate::token_parity::first_difference;

use super::record::{GreedySteps, ItemRecord, TokenMismatch};
use super::tokfile::ItemBlock;

/// Why an item could not be finished: either side failed, or the logits could not be
/// compared (different vocabularies, say).
#[derive(Debug, thiserror::Error)]
pub(super) enum ItemError {
    #[error(transparent)]
    Side(#[from] SideError),
    #[error("{0}")]
    Compare(String),
}

/// A prompt item, formatted and tokenized by the engine's tokenizer.
pub(super) struct PromptJob<'a> {
    pub index: usize,
    pub id: &'a str,
    pub formatted: &'a str,
    pub template: &'a str,
    pub add_bos: bool,
    pub parse_special: bool,
    pub rust_tokens: &'a [u32],
    pub max_tokens: usize,
}

/// A text window.
pub(super) struct WindowJob<'a> {
    pub index: usize,
    pub id: &'a str,
    pub plan: &'a Plan,
    pub rust_tokens: &'a [u32],
    pub cpp_tokens: &'a [i32],
    pub bos: Option<u32>,
}

fn piece_of(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The record of an item whose ids differ at `idx`.
fn mismatch(
    session: &mut ComparisonSession,
    tokenizer: &dyn Tokenizer,
    rust: &[u32],
    cpp: &[i32],
    idx: usize,
) -> TokenMismatch {
    let rust_token = rust.get(idx).copied();
    let cpp_token = cpp.get(idx).copied();
    TokenMismatch {
        first_diff_idx: idx,
        rust_token,
        cpp_token,
        rust_piece: piece_of(rust_token.and_then(|t| tokenizer.token_to_piece(t, true).ok())),
        cpp_piece: piece_of(
            cpp_token.and_then(|t| session.reference().token_to_piece(t, true).ok()),
        ),
    }
}

fn blank_record(index: usize, id: &str) -> ItemRecord {
    ItemRecord {
        index,
        id: id.to_string(),
        status: RunStatus::Ok,
        template: None,
        add_bos: false,
        parse_special: false,
        n_tokens: 0,
        cpp_n_tokens: 0,
        token_mismatch: None,
        positions: None,
        greedy: None,
        scored_tokens: 0,
        ppl_q: None,
        ppl_base: None,
        mean_kl: None,
        max_kl: None,
        error: None,
        seconds: 0.0,
    }
}

/// The record and block of an item that met an error.
pub(super) fn error_result(index: usize, id: &str, message: String) -> (ItemRecord, ItemBlock) {
    let mut r = blank_record(index, id);
    r.status = RunStatus::Error;
    r.error = Some(message);
    (r, ItemBlock::empty(index))
}

/// Fill the comparison and statistics fields of `r` and build the block.
fn finish(
    r: &mut ItemRecord,
    cmp: &LogitsComparison,
    tokens: Vec<TokenStat>,
    greedy_ok: bool,
) -> ItemBlock {
    let stats = CorpusStats::from_tokens(&tokens);
    r.scored_tokens = tokens.len();
    r.ppl_q = stats.map(|s| s.ppl_q.value);
    r.ppl_base = stats.map(|s| s.ppl_base.value);
    r.mean_kl = stats.map(|s| s.kl.mean.value);
    r.max_kl = stats.map(|s| s.kl.maximum);
    r.positions = Some(cmp.summary.clone());
    r.status = if cmp.ok() && greedy_ok {
        RunStatus::Ok
    } else {
        RunStatus::Diverged
    };
    ItemBlock {
        index: r.index,
        min_cosine: cmp.summary.min_cosine,
        max_abs_diff: cmp.summary.max_abs_diff,
        tokens,
    }
}

fn compare(
    rust: &[f32],
    cpp: &[f32],
    n_vocab_rust: usize,
    n_vocab_cpp: usize,
    cos_tol: f64,
) -> Result<LogitsComparison, ItemError> {
    let err = |e: crate::logits_compare::LogitsCompareError| ItemError::Compare(e.to_string());
    compare_logits(
        LogitsMatrix::rust(rust, n_vocab_rust).map_err(err)?,
        LogitsMatrix::cpp(cpp, n_vocab_cpp).map_err(err)?,
        cos_tol,
    )
    .map_err(err)
}

/// Run a prompt item.
pub(super) fn run_prompt(
    session: &mut ComparisonSession,
    tokenizer: &dyn Tokenizer,
    job: &PromptJob<'_>,
    cos_tol: f64,
) -> Result<(ItemRecord, ItemBlock), ItemError> {
    let mut r = blank_record(job.index, job.id);
    r.template = Some(job.template.to_string());
    r.add_bos = job.add_bos;
    r.parse_special = job.parse_special;
    let rust = job.rust_tokens;
    let cpp = session
        .reference()
        .tokenize(job.formatted, job.add_bos, job.parse_special)
        .map_err(SideError::from)?;
    r.n_tokens = rust.len();
    r.cpp_n_tokens = cpp.len();
    if let Some(idx) = first_difference(rust, &cpp) {
        r.status = RunStatus::TokenMismatch;
        r.token_mismatch = Some(mismatch(session, tokenizer, rust, &cpp, idx));
        return Ok((r, ItemBlock::empty(job.index)));
    }
    let (ours, theirs) = session.eval_both(rust, None)?;
    let v = session.model().config().n_vocab;
    let cmp = compare(&ours, &theirs.data, v, theirs.n_vocab, cos_tol)?;
    let tokens = (0..rust.len().saturating_sub(1))
        .map(|t| {
            let (q, b) = (&ours[t * v..(t + 1) * v], theirs.row(t));
            TokenStat::from_metrics(&cmp.positions[t], q, b, rust[t + 1])
                .map_err(|e| ItemError::Compare(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Greedy steps: each side picks its own arg-max; both are fed the token while they agree.
    let n = rust.len();
    let mut greedy = GreedySteps {
        asked: job.max_tokens,
        matched: 0,
        first_mismatch: None,
    };
    let mut rows = (ours[(n - 1) * v..].to_vec(), theirs.row(n - 1).to_vec());
    for step in 0..job.max_tokens {
        let r_tok = bitnet_inference::ops::argmax(&rows.0);
        let c_tok = bitnet_inference::ops::argmax(&rows.1);
        if r_tok != c_tok {
            greedy.first_mismatch = Some(step);
            break;
        }
        rows = session.step_both(r_tok)?;
        let m = compare_position(n + step, &rows.0, &rows.1, cos_tol)
            .map_err(|e| ItemError::Compare(e.to_string()))?;
        if m.ok {
            greedy.matched += 1;
        } else if greedy.first_mismatch.is_none() {
            greedy.first_mismatch = Some(step);
        }
    }
    let greedy_ok = greedy.first_mismatch.is_none();
    r.greedy = Some(greedy);
    let block = finish(&mut r, &cmp, tokens, greedy_ok);
    Ok((r, block))
}

/// Run a text window.
pub(super) fn run_window(
    session: &mut ComparisonSession,
    tokenizer: &dyn Tokenizer,
    job: &WindowJob<'_>,
    chunk: usize,
    cos_tol: f64,
) -> Result<(ItemRecord, ItemBlock), ItemError> {
    let mut r = blank_record(job.index, job.id);
    let plan = job.plan;
    r.add_bos = job.bos.is_some();
    let rust = plan.window(job.rust_tokens, chunk);
    let start = chunk * plan.n_ctx();
    let len = job.cpp_tokens.len();
    let cpp = &job.cpp_tokens[start.min(len)..(start + plan.n_ctx()).min(len)];
    r.n_tokens = rust.len();
    r.cpp_n_tokens = cpp.len();
    if let Some(idx) = first_difference(rust, cpp) {
        r.status = RunStatus::TokenMismatch;
        r.token_mismatch = Some(mismatch(session, tokenizer, rust, cpp, idx));
        return Ok((r, ItemBlock::empty(job.index)));
    }
    let window = plan.evaluated_window(job.rust_tokens, chunk, job.bos);
    let outputs = plan.output_positions();
    let (ours, theirs) = session.eval_both(&window, Some(&outputs))?;
    let v = session.model().config().n_vocab;
    let mut cmp = compare(&ours, &theirs.data, v, theirs.n_vocab, cos_tol)?;
    // Rows are the output positions: report the window's own positions.
    let first = plan.first();
    for p in &mut cmp.positions {
        p.position += first;
    }
    if let Some(p) = &mut cmp.summary.first_divergent_position {
        *p += first;
    }
    let tokens = plan
        .targets(job.rust_tokens, chunk)
        .iter()
        .enumerate()
        .map(|(j, &next)| {
            let (q, b) = (&ours[j * v..(j + 1) * v], theirs.row(j));
            TokenStat::from_metrics(&cmp.positions[j], q, b, next)
                .map_err(|e| ItemError::Compare(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let block = finish(&mut r, &cmp, tokens, true);
    Ok((r, block))
}
