//! Deliberate bugs, for the tests of divergence location only (cargo feature
//! `fault-injection`, which no binary enables and no user can reach).
//!
//! Each [`Fault`] is a mistake a real port makes — a wrong epsilon in one norm, the wrong
//! activation, a wrong RoPE base, an off-by-one causal mask — planted in the *computation*
//! while the model's configuration stays right, the way a real bug hides: the configuration
//! pre-gate cannot see it, so locating it is the job of `crossval-per-token --locate`.
//!
//! A fault is armed for one model file ([`arm`]) and taken by [`crate::Model::load`] of that
//! path, so tests running in parallel on other files are unaffected.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Layer `layer`'s `ffn_norm` adds `delta` to the RMSNorm epsilon.
    FfnNormEpsilon {
        /// The layer.
        layer: usize,
        /// Added to the model's epsilon.
        delta: f32,
    },
    /// `bitnet-b1.58`'s feed-forward block applies SiLU where the model uses relu².
    SiluInsteadOfRelu2,
    /// RoPE's frequency base is multiplied by `factor`.
    RopeBase {
        /// The factor.
        factor: f32,
    },
    /// The causal mask is one position too wide: each token also sees the next one.
    CausalMaskOffByOne,
}

static ARMED: Mutex<Vec<(PathBuf, Fault)>> = Mutex::new(Vec::new());

fn key(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Plant `fault` in every later [`crate::Model::load`] of `model` (replacing any earlier one).
pub fn arm(model: &Path, fault: Fault) {
    let k = key(model);
    let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    armed.retain(|(p, _)| *p != k);
    armed.push((k, fault));
}

/// The fault armed for `model`, if any.
pub(crate) fn armed_for(model: &Path) -> Option<Fault> {
    let k = key(model);
    let armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    armed.iter().find(|(p, _)| *p == k).map(|(_, f)| *f)
}
