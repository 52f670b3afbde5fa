//! The random numbers llama.cpp's samplers draw: libstdc++'s `std::mt19937` and the two
//! `std::uniform_real_distribution`s on top of it (`<double>` for `dist`, `<float>` for XTC).
//!
//! Every draw must be the same bits as the C++ one, so this follows libstdc++ (GCC 12, the
//! compiler the reference is built with) operation by operation, including the rounding of
//! `std::generate_canonical`, which sums two 32-bit outputs in a `double` (rounding to 53
//! bits) before scaling by 2^-64.

/// Mersenne Twister MT19937 with 32-bit output, as `std::mt19937` (the standard fixes its
/// parameters, so every conforming library produces the same sequence).
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    index: usize,
}

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// The generator `std::mt19937(seed)` constructs.
    pub fn new(seed: u32) -> Mt19937 {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        // libstdc++ regenerates the whole block on the first draw.
        Mt19937 { state, index: N }
    }

    /// Regenerate all 624 words at once (libstdc++'s `_M_gen_rand`).
    fn twist(&mut self) {
        let mix = |upper: u32, lower: u32, far: u32| {
            let y = (upper & UPPER_MASK) | (lower & LOWER_MASK);
            far ^ (y >> 1) ^ if y & 1 != 0 { MATRIX_A } else { 0 }
        };
        for k in 0..N - M {
            self.state[k] = mix(self.state[k], self.state[k + 1], self.state[k + M]);
        }
        for k in N - M..N - 1 {
            self.state[k] = mix(self.state[k], self.state[k + 1], self.state[k + M - N]);
        }
        self.state[N - 1] = mix(self.state[N - 1], self.state[0], self.state[M - 1]);
        self.index = 0;
    }

    /// The next 32-bit output (`operator()`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `std::uniform_real_distribution<double>(0, 1)(rng)`: a value in [0, 1) from two draws.
    ///
    /// libstdc++'s `generate_canonical<double, 53>` takes ⌈53/32⌉ = 2 outputs: `sum = u0 +
    /// u1·2^32` in `double` (so rounded to 53 bits, possibly up to 2^64), then `sum / 2^64`,
    /// and a result of 1 becomes the largest double below 1. The distribution then computes
    /// `x·(1 − 0) + 0`, which is `x`.
    pub fn uniform_f64(&mut self) -> f64 {
        let low = self.next_u32() as f64;
        let high = self.next_u32() as f64 * 4_294_967_296.0;
        let sum = low + high;
        let x = sum / 18_446_744_073_709_551_616.0;
        if x >= 1.0 {
            1.0 - f64::EPSILON / 2.0
        } else {
            x
        }
    }

    /// `std::uniform_real_distribution<float>(0, 1)(rng)`: one draw, rounded to `float`, over
    /// 2^32, and 1 becomes the largest float below 1 (`generate_canonical<float, 24>`).
    pub fn uniform_f32(&mut self) -> f32 {
        let x = self.next_u32() as f32 / 4_294_967_296.0;
        if x >= 1.0 {
            1.0 - f32::EPSILON / 2.0
        } else {
            x
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousandth_output_is_the_standards_check_value() {
        // [rand.predef]: the 10000th consecutive invocation of a default-constructed
        // std::mt19937 (seed 5489) produces 4123659995.
        let mut g = Mt19937::new(5489);
        for _ in 0..9999 {
            g.next_u32();
        }
        assert_eq!(g.next_u32(), 4_123_659_995);
    }

    #[test]
    fn first_outputs_of_the_reference_implementation() {
        // Matsumoto and Nishimura's mt19937ar.c, init_genrand(5489): 3499211612, 581869302.
        let mut g = Mt19937::new(5489);
        assert_eq!(g.next_u32(), 3_499_211_612);
        assert_eq!(g.next_u32(), 581_869_302);
    }

    #[test]
    fn canonical_double_combines_two_draws_low_word_first() {
        let mut a = Mt19937::new(42);
        let mut b = a.clone();
        let (u0, u1) = (b.next_u32(), b.next_u32());
        let expect = (u0 as f64 + u1 as f64 * 4_294_967_296.0) / 18_446_744_073_709_551_616.0;
        assert_eq!(a.uniform_f64().to_bits(), expect.to_bits());
    }

    #[test]
    fn draws_match_libstdcxx() {
        // g++ 12: std::mt19937 g(42); five std::uniform_real_distribution<double>(0, 1)
        // draws, then five std::uniform_real_distribution<float>(0, 1) draws. Printed with %a
        // they are 0x1.97d47b66bfc3cp-1 0x1.77aca8779b102p-3 0x1.8f33a88f76c7fp-1
        // 0x1.3196582932836p-1 0x1.c88861e49fc36p-2, then 0x1.3f7a0ep-3 0x1.997f4ep-4
        // 0x1.dbd22ap-5 0x1.d64558p-2 0x1.bb7b7p-1; here as bit patterns.
        let mut g = Mt19937::new(42);
        let doubles: Vec<u64> = (0..5).map(|_| g.uniform_f64().to_bits()).collect();
        let floats: Vec<u32> = (0..5).map(|_| g.uniform_f32().to_bits()).collect();
        assert_eq!(
            doubles,
            [
                0x3fe9_7d47_b66b_fc3c,
                0x3fc7_7aca_8779_b102,
                0x3fe8_f33a_88f7_6c7f,
                0x3fe3_1965_8293_2836,
                0x3fdc_8886_1e49_fc36
            ]
        );
        assert_eq!(
            floats,
            [
                0x3e1f_bd07,
                0x3dcc_bfa7,
                0x3d6d_e915,
                0x3eeb_22ac,
                0x3f5d_bdb8
            ]
        );
    }

    #[test]
    fn canonical_values_stay_below_one() {
        let mut g = Mt19937::new(7);
        for _ in 0..100_000 {
            let d = g.uniform_f64();
            assert!((0.0..1.0).contains(&d));
            let f = g.uniform_f32();
            assert!((0.0..1.0).contains(&f));
        }
        // A draw of 2^32 − 1 rounds to 2^32 in float: the clamp gives the float below 1.
        assert_eq!(
            (u32::MAX as f32 / 4_294_967_296.0).to_bits(),
            1.0f32.to_bits()
        );
    }
}
