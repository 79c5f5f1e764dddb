//! The CD-k update on host buffers: genlab's fused kernel, which the
//! backend extension runs in place on the CPU backend's tensors.

use rayon::prelude::*;

use crate::cpu::{
    Ones, Panels, column_sums, complement_product, gathered_product, matmul, serial,
    sigmoid_bernoulli, sigmoid_bernoulli_rows,
};

/// Rows of the batch whose Gibbs chains one task runs through all k steps.
const CHAIN_ROWS: usize = 32;

/// Reusable buffers of the CD-k update (nothing is allocated per step).
pub struct CdBuffers {
    batch: usize,
    /// C, the negative phase's chains: B for CD, any number for PCD.
    chains: usize,
    /// (B + C) x V: data on top, the chains' final visible samples below.
    pub x: Vec<f32>,
    /// (B + C) x H: p(h|data) on top, minus B/C times the chains' final
    /// hidden layer below, so that x' y / B is the weight gradient.
    y: Vec<f32>,
    /// C x H: the chains' current hidden sample.
    h: Vec<f32>,
    /// C x H: scratch for hidden probabilities.
    hp: Vec<f32>,
    /// C x V: scratch for visible probabilities.
    vp: Vec<f32>,
    /// Gradient scratch for the biases.
    dhb: Vec<f32>,
    dvb: Vec<f32>,
    dvb_neg: Vec<f32>,
    /// Centring: the batch's mean data and hidden probabilities, and the
    /// bias corrections (V, H, V, H), and (B + C)-row scratch.
    mean_v: Vec<f32>,
    mean_h: Vec<f32>,
    rows: Vec<f32>,
    /// The 2k+1 keys of one update (kept to avoid a per-step allocation).
    pub(super) keys: Vec<u64>,
    /// The ones of the layer a Gibbs half-step reads, per shard of chains.
    ones: Vec<Ones>,
    /// W both ways round as panels, for the sparse products.
    products: BinaryProducts,
    /// Inside the Gibbs chain, a sampled layer with a smaller fraction of
    /// ones than this is multiplied as a sum of the rows of W its ones
    /// select; a denser one by the dense product. Both give the same
    /// products up to the order of the additions.
    pub gather_below: f32,
}

/// The fraction of ones (or of zeros, for a mostly-on layer) below which
/// [`gathered_product`] beats the dense product on a Gibbs step of a
/// 784x500 RBM, 32 chains on one core (`cargo bench --bench rbm` times
/// both: 190 against 634 us at 15% ones, 462 against 633 at 60%). A trained
/// RBM's states have 12-20% ones, an untrained one's about half; a centred
/// RBM's hidden units are often mostly on.
pub const GATHER_BELOW: f32 = 0.8;

impl CdBuffers {
    /// Buffers for a `v` x `h` RBM, batches of `batch` rows and `chains`
    /// negative chains (the batch size for CD).
    pub fn for_shape(v: usize, h: usize, batch: usize, chains: usize) -> Self {
        CdBuffers {
            batch,
            chains,
            x: vec![0.0; (batch + chains) * v],
            y: vec![0.0; (batch + chains) * h],
            h: vec![0.0; chains * h],
            hp: vec![0.0; chains * h],
            vp: vec![0.0; chains * v],
            dhb: vec![0.0; h],
            dvb: vec![0.0; v],
            dvb_neg: vec![0.0; v],
            mean_v: vec![0.0; v],
            mean_h: vec![0.0; h],
            rows: vec![0.0; batch + chains],
            keys: Vec::new(),
            ones: vec![Ones::default(); chains.div_ceil(CHAIN_ROWS)],
            products: BinaryProducts::default(),
            gather_below: GATHER_BELOW,
        }
    }

    /// Whether these buffers fit a `v` x `h` RBM, batches of `batch` rows
    /// and `chains` negative chains.
    pub fn fits(&self, v: usize, h: usize, batch: usize, chains: usize) -> bool {
        (self.batch, self.chains) == (batch, chains)
            && self.vp.len() == chains * v
            && self.hp.len() == chains * h
    }

    /// The top B rows of `x`, where the training loop writes the batch.
    pub fn data_mut(&mut self) -> &mut [f32] {
        let n = self.batch * (self.vp.len() / self.chains);
        &mut self.x[..n]
    }
}

/// The step sizes of one update.
#[derive(Debug, Clone, Copy)]
pub struct UpdateRule {
    pub k: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub negative_hidden: NegativeHidden,
    /// Centring (with [`CdParams::offsets`]): how far each update moves
    /// the offsets towards the batch's means.
    pub offset_rate: f32,
}

/// What the negative statistics take for the chain's final hidden layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeHidden {
    /// Its sample h_k (SPEC section 1).
    #[default]
    Sample,
    /// Its probabilities p(h | v_k): the same expectation with less noise
    /// (the hidden draw summed out); the chain still carries the sample.
    Probability,
}

impl UpdateRule {
    /// How many random keys one update draws: one for the positive phase's
    /// hidden sample, then one per layer for each of the k Gibbs steps.
    pub fn cd_keys(&self) -> usize {
        2 * self.k + 1
    }
}

/// Mutable views of an RBM's parameters and optimiser state (row-major,
/// `w` visible x hidden), whoever owns them: an [`Rbm`] and its
/// [`RbmState`], or the buffers of burn tensors (see `rbm_backend`).
pub struct CdParams<'a> {
    pub w: &'a mut [f32],
    pub hb: &'a mut [f32],
    pub vb: &'a mut [f32],
    pub vel_w: &'a mut [f32],
    pub vel_hb: &'a mut [f32],
    pub vel_vb: &'a mut [f32],
    /// C x H hidden states of the persistent chains (PCD only).
    pub chains: Option<&'a mut [f32]>,
    /// Centring's offsets of the visible and hidden layers (V, H).
    pub offsets: Option<(&'a mut [f32], &'a mut [f32])>,
}

/// The upward pass: p(h=1|v) for each row of `v` into `probs` (rows x H),
/// and Bernoulli draws from it into `sample` when given.
pub(super) fn up(
    w: &[f32],
    hb: &[f32],
    v: &[f32],
    probs: &mut [f32],
    sample: Option<&mut [f32]>,
    key: u64,
) {
    let (nh, nv) = (hb.len(), w.len() / hb.len());
    let rows = v.len() / nv;
    matmul(probs, v, w, (rows, nv, nh), false, false, 0.0, 1.0);
    sigmoid_bernoulli(probs, hb, sample, key);
}

/// The downward pass: p(v=1|h) for each row of `h` into `probs` (rows x V),
/// and Bernoulli draws from it into `sample` when given.
pub(super) fn down(
    w: &[f32],
    vb: &[f32],
    h: &[f32],
    probs: &mut [f32],
    sample: Option<&mut [f32]>,
    key: u64,
) {
    let (nv, nh) = (vb.len(), w.len() / vb.len());
    let rows = h.len() / nh;
    matmul(probs, h, w, (rows, nh, nv), false, true, 0.0, 1.0);
    sigmoid_bernoulli(probs, vb, sample, key);
}

/// W (V x H, row-major) both ways round as [`Panels`], for products with a
/// sampled (0/1) layer: a sparse layer is multiplied as the sum of the
/// weight rows its ones select, a dense one by the dense product. Both give
/// the same products up to the order of the additions.
#[derive(Debug, Clone, Default)]
pub struct BinaryProducts {
    w: Panels,
    wt: Panels,
}

impl BinaryProducts {
    /// Panels of `w` (`nv` x `nh`) and of its transpose.
    pub fn fill(&mut self, w: &[f32], nv: usize, nh: usize) {
        self.w.fill(w, nv, nh, false);
        self.wt.fill(w, nv, nh, true);
    }

    /// `out = x @ W` for binary visible rows `x` (`w` is `nv` x `nh`, the
    /// matrix of these panels); gathered from the sparser of its ones and
    /// its zeros when that fraction is below `gather_below` (the panels must
    /// be filled then), dense otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn up(
        &self,
        w: &[f32],
        (nv, nh): (usize, usize),
        x: &[f32],
        out: &mut [f32],
        ones: &mut Ones,
        gather_below: f32,
    ) {
        if !sparse_product(&self.w, nv, x, out, ones, gather_below) {
            matmul(out, x, w, (x.len() / nv, nv, nh), false, false, 0.0, 1.0);
        }
    }

    /// `out = x @ W'` for binary hidden rows `x`, as [`BinaryProducts::up`].
    #[allow(clippy::too_many_arguments)]
    pub fn down(
        &self,
        w: &[f32],
        (nv, nh): (usize, usize),
        x: &[f32],
        out: &mut [f32],
        ones: &mut Ones,
        gather_below: f32,
    ) {
        if !sparse_product(&self.wt, nh, x, out, ones, gather_below) {
            matmul(out, x, w, (x.len() / nh, nh, nv), false, true, 0.0, 1.0);
        }
    }
}

/// `out = x @ panels` from x's ones, or from its zeros when x is mostly
/// ones, if the sparser side's fraction is below `gather_below`; returns
/// whether it did (else the caller runs the dense product).
fn sparse_product(
    panels: &Panels,
    m: usize,
    x: &[f32],
    out: &mut [f32],
    ones: &mut Ones,
    gather_below: f32,
) -> bool {
    let f = ones.index(x, m);
    if f <= 0.5 {
        if f < gather_below {
            gathered_product(out, panels, ones);
            return true;
        }
    } else if 1.0 - f < gather_below {
        ones.index_zeros(x, m);
        complement_product(out, panels, ones);
        return true;
    }
    false
}

/// What a Gibbs half-step reads: the weights, as they are and as panels
/// both ways round, and the biases.
struct Layers<'a> {
    w: &'a [f32],
    products: &'a BinaryProducts,
    vb: &'a [f32],
    hb: &'a [f32],
    gather_below: f32,
}

/// A shard of the Gibbs chains: their hidden and visible samples, scratch
/// for the probabilities, and the index of a sampled layer's ones.
struct Chains<'a> {
    h: &'a mut [f32],
    v: &'a mut [f32],
    vp: &'a mut [f32],
    hp: &'a mut [f32],
    ones: &'a mut Ones,
}

impl Layers<'_> {
    /// The chains of `c` (from batch row `first_row`) through one Gibbs step
    /// per pair of `keys`: v ~ p(v|h), then h ~ p(h|v). Each product reads a
    /// sampled layer: a sparse one as the sum of the weight rows its ones
    /// select, a dense one by the dense product. Draws are keyed by the
    /// element's place in the whole batch, as [`sigmoid_bernoulli`]'s.
    fn gibbs_steps(&self, c: Chains<'_>, keys: &[u64], first_row: usize) {
        let (nv, nh) = (self.vb.len(), self.hb.len());
        let (w, g) = (self.w, self.gather_below);
        for step in keys.chunks_exact(2) {
            self.products.down(w, (nv, nh), c.h, c.vp, c.ones, g);
            sigmoid_bernoulli_rows(c.vp, c.v, self.vb, step[0], (first_row * nv) as u32);
            self.products.up(w, (nv, nh), c.v, c.hp, c.ones, g);
            sigmoid_bernoulli_rows(c.hp, c.h, self.hb, step[1], (first_row * nh) as u32);
        }
    }
}

/// One CD-k (or PCD-k) update on the batch in `bufs.data_mut()`, exactly as
/// SPEC section 1: v0 = data probabilities; h ~ p(h|v0) (PCD: the C
/// persistent chains' h); k times v ~ p(v|h), h ~ p(h|v); then
/// dW = v0' p(h|v0) / B - vk' hk / C, dhb = mean(p(h|v0)) - mean(hk) (with
/// [`NegativeHidden::Probability`], p(h|vk) in place of hk),
/// dvb = mean(v0) - mean(vk); velocity = momentum * velocity + lr * (grad - decay * W);
/// param += velocity. CD has C = B. `keys` (2k+1 of them, see
/// [`UpdateRule::cd_keys`]) seed the Bernoulli draws in order. All work
/// happens in place: the sigmoid, the uniform draw and the comparison are one
/// pass per layer, and the weight gradient is one product
/// [v0; vk]' [p(h|v0); -(B/C) hk] / B written straight into W (or its velocity).
pub fn cd_update_host(p: CdParams<'_>, bufs: &mut CdBuffers, rule: UpdateRule, keys: &[u64]) {
    let (nv, nh, b, c) = (p.vb.len(), p.hb.len(), bufs.batch, bufs.chains);
    assert!(bufs.fits(nv, nh, b, c), "CD buffers of another shape");
    assert_eq!(keys.len(), rule.cd_keys(), "one key per Bernoulli draw");
    let (top_x, bottom_x) = bufs.x.split_at_mut(b * nv);
    let (top_y, bottom_y) = bufs.y.split_at_mut(b * nh);
    let (w, hb, vb) = (p.w, p.hb, p.vb);
    // Positive phase: p(h|v0) into the top of y; CD starts its chains from
    // a sample of it, PCD from the persistent chains.
    match &p.chains {
        Some(chains) => {
            assert_eq!(chains.len(), c * nh, "persistent chains of another shape");
            up(w, hb, top_x, top_y, None, keys[0]);
            bufs.h.copy_from_slice(chains);
        }
        None => {
            assert_eq!(c, b, "CD runs one chain per batch row");
            up(w, hb, top_x, top_y, Some(&mut bufs.h), keys[0]);
        }
    }
    // Negative phase: k full Gibbs steps, both layers sampled every step.
    // Each row's chain is its own, so shards of rows run all k steps on
    // their own core, with no synchronisation between the half-steps.
    if bufs.gather_below > 0.0 {
        bufs.products.fill(w, nv, nh);
    }
    let layers = Layers {
        w,
        products: &bufs.products,
        vb,
        hb,
        gather_below: bufs.gather_below,
    };
    let chain_keys = &keys[1..];
    bufs.h
        .par_chunks_mut(CHAIN_ROWS * nh)
        .zip(bottom_x.par_chunks_mut(CHAIN_ROWS * nv))
        .zip(bufs.vp.par_chunks_mut(CHAIN_ROWS * nv))
        .zip(bufs.hp.par_chunks_mut(CHAIN_ROWS * nh))
        .zip(bufs.ones.par_iter_mut())
        .enumerate()
        .for_each(|(shard, ((((h, v), vp), hp), ones))| {
            let chains = Chains { h, v, vp, hp, ones };
            serial(|| layers.gibbs_steps(chains, chain_keys, shard * CHAIN_ROWS));
        });
    if let Some(chains) = p.chains {
        chains.copy_from_slice(&bufs.h);
    }
    let negative = match rule.negative_hidden {
        NegativeHidden::Sample => &bufs.h,
        // The last half-step left p(h | v_k) in the scratch.
        NegativeHidden::Probability => &bufs.hp,
    };
    // The chains' statistics are means over C rows, the data's over B.
    let chain_weight = b as f32 / c as f32;
    for (y, h) in bottom_y.iter_mut().zip(negative) {
        *y = -chain_weight * h;
    }
    // Bias gradients from column sums.
    column_sums(&bufs.y, nh, &mut bufs.dhb);
    column_sums(top_x, nv, &mut bufs.dvb);
    column_sums(bottom_x, nv, &mut bufs.dvb_neg);
    let inv_b = 1.0 / b as f32;
    if p.offsets.is_some() {
        bufs.mean_v
            .iter_mut()
            .zip(&bufs.dvb)
            .for_each(|(m, s)| *m = s * inv_b);
        column_sums(&bufs.y[..b * nh], nh, &mut bufs.mean_h);
        bufs.mean_h.iter_mut().for_each(|m| *m *= inv_b);
    }
    for (d, n) in bufs.dvb.iter_mut().zip(&bufs.dvb_neg) {
        *d = (*d - chain_weight * n) * inv_b;
    }
    for d in bufs.dhb.iter_mut() {
        *d *= inv_b;
    }
    if let Some((mu, lambda)) = p.offsets {
        centre(bufs, b, chain_weight, mu, lambda, rule.offset_rate);
    }
    let UpdateRule {
        lr,
        momentum,
        weight_decay,
        ..
    } = rule;
    if momentum == 0.0 {
        // W = (1 - lr*decay) W + (lr/B) [v0; vk]' [p(h|v0); -hk]: one product, no velocity.
        matmul(
            w,
            &bufs.x,
            &bufs.y,
            (nv, b + c, nh),
            true,
            false,
            1.0 - lr * weight_decay,
            lr * inv_b,
        );
        for (p, d) in hb.iter_mut().zip(&bufs.dhb) {
            *p += lr * d;
        }
        for (p, d) in vb.iter_mut().zip(&bufs.dvb) {
            *p += lr * d;
        }
    } else {
        matmul(
            p.vel_w,
            &bufs.x,
            &bufs.y,
            (nv, b + c, nh),
            true,
            false,
            momentum,
            lr * inv_b,
        );
        let decay = lr * weight_decay;
        for (w, v) in w.iter_mut().zip(p.vel_w.iter_mut()) {
            *v -= decay * *w;
            *w += *v;
        }
        for ((p, v), d) in hb.iter_mut().zip(p.vel_hb.iter_mut()).zip(&bufs.dhb) {
            *v = momentum * *v + lr * d;
            *p += *v;
        }
        for ((p, v), d) in vb.iter_mut().zip(p.vel_vb.iter_mut()).zip(&bufs.dvb) {
            *v = momentum * *v + lr * d;
            *p += *v;
        }
    }
}

/// Centring (Melchior, Fischer & Wiskott 2016) in the standard
/// parameters: with offsets mu (visible) and lambda (hidden), the weight
/// gradient is <(v - mu)(h - lambda)'>_data - <...>_model, the biases'
/// gradients lose its products with the other layer's offset
/// (dvb -= dW lambda, dhb -= dW' mu), and the offsets then move towards
/// the batch's mean data and hidden probabilities by `rate`. Centres
/// `bufs.x` and `bufs.y` (whose chain rows carry the weight B/C) in place
/// for the weight product that follows.
fn centre(
    bufs: &mut CdBuffers,
    b: usize,
    chain_weight: f32,
    mu: &mut [f32],
    lambda: &mut [f32],
    rate: f32,
) {
    let (nv, nh) = (mu.len(), lambda.len());
    for x in bufs.x.chunks_exact_mut(nv) {
        x.iter_mut().zip(mu.iter()).for_each(|(x, m)| *x -= m);
    }
    // y holds p(h|v0) on top and minus B/C times the negative hidden
    // layer below.
    let (top, bottom) = bufs.y.split_at_mut(b * nh);
    for y in top.chunks_exact_mut(nh) {
        y.iter_mut().zip(lambda.iter()).for_each(|(y, l)| *y -= l);
    }
    for y in bottom.chunks_exact_mut(nh) {
        y.iter_mut()
            .zip(lambda.iter())
            .for_each(|(y, l)| *y += chain_weight * l);
    }
    let inv_b = 1.0 / b as f32;
    // dW lambda = x' (y lambda) / B.
    for (r, y) in bufs.rows.iter_mut().zip(bufs.y.chunks_exact(nh)) {
        *r = y.iter().zip(lambda.iter()).map(|(y, l)| y * l).sum();
    }
    for (x, r) in bufs.x.chunks_exact(nv).zip(&bufs.rows) {
        for (d, x) in bufs.dvb.iter_mut().zip(x) {
            *d -= x * r * inv_b;
        }
    }
    // dW' mu = y' (x mu) / B.
    for (r, x) in bufs.rows.iter_mut().zip(bufs.x.chunks_exact(nv)) {
        *r = x.iter().zip(mu.iter()).map(|(x, m)| x * m).sum();
    }
    for (y, r) in bufs.y.chunks_exact(nh).zip(&bufs.rows) {
        for (d, y) in bufs.dhb.iter_mut().zip(y) {
            *d -= y * r * inv_b;
        }
    }
    // An offset whose mean stays 0 (a border pixel) decays geometrically;
    // below the smallest normal float it is flushed to 0, since subnormal
    // operands slow every product that reads them a hundredfold.
    let flush = |x: f32| if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x };
    for (m, d) in mu.iter_mut().zip(&bufs.mean_v) {
        *m = flush(*m + rate * (d - *m));
    }
    for (l, d) in lambda.iter_mut().zip(&bufs.mean_h) {
        *l = flush(*l + rate * (d - *l));
    }
}
