//! The candidate list the samplers work on (llama.cpp's `llama_token_data_array`) and the
//! helpers they share: llama.cpp's bucket sort, its in-place partial sort, its softmax.

use super::cxx_sort;

/// One candidate: token id, logit, probability (llama.cpp's `llama_token_data`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TokenData {
    pub id: u32,
    pub logit: f32,
    pub p: f32,
}

/// The candidates still in play, in their current order.
///
/// llama.cpp keeps a pointer and a size into a larger buffer; every sampler only ever looks
/// at `[data, data + size)`, so a `Vec` that is truncated (or drained at the front, for XTC)
/// is the same thing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Candidates {
    pub data: Vec<TokenData>,
    /// Index of the chosen candidate, once a sampler has chosen.
    pub selected: Option<usize>,
    /// Whether `data` is sorted by descending logit.
    pub sorted: bool,
}

impl Candidates {
    /// Every token of the vocabulary with its logit, unsorted (what `llama_sampler_sample`
    /// builds from a row of logits).
    #[cfg(test)]
    pub fn from_logits(logits: &[f32]) -> Candidates {
        let mut c = Candidates::default();
        c.reset(logits);
        c
    }

    /// Refill from a row of logits, reusing the allocation.
    pub fn reset(&mut self, logits: &[f32]) {
        self.data.clear();
        self.data
            .extend(logits.iter().enumerate().map(|(i, &logit)| TokenData {
                id: i as u32,
                logit,
                p: 0.0,
            }));
        self.selected = None;
        self.sorted = false;
    }
}

/// The order every llama.cpp sampler sorts by: larger logit first.
pub(crate) fn logit_greater(a: &TokenData, b: &TokenData) -> bool {
    a.logit > b.logit
}

/// C++'s `std::max(a, b)`: `(a < b) ? b : a` (so a NaN `a` stays, a NaN `b` is skipped).
pub(crate) fn cxx_max(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}

/// C++'s `int(x)` for a `float` on x86-64 (`cvttss2si`): truncation toward zero, and the
/// "integer indefinite" value `INT_MIN` for NaN and anything out of range.
pub(crate) fn cxx_f32_to_i32(x: f32) -> i32 {
    if !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

/// llama.cpp's `llama_token_data_array_partial_sort`: the `npartial` largest of `cur` into
/// `res`, sorted, using 128 logit buckets over [-10, 10): whole buckets above the cut are
/// sorted with `std::sort`, the bucket at the cut with `std::partial_sort`. `res` may hold more
/// than `npartial` entries (the rest of the cut bucket, unsorted). `cur` is not changed.
pub(crate) fn partial_sort_buckets(cur: &[TokenData], npartial: usize, res: &mut Vec<TokenData>) {
    const NBUCKETS: usize = 128;
    let bucket_low = -10.0f32;
    let bucket_high = 10.0f32;
    let bucket_scale = NBUCKETS as f32 / (bucket_high - bucket_low);
    let bucket_inter = -bucket_low * bucket_scale;
    assert!(npartial >= 1 && npartial <= cur.len());

    let mut bucket_idx = Vec::with_capacity(cur.len());
    let mut histo = [0usize; NBUCKETS];
    for t in cur {
        let ib =
            cxx_f32_to_i32(bucket_scale * t.logit + bucket_inter).clamp(0, NBUCKETS as i32 - 1);
        bucket_idx.push(ib as usize);
        histo[ib as usize] += 1;
    }
    // The lowest bucket that, with all buckets above it, holds at least npartial entries.
    let mut nhave = 0;
    let mut ib = NBUCKETS - 1;
    loop {
        nhave += histo[ib];
        if nhave >= npartial || ib == 0 {
            break;
        }
        ib -= 1;
    }
    // Bucket j's entries go at offset start[j], highest bucket first, in input order.
    let mut start = [0usize; NBUCKETS];
    let mut next = 0;
    for j in (ib..NBUCKETS).rev() {
        start[j] = next;
        next += histo[j];
    }
    res.clear();
    res.resize(
        nhave,
        TokenData {
            id: 0,
            logit: 0.0,
            p: 0.0,
        },
    );
    for (t, &j) in cur.iter().zip(&bucket_idx) {
        if j >= ib {
            res[start[j]] = *t;
            start[j] += 1;
        }
    }
    let mut ptr = 0;
    let mut ndone = 0;
    for j in (ib + 1..NBUCKETS).rev() {
        cxx_sort::sort(&mut res[ptr..ptr + histo[j]], &mut logit_greater);
        ptr += histo[j];
        ndone += histo[j];
    }
    cxx_sort::partial_sort(
        &mut res[ptr..ptr + histo[ib]],
        npartial - ndone,
        &mut logit_greater,
    );
}

/// llama.cpp's `llama_token_data_array_partial_sort_inplace`: keep the `npartial` largest,
/// sorted (`std::partial_sort` up to 128, the bucket sort beyond).
pub(crate) fn partial_sort_inplace(cur: &mut Candidates, npartial: usize) {
    if npartial <= 128 {
        cxx_sort::partial_sort(&mut cur.data, npartial, &mut logit_greater);
    } else {
        let mut tmp = Vec::new();
        partial_sort_buckets(&cur.data, npartial, &mut tmp);
        cur.data[..npartial].copy_from_slice(&tmp[..npartial]);
    }
    cur.data.truncate(npartial);
    cur.sorted = true;
}

/// llama.cpp's `llama_sampler_softmax_impl`: probabilities from the logits in `float`
/// (`expf(logit − max)`, summed in order), sorting first when asked and not yet sorted.
///
/// # Panics
/// With no candidates (llama.cpp asserts).
pub(crate) fn softmax(cur: &mut Candidates, do_sort: bool) {
    assert!(!cur.data.is_empty(), "softmax of no candidates");
    if do_sort && !cur.sorted {
        let n = cur.data.len();
        partial_sort_inplace(cur, n);
    }
    let mut max_l = cur.data[0].logit;
    if !cur.sorted {
        for t in &cur.data[1..] {
            max_l = cxx_max(max_l, t.logit);
        }
    }
    let mut cum_sum = 0.0f32;
    for t in &mut cur.data {
        let p = (t.logit - max_l).exp();
        t.p = p;
        cum_sum += p;
    }
    for t in &mut cur.data {
        t.p /= cum_sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(logits: &[f32]) -> Candidates {
        Candidates::from_logits(logits)
    }

    #[test]
    fn float_to_int_is_x86_truncation() {
        assert_eq!(cxx_f32_to_i32(63.9), 63);
        assert_eq!(cxx_f32_to_i32(-0.5), 0);
        assert_eq!(cxx_f32_to_i32(-1.5), -1);
        assert_eq!(cxx_f32_to_i32(f32::NAN), i32::MIN);
        assert_eq!(cxx_f32_to_i32(f32::INFINITY), i32::MIN);
        assert_eq!(cxx_f32_to_i32(f32::NEG_INFINITY), i32::MIN);
        assert_eq!(cxx_f32_to_i32(3e9), i32::MIN);
    }

    #[test]
    fn bucket_sort_matches_a_full_sort_on_distinct_logits() {
        let mut state = 7u32;
        let logits: Vec<f32> = (0..5000)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 30.0 - 15.0 + i as f32 * 1e-6
            })
            .collect();
        let c = row(&logits);
        let mut expect = c.data.clone();
        expect.sort_by(|a, b| b.logit.total_cmp(&a.logit));
        for k in [1, 40, 256, 1000, 5000] {
            let mut res = Vec::new();
            partial_sort_buckets(&c.data, k, &mut res);
            assert!(res.len() >= k);
            assert_eq!(&res[..k], &expect[..k], "k = {k}");
        }
    }

    #[test]
    fn inplace_partial_sort_truncates_and_marks_sorted() {
        let mut c = row(&[0.5, 3.0, -1.0, 2.0]);
        partial_sort_inplace(&mut c, 2);
        assert!(c.sorted);
        assert_eq!(c.data.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order_unless_asked() {
        let mut c = row(&[1.0, 3.0, 2.0]);
        softmax(&mut c, false);
        assert_eq!(c.data[0].id, 0);
        let total: f32 = c.data.iter().map(|t| t.p).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(c.data[1].p > c.data[2].p && c.data[2].p > c.data[0].p);
        softmax(&mut c, true);
        assert_eq!(c.data.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 2, 0]);
    }
}
