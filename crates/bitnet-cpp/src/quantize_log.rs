//! Reading llama.cpp's quantizer log (`llama-quant.cpp`), which is its only progress and
//! error channel: `llama_model_quantize` returns 0 or 1 and says everything else in log
//! lines. The reference process feeds each completed line through these parsers and sends
//! what they find to the client as typed messages.
//!
//! The formats, from `llama_model_quantize_impl` and `tensor_type_fallback`:
//!
//! ```text
//! [   3/  30] blk.0.attn_k.weight                  - [  256,   128,     1,     1], type =    f32, converting to q4_K .. size =     0.12 MiB ->     0.02 MiB
//! [   4/  30] blk.0.attn_norm.weight               - [  256,     1,     1,     1], type =    f32, size =    0.001 MiB
//! warning: blk.0.attn_q.weight                  - ncols    576 not divisible by 256 (required for type    q4_K) -> falling back to    q5_0
//! llama_model_quantize: failed to quantize: requantizing from type q4_1 is disabled
//! ```
//!
//! A tensor's line is written in pieces; it is complete (the tensor written) once its
//! `size = …` part is there. A failure in the middle of a tensor leaves that line unfinished
//! and the error message continues it, so the failure is searched anywhere in a line.

use crate::protocol::{QuantizeFallback, QuantizeProgress};

/// A finished tensor's line: index, total, name and its input and output types.
pub fn parse_progress(line: &str) -> Option<QuantizeProgress> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (counts, rest) = rest.split_once(']')?;
    let (index, total) = counts.split_once('/')?;
    let (index, total) = (index.trim().parse().ok()?, total.trim().parse().ok()?);
    let (tensor, rest) = rest.split_once(" - [")?;
    let (_shape, rest) = rest.split_once("], type = ")?;
    let (from, rest) = rest.split_once(',')?;
    let rest = rest.trim_start();
    let from = from.trim();
    let (to, rest) = match rest.strip_prefix("converting to ") {
        Some(r) => r.split_once(" ..")?,
        None => (from, rest),
    };
    if !rest.contains("size =") {
        return None;
    }
    Some(QuantizeProgress {
        index,
        total,
        tensor: tensor.trim().to_string(),
        from: from.to_string(),
        to: to.trim().to_string(),
    })
}

/// A fallback warning: the tensor, the type the mix wanted and the one used.
pub fn parse_fallback(line: &str) -> Option<QuantizeFallback> {
    let rest = line.trim_start().strip_prefix("warning: ")?;
    let (tensor, rest) = rest.split_once(" - ncols ")?;
    let (_, rest) = rest.split_once("(required for type ")?;
    let (wanted, rest) = rest.split_once(')')?;
    let (_, used) = rest.split_once("-> falling back to ")?;
    Some(QuantizeFallback {
        tensor: tensor.trim().to_string(),
        wanted: wanted.trim().to_string(),
        used: used.trim().to_string(),
    })
}

/// The quantizer's own reason when it gives up (`llama_model_quantize: failed to quantize:
/// REASON`).
pub fn parse_failure(line: &str) -> Option<&str> {
    const MARK: &str = "failed to quantize: ";
    let at = line.find(MARK)?;
    Some(line[at + MARK.len()..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_of_quantized_and_copied_tensors() {
        let q = "[   3/  30] blk.0.attn_k.weight                  - [  256,   128,     1,     1], type =    f32, converting to q4_K .. size =     0.12 MiB ->     0.02 MiB";
        assert_eq!(
            parse_progress(q),
            Some(QuantizeProgress {
                index: 3,
                total: 30,
                tensor: "blk.0.attn_k.weight".into(),
                from: "f32".into(),
                to: "q4_K".into(),
            })
        );
        let c = "[   4/  30] blk.0.attn_norm.weight               - [  256,     1,     1,     1], type =    f32, size =    0.001 MiB";
        let p = parse_progress(c).unwrap();
        assert_eq!((p.index, p.from.as_str(), p.to.as_str()), (4, "f32", "f32"));
    }

    #[test]
    fn unfinished_and_foreign_lines_are_not_progress() {
        // A tensor whose conversion failed: the error continues the unfinished line.
        let broken = "[   1/ 272] output_norm.weight - [  576,     1,     1,     1], type =   q4_1, llama_model_quantize: failed to quantize: requantizing from type q4_1 is disabled";
        assert_eq!(parse_progress(broken), None);
        assert_eq!(
            parse_failure(broken),
            Some("requantizing from type q4_1 is disabled")
        );
        for other in [
            "",
            "llama_model_loader: - type  f32:   61 tensors",
            "[abc/ 3] x - [1], type = f32, size = 1 MiB",
            "[   2/   3] x - [    1], type =    f32, converting to q8_0 .. ",
        ] {
            assert_eq!(parse_progress(other), None, "{other:?}");
        }
    }

    #[test]
    fn fallback_warnings_with_and_without_the_f16_note() {
        let w = "warning: blk.0.attn_q.weight                  - ncols    576 not divisible by 256 (required for type    q4_K) -> falling back to    q5_0";
        assert_eq!(
            parse_fallback(w),
            Some(QuantizeFallback {
                tensor: "blk.0.attn_q.weight".into(),
                wanted: "q4_K".into(),
                used: "q5_0".into(),
            })
        );
        let f16 = "warning: odd.weight - ncols     33 not divisible by  32 (required for type    q8_0) (WARNING: must use F16 due to unusual shape) -> falling back to     f16";
        assert_eq!(parse_fallback(f16).unwrap().used, "f16");
        assert_eq!(parse_fallback("warning: something else"), None);
    }
}
