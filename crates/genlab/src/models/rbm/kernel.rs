//! The CD-k update on host buffers: genlab's fused kernel, which the
//! backend extension runs in place on the CPU backend's tensors.

use crate::cpu::{column_sums, matmul, sigmoid_bernoulli};

/// Reusable buffers of the CD-k update (nothing is allocated per step).
pub struct CdBuffers {
    batch: usize,
    /// 2B x V: data on top, the chain's final visible sample below.
    pub x: Vec<f32>,
    /// 2B x H: p(h|data) on top, minus the final hidden sample below.
    y: Vec<f32>,
    /// B x H: the current hidden sample.
    h: Vec<f32>,
    /// B x H: scratch for hidden probabilities.
    hp: Vec<f32>,
    /// B x V: scratch for visible probabilities.
    vp: Vec<f32>,
    /// Gradient scratch for the biases.
    dhb: Vec<f32>,
    dvb: Vec<f32>,
    dvb_neg: Vec<f32>,
    /// The 2k+1 keys of one update (kept to avoid a per-step allocation).
    pub(super) keys: Vec<u64>,
}

impl CdBuffers {
    /// Buffers for a `v` x `h` RBM and batches of `batch` rows.
    pub fn for_shape(v: usize, h: usize, batch: usize) -> Self {
        CdBuffers {
            batch,
            x: vec![0.0; 2 * batch * v],
            y: vec![0.0; 2 * batch * h],
            h: vec![0.0; batch * h],
            hp: vec![0.0; batch * h],
            vp: vec![0.0; batch * v],
            dhb: vec![0.0; h],
            dvb: vec![0.0; v],
            dvb_neg: vec![0.0; v],
            keys: Vec::new(),
        }
    }

    /// Whether these buffers fit a `v` x `h` RBM and batches of `batch` rows.
    pub fn fits(&self, v: usize, h: usize, batch: usize) -> bool {
        self.batch == batch && self.vp.len() == batch * v && self.hp.len() == batch * h
    }

    /// The top half of `x`, where the training loop writes the batch.
    pub fn data_mut(&mut self) -> &mut [f32] {
        let n = self.vp.len();
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
    /// B x H hidden states of the persistent chains (PCD only).
    pub chains: Option<&'a mut [f32]>,
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

/// One CD-k (or PCD-k) update on the batch in `bufs.data_mut()`, exactly as
/// SPEC section 1: v0 = data probabilities; h ~ p(h|v0) (PCD: the
/// persistent chains' h); k times v ~ p(v|h), h ~ p(h|v); then
/// dW = (v0' p(h|v0) - vk' hk) / B, dhb = mean(p(h|v0) - hk),
/// dvb = mean(v0 - vk); velocity = momentum * velocity + lr * (grad - decay * W);
/// param += velocity. `keys` (2k+1 of them, see [`UpdateRule::cd_keys`]) seed
/// the Bernoulli draws in order. All work happens in place: the sigmoid, the
/// uniform draw and the comparison are one pass per layer, and the weight
/// gradient is one product [v0; vk]' [p(h|v0); -hk] written straight into W
/// (or its velocity).
pub fn cd_update_host(p: CdParams<'_>, bufs: &mut CdBuffers, rule: UpdateRule, keys: &[u64]) {
    let (nv, nh, b) = (p.vb.len(), p.hb.len(), bufs.batch);
    assert!(bufs.fits(nv, nh, b), "CD buffers of another shape");
    assert_eq!(keys.len(), rule.cd_keys(), "one key per Bernoulli draw");
    let (top_x, bottom_x) = bufs.x.split_at_mut(b * nv);
    let (top_y, bottom_y) = bufs.y.split_at_mut(b * nh);
    let (w, hb, vb) = (p.w, p.hb, p.vb);
    // Positive phase: p(h|v0) into the top of y, and a sample of it.
    up(w, hb, top_x, top_y, Some(&mut bufs.h), keys[0]);
    if let Some(chains) = &p.chains {
        bufs.h.copy_from_slice(chains);
    }
    // Negative phase: k full Gibbs steps, both layers sampled every step.
    for (&visible_key, &hidden_key) in keys[1..].iter().step_by(2).zip(keys[2..].iter().step_by(2))
    {
        down(
            w,
            vb,
            &bufs.h,
            &mut bufs.vp,
            Some(&mut *bottom_x),
            visible_key,
        );
        up(w, hb, bottom_x, &mut bufs.hp, Some(&mut bufs.h), hidden_key);
    }
    if let Some(chains) = p.chains {
        chains.copy_from_slice(&bufs.h);
    }
    for (y, h) in bottom_y.iter_mut().zip(&bufs.h) {
        *y = -h;
    }
    // Bias gradients from column sums.
    column_sums(&bufs.y, nh, &mut bufs.dhb);
    column_sums(top_x, nv, &mut bufs.dvb);
    column_sums(bottom_x, nv, &mut bufs.dvb_neg);
    let inv_b = 1.0 / b as f32;
    for (d, n) in bufs.dvb.iter_mut().zip(&bufs.dvb_neg) {
        *d = (*d - n) * inv_b;
    }
    for d in bufs.dhb.iter_mut() {
        *d *= inv_b;
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
            (nv, 2 * b, nh),
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
            (nv, 2 * b, nh),
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
