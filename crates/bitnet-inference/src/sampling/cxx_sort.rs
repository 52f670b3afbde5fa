//! libstdc++'s `std::sort` and `std::partial_sort` (GCC 12), step for step.
//!
//! Both are unstable: where candidates tie on the sort key, the order they come out in is
//! whatever these exact algorithms produce — and that order decides which token a sampler
//! picks (`dist` walks the candidates in order, `temp 0` keeps the first maximum). Rust's own
//! sorts order ties differently, so llama.cpp's samplers are reproduced only with these.
//!
//! `less(a, b)` is the C++ comparator `comp(a, b)`; it is called with the same arguments in
//! the same order as libstdc++ calls it, so even a comparator that is not a strict weak order
//! (NaN keys) gives the same permutation.

/// `std::sort(v.begin(), v.end(), less)`: introsort (median-of-three quicksort down to runs
/// of 16, heapsort past 2·⌊log2 n⌋ levels), then one insertion sort.
pub fn sort<T: Copy>(v: &mut [T], less: &mut impl FnMut(&T, &T) -> bool) {
    if v.is_empty() {
        return;
    }
    let depth = 2 * floor_log2(v.len());
    introsort_loop(v, 0, v.len(), depth, less);
    final_insertion_sort(v, less);
}

/// `std::partial_sort(v.begin(), v.begin() + middle, v.end(), less)`: the `middle` smallest
/// (by `less`) in order at the front, the rest in the heap's leftover order.
///
/// # Panics
/// When `middle > v.len()` (undefined behaviour in C++).
pub fn partial_sort<T: Copy>(v: &mut [T], middle: usize, less: &mut impl FnMut(&T, &T) -> bool) {
    assert!(middle <= v.len(), "partial_sort: middle past the end");
    heap_select(v, middle, less);
    sort_heap(&mut v[..middle], less);
}

fn floor_log2(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

/// Runs of at most this many elements are left to the final insertion sort.
const THRESHOLD: usize = 16;

fn introsort_loop<T: Copy>(
    v: &mut [T],
    first: usize,
    mut last: usize,
    mut depth: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    while last - first > THRESHOLD {
        if depth == 0 {
            let run = &mut v[first..last];
            let len = run.len();
            partial_sort(run, len, less);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(v, first, last, less);
        introsort_loop(v, cut, last, depth, less);
        last = cut;
    }
}

/// Move the median of `v[first + 1]`, `v[mid]`, `v[last - 1]` to `v[first]`, then partition
/// `first + 1..last` around it; returns the cut.
fn partition_pivot<T: Copy>(
    v: &mut [T],
    first: usize,
    last: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(v, first, first + 1, mid, last - 1, less);
    unguarded_partition(v, first + 1, last, first, less)
}

fn move_median_to_first<T: Copy>(
    v: &mut [T],
    result: usize,
    a: usize,
    b: usize,
    c: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    let pick = if less(&v[a], &v[b]) {
        if less(&v[b], &v[c]) {
            b
        } else if less(&v[a], &v[c]) {
            c
        } else {
            a
        }
    } else if less(&v[a], &v[c]) {
        a
    } else if less(&v[b], &v[c]) {
        c
    } else {
        b
    };
    v.swap(result, pick);
}

fn unguarded_partition<T: Copy>(
    v: &mut [T],
    mut first: usize,
    mut last: usize,
    pivot: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) -> usize {
    loop {
        while less(&v[first], &v[pivot]) {
            first += 1;
        }
        last -= 1;
        while less(&v[pivot], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn final_insertion_sort<T: Copy>(v: &mut [T], less: &mut impl FnMut(&T, &T) -> bool) {
    if v.len() > THRESHOLD {
        insertion_sort(&mut v[..THRESHOLD], less);
        for i in THRESHOLD..v.len() {
            unguarded_linear_insert(v, i, less);
        }
    } else {
        insertion_sort(v, less);
    }
}

fn insertion_sort<T: Copy>(v: &mut [T], less: &mut impl FnMut(&T, &T) -> bool) {
    for i in 1..v.len() {
        if less(&v[i], &v[0]) {
            let val = v[i];
            v.copy_within(0..i, 1);
            v[0] = val;
        } else {
            unguarded_linear_insert(v, i, less);
        }
    }
}

fn unguarded_linear_insert<T: Copy>(
    v: &mut [T],
    mut last: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    let val = v[last];
    let mut next = last - 1;
    while less(&val, &v[next]) {
        v[last] = v[next];
        last = next;
        // The element at 0 is never greater than `val` here (guaranteed by the callers), so
        // `next` stops at 0 as the C++ pointer walk does.
        if next == 0 {
            break;
        }
        next -= 1;
    }
    v[last] = val;
}

/// `__heap_select`: a max-heap (by `less`) of the first `middle`, then every later element
/// smaller than the heap's top replaces it.
fn heap_select<T: Copy>(v: &mut [T], middle: usize, less: &mut impl FnMut(&T, &T) -> bool) {
    make_heap(&mut v[..middle], less);
    for i in middle..v.len() {
        if less(&v[i], &v[0]) {
            pop_heap(v, middle, i, less);
        }
    }
}

fn make_heap<T: Copy>(v: &mut [T], less: &mut impl FnMut(&T, &T) -> bool) {
    let len = v.len() as isize;
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let value = v[parent as usize];
        adjust_heap(v, parent, len, value, less);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

fn sort_heap<T: Copy>(v: &mut [T], less: &mut impl FnMut(&T, &T) -> bool) {
    let mut last = v.len();
    while last > 1 {
        last -= 1;
        pop_heap(v, last, last, less);
    }
}

/// `__pop_heap(first, first + len, result)`: the top goes to `result`, the old `result`
/// value sinks into the heap `v[..len]`. (With `len == 0` this swaps `v[0]` and
/// `v[result]`, as the C++ does.)
fn pop_heap<T: Copy>(
    v: &mut [T],
    len: usize,
    result: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    let value = v[result];
    v[result] = v[0];
    adjust_heap(v, 0, len as isize, value, less);
}

fn adjust_heap<T: Copy>(
    v: &mut [T],
    mut hole: isize,
    len: isize,
    value: T,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if less(&v[child as usize], &v[(child - 1) as usize]) {
            child -= 1;
        }
        v[hole as usize] = v[child as usize];
        hole = child;
    }
    if len & 1 == 0 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole as usize] = v[(child - 1) as usize];
        hole = child - 1;
    }
    // __push_heap(first, hole, top, value)
    let mut parent = (hole - 1) / 2;
    while hole > top && less(&v[parent as usize], &value) {
        v[hole as usize] = v[parent as usize];
        hole = parent;
        parent = (hole - 1) / 2;
    }
    v[hole as usize] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for test data.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn sort_orders_like_any_sort_and_keeps_the_multiset() {
        let mut s = 0x1234_5678_9abc_def0u64;
        for n in [0usize, 1, 2, 3, 15, 16, 17, 33, 100, 1000, 5000] {
            let v: Vec<u32> = (0..n).map(|_| (xorshift(&mut s) % 50) as u32).collect();
            let mut ours = v.clone();
            sort(&mut ours, &mut |a, b| a < b);
            let mut expect = v.clone();
            expect.sort();
            assert_eq!(ours, expect, "n = {n}");
        }
    }

    #[test]
    fn partial_sort_puts_the_smallest_first_in_order() {
        let mut s = 99u64;
        for (n, k) in [
            (0usize, 0usize),
            (5, 0),
            (5, 5),
            (100, 1),
            (100, 40),
            (1000, 128),
        ] {
            let v: Vec<i32> = (0..n).map(|_| (xorshift(&mut s) % 300) as i32).collect();
            let mut ours = v.clone();
            partial_sort(&mut ours, k, &mut |a, b| a > b);
            let mut expect = v.clone();
            expect.sort_by(|a, b| b.cmp(a));
            assert_eq!(&ours[..k], &expect[..k], "n = {n}, k = {k}");
            let mut rest = ours.clone();
            rest.sort();
            let mut all = v.clone();
            all.sort();
            assert_eq!(rest, all, "a permutation");
        }
    }

    #[test]
    fn ties_come_out_in_libstdcxx_order() {
        // Twenty keys with ties, payload = index, sorted by descending key. The expected
        // orders are what g++ 12 (libstdc++) prints for the same std::sort and
        // std::partial_sort(first, first + 5, last) calls; a stable sort would give
        // 0,2,3,5,... instead.
        let keys = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0];
        let v: Vec<(i32, usize)> = keys.iter().copied().zip(0..).collect();
        let order = |v: &[(i32, usize)]| v.iter().map(|p| p.1).collect::<Vec<_>>();
        let mut a = v.clone();
        sort(&mut a, &mut |x, y| x.0 > y.0);
        assert_eq!(
            order(&a),
            [2, 3, 18, 5, 17, 7, 8, 9, 0, 12, 15, 14, 10, 19, 16, 13, 11, 6, 4, 1]
        );
        let mut b = v.clone();
        partial_sort(&mut b, 5, &mut |x, y| x.0 > y.0);
        assert_eq!(
            order(&b),
            [3, 0, 5, 7, 2, 4, 6, 1, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
        );
    }

    #[test]
    fn introsort_falls_back_to_heapsort_without_losing_elements() {
        // An adversarial-ish pattern (organ pipe) on a comparator that only looks at the
        // key, so the depth limit is reached for some sub-ranges.
        let n = 4096;
        let v: Vec<(u32, u32)> = (0..n)
            .map(|i| {
                let k = if i < n / 2 { i } else { n - i };
                (k % 7, i)
            })
            .collect();
        let mut ours = v.clone();
        sort(&mut ours, &mut |a, b| a.0 < b.0);
        assert!(ours.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut ids: Vec<u32> = ours.iter().map(|p| p.1).collect();
        ids.sort();
        assert_eq!(ids, (0..n).collect::<Vec<_>>());
    }
}
