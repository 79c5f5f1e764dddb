//! The RBM's CD-k update as a burn backend extension: one operation,
//! [`ContrastiveDivergence::contrastive_divergence`], that each backend runs
//! its own way. On burn's CPU backend (`Flex`) it runs genlab's fused host
//! kernel ([`cd_update_host`]) in place on the tensors' buffers; on the
//! cubecl backends (wgpu, cuda) it runs the trait's default body, the same
//! update composed of burn's tensor primitives. The model calls the one
//! operation whatever the device, and burn's dispatch picks the body.

use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Backend, ExtensionType, Flex, FloatDType, Scalar, TensorMetadata, backend_extension,
    get_device_settings,
};
use burn::tensor::{Shape, TensorData};
use burn_flex::FlexTensor;

use super::kernel::{CdBuffers, CdParams, NegativeHidden, UpdateRule, cd_update_host};

/// An RBM's parameters and optimiser state as backend tensors: `w` is
/// visible x hidden; the velocities have the shapes of their parameters.
#[derive(ExtensionType)]
pub struct CdTensors<B: Backend> {
    pub w: FloatTensor<B>,
    pub hb: FloatTensor<B>,
    pub vb: FloatTensor<B>,
    pub vel_w: FloatTensor<B>,
    pub vel_hb: FloatTensor<B>,
    pub vel_vb: FloatTensor<B>,
    #[extension_type]
    pub chains: Chains<B>,
    #[extension_type]
    pub offsets: Offsets<B>,
}

/// Centring's offsets, or none.
#[derive(ExtensionType)]
pub enum Offsets<B: Backend> {
    Centred {
        visible: FloatTensor<B>,
        hidden: FloatTensor<B>,
    },
    Off,
}

impl<B: Backend> Clone for Offsets<B> {
    fn clone(&self) -> Self {
        match self {
            Offsets::Centred { visible, hidden } => Offsets::Centred {
                visible: visible.clone(),
                hidden: hidden.clone(),
            },
            Offsets::Off => Offsets::Off,
        }
    }
}

impl<B: Backend> Clone for CdTensors<B> {
    fn clone(&self) -> Self {
        CdTensors {
            w: self.w.clone(),
            hb: self.hb.clone(),
            vb: self.vb.clone(),
            vel_w: self.vel_w.clone(),
            vel_hb: self.vel_hb.clone(),
            vel_vb: self.vel_vb.clone(),
            chains: self.chains.clone(),
            offsets: self.offsets.clone(),
        }
    }
}

/// Where the negative phase starts.
#[derive(ExtensionType)]
pub enum Chains<B: Backend> {
    /// PCD: the C x H hidden states left by the previous update.
    Persistent(FloatTensor<B>),
    /// CD: from the hidden sample of the data.
    Fresh,
}

/// The backends the CD-k update runs on: `Flex` with genlab's host kernel,
/// the cubecl backends (wgpu, cuda) with the default body.
#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")))]
pub trait ContrastiveDivergence: Backend {
    /// One CD-k (PCD-k) update of `params` on the batch `v0` (B x V), with
    /// the Bernoulli draws seeded by `keys` (2k+1, in the order of
    /// [`cd_update_host`]). Returns the updated parameters and state.
    fn contrastive_divergence(
        #[extension_type] params: CdTensors<Self>,
        v0: FloatTensor<Self>,
        rule: UpdateRule,
        keys: Vec<u64>,
    ) -> CdTensors<Self> {
        composed_cd_update::<Self>(params, v0, rule, &keys)
    }
}

impl<B: Backend> Clone for Chains<B> {
    fn clone(&self) -> Self {
        match self {
            Chains::Persistent(c) => Chains::Persistent(c.clone()),
            Chains::Fresh => Chains::Fresh,
        }
    }
}

impl ContrastiveDivergence for Flex {
    fn contrastive_divergence(
        params: CdTensors<Self>,
        v0: FloatTensor<Self>,
        rule: UpdateRule,
        keys: Vec<u64>,
    ) -> CdTensors<Self> {
        flex_cd_update(params, v0, rule, &keys)
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl ContrastiveDivergence for burn::backend::Cube {}

/// A flex tensor whose buffer holds exactly its values in row-major order
/// (a copy only when it is a view, e.g. a transpose or a slice).
fn dense(t: FlexTensor) -> FlexTensor {
    let n = t.layout().shape().num_elements();
    let exact = t.layout().contiguous_offsets() == Some((0, n)) && t.bytes().len() == 4 * n;
    if exact { t } else { t.to_contiguous() }
}

thread_local! {
    /// The host kernel's scratch, kept between updates of the same shape.
    static BUFFERS: std::cell::RefCell<Option<CdBuffers>> = const { std::cell::RefCell::new(None) };
}

/// The update on flex tensors: the host kernel working in place on their
/// buffers (copy-on-write, so a clone kept elsewhere, e.g. the skip-batch
/// backup, is never changed).
fn flex_cd_update(
    params: CdTensors<Flex>,
    v0: FlexTensor,
    rule: UpdateRule,
    keys: &[u64],
) -> CdTensors<Flex> {
    let dims = |t: &FlexTensor| t.layout().shape().to_vec();
    let (nv, nh) = match dims(&params.w)[..] {
        [nv, nh] => (nv, nh),
        ref other => panic!("RBM weights of shape {other:?}"),
    };
    let b = dims(&v0)[0];
    let v0 = dense(v0);
    let mut w = dense(params.w);
    let mut hb = dense(params.hb);
    let mut vb = dense(params.vb);
    let mut vel_w = dense(params.vel_w);
    let mut vel_hb = dense(params.vel_hb);
    let mut vel_vb = dense(params.vel_vb);
    let mut chains = match params.chains {
        Chains::Persistent(c) => Some(dense(c)),
        Chains::Fresh => None,
    };
    let c = chains.as_ref().map_or(b, |t| dims(t)[0]);
    let mut offsets = match params.offsets {
        Offsets::Centred { visible, hidden } => Some((dense(visible), dense(hidden))),
        Offsets::Off => None,
    };
    BUFFERS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let bufs = match slot.as_mut() {
            Some(bufs) if bufs.fits(nv, nh, b, c) => bufs,
            _ => slot.insert(CdBuffers::for_shape(nv, nh, b, c)),
        };
        bufs.data_mut().copy_from_slice(v0.storage::<f32>());
        let host = CdParams {
            w: w.storage_mut::<f32>(),
            hb: hb.storage_mut::<f32>(),
            vb: vb.storage_mut::<f32>(),
            vel_w: vel_w.storage_mut::<f32>(),
            vel_hb: vel_hb.storage_mut::<f32>(),
            vel_vb: vel_vb.storage_mut::<f32>(),
            chains: chains.as_mut().map(|c| c.storage_mut::<f32>()),
            offsets: offsets
                .as_mut()
                .map(|(v, h)| (v.storage_mut::<f32>(), h.storage_mut::<f32>())),
        };
        cd_update_host(host, bufs, rule, keys);
    });
    CdTensors {
        w,
        hb,
        vb,
        vel_w,
        vel_hb,
        vel_vb,
        chains: match chains {
            Some(c) => Chains::Persistent(c),
            None => Chains::Fresh,
        },
        offsets: match offsets {
            Some((visible, hidden)) => Offsets::Centred { visible, hidden },
            None => Offsets::Off,
        },
    }
}

/// The update composed of burn's tensor primitives, for any backend. It
/// draws the same uniforms as the host kernel (made on the host from the same
/// keys and uploaded), so both run the same chains up to the rounding of
/// their matrix products.
pub fn composed_cd_update<B: Backend>(
    params: CdTensors<B>,
    v0: FloatTensor<B>,
    rule: UpdateRule,
    keys: &[u64],
) -> CdTensors<B> {
    assert_eq!(keys.len(), rule.cd_keys(), "one key per Bernoulli draw");
    let device = v0.device();
    let settings = get_device_settings::<B>(&device);
    let shape = |t: &FloatTensor<B>| t.shape();
    let (b, nv) = (shape(&v0)[0], shape(&v0)[1]);
    let nh = shape(&params.hb)[0];
    let row = |bias: FloatTensor<B>, rows: usize, n: usize| {
        B::float_expand(
            B::float_reshape(bias, Shape::new([1, n])),
            Shape::new([rows, n]),
        )
    };
    // C negative chains: the batch's rows for CD, the persistent ones for PCD.
    let c = match &params.chains {
        Chains::Persistent(t) => shape(t)[0],
        Chains::Fresh => b,
    };
    // Bernoulli(p) from the counter-based uniforms of `key`.
    let bernoulli = |p: FloatTensor<B>, key: u64| {
        let dims = shape(&p);
        let mut u = vec![0.0f32; dims.num_elements()];
        crate::cpu::uniforms(&mut u, key);
        let u = B::float_from_data(TensorData::new(u, dims), &device);
        let below = B::float_lower(u, p, settings.bool_dtype);
        B::bool_into_float(below, FloatDType::F32)
    };
    let w = params.w;
    let hidden_probs = |v: FloatTensor<B>| {
        let rows = shape(&v)[0];
        let pre = B::float_add(
            B::float_matmul(v, w.clone()),
            row(params.hb.clone(), rows, nh),
        );
        B::sigmoid(pre)
    };
    let visible_probs = |h: FloatTensor<B>| {
        let rows = shape(&h)[0];
        let pre = B::float_add(
            B::float_matmul(h, B::float_transpose(w.clone())),
            row(params.vb.clone(), rows, nv),
        );
        B::sigmoid(pre)
    };

    let p0 = hidden_probs(v0.clone());
    // CD starts its chains from a sample of p(h|v0), PCD from the persistent ones.
    let mut h = match &params.chains {
        Chains::Persistent(c) => c.clone(),
        Chains::Fresh => bernoulli(p0.clone(), keys[0]),
    };
    let mut vk = v0.clone();
    let mut hk_probs = p0.clone();
    // Each Gibbs step draws the visible layer, then the hidden one, with its own key.
    for (&visible_key, &hidden_key) in keys[1..].iter().step_by(2).zip(keys[2..].iter().step_by(2))
    {
        vk = bernoulli(visible_probs(h), visible_key);
        hk_probs = hidden_probs(vk.clone());
        h = bernoulli(hk_probs.clone(), hidden_key);
    }
    let chains = match params.chains {
        Chains::Persistent(_) => Chains::Persistent(h.clone()),
        Chains::Fresh => Chains::Fresh,
    };
    let h = match rule.negative_hidden {
        NegativeHidden::Sample => h,
        NegativeHidden::Probability => hk_probs,
    };
    let scale = |t: FloatTensor<B>, s: f32| B::float_mul_scalar(t, Scalar::from(s));
    let column_sums =
        |t: FloatTensor<B>, n: usize| B::float_reshape(B::float_sum_dim(t, 0), Shape::new([n]));
    // The chains' statistics are means over C rows, the data's over B: the
    // chains' sums weigh B/C (no product when C = B).
    let chain_weight = |t: FloatTensor<B>| {
        if c == b {
            t
        } else {
            scale(t, b as f32 / c as f32)
        }
    };
    let (mut dhb, mut dvb) = if c == b {
        (
            column_sums(B::float_sub(p0.clone(), h.clone()), nh),
            column_sums(B::float_sub(v0.clone(), vk.clone()), nv),
        )
    } else {
        (
            B::float_sub(
                column_sums(p0.clone(), nh),
                chain_weight(column_sums(h.clone(), nh)),
            ),
            B::float_sub(
                column_sums(v0.clone(), nv),
                chain_weight(column_sums(vk.clone(), nv)),
            ),
        )
    };
    let (dw, offsets) = match params.offsets {
        Offsets::Off => (
            B::float_sub(
                B::float_matmul(B::float_transpose(v0), p0),
                chain_weight(B::float_matmul(B::float_transpose(vk), h)),
            ),
            Offsets::Off,
        ),
        Offsets::Centred { visible, hidden } => {
            // As the host kernel's `centre`: the centred weight gradient,
            // the biases' corrections, then the offsets' moving averages.
            let mean_v = scale(column_sums(v0.clone(), nv), 1.0 / b as f32);
            let mean_h = scale(column_sums(p0.clone(), nh), 1.0 / b as f32);
            let centred = |t: FloatTensor<B>, offset: &FloatTensor<B>, n: usize| {
                let rows = shape(&t)[0];
                B::float_sub(t, row(offset.clone(), rows, n))
            };
            let dw = B::float_sub(
                B::float_matmul(
                    B::float_transpose(centred(v0, &visible, nv)),
                    centred(p0, &hidden, nh),
                ),
                chain_weight(B::float_matmul(
                    B::float_transpose(centred(vk, &visible, nv)),
                    centred(h, &hidden, nh),
                )),
            );
            let as_column = |t: FloatTensor<B>, n: usize| B::float_reshape(t, Shape::new([n, 1]));
            let as_vector = |t: FloatTensor<B>, n: usize| B::float_reshape(t, Shape::new([n]));
            // dW lambda and dW' mu, summed over the batch: divided by B below.
            let dw_lambda = as_vector(
                B::float_matmul(dw.clone(), as_column(hidden.clone(), nh)),
                nv,
            );
            let dwt_mu = as_vector(
                B::float_matmul(
                    B::float_transpose(dw.clone()),
                    as_column(visible.clone(), nv),
                ),
                nh,
            );
            dvb = B::float_sub(dvb, dw_lambda);
            dhb = B::float_sub(dhb, dwt_mu);
            let rate = rule.offset_rate;
            let toward = |o: FloatTensor<B>, m: FloatTensor<B>| {
                B::float_add(o.clone(), scale(B::float_sub(m, o), rate))
            };
            (
                dw,
                Offsets::Centred {
                    visible: toward(visible, mean_v),
                    hidden: toward(hidden, mean_h),
                },
            )
        }
    };
    let UpdateRule {
        lr,
        momentum,
        weight_decay,
        ..
    } = rule;
    let step = lr / b as f32;
    if momentum == 0.0 {
        // As the host kernel: no velocity, W = (1 - lr decay) W + lr grad.
        CdTensors {
            w: B::float_add(scale(w, 1.0 - lr * weight_decay), scale(dw, step)),
            hb: B::float_add(params.hb, scale(dhb, step)),
            vb: B::float_add(params.vb, scale(dvb, step)),
            vel_w: params.vel_w,
            vel_hb: params.vel_hb,
            vel_vb: params.vel_vb,
            chains,
            offsets,
        }
    } else {
        // velocity = momentum velocity + lr (grad - decay W); param += velocity.
        let vel_w = B::float_sub(
            B::float_add(scale(params.vel_w, momentum), scale(dw, step)),
            scale(w.clone(), lr * weight_decay),
        );
        let vel_hb = B::float_add(scale(params.vel_hb, momentum), scale(dhb, step));
        let vel_vb = B::float_add(scale(params.vel_vb, momentum), scale(dvb, step));
        CdTensors {
            w: B::float_add(w, vel_w.clone()),
            hb: B::float_add(params.hb, vel_hb.clone()),
            vb: B::float_add(params.vb, vel_vb.clone()),
            vel_w,
            vel_hb,
            vel_vb,
            chains,
            offsets,
        }
    }
}
