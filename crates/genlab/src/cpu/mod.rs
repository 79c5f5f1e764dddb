//! CPU kernels for models that need no autodiff (the RBM): matrix products on
//! host buffers through `gemm` (the library burn's flex backend uses),
//! fused elementwise passes (bias + sigmoid + Bernoulli draw in one sweep),
//! products of a binary matrix as sums of the rows its ones select, and of
//! a sparse real matrix as weighted sums of the rows its nonzeros select.
//!
//! Random draws here are counter-based: element `i` of a pass keyed `key` gets
//! `uniform(key, i)`, so results do not depend on how rayon splits the work.

use rayon::prelude::*;

mod gather;
mod sparse;
pub use gather::{Ones, Panels, complement_product, gathered_product};
pub use sparse::{SPARSE_BELOW, SparseRows, nonzero_fraction, sparse_product};

thread_local! {
    /// Set by [`serial`]: matrix products on this thread use one core.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every [`matmul`] it makes on this thread kept to one core:
/// for work that is already split across the cores (a batch cut into
/// shards), where splitting each product again costs more than it gains.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    let before = SERIAL.with(|s| s.replace(true));
    let out = f();
    SERIAL.with(|s| s.set(before));
    out
}

/// Whether this thread is inside [`serial`].
pub fn is_serial() -> bool {
    SERIAL.with(|s| s.get())
}

/// Whether genlab's CPU kernels run where they apply (the default);
/// `GENLAB_CPU_KERNELS=0` makes every model use burn's generic tensor
/// operations instead, to compare the two.
pub fn kernels_enabled() -> bool {
    std::env::var("GENLAB_CPU_KERNELS").as_deref() != Ok("0")
}

/// Up to how many output rows, in multiples of gemm's 6-column micro-tile,
/// a product on one thread reads a weight matrix stored with unit stride
/// along its output columns in place instead of packing it first (gemm's
/// default is 8, 48 rows). At 16 (96 rows) a half batch of 64 rows skips
/// the copy: a 64 x 256 @ 256 x 784 product took 224 us instead of 244 on
/// a Zen 4 core, with the same sums in the same order.
const UNPACKED_ROWS_IN_TILES: usize = 16;

/// Products `a @ b'` with at most this many rows, on one thread, run as
/// `(b @ a')'`: gemm packs a transposed `b` slowly for few rows (a 32 x
/// 1024 @ 1024 x 512 input gradient took 1,771 us directly and 363 us
/// this way on a Zen 4 core; a VAE's 64 x 784 @ 784 x 256, 285 and 250).
const TRANSPOSED_ROWS_MAX: usize = 96;

/// ... and with `b` at least this large: below it the transpose costs more
/// than the packing it saves (a 64 x 128 @ 128 x 64 product: 11.6 us
/// directly, 13.8 us transposed).
const TRANSPOSED_WEIGHTS_MIN: usize = 1 << 16;

thread_local! {
    /// The transposed result of a product run as `(b @ a')'`.
    static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `c (m x n) = alpha * c + beta * op(a) * op(b)`, row-major buffers.
/// `op(a)` is m x k: `a` is stored m x k, or k x m when `a_t`. Likewise `op(b)`
/// is k x n: `b` is stored k x n, or n x k when `b_t`. With `alpha == 0`, `c`
/// is overwritten without being read.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    a_t: bool,
    b_t: bool,
    alpha: f32,
    beta: f32,
) {
    assert!(
        c.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "matmul: buffers too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| gemm::set_lhs_packing_threshold_single_thread(UNPACKED_ROWS_IN_TILES));
    // The same sums in the same order either way (each output is one
    // product row by column over the same k, added to c block by block of
    // k when alpha = 1, so c goes in transposed too).
    if b_t
        && !a_t
        && beta == 1.0
        && (alpha == 0.0 || alpha == 1.0)
        && m <= TRANSPOSED_ROWS_MAX
        && k * n >= TRANSPOSED_WEIGHTS_MIN
        && is_serial()
    {
        TRANSPOSED.with(|t| {
            let mut t = t.borrow_mut();
            t.resize(n * m, 0.0);
            if alpha == 1.0 {
                transpose_into(&c[..m * n], m, n, &mut t);
            }
            product(&mut t, b, a, (n, k, m), (false, true), (alpha, 1.0));
            transpose_into(&t, n, m, &mut c[..m * n]);
        });
        return;
    }
    if a_t
        && !b_t
        && alpha == 0.0
        && beta == 1.0
        && m <= SUMMED_ROWS_MAX
        && n <= SUMMED_COLUMNS_MAX
        && k >= SUMMED_DEPTH_MIN
        && has_avx512f()
    {
        summed_outer_products(c, a, b, (m, k, n));
        return;
    }
    product(c, a, b, (m, k, n), (a_t, b_t), (alpha, beta));
}

/// `a' @ b` with a result of at most this many rows ...
const SUMMED_ROWS_MAX: usize = 64;
/// ... and columns (up to 16 sums per row kept in registers) ...
const SUMMED_COLUMNS_MAX: usize = 16;
/// ... over at least this many terms runs as a sum of outer products of
/// the rows of `a` and `b`: gemm tiles so small a result mostly with
/// padding (a convolution's one-channel weight gradient, 32 x 12544 @
/// 12544 x 9, ran at a quarter of a core's peak).
const SUMMED_DEPTH_MIN: usize = 1024;

/// Outputs of one row block of [`summed_outer_products`]: one AVX-512
/// vector per column of the result.
const SUMMED_ROW_BLOCK: usize = 16;

/// `c (m x n) = a' @ b` for `a` (k x m) and `b` (k x n), with `n` at most
/// [`SUMMED_COLUMNS_MAX`]: each of `c`'s values is summed over the k rows
/// in order, one fused multiply-add each (a fixed order: the same bits on
/// any thread count).
fn summed_outer_products(c: &mut [f32], a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) {
    assert!(a.len() >= k * m && b.len() >= k * n && c.len() >= m * n && n <= SUMMED_COLUMNS_MAX);
    // Only called where AVX-512 is present ([`has_avx512f`]).
    #[cfg(target_arch = "x86_64")]
    for first in (0..m).step_by(SUMMED_ROW_BLOCK) {
        // SAFETY: the caller checked for AVX-512F; the buffers hold the
        // shape (asserted above).
        unsafe { summed_rows_avx512(c, a, b, (m, k, n), first) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("has_avx512f() is false off x86-64");
}

/// Whether the CPU has AVX-512F (for the kernels written for it, and for
/// block widths that need its 32 vector registers).
fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows `first..first + 16` (fewer at the end) of [`summed_outer_products`]
/// for a result of `n` columns: a vector of 16 sums per column, in
/// registers, each updated by one fused multiply-add per row of `a` and `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn summed_rows_avx512(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    first: usize,
) {
    macro_rules! with_columns {
        ($($n:literal)*) => {
            match n {
                // SAFETY: as for this function.
                $($n => unsafe { summed_block_avx512::<$n>(c, a, b, m, k, first) },)*
                _ => unreachable!("at most {SUMMED_COLUMNS_MAX} columns"),
            }
        };
    }
    with_columns!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

/// [`summed_rows_avx512`] for a result of `N` columns, so that the `N`
/// sums stay in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn summed_block_avx512<const N: usize>(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    first: usize,
) {
    use std::arch::x86_64::*;
    let rows = SUMMED_ROW_BLOCK.min(m - first);
    // Loads only the block's rows of a row of `a`.
    let mask: __mmask16 = ((1u32 << rows) - 1) as __mmask16;
    let mut sums = [_mm512_setzero_ps(); N];
    for r in 0..k {
        // SAFETY: row r of `a` holds m values from r * m, and the mask
        // keeps the load to the `rows` values from `first` (first + rows <= m);
        // row r of `b` holds N values from r * N.
        unsafe {
            let column = _mm512_maskz_loadu_ps(mask, a.as_ptr().add(r * m + first));
            let br = b.as_ptr().add(r * N);
            for (j, s) in sums.iter_mut().enumerate() {
                *s = _mm512_fmadd_ps(column, _mm512_set1_ps(*br.add(j)), *s);
            }
        }
    }
    for (j, s) in sums.iter().enumerate() {
        let mut values = [0.0f32; SUMMED_ROW_BLOCK];
        // SAFETY: `values` holds 16 floats.
        unsafe { _mm512_storeu_ps(values.as_mut_ptr(), *s) };
        for (i, &v) in values[..rows].iter().enumerate() {
            c[(first + i) * N + j] = v;
        }
    }
}

crate::simd_fn! {
    /// `out (cols x rows) = t'` for `t` (rows x cols), in tiles of 16 x 16
    /// so that both sides stay in cache.
    fn transpose_into(t: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
        const TILE: usize = 16;
        for r0 in (0..rows).step_by(TILE) {
            for c0 in (0..cols).step_by(TILE) {
                for c in c0..(c0 + TILE).min(cols) {
                    let o = &mut out[c * rows..][r0..(r0 + TILE).min(rows)];
                    for (i, o) in o.iter_mut().enumerate() {
                        *o = t[(r0 + i) * cols + c];
                    }
                }
            }
        }
    }
}

/// [`matmul`] by one call to gemm, its flags and scales in pairs:
/// `(a_t, b_t)` and `(alpha, beta)`.
fn product(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    (a_t, b_t): (bool, bool),
    (alpha, beta): (f32, f32),
) {
    // (column stride, row stride) of each operand as seen by the product.
    let (a_cs, a_rs) = if a_t {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    let (b_cs, b_rs) = if b_t {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    // SAFETY: the asserts above keep every index the strides reach inside the
    // buffers; `c` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            alpha != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            alpha,
            beta,
            false,
            false,
            false,
            if is_serial() {
                gemm::Parallelism::None
            } else {
                gemm::Parallelism::Rayon(0)
            },
        );
    }
}

/// A 32-bit integer hash with low bias (Wellons' "lowbias32"); 32-bit
/// multiplies keep it vectorisable.
#[inline(always)]
fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// The `i`-th uniform draw in [0, 1) (24 random bits) of the stream `key`:
/// two rounds of a keyed integer hash of the counter. A pass draws fewer
/// than 2^32 numbers per key; every pass gets a fresh key.
#[inline(always)]
pub fn uniform(key: u64, i: u32) -> f32 {
    let (lo, hi) = (key as u32, (key >> 32) as u32);
    let bits = hash32(hash32(i ^ lo).wrapping_add(hi));
    (bits >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// e^x in f32 without branches or library calls, so that loops over slices
/// vectorise (Cephes' expf: 2^n * polynomial, relative error about 1e-7).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // Round x / ln 2 to the nearest integer with the 1.5 * 2^23 trick (no SSE4.1 round needed).
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    // The integer n sits in t's low mantissa bits: no float-to-int conversion.
    let n_int = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(n_int.wrapping_add(127) << 23)
}

/// ln(x) for x in [1, 2] (all softplus needs), branch-free (Cephes' logf).
#[inline(always)]
fn ln_1_to_2(m: f32) -> f32 {
    const SQRT_2: f32 = std::f32::consts::SQRT_2;
    let big = m > SQRT_2;
    let e = if big { 1.0 } else { 0.0 };
    let x = if big { m * 0.5 } else { m } - 1.0;
    let z = x * x;
    let p = 7.037_683_6e-2_f32;
    let p = p * x - 1.151_461_e-1;
    let p = p * x + 1.167_699_9e-1;
    let p = p * x - 1.242_014_1e-1;
    let p = p * x + 1.424_932_3e-1;
    let p = p * x - 1.666_805_8e-1;
    let p = p * x + 2.000_071_4e-1;
    let p = p * x - 2.499_999_4e-1;
    let p = p * x + 3.333_333e-1;
    let y = p * x * z + e * -2.121_944_4e-4 - 0.5 * z;
    x + y + e * 0.693_359_4
}

/// tanh(x) = sign(x) (1 - e^-2|x|) / (1 + e^-2|x|) on top of [`exp`], and
/// its Taylor series near 0 where that quotient cancels; branch-free, so it
/// vectorises where libm's tanhf is a scalar call (absolute error below 1e-6).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    let far = ((1.0 - e) / (1.0 + e)).copysign(x);
    let x2 = x * x;
    let near = x * (1.0 - x2 * (1.0 / 3.0 - x2 * (2.0 / 15.0)));
    if x.abs() < 0.0625 { near } else { far }
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// log(1 + e^x), stable for large |x|.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + ln_1_to_2(1.0 + exp(-x.abs()))
}

/// Defines a function whose body is compiled three times, for the baseline
/// CPU, with AVX2 + FMA and with AVX-512, and picks the widest the CPU has
/// at run time. Everything the body calls must be `#[inline(always)]` so it
/// is compiled (and vectorised) with the same features. All versions use the
/// same IEEE operations in the same order (Rust never contracts into FMA on
/// its own, and the bodies fix their own partial sums), so they give
/// bit-identical results.
#[macro_export]
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

simd_fn! {
    /// `out[k] = uniform(key, first + k)`.
    fn uniform_run(out: &mut [f32], key: u64, first: u32) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = uniform(key, first + k as u32);
        }
    }
}

/// `out[k] = uniform(key, k)` over the whole slice, filled in parallel
/// (the values do not depend on the split).
pub fn uniforms(out: &mut [f32], key: u64) {
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| uniform_run(chunk, key, (c * CHUNK) as u32));
}

simd_fn! {
    /// In place: `x[j] = sigmoid(x[j] + bias[j % n])` over rows of `n = bias.len()`.
    pub fn sigmoid_rows(x: &mut [f32], bias: &[f32]) {
        for xr in x.chunks_exact_mut(bias.len()) {
            for (v, b) in xr.iter_mut().zip(bias) {
                *v = sigmoid(*v + b);
            }
        }
    }
}

simd_fn! {
    /// In place over rows of `n = bias.len()`: `x = sigmoid(x + bias)`, and
    /// `s = 1` where `uniform(key, first + k) < x` (k counts elements), else 0.
    pub fn sigmoid_bernoulli_rows(x: &mut [f32], s: &mut [f32], bias: &[f32], key: u64, first: u32) {
        let n = bias.len();
        for (r, (xr, sr)) in x.chunks_exact_mut(n).zip(s.chunks_exact_mut(n)).enumerate() {
            let row = first + (r * n) as u32;
            for (j, ((x, s), b)) in xr.iter_mut().zip(sr.iter_mut()).zip(bias).enumerate() {
                let p = sigmoid(*x + b);
                *x = p;
                *s = if uniform(key, row + j as u32) < p { 1.0 } else { 0.0 };
            }
        }
    }
}

simd_fn! {
    /// sum_j softplus(a[j] + bias[j]).
    pub fn softplus_sum(a: &[f32], bias: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), bias.chunks_exact(8));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, b)| softplus(x + b)).sum();
        for (xa, xb) in ca.zip(cb) {
            for k in 0..8 {
                acc[k] += softplus(xa[k] + xb[k]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

simd_fn! {
    /// sum_j softplus(a[j] + s * w[j]): the softplus part of a free energy
    /// after one visible unit with weights `w` changes by `s`.
    pub fn softplus_shifted_sum(a: &[f32], w: &[f32], s: f32) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cw) = (a.chunks_exact(8), w.chunks_exact(8));
        let tail: f32 = ca.remainder().iter().zip(cw.remainder()).map(|(x, w)| softplus(x + s * w)).sum();
        for (xa, xw) in ca.zip(cw) {
            for k in 0..8 {
                acc[k] += softplus(xa[k] + s * xw[k]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

simd_fn! {
    fn sigmoid_slice(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = sigmoid(*v);
        }
    }
}

/// In place: `x = sigmoid(x)`, in parallel.
pub fn sigmoid_in_place(x: &mut [f32]) {
    x.par_chunks_mut(1 << 14).for_each(sigmoid_slice);
}

simd_fn! {
    /// sum_j x_j l_j - softplus(l_j): the Bernoulli log-likelihood of binary
    /// `x` under logits `l`.
    pub fn bernoulli_log_likelihood(l: &[f32], x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (cl, cx) = (l.chunks_exact(8), x.chunks_exact(8));
        let tail: f32 = cl.remainder().iter().zip(cx.remainder()).map(|(l, x)| x * l - softplus(*l)).sum();
        for (a, b) in cl.zip(cx) {
            for k in 0..8 {
                acc[k] += b[k] * a[k] - softplus(a[k]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

simd_fn! {
    /// sum_j (x_j - sigmoid(l_j))^2.
    pub fn sigmoid_squared_error(l: &[f32], x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (cl, cx) = (l.chunks_exact(8), x.chunks_exact(8));
        let tail: f32 = cl.remainder().iter().zip(cx.remainder()).map(|(l, x)| (x - sigmoid(*l)) * (x - sigmoid(*l))).sum();
        for (a, b) in cl.zip(cx) {
            for k in 0..8 {
                let d = b[k] - sigmoid(a[k]);
                acc[k] += d * d;
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

simd_fn! {
    /// sum_j x_j l_j - softplus(l_j), the Bernoulli log-likelihood of
    /// binary `x` under logits `l`, and its gradient in `l`, `x - sigmoid(l)`,
    /// into `g`.
    pub fn bernoulli_log_likelihood_grad(l: &[f32], x: &[f32], g: &mut [f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let n = l.len() / 8 * 8;
        for ((a, b), d) in l[..n].chunks_exact(8).zip(x[..n].chunks_exact(8)).zip(g[..n].chunks_exact_mut(8)) {
            for k in 0..8 {
                acc[k] += b[k] * a[k] - softplus(a[k]);
                d[k] = b[k] - sigmoid(a[k]);
            }
        }
        let mut tail = 0.0f32;
        for j in n..l.len() {
            tail += x[j] * l[j] - softplus(l[j]);
            g[j] = x[j] - sigmoid(l[j]);
        }
        acc.iter().sum::<f32>() + tail
    }
}

simd_fn! {
    /// sum_j (x_j - mu_j)^2 for the mean mu = sigmoid(l), and the gradient
    /// in `l` of -inv_var/2 times it, (x - mu) mu (1 - mu) inv_var, into `g`.
    pub fn sigmoid_squared_error_grad(l: &[f32], x: &[f32], g: &mut [f32], inv_var: f32) -> f32 {
        let mut acc = [0.0f32; 8];
        let n = l.len() / 8 * 8;
        for ((a, b), d) in l[..n].chunks_exact(8).zip(x[..n].chunks_exact(8)).zip(g[..n].chunks_exact_mut(8)) {
            for k in 0..8 {
                let mu = sigmoid(a[k]);
                let e = b[k] - mu;
                acc[k] += e * e;
                d[k] = e * mu * (1.0 - mu) * inv_var;
            }
        }
        let mut tail = 0.0f32;
        for j in n..l.len() {
            let mu = sigmoid(l[j]);
            let e = x[j] - mu;
            tail += e * e;
            g[j] = e * mu * (1.0 - mu) * inv_var;
        }
        acc.iter().sum::<f32>() + tail
    }
}

simd_fn! {
    /// sum_j (x_j - mu_j)^2 for the mean mu = a t + b, and the gradient in
    /// `t` of -inv_var/2 times it, (x - mu) a inv_var, into `g`.
    pub fn affine_squared_error_grad(t: &[f32], x: &[f32], g: &mut [f32], a: f32, b: f32, inv_var: f32) -> f32 {
        let mut acc = [0.0f32; 8];
        let n = t.len() / 8 * 8;
        for ((y, o), d) in t[..n].chunks_exact(8).zip(x[..n].chunks_exact(8)).zip(g[..n].chunks_exact_mut(8)) {
            for k in 0..8 {
                let e = o[k] - (a * y[k] + b);
                acc[k] += e * e;
                d[k] = e * a * inv_var;
            }
        }
        let mut tail = 0.0f32;
        for j in n..t.len() {
            let e = x[j] - (a * t[j] + b);
            tail += e * e;
            g[j] = e * a * inv_var;
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// Sum of a slice with eight running partial sums, so that it vectorises.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Rows per rayon task in elementwise passes: enough work to beat the task overhead.
const ROWS_PER_TASK: usize = 8;

/// In place: `x[r, j] = sigmoid(x[r, j] + bias[j])` (probabilities), and, when
/// `samples` is given, `samples[r, j] = 1` if `uniform(key, r * n + j) < x[r, j]` else 0.
pub fn sigmoid_bernoulli(x: &mut [f32], bias: &[f32], samples: Option<&mut [f32]>, key: u64) {
    let n = bias.len();
    assert_eq!(x.len() % n, 0);
    let chunk = ROWS_PER_TASK * n;
    match samples {
        Some(s) => {
            assert_eq!(s.len(), x.len());
            x.par_chunks_mut(chunk)
                .zip(s.par_chunks_mut(chunk))
                .enumerate()
                .for_each(|(t, (xc, sc))| {
                    sigmoid_bernoulli_rows(xc, sc, bias, key, (t * chunk) as u32)
                });
        }
        None => x
            .par_chunks_mut(chunk)
            .for_each(|xc| sigmoid_rows(xc, bias)),
    }
}

/// Sums of each column of a row-major `rows x n` matrix (into `out`, overwritten).
pub fn column_sums(x: &[f32], n: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in x.chunks_exact(n) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_is_within_1e6_of_libm() {
        let mut worst = 0.0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 1e-6, "{worst}");
        for x in [0.0f32, -0.0, 1e-30, 100.0, -100.0, f32::MAX, f32::MIN] {
            assert_eq!(tanh(x), x.tanh(), "{x}");
        }
    }

    pub(super) fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        c
    }

    pub(super) fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0.0; x.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn a_product_run_transposed_has_the_bits_of_the_direct_one() {
        // Shapes the transposed route takes (few rows, a large b'), odd
        // sizes included, with c overwritten and added to.
        for (m, k, n) in [
            (64, 784, 256),
            (32, 1024, 512),
            (5, 300, 301),
            (96, 3136, 33),
        ] {
            assert!(m <= TRANSPOSED_ROWS_MAX && k * n >= TRANSPOSED_WEIGHTS_MIN);
            let a: Vec<f32> = (0..m * k).map(|i| uniform(1, i as u32) - 0.5).collect();
            let b: Vec<f32> = (0..n * k).map(|i| uniform(2, i as u32) - 0.5).collect();
            let c0: Vec<f32> = (0..m * n).map(|i| uniform(3, i as u32) - 0.5).collect();
            for alpha in [0.0, 1.0] {
                let (mut routed, mut direct) = (c0.clone(), c0.clone());
                serial(|| matmul(&mut routed, &a, &b, (m, k, n), false, true, alpha, 1.0));
                serial(|| product(&mut direct, &a, &b, (m, k, n), (false, true), (alpha, 1.0)));
                assert!(routed == direct, "{m}x{k}x{n}, alpha {alpha}: other bits");
                let want = naive(&a, &transpose(&b, n, k), m, k, n);
                for ((r, w), c) in routed.iter().zip(want).zip(&c0) {
                    assert!(
                        (r - (w + alpha * c)).abs() < 1e-3,
                        "{m}x{k}x{n}: {r} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_small_result_over_a_long_sum_matches_the_naive_product() {
        // Whole and partial blocks of rows, every width up to the largest.
        for (m, k, n) in [(32, 1500, 9), (20, 1024, 1), (64, 1100, 16), (5, 2000, 7)] {
            assert!(m <= SUMMED_ROWS_MAX && n <= SUMMED_COLUMNS_MAX && k >= SUMMED_DEPTH_MIN);
            let a: Vec<f32> = (0..k * m).map(|i| uniform(4, i as u32) - 0.5).collect();
            let b: Vec<f32> = (0..k * n).map(|i| uniform(5, i as u32) - 0.5).collect();
            let mut c = vec![f32::NAN; m * n];
            matmul(&mut c, &a, &b, (m, k, n), true, false, 0.0, 1.0);
            let want = naive(&transpose(&a, k, m), &b, m, k, n);
            for (g, w) in c.iter().zip(want) {
                assert!((g - w).abs() < 1e-3, "{m}x{k}x{n}: {g} vs {w}");
            }
            if has_avx512f() {
                let mut one = vec![f32::NAN; m * n];
                serial(|| matmul(&mut one, &a, &b, (m, k, n), true, false, 0.0, 1.0));
                assert!(one == c, "{m}x{k}x{n}: other bits on one thread");
            }
        }
    }

    #[test]
    fn matmul_matches_naive_with_every_transpose_and_scaling() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37) % 17) as f32 / 7.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 11) % 13) as f32 / 5.0 - 1.0)
            .collect();
        let want = naive(&a, &b, m, k, n);
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (aa, ta) in [(&a, false), (&at, true)] {
            for (bb, tb) in [(&b, false), (&bt, true)] {
                let mut c = vec![f32::NAN; m * n];
                matmul(&mut c, aa, bb, (m, k, n), ta, tb, 0.0, 1.0);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-4, "{x} vs {y}");
                }
            }
        }
        let mut c = vec![1.0; m * n];
        matmul(&mut c, &a, &b, (m, k, n), false, false, 0.5, 2.0);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - (0.5 + 2.0 * y)).abs() < 1e-4);
        }
    }

    #[test]
    fn uniform_draws_are_uniform_and_keyed() {
        let n = 200_000;
        let xs: Vec<f32> = (0..n as u32).map(|i| uniform(42, i)).collect();
        let mean = xs.iter().sum::<f32>() / n as f32;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        let below = xs.iter().filter(|&&x| x < 0.1).count() as f32 / n as f32;
        assert!((below - 0.1).abs() < 0.005);
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert_ne!(uniform(1, 0), uniform(2, 0));
    }

    #[test]
    fn parallel_uniforms_are_the_keyed_stream() {
        // Longer than one parallel chunk, so the chunks' offsets are checked.
        let mut u = vec![0.0f32; 50_001];
        uniforms(&mut u, 0x9e37_79b9_7f4a_7c15);
        for (i, x) in u.iter().enumerate() {
            assert_eq!(*x, uniform(0x9e37_79b9_7f4a_7c15, i as u32), "element {i}");
        }
    }

    #[test]
    fn sigmoid_bernoulli_gives_probabilities_and_matching_draws() {
        let n = 50;
        let rows = 400;
        let bias: Vec<f32> = (0..n).map(|j| j as f32 / 10.0 - 2.5).collect();
        let mut x = vec![0.0f32; rows * n];
        let mut s = vec![0.0f32; rows * n];
        sigmoid_bernoulli(&mut x, &bias, Some(&mut s), 9);
        for j in 0..n {
            let p = sigmoid(bias[j]);
            assert!((x[j] - p).abs() < 1e-6);
            let freq = (0..rows).map(|r| s[r * n + j]).sum::<f32>() / rows as f32;
            assert!((freq - p).abs() < 0.1, "column {j}: {freq} vs {p}");
        }
        // Same key, same draws; the draw for element i is uniform(key, i) < p.
        let mut x2 = vec![0.0f32; rows * n];
        let mut s2 = vec![0.0f32; rows * n];
        sigmoid_bernoulli(&mut x2, &bias, Some(&mut s2), 9);
        assert_eq!(s, s2);
        assert_eq!(s[77], (uniform(9, 77) < x[77]) as u8 as f32);
    }

    #[test]
    fn fast_exp_and_softplus_match_the_library_functions() {
        let mut worst_exp = 0.0f64;
        let mut worst_sp = 0.0f64;
        for i in 0..200_001 {
            let x = -80.0 + 160.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst_exp = worst_exp.max(((exp(x) as f64 - want) / want).abs());
            let sp_want = if x > 30.0 {
                x as f64
            } else {
                (x as f64).exp().ln_1p()
            };
            let sp = softplus(x) as f64;
            // Softplus is summed: its absolute error matters (relative for tiny values).
            worst_sp = worst_sp.max((sp - sp_want).abs() / sp_want.max(1.0));
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_sp < 3e-7, "softplus error {worst_sp}");
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert!(sigmoid(-200.0).is_finite());
    }

    #[test]
    fn softplus_is_stable() {
        assert!((softplus(0.0) - 2f32.ln()).abs() < 1e-6);
        assert_eq!(softplus(100.0), 100.0);
        assert!(softplus(-100.0) >= 0.0 && softplus(-100.0) < 1e-30);
    }
}
