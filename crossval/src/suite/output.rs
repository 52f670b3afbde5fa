//! A suite's outputs on disk: `--out FILE.jsonl` and its side file, created or taken up by
//! `--resume`, read back, and merged across the shards of one suite.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::record::{ItemRecord, SuiteHeader, SUITE_SCHEMA_VERSION};
use super::summary::{SuiteSummary, SummaryInput};
use super::tokfile::{self, ItemBlock, TokWriter};
use super::{runtime, usage, Failure, Shard, SuiteConfig};

/// The open outputs, and what an earlier run of the same suite left in them.
pub(super) struct Outputs {
    jsonl: Option<(PathBuf, File)>,
    tok: Option<TokWriter>,
    /// The items an earlier run left (`--resume`).
    pub(super) records: Vec<ItemRecord>,
    /// Their side-file blocks.
    pub(super) blocks: Vec<ItemBlock>,
}

impl Outputs {
    fn none() -> Outputs {
        Outputs {
            jsonl: None,
            tok: None,
            records: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// Write an item's block, then its line (in this order: see [`tokfile`]).
    pub(super) fn write(&mut self, record: &ItemRecord, block: &ItemBlock) -> Result<(), Failure> {
        if let Some(tok) = &mut self.tok {
            tok.write_block(block).map_err(runtime)?;
        }
        if let Some((path, f)) = &mut self.jsonl {
            let line = serde_json::to_string(record).expect("a record serializes") + "\n";
            f.write_all(line.as_bytes())
                .and_then(|()| f.flush())
                .map_err(|e| runtime(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// Stage 6: create the outputs, or take up the ones an interrupted run left.
pub(super) fn open_outputs(cfg: &SuiteConfig, header: &SuiteHeader) -> Result<Outputs, Failure> {
    let Some(out) = &cfg.out else {
        return Ok(Outputs::none());
    };
    let side = tokfile::side_path(out);
    let header_json = serde_json::to_string(header).expect("a header serializes");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| runtime(format!("{}: {e}", p.display()))
    };
    let exists = out.exists();
    if exists && !cfg.resume {
        return Err(usage(format!(
            "{} exists: add --resume to continue it, or remove it (and {}) to start over",
            out.display(),
            side.display()
        )));
    }
    let (records, blocks) = if exists {
        let previous = load_output(out)?;
        if previous.header_json != header_json {
            return Err(usage(format!(
                "{} was written by a different run ({}): --resume continues only the same \
                 suite; use another --out",
                out.display(),
                header_difference(&previous.header_json, &header_json)
            )));
        }
        (previous.records, previous.blocks)
    } else {
        (Vec::new(), Vec::new())
    };
    // Rewrite both files with exactly the items kept (dropping a torn last line or block),
    // then append to them.
    let tmp = |p: &Path| {
        let mut s = p.as_os_str().to_os_string();
        s.push(".tmp");
        PathBuf::from(s)
    };
    let (out_tmp, side_tmp) = (tmp(out), tmp(&side));
    let mut lines = String::new();
    for r in &records {
        lines.push_str(&serde_json::to_string(r).expect("a record serializes"));
        lines.push('\n');
    }
    std::fs::write(&out_tmp, lines).map_err(io(&out_tmp))?;
    let mut w = TokWriter::create(&side_tmp, &header_json).map_err(runtime)?;
    for b in &blocks {
        w.write_block(b).map_err(runtime)?;
    }
    drop(w);
    std::fs::rename(&side_tmp, &side).map_err(io(&side))?;
    std::fs::rename(&out_tmp, out).map_err(io(out))?;
    let len = std::fs::metadata(&side).map_err(io(&side))?.len();
    let jsonl = OpenOptions::new().append(true).open(out).map_err(io(out))?;
    Ok(Outputs {
        jsonl: Some((out.clone(), jsonl)),
        tok: Some(TokWriter::append(&side, len).map_err(runtime)?),
        records,
        blocks,
    })
}

/// The fields two headers disagree on, for the message.
fn header_difference(a: &str, b: &str) -> String {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_default();
    let (a, b) = (parse(a), parse(b));
    let mut diffs = Vec::new();
    if let (Some(sa), Some(sb)) = (a["settings"].as_object(), b["settings"].as_object()) {
        for (k, v) in sa {
            if sb.get(k) != Some(v) {
                diffs.push(format!(
                    "{k}: {v} vs {}",
                    sb.get(k).unwrap_or(&serde_json::Value::Null)
                ));
            }
        }
    }
    if a["shard"] != b["shard"] {
        diffs.push(format!("shard: {} vs {}", a["shard"], b["shard"]));
    }
    if a["schema_version"] != b["schema_version"] {
        diffs.push("schema version".to_string());
    }
    if diffs.is_empty() {
        "its header differs".to_string()
    } else {
        diffs.join("; ")
    }
}

/// A suite output as read back: its header, and the items that have both a line and a block.
struct LoadedOutput {
    header_json: String,
    records: Vec<ItemRecord>,
    blocks: Vec<ItemBlock>,
}

/// Read `out` and its side file, keeping the items that have both (a line cut short by an
/// interruption, or a block whose line was never written, is dropped).
fn load_output(out: &Path) -> Result<LoadedOutput, Failure> {
    let side = tokfile::side_path(out);
    if !side.exists() {
        return Err(usage(format!(
            "{} has no side file {}: it was not written by crossval-suite, or the side file \
             was removed",
            out.display(),
            side.display()
        )));
    }
    let tok = tokfile::read(&side).map_err(runtime)?;
    let text =
        std::fs::read_to_string(out).map_err(|e| runtime(format!("{}: {e}", out.display())))?;
    let mut blocks: BTreeMap<usize, ItemBlock> =
        tok.blocks.into_iter().map(|b| (b.index, b)).collect();
    let mut records = Vec::new();
    let mut kept = Vec::new();
    // Only whole lines: the text after the last newline is an interrupted write.
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    for (n, line) in whole.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: ItemRecord = serde_json::from_str(line).map_err(|e| {
            runtime(format!(
                "{}:{}: not an item record of crossval-suite: {e}",
                out.display(),
                n + 1
            ))
        })?;
        if let Some(b) = blocks.remove(&r.index) {
            kept.push(b);
            records.push(r);
        }
    }
    Ok(LoadedOutput {
        header_json: tok.header_json,
        records,
        blocks: kept,
    })
}

/// Merge the outputs of a suite's shards (`OUT.jsonl` files, each with its side file) into the
/// summary a single run over the same items gives.
///
/// # Errors
/// A usage [`Failure`] when the outputs come from different suites (settings differ), mix a
/// full run with shards or shard counts, repeat a shard or an item, or leave a shard out; a
/// runtime one when a file cannot be read.
pub fn merge(outs: &[PathBuf], worst: usize) -> Result<SuiteSummary, Failure> {
    if outs.is_empty() {
        return Err(usage("give the JSONL outputs of the shards to merge"));
    }
    let mut headers = Vec::new();
    let mut records = Vec::new();
    let mut blocks = Vec::new();
    for out in outs {
        let loaded = load_output(out)?;
        let header: SuiteHeader = serde_json::from_str(&loaded.header_json).map_err(|e| {
            runtime(format!(
                "{}: the side file's header is not a suite header: {e}",
                tokfile::side_path(out).display()
            ))
        })?;
        if header.schema_version != SUITE_SCHEMA_VERSION {
            return Err(usage(format!(
                "{} has schema version {}, this merge reads {SUITE_SCHEMA_VERSION}",
                out.display(),
                header.schema_version
            )));
        }
        headers.push((out, header, loaded.header_json));
        records.extend(loaded.records);
        blocks.extend(loaded.blocks);
    }
    let (first_out, first, _) = &headers[0];
    for (out, h, _) in &headers[1..] {
        if h.settings != first.settings {
            let a = serde_json::to_string(&first).expect("a header serializes");
            let b = serde_json::to_string(&h).expect("a header serializes");
            return Err(usage(format!(
                "{} and {} are not shards of the same suite ({})",
                first_out.display(),
                out.display(),
                header_difference(&a, &b)
            )));
        }
    }
    let shards: Vec<Option<Shard>> = headers.iter().map(|(_, h, _)| h.shard).collect();
    let selected: Vec<usize> =
        match shards[0] {
            None if shards.len() == 1 => (0..first.settings.n_items).collect(),
            None => return Err(usage(
                "a full run's output cannot be merged with others (it already holds every item)",
            )),
            Some(s0) => {
                let mut seen = vec![false; s0.count];
                for (s, (out, _, _)) in shards.iter().zip(&headers) {
                    let s = s.ok_or_else(|| {
                        usage(format!(
                            "{} is a full run, the others shards",
                            out.display()
                        ))
                    })?;
                    if s.count != s0.count {
                        return Err(usage(format!(
                            "{} is shard {s}, but another output is of {} shards",
                            out.display(),
                            s0.count
                        )));
                    }
                    if std::mem::replace(&mut seen[s.index - 1], true) {
                        return Err(usage(format!("shard {s} is given twice")));
                    }
                }
                let absent: Vec<String> = seen
                    .iter()
                    .enumerate()
                    .filter(|(_, &s)| !s)
                    .map(|(i, _)| format!("{}/{}", i + 1, s0.count))
                    .collect();
                if !absent.is_empty() {
                    return Err(usage(format!(
                        "shard {} missing: the summary would not cover the suite",
                        absent.join(", ")
                    )));
                }
                (0..first.settings.n_items).collect()
            }
        };
    let mut seen = std::collections::HashSet::new();
    for r in &records {
        if !seen.insert(r.index) {
            return Err(usage(format!(
                "item {:?} (#{}) is in more than one output",
                r.id, r.index
            )));
        }
    }
    let by_index: BTreeMap<usize, String> =
        records.iter().map(|r| (r.index, r.id.clone())).collect();
    let ids = |k: usize| by_index.get(&k).cloned().unwrap_or_else(|| format!("#{k}"));
    let header = SuiteHeader {
        schema_version: first.schema_version,
        settings: first.settings.clone(),
        shard: None,
    };
    Ok(SuiteSummary::build(&SummaryInput {
        header: &header,
        selected: &selected,
        ids: &ids,
        records: &records,
        blocks: &blocks,
        worst,
    }))
}
