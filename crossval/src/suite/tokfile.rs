//! The token-statistics side file, `OUT.jsonl.tokstats`: exactly what the summary needs, kept
//! next to a suite's JSONL output so that shards merge into the summary a single run gives,
//! bit for bit.
//!
//! JSON numbers do not come back with the bits they were written with (serde_json's reader is
//! not exact), and the statistics are sums over every token of every item; so the per-token
//! values travel here as raw `f64` bits. The layout, little-endian:
//!
//! ```text
//! 8 bytes   magic "BNTOKST1"
//! u32       length H of the header; H bytes: the run's header as JSON (SuiteHeader)
//! blocks    one per finished item, in the order the items finished:
//!   u64       the item's index in the input
//!   f64       its smallest cosine over the compared positions (NaN when none)
//!   f64       its largest |Δ| (NaN when none)
//!   u32       n, its scored tokens
//!   n × 33    f64 nll_Q, f64 nll_base, f64 KL, f64 Δp, u8 same top (0/1)
//! ```
//!
//! An item's block is written and flushed before its JSONL line, so after an interruption the
//! side file has at most one block more than the JSONL has lines, and a torn last block is
//! recognised by its length; [`read`] reports how many bytes are whole.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::stats::TokenStat;

/// What follows a suite's `--out` path to name its side file.
pub const SUFFIX: &str = ".tokstats";

const MAGIC: &[u8; 8] = b"BNTOKST1";
const TOKEN_BYTES: usize = 33;
const BLOCK_HEAD_BYTES: usize = 8 + 8 + 8 + 4;

/// The side file of the JSONL output `out`.
pub fn side_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(SUFFIX);
    PathBuf::from(s)
}

/// What one item leaves for the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemBlock {
    /// The item's 0-based index in the input.
    pub index: usize,
    /// Smallest cosine over its compared positions (NaN when nothing was compared).
    pub min_cosine: f64,
    /// Largest |Δ| over its compared positions (NaN when nothing was compared).
    pub max_abs_diff: f64,
    /// Its scored tokens, in order.
    pub tokens: Vec<TokenStat>,
}

impl ItemBlock {
    /// The block of an item that compared nothing (refused by the pre-gate, or failed).
    pub fn empty(index: usize) -> ItemBlock {
        ItemBlock {
            index,
            min_cosine: f64::NAN,
            max_abs_diff: f64::NAN,
            tokens: Vec::new(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.index as u64).to_le_bytes());
        out.extend_from_slice(&self.min_cosine.to_le_bytes());
        out.extend_from_slice(&self.max_abs_diff.to_le_bytes());
        out.extend_from_slice(&(self.tokens.len() as u32).to_le_bytes());
        for t in &self.tokens {
            for v in [t.nll_q, t.nll_base, t.kl, t.p_diff] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.push(u8::from(t.same_top));
        }
    }
}

/// Why a side file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokFileError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a side file of this version, or its contents make no sense.
    #[error("{}: {what}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// A side file as read: its header (JSON text), its whole blocks, and how many of its bytes
/// they span (anything after is a torn block).
#[derive(Debug, Clone)]
pub struct TokFile {
    /// The header, as the JSON text that was written.
    pub header_json: String,
    /// The whole blocks, in file order.
    pub blocks: Vec<ItemBlock>,
    /// Bytes up to the end of the last whole block.
    pub whole_len: u64,
    /// Bytes in the file.
    pub file_len: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TokFileError + '_ {
    move |source| TokFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn f64_at(b: &[u8], at: usize) -> f64 {
    f64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Read a side file; a torn last block is left out (see [`TokFile::whole_len`]).
///
/// # Errors
/// [`TokFileError`] when the file cannot be read, is not a side file, or has an impossible
/// header or block.
pub fn read(path: &Path) -> Result<TokFile, TokFileError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    let corrupt = |what: String| TokFileError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(corrupt(format!(
            "not a suite token-statistics file (no {:?} at the start)",
            String::from_utf8_lossy(MAGIC)
        )));
    }
    let h = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let header = bytes
        .get(12..12 + h)
        .ok_or_else(|| corrupt(format!("the header of {h} bytes is cut off")))?;
    let header_json = String::from_utf8(header.to_vec())
        .map_err(|_| corrupt("the header is not UTF-8".into()))?;
    let mut at = 12 + h;
    let mut blocks = Vec::new();
    while bytes.len() - at >= BLOCK_HEAD_BYTES {
        let index = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(bytes[at + 24..at + 28].try_into().expect("4 bytes")) as usize;
        let end = at + BLOCK_HEAD_BYTES + n * TOKEN_BYTES;
        if end > bytes.len() {
            break;
        }
        let mut tokens = Vec::with_capacity(n);
        for k in 0..n {
            let t = at + BLOCK_HEAD_BYTES + k * TOKEN_BYTES;
            let same_top = match bytes[t + 32] {
                0 => false,
                1 => true,
                other => {
                    return Err(corrupt(format!(
                        "item {index}: token {k} has a same-top byte of {other}"
                    )))
                }
            };
            tokens.push(TokenStat {
                nll_q: f64_at(&bytes, t),
                nll_base: f64_at(&bytes, t + 8),
                kl: f64_at(&bytes, t + 16),
                p_diff: f64_at(&bytes, t + 24),
                same_top,
            });
        }
        blocks.push(ItemBlock {
            index: usize::try_from(index)
                .map_err(|_| corrupt(format!("item index {index} is impossible")))?,
            min_cosine: f64_at(&bytes, at + 8),
            max_abs_diff: f64_at(&bytes, at + 16),
            tokens,
        });
        at = end;
    }
    Ok(TokFile {
        header_json,
        blocks,
        whole_len: at as u64,
        file_len: bytes.len() as u64,
    })
}

/// Appends blocks to a side file.
pub struct TokWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl TokWriter {
    /// Create (or truncate) `path` and write the magic and `header_json`.
    ///
    /// # Errors
    /// [`TokFileError::Io`].
    pub fn create(path: &Path, header_json: &str) -> Result<TokWriter, TokFileError> {
        let file = File::create(path).map_err(io_err(path))?;
        let mut w = TokWriter {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
        };
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
        head.extend_from_slice(header_json.as_bytes());
        w.write_flushed(&head)?;
        Ok(w)
    }

    /// Continue `path` after its first `keep` bytes (the end of its last block to keep);
    /// anything after them is cut.
    ///
    /// # Errors
    /// [`TokFileError::Io`].
    pub fn append(path: &Path, keep: u64) -> Result<TokWriter, TokFileError> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        file.set_len(keep).map_err(io_err(path))?;
        file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
        Ok(TokWriter {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
        })
    }

    /// Write one item's block and flush it to the operating system.
    ///
    /// # Errors
    /// [`TokFileError::Io`].
    pub fn write_block(&mut self, block: &ItemBlock) -> Result<(), TokFileError> {
        let mut bytes = Vec::with_capacity(BLOCK_HEAD_BYTES + block.tokens.len() * TOKEN_BYTES);
        block.encode(&mut bytes);
        self.write_flushed(&bytes)
    }

    fn write_flushed(&mut self, bytes: &[u8]) -> Result<(), TokFileError> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.flush())
            .map_err(io_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(index: usize, n: usize) -> ItemBlock {
        ItemBlock {
            index,
            min_cosine: 0.5 + index as f64,
            max_abs_diff: 1e-7,
            tokens: (0..n)
                .map(|k| TokenStat {
                    nll_q: 0.1 * k as f64 + 1.0 / 3.0,
                    nll_base: f64::MIN_POSITIVE,
                    kl: if k == 1 { f64::NAN } else { 1e-300 },
                    p_diff: -0.0,
                    same_top: k % 2 == 0,
                })
                .collect(),
        }
    }

    fn same_bits(a: &ItemBlock, b: &ItemBlock) -> bool {
        let bits = |t: &TokenStat| {
            (
                t.nll_q.to_bits(),
                t.nll_base.to_bits(),
                t.kl.to_bits(),
                t.p_diff.to_bits(),
                t.same_top,
            )
        };
        a.index == b.index
            && a.min_cosine.to_bits() == b.min_cosine.to_bits()
            && a.max_abs_diff.to_bits() == b.max_abs_diff.to_bits()
            && a.tokens.iter().map(bits).eq(b.tokens.iter().map(bits))
    }

    #[test]
    fn blocks_come_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tokstats");
        let mut w = TokWriter::create(&path, "{\"h\":1}").unwrap();
        let blocks = [block(3, 4), ItemBlock::empty(0), block(7, 1)];
        for b in &blocks {
            w.write_block(b).unwrap();
        }
        drop(w);
        let f = read(&path).unwrap();
        assert_eq!(f.header_json, "{\"h\":1}");
        assert_eq!(f.blocks.len(), 3);
        for (a, b) in f.blocks.iter().zip(&blocks) {
            assert!(same_bits(a, b), "{a:?} vs {b:?}");
        }
        assert_eq!(f.whole_len, f.file_len);
    }

    #[test]
    fn a_torn_last_block_is_left_out_and_cut_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tokstats");
        let mut w = TokWriter::create(&path, "{}").unwrap();
        w.write_block(&block(0, 2)).unwrap();
        w.write_block(&block(1, 5)).unwrap();
        drop(w);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let f = read(&path).unwrap();
        assert_eq!(f.blocks.len(), 1);
        assert!(f.whole_len < f.file_len);
        let mut w = TokWriter::append(&path, f.whole_len).unwrap();
        w.write_block(&block(2, 1)).unwrap();
        drop(w);
        let f = read(&path).unwrap();
        assert_eq!(f.blocks.iter().map(|b| b.index).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(f.whole_len, f.file_len);
    }

    #[test]
    fn other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"index\":0}\n").unwrap();
        assert!(matches!(read(&path), Err(TokFileError::Corrupt { .. })));
        assert!(matches!(
            read(&dir.path().join("missing")),
            Err(TokFileError::Io { .. })
        ));
        assert_eq!(
            side_path(Path::new("out/run.jsonl")),
            Path::new("out/run.jsonl.tokstats")
        );
    }
}
