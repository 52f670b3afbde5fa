//! `crossval-per-token --locate`: where a divergence starts — the first intermediate tensor,
//! in graph order, whose difference from the reference's exceeds a tolerance — or, with
//! `--locate all`, every tensor's difference (the per-layer noise profile).
//!
//! Both sides evaluate the prompt once more, in one batch, showing their intermediate
//! tensors under llama.cpp's graph names: the reference through ggml's eval callback
//! (`Session::eval_capture`, streamed tensor by tensor), the engine through an
//! [`Observer`] on its forward pass. The two run at the same time: the reference process
//! computes while this process evaluates, and each engine tensor is compared the moment it
//! is produced with the reference tensor of the same name ([`mapping`] says which, where the
//! graphs differ). Reference tensors arrive one layer at a time and are dropped once
//! compared, so memory stays within one layer's tensors whatever the model's size.
//!
//! Each tensor is compared row by row (one row per token position) with the measures of
//! [`metrics`]; the tolerance ([`LocateTolerance`]) decides whether a row is beyond it.

pub mod mapping;
pub mod metrics;
pub mod report;
pub mod tolerance;

use bitnet_cpp::protocol::capture::split_layer;
use bitnet_cpp::protocol::TensorFrame;
use bitnet_cpp::{CaptureStream, CppError, Session};
use bitnet_inference::{
    graph_ops, Eval, InferenceError, Model, Observer, State, Tapped, TensorName,
};
use serde::{Deserialize, Serialize};

use mapping::{align, explain, target, Layout, Target};
use metrics::{tensor_metrics, RowMetrics};
pub use report::{render_text, Divergence, LayerSummary, LocateReport, TensorResult};
pub use tolerance::{LocateTolerance, Measure};

/// Stop at the first divergence, or compare every tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocateMode {
    /// The first tensor beyond the tolerance (`--locate`).
    First,
    /// Every tensor (`--locate all`).
    All,
}

impl std::str::FromStr for LocateMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "first" => Ok(LocateMode::First),
            "all" => Ok(LocateMode::All),
            _ => Err(format!("unknown --locate mode {s:?} (valid: first, all)")),
        }
    }
}

/// What to locate, and by which tolerance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocateOptions {
    /// First divergence or every tensor.
    pub mode: LocateMode,
    /// When a tensor counts as diverged.
    pub tolerance: LocateTolerance,
}

/// Why locating failed.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// The engine's forward pass failed.
    #[error("Rust engine: {0}")]
    Engine(#[from] InferenceError),
    /// The reference failed or sent something unusable.
    #[error(transparent)]
    Reference(#[from] CppError),
}

/// Tensors compared before a divergence that the report shows with it.
const BEFORE: usize = 4;

/// Evaluate `tokens` on both sides, comparing every intermediate tensor as it is produced.
/// `state` is a fresh state in the run configuration the reference `cpp` was loaded with:
/// with flash attention on, neither graph forms the attention weights (ggml's fused kernel
/// has no `kq_soft_max` tensor), which the report says instead of comparing them.
///
/// # Errors
/// [`LocateError`] when either side fails to evaluate.
pub fn locate(
    model: &Model,
    mut state: State,
    cpp: &mut Session,
    tokens: &[u32],
    opts: &LocateOptions,
) -> Result<LocateReport, LocateError> {
    let (layer_ops, output_ops) = graph_ops(model.config().arch);
    let flash_attn = state.run_config().flash_attn;
    let mut not_computed = Vec::new();
    let mut capture: Vec<String> = Vec::new();
    for &op in layer_ops.iter().chain(output_ops) {
        if flash_attn && target(op).layout == Layout::AttentionWeights {
            not_computed.push(format!(
                "{op}: flash attention is on, and its fused kernel forms no attention weights (in ggml's graph or the engine's)"
            ));
            continue;
        }
        for name in target(op).candidates() {
            if !capture.iter().any(|c| c == name) {
                capture.push(name.to_string());
            }
        }
    }
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let stream = cpp.eval_capture(&ids, &capture)?;
    let mut cmp = Comparer::new(stream, *opts);
    cmp.report.not_computed = not_computed;
    let evaluated = model.eval(&mut state, Eval::new(tokens).observe(&mut cmp));
    cmp.finish(evaluated.map(|_| ()))
}

/// Where a tensor sits in graph order: a layer, or after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Layer(u32),
    Output,
}

fn group_of_reference(name: &str) -> Group {
    match split_layer(name).1 {
        Some(l) => Group::Layer(l),
        None => Group::Output,
    }
}

fn group_of_engine(name: TensorName) -> Group {
    match name.layer {
        Some(l) => Group::Layer(l as u32),
        None => Group::Output,
    }
}

fn reference_name(base: &str, layer: Option<usize>) -> String {
    match layer {
        Some(l) => format!("{base}-{l}"),
        None => base.to_string(),
    }
}

type RefTensor = (TensorFrame, Vec<f32>);

/// The engine's observer: pulls the reference's tensors as the engine produces its own and
/// compares each pair at once.
struct Comparer<'s> {
    stream: CaptureStream<'s>,
    opts: LocateOptions,
    /// The reference tensors of `group` not yet compared.
    pending: Vec<RefTensor>,
    group: Option<Group>,
    /// A reference tensor of a later group, read ahead.
    ahead: Option<RefTensor>,
    ended: bool,
    stopped: bool,
    error: Option<CppError>,
    report: LocateReport,
}

impl<'s> Comparer<'s> {
    fn new(stream: CaptureStream<'s>, opts: LocateOptions) -> Self {
        Comparer {
            stream,
            opts,
            pending: Vec::new(),
            group: None,
            ahead: None,
            ended: false,
            stopped: false,
            error: None,
            report: LocateReport {
                mode: opts.mode,
                tolerance: opts.tolerance,
                tensors_compared: 0,
                first_divergence: None,
                tensors: Vec::new(),
                layers: Vec::new(),
                mappings: Vec::new(),
                engine_only: Vec::new(),
                reference_only: Vec::new(),
                not_computed: Vec::new(),
                stopped_early: false,
            },
        }
    }

    fn leftover(&mut self, t: RefTensor) {
        if self.opts.mode == LocateMode::All {
            self.report.reference_only.push(t.0.name);
        }
    }

    /// Make `pending` hold every reference tensor of `group`: the reference sends a layer's
    /// tensors together, so they are all in once a tensor of a later group (or the end) has
    /// arrived.
    fn load_group(&mut self, group: Group) -> Result<(), CppError> {
        if self.group == Some(group) {
            return Ok(());
        }
        for t in std::mem::take(&mut self.pending) {
            self.leftover(t);
        }
        self.group = Some(group);
        if let Some(t) = self.ahead.take() {
            self.place(t, group);
        }
        while self.ahead.is_none() && !self.ended {
            match self.stream.next_tensor()? {
                Some(t) => self.place(t, group),
                None => self.ended = true,
            }
        }
        Ok(())
    }

    fn place(&mut self, t: RefTensor, group: Group) {
        match group_of_reference(&t.0.name).cmp(&group) {
            std::cmp::Ordering::Equal => self.pending.push(t),
            std::cmp::Ordering::Less => self.leftover(t),
            std::cmp::Ordering::Greater => self.ahead = Some(t),
        }
    }

    /// Take the reference tensor for engine tensor `name` from the pending group.
    fn take(&mut self, name: TensorName, target: &Target) -> Option<RefTensor> {
        let i = target.candidates().find_map(|base| {
            let want = reference_name(base, name.layer);
            self.pending.iter().position(|(f, _)| f.name == want)
        })?;
        let found = self.pending.swap_remove(i);
        if found.0.name != reference_name(target.name, name.layer) {
            // The scaled product was used: the plain one before the scale is the same step.
            let plain = reference_name(target.name, name.layer);
            self.pending.retain(|(f, _)| f.name != plain);
        }
        Some(found)
    }

    fn compare(&mut self, t: &Tapped<'_>, target: &Target, frame: TensorFrame, values: Vec<f32>) {
        let rows = t.positions.len();
        let mut result = TensorResult {
            name: t.name.to_string(),
            op: t.name.op.to_string(),
            layer: t.name.layer,
            reference: frame.name.clone(),
            reference_op: frame.op.clone(),
            reference_shape: frame.ne,
            reference_dtype: frame.dtype.clone(),
            positions: rows,
            row_len: t.row_len,
            metrics: None,
            first_position_beyond: None,
            worst_position: None,
            within: false,
            note: None,
        };
        if !frame.readable {
            result.note = Some(format!(
                "the reference computed it as {}, not readable as floats",
                frame.dtype
            ));
            result.within = true;
        } else {
            match align(target.layout, &frame, values, t.data, rows, t.row_len) {
                Err(why) => result.note = Some(why),
                Ok(aligned) => {
                    let engine = aligned.engine.as_deref().unwrap_or(t.data);
                    let (m, row_metrics) =
                        tensor_metrics(engine, &aligned.reference, aligned.row_len);
                    let tol = self.opts.tolerance;
                    let beyond = row_metrics.iter().position(|r| tol.beyond(r));
                    result.first_position_beyond = beyond.map(|i| t.positions[i]);
                    result.worst_position =
                        worst_row(&row_metrics, tol.measure).map(|i| t.positions[i]);
                    result.within = beyond.is_none();
                    result.metrics = Some(m);
                    let heads = (frame.ne[2] as usize).max(1);
                    if let Some(why) = explain(t.name.op, &frame.name, &frame, t.row_len / heads) {
                        let general = why.clone();
                        if !self.report.mappings.contains(&general) {
                            self.report.mappings.push(general);
                        }
                    }
                }
            }
        }
        self.record(result);
    }

    fn record(&mut self, result: TensorResult) {
        self.report.tensors_compared += 1;
        summarise(&mut self.report.layers, &result);
        if !result.within && self.report.first_divergence.is_none() {
            let start = self.report.tensors.len().saturating_sub(BEFORE);
            self.report.first_divergence = Some(Divergence {
                tensor: result.clone(),
                before: self.report.tensors[start..].to_vec(),
            });
            if self.opts.mode == LocateMode::First {
                self.stopped = true;
                self.report.stopped_early = true;
            }
        }
        self.report.tensors.push(result);
    }

    /// After the engine's pass: the rest of the reference's stream, and the report.
    fn finish(
        mut self,
        evaluated: Result<(), InferenceError>,
    ) -> Result<LocateReport, LocateError> {
        evaluated?;
        if let Some(e) = self.error.take() {
            return Err(e.into());
        }
        if !self.stopped {
            for t in std::mem::take(&mut self.pending) {
                self.leftover(t);
            }
            if let Some(t) = self.ahead.take() {
                self.leftover(t);
            }
            while !self.ended {
                match self.stream.next_tensor()? {
                    Some(t) => self.leftover(t),
                    None => self.ended = true,
                }
            }
        }
        self.stream.finish()?;
        Ok(self.report)
    }
}

/// The row where `measure` is worst (a non-finite mismatch first).
fn worst_row(rows: &[RowMetrics], measure: Measure) -> Option<usize> {
    let badness = |r: &RowMetrics| {
        if !r.finite_match {
            return f64::INFINITY;
        }
        let v = match measure {
            Measure::Nmse => r.nmse,
            Measure::Cos => -r.cosine,
            Measure::MaxAbs => r.max_abs_diff,
        };
        if v.is_nan() {
            f64::INFINITY
        } else {
            v
        }
    };
    (0..rows.len()).max_by(|&a, &b| {
        badness(&rows[a])
            .total_cmp(&badness(&rows[b]))
            .then(b.cmp(&a))
    })
}

/// Fold a result into its layer's summary (the last one, or a new one).
fn summarise(layers: &mut Vec<LayerSummary>, r: &TensorResult) {
    if layers.last().is_none_or(|l| l.layer != r.layer) {
        layers.push(LayerSummary {
            layer: r.layer,
            tensors: 0,
            beyond: 0,
            worst_tensor: r.name.clone(),
            max_nmse: 0.0,
            max_abs_diff: 0.0,
            min_cosine: 1.0,
        });
    }
    let l = layers.last_mut().expect("pushed above");
    l.tensors += 1;
    l.beyond += usize::from(!r.within);
    let (nmse, max_abs, cos) = match &r.metrics {
        Some(m) => (m.nmse, m.max_abs_diff, m.min_cosine),
        None if r.within => return,
        None => (f64::INFINITY, f64::INFINITY, f64::NAN),
    };
    // NaN counts as the worst value.
    let worse = |v: f64, than: f64| v.is_nan() || v > than;
    if worse(nmse, l.max_nmse) {
        l.max_nmse = nmse;
        l.worst_tensor = r.name.clone();
    }
    if worse(max_abs, l.max_abs_diff) {
        l.max_abs_diff = max_abs;
    }
    if worse(-cos, -l.min_cosine) {
        l.min_cosine = cos;
    }
}

impl Observer for Comparer<'_> {
    fn wants(&mut self, _name: TensorName) -> bool {
        !self.stopped
    }

    fn observe(&mut self, t: Tapped<'_>) {
        if self.stopped {
            return;
        }
        if let Err(e) = self.load_group(group_of_engine(t.name)) {
            self.error = Some(e);
            self.stopped = true;
            return;
        }
        let target = target(t.name.op);
        match self.take(t.name, &target) {
            Some((frame, values)) => self.compare(&t, &target, frame, values),
            None => {
                let names: Vec<String> = target
                    .candidates()
                    .map(|b| reference_name(b, t.name.layer))
                    .collect();
                self.report.engine_only.push(format!(
                    "{} (no {} in the reference's graph)",
                    t.name,
                    names.join(" or ")
                ));
            }
        }
    }
}
