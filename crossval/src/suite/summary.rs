//! The summary of a suite — one run, or the merged shards of one — and its text and JSON forms.
//!
//! It is a function of the header (in its [canonical](SuiteHeader::canonical) form), the item
//! records' statuses and ids, and the side files' blocks, taken in item order; no timing, no
//! shard number, no number read back from JSON. That is what makes a merge of shards equal,
//! byte for byte, to the summary of a single run over the same items.

use serde::{Deserialize, Serialize};

use crate::logits_compare::float_repr;
use crate::receipt::RunStatus;
use crate::stats::{CorpusStats, TokenStat};

use super::record::{ItemRecord, SuiteHeader, SuiteSettings};
use super::tokfile::ItemBlock;

/// The verdict of a whole suite. Each has one exit code ([`SuiteStatus::exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuiteStatus {
    /// Every item ran, its tokens matched and every position was within tolerance.
    Ok,
    /// Some item's logits (or greedy steps) diverged; none failed otherwise.
    Diverged,
    /// Some item failed the token pre-gate.
    TokenMismatch,
    /// Some items of the run were never run (an interrupted output: `--resume` it).
    Incomplete,
    /// Some item met a runtime error.
    Error,
}

impl SuiteStatus {
    /// 0 ok, 1 diverged, 2 token mismatch or incomplete, 3 error.
    pub fn exit_code(self) -> u8 {
        match self {
            SuiteStatus::Ok => 0,
            SuiteStatus::Diverged => 1,
            SuiteStatus::TokenMismatch | SuiteStatus::Incomplete => 2,
            SuiteStatus::Error => 3,
        }
    }
}

/// How many items ended how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCounts {
    /// Items the run covers (a shard's share, or all of them).
    pub selected: usize,
    /// Items with a result.
    pub finished: usize,
    /// Within tolerance.
    pub matched: usize,
    /// Diverged.
    pub diverged: usize,
    /// Refused by the pre-gate.
    pub token_mismatch: usize,
    /// Runtime errors.
    pub error: usize,
}

/// An item named in the summary, with what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedItem {
    /// Its index in the input.
    pub index: usize,
    /// Its id.
    pub id: String,
    /// One line on what happened.
    pub detail: String,
}

/// One of the items with the largest KL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorstItem {
    /// Its index in the input.
    pub index: usize,
    /// Its id.
    pub id: String,
    /// Its status.
    pub status: RunStatus,
    /// Its scored tokens.
    pub scored_tokens: usize,
    /// Its largest KL.
    #[serde(with = "float_repr")]
    pub max_kl: f64,
    /// Its mean KL.
    #[serde(with = "float_repr")]
    pub mean_kl: f64,
    /// Its smallest cosine.
    #[serde(with = "float_repr")]
    pub min_cosine: f64,
}

/// The summary (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteSummary {
    /// The verdict.
    pub status: SuiteStatus,
    /// Its exit code.
    pub exit_code: u8,
    /// What was run.
    pub settings: SuiteSettings,
    /// Item counts.
    pub items: ItemCounts,
    /// Every item the pre-gate refused.
    pub token_mismatches: Vec<NamedItem>,
    /// Every item that diverged.
    pub diverged: Vec<NamedItem>,
    /// Every item that met an error.
    pub errors: Vec<NamedItem>,
    /// Items of the run without a result.
    pub missing: Vec<NamedItem>,
    /// llama-perplexity's statistics over every scored token of every compared item (none
    /// when no token was scored).
    pub stats: Option<CorpusStats>,
    /// The items with the largest KL, worst first.
    pub worst_by_kl: Vec<WorstItem>,
}

/// Everything a summary is made of: the canonical header, and the records and blocks of the
/// finished items (any order; the summary sorts them by index).
pub struct SummaryInput<'a> {
    /// The header (canonical form); for a merge, any shard's with `shard` cleared.
    pub header: &'a SuiteHeader,
    /// Indices of the items the run covers, ascending.
    pub selected: &'a [usize],
    /// The ids of every item of the input, by index.
    pub ids: &'a dyn Fn(usize) -> String,
    /// The records of the finished items.
    pub records: &'a [ItemRecord],
    /// Their blocks (one per record).
    pub blocks: &'a [ItemBlock],
    /// How many items to list by KL.
    pub worst: usize,
}

fn mismatch_detail(r: &ItemRecord) -> String {
    match &r.token_mismatch {
        Some(m) => {
            let side = |id: Option<String>, piece: &Option<String>| match (id, piece) {
                (Some(id), Some(p)) => format!("{id} {p:?}"),
                (Some(id), None) => id,
                (None, _) => "(end)".to_string(),
            };
            format!(
                "first difference at token {}: Rust {} vs C++ {}",
                m.first_diff_idx,
                side(m.rust_token.map(|t| t.to_string()), &m.rust_piece),
                side(m.cpp_token.map(|t| t.to_string()), &m.cpp_piece)
            )
        }
        None => "the token sequences differ".to_string(),
    }
}

fn divergence_detail(r: &ItemRecord, block: Option<&ItemBlock>) -> String {
    let cos = block.map_or(f64::NAN, |b| b.min_cosine);
    let first = r
        .positions
        .as_ref()
        .and_then(|p| p.first_divergent_position);
    match (first, &r.greedy) {
        (Some(p), _) => format!("first divergent position {p}, min cos {cos:.6}"),
        (None, Some(g)) => match g.first_mismatch {
            Some(s) => format!("greedy step {s} differs (prompt positions within tolerance)"),
            None => "diverged".to_string(),
        },
        (None, None) => "diverged".to_string(),
    }
}

impl SuiteSummary {
    /// Build the summary.
    pub fn build(input: &SummaryInput<'_>) -> SuiteSummary {
        let mut records: Vec<&ItemRecord> = input.records.iter().collect();
        records.sort_by_key(|r| r.index);
        let mut blocks: Vec<&ItemBlock> = input.blocks.iter().collect();
        blocks.sort_by_key(|b| b.index);
        let block_of = |index: usize| {
            blocks
                .binary_search_by_key(&index, |b| b.index)
                .ok()
                .map(|i| blocks[i])
        };
        let named = |r: &ItemRecord, detail: String| NamedItem {
            index: r.index,
            id: r.id.clone(),
            detail,
        };
        let mut token_mismatches = Vec::new();
        let mut diverged = Vec::new();
        let mut errors = Vec::new();
        let mut matched = 0;
        for r in &records {
            match r.status {
                RunStatus::Ok => matched += 1,
                RunStatus::Diverged => {
                    diverged.push(named(r, divergence_detail(r, block_of(r.index))))
                }
                RunStatus::TokenMismatch => token_mismatches.push(named(r, mismatch_detail(r))),
                _ => errors.push(named(
                    r,
                    r.error
                        .clone()
                        .unwrap_or_else(|| r.status_name().to_string()),
                )),
            }
        }
        let finished: Vec<usize> = records.iter().map(|r| r.index).collect();
        let missing: Vec<NamedItem> = input
            .selected
            .iter()
            .filter(|i| finished.binary_search(i).is_err())
            .map(|&index| NamedItem {
                index,
                id: (input.ids)(index),
                detail: "not run".to_string(),
            })
            .collect();
        let tokens: Vec<TokenStat> = blocks
            .iter()
            .flat_map(|b| b.tokens.iter().copied())
            .collect();
        let status = if !errors.is_empty() {
            SuiteStatus::Error
        } else if !missing.is_empty() {
            SuiteStatus::Incomplete
        } else if !token_mismatches.is_empty() {
            SuiteStatus::TokenMismatch
        } else if !diverged.is_empty() {
            SuiteStatus::Diverged
        } else {
            SuiteStatus::Ok
        };
        SuiteSummary {
            status,
            exit_code: status.exit_code(),
            settings: input.header.settings.clone(),
            items: ItemCounts {
                selected: input.selected.len(),
                finished: records.len(),
                matched,
                diverged: diverged.len(),
                token_mismatch: token_mismatches.len(),
                error: errors.len(),
            },
            token_mismatches,
            diverged,
            errors,
            missing,
            stats: CorpusStats::from_tokens(&tokens),
            worst_by_kl: worst_by_kl(&records, &block_of, input.worst),
        }
    }

    /// The summary as one JSON document (pretty-printed, with a final newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary serializes") + "\n"
    }

    /// The summary as text.
    pub fn render_text(&self) -> String {
        let st = &self.settings;
        let mut s = format!(
            "suite: {} {} ({} items), model {}, reference {}, n_ctx {}, cos tol {}\n",
            st.mode, st.input, st.n_items, st.model, st.reference, st.n_ctx, st.cos_tol
        );
        if let Some(cpp) = &st.cpp_model {
            s.push_str(&format!("reference model: {cpp}\n"));
        }
        s.push_str(&format!("run configuration: {}\n", st.run_configuration));
        let c = &self.items;
        s.push_str(&format!(
            "items: {} of {} run: {} matched, {} diverged, {} token mismatches, {} errors\n",
            c.finished, c.selected, c.matched, c.diverged, c.token_mismatch, c.error
        ));
        for (title, list) in [
            (
                "token mismatches (the pre-gate refused them)",
                &self.token_mismatches,
            ),
            ("diverged", &self.diverged),
            ("errors", &self.errors),
            ("not run", &self.missing),
        ] {
            if list.is_empty() {
                continue;
            }
            s.push_str(&format!("{title}:\n"));
            for item in list {
                s.push_str(&format!(
                    "  {} (#{}): {}\n",
                    item.id, item.index, item.detail
                ));
            }
        }
        s.push('\n');
        match &self.stats {
            Some(stats) => {
                s.push_str(&format!("scored tokens: {}\n", stats.n_tokens));
                s.push_str(&stats.render_text());
            }
            None => s.push_str("scored tokens: 0 (no statistics)\n"),
        }
        if !self.worst_by_kl.is_empty() {
            s.push_str("\nworst items by KL:\n");
            for w in &self.worst_by_kl {
                s.push_str(&format!(
                    "  {} (#{}): max KL {:.3e}, mean KL {:.3e}, min cos {:.6}, {} tokens\n",
                    w.id, w.index, w.max_kl, w.mean_kl, w.min_cosine, w.scored_tokens
                ));
            }
        }
        s.push('\n');
        s.push_str(match self.status {
            SuiteStatus::Ok => "✓ match: every item within tolerance\n",
            SuiteStatus::Diverged => "✗ diverged: some items' logits differ beyond tolerance\n",
            SuiteStatus::TokenMismatch => {
                "✗ token mismatch: the pre-gate refused some items (listed above)\n"
            }
            SuiteStatus::Incomplete => "✗ incomplete: some items were not run (--resume)\n",
            SuiteStatus::Error => "✗ error: some items failed (listed above)\n",
        });
        s
    }
}

impl ItemRecord {
    fn status_name(&self) -> &'static str {
        match self.status {
            RunStatus::Ok => "ok",
            RunStatus::Diverged => "diverged",
            RunStatus::TokenMismatch => "token_mismatch",
            _ => "error",
        }
    }
}

fn worst_by_kl<'a>(
    records: &[&ItemRecord],
    block_of: &dyn Fn(usize) -> Option<&'a ItemBlock>,
    n: usize,
) -> Vec<WorstItem> {
    let mut items: Vec<WorstItem> = records
        .iter()
        .filter_map(|r| {
            let b = block_of(r.index)?;
            if b.tokens.is_empty() {
                return None;
            }
            let max_kl = b
                .tokens
                .iter()
                .map(|t| t.kl)
                .fold(f64::NEG_INFINITY, |a, k| {
                    if k.is_nan() || a.is_nan() {
                        f64::NAN
                    } else {
                        a.max(k)
                    }
                });
            let mean_kl = b.tokens.iter().map(|t| t.kl).sum::<f64>() / b.tokens.len() as f64;
            Some(WorstItem {
                index: r.index,
                id: r.id.clone(),
                status: r.status,
                scored_tokens: b.tokens.len(),
                max_kl,
                mean_kl,
                min_cosine: b.min_cosine,
            })
        })
        .collect();
    // Largest first (NaN counts as the largest); ties by input order.
    items.sort_by(|a, b| {
        b.max_kl
            .total_cmp(&a.max_kl)
            .then(b.mean_kl.total_cmp(&a.mean_kl))
            .then(a.index.cmp(&b.index))
    });
    items.truncate(n);
    items
}
