//! The scale searches shared by ggml's reference k-quant quantizers (`make_qx_quants`,
//! `make_q3_quants`, `make_qkx2_quants` in ggml-quants.c), operation for operation.
//!
//! C evaluates `a*b*c` as `(a*b)*c` and `a + b - c` as `(a + b) - c`, converting ints to
//! float where they meet one; ggml-base has no fused multiply-add (baseline x86-64), so every
//! step rounds to f32 on its own. The code below keeps those groupings.

use crate::blocks::nearest_int;

/// `GROUP_MAX_EPS` (ggml-quants.c): a group whose largest |x| is below this is all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// The signed value of largest magnitude (the first one wins ties) and that magnitude.
#[inline]
fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// `MAX(-nmax, MIN(nmax - 1, l))`.
#[inline(always)]
fn clamp_signed(l: i32, nmax: i32) -> i32 {
    l.min(nmax - 1).max(-nmax)
}

/// ggml `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL)` (the only form the
/// reference quantizers use): symmetric codes `L = l + nmax` with l in `[-nmax, nmax)`,
/// weighted by x², trying 18 scales around `-nmax / max`. Returns the scale.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], codes: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        codes.fill(0);
        return 0.0;
    }
    let weighted_sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = clamp_signed(nearest_int(iscale * v), nmax) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let set_codes = |codes: &mut [i8], iscale: f32| {
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = (clamp_signed(nearest_int(iscale * v), nmax) + nmax) as i8;
        }
    };
    let iscale = -(nmax as f32) / max;
    set_codes(codes, iscale);
    let (sumlx, suml2) = weighted_sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        let (sumlx, suml2) = weighted_sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            set_codes(codes, iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml `make_q3_quants(n, nmax, x, L, do_rmse = true)`: codes `L = l + nmax` with l in
/// `[-nmax, nmax)`, then up to five passes that move single codes while the x²-weighted fit
/// improves. Returns the scale.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], codes: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        codes.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (c, &v) in codes.iter_mut().zip(x) {
        let l = clamp_signed(nearest_int(iscale * v), nmax);
        *c = l as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (c, &v) in codes.iter_mut().zip(x) {
            let w = v * v;
            let old = *c as f32;
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = clamp_signed(nearest_int(v * sl2 / slx), nmax);
                if new_l != *c as i32 {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *c = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for c in codes.iter_mut() {
        *c += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The search parameters of one `make_qkx2_quants` call site.
pub(crate) struct Qkx2 {
    /// Largest code.
    pub nmax: i32,
    /// First trial offset of the inverse scale.
    pub rmin: f32,
    /// Step between trials.
    pub rdelta: f32,
    /// Number of steps (nstep + 1 trials).
    pub nstep: i32,
    /// Weigh absolute rather than squared errors.
    pub use_mad: bool,
}

/// ggml `make_qkx2_quants`: asymmetric codes in `[0, nmax]` for `x ≈ scale·L − min`, the
/// weighted least-squares fit tried at `nstep + 1` inverse scales. Returns `(scale, min)`
/// where `min` is what ggml stores in `*the_min` (the negated offset, ≥ 0).
pub(crate) fn make_qkx2_quants(
    p: &Qkx2,
    x: &[f32],
    weights: &[f32],
    codes: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        codes.fill(0);
        return (0.0, -min);
    }
    let nmax = p.nmax as f32;
    let error = |scale: f32, min: f32, codes: &[u8]| {
        let mut e = 0.0f32;
        for ((&l, &v), &w) in codes.iter().zip(x).zip(weights) {
            let diff = scale * l as f32 + min - v;
            e += w * if p.use_mad { diff.abs() } else { diff * diff };
        }
        e
    };
    let mut iscale = nmax / (max - min);
    let mut scale = 1.0 / iscale;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = nearest_int(iscale * (v - min)).min(p.nmax).max(0) as u8;
    }
    let mut best_error = error(scale, min, codes);
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut trial = [0u8; 32];
    let trial = &mut trial[..n];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((t, &v), &w) in trial.iter_mut().zip(x).zip(weights) {
            let l = nearest_int(iscale * (v - min)).min(p.nmax).max(0);
            *t = l as u8;
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let cur_error = error(this_scale, this_min, trial);
            if cur_error < best_error {
                codes.copy_from_slice(trial);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}
