//! Optimisers over a model's flat parameter list, with the exact update rules
//! of the frameworks the seed models came from (Keras for the VAEs, PyTorch
//! for the GAN). burn's own optimisers place epsilon differently and keep
//! their state in records keyed by parameter ids; ours keep it as named
//! tensors, so a checkpoint holds it as plain safetensors entries.

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::run::Checkpoint;

use super::tensors::{from_checkpoint, to_checkpoint};

/// Which update rule, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Keras Adam: `alpha = lr sqrt(1 - b2^t) / (1 - b1^t)`,
    /// `p -= alpha m / (sqrt(v) + eps)` (epsilon outside the bias correction).
    AdamKeras {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
    /// PyTorch Adam: `p -= lr m_hat / (sqrt(v_hat) + eps)` with
    /// `m_hat = m / (1 - b1^t)`, `v_hat = v / (1 - b2^t)`.
    AdamTorch {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
    /// Keras RMSprop without momentum: `v = rho v + (1 - rho) g^2`,
    /// `p -= lr g / sqrt(v + eps)`.
    RmspropKeras { lr: f64, rho: f64, eps: f64 },
}

/// Which optimiser a model config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Adam,
    Rmsprop,
}

/// An optimiser's state for one list of parameters.
#[derive(Clone)]
pub struct Optimizer {
    pub rule: Rule,
    /// Updates applied so far (the t of the bias correction).
    pub step: u64,
    /// First moments (Adam only; empty for RMSprop).
    pub(super) first: Vec<Tensor<1>>,
    /// Second moments.
    pub(super) second: Vec<Tensor<1>>,
}

impl Optimizer {
    /// A fresh optimiser with zero moments for parameters of these sizes.
    pub fn new(rule: Rule, sizes: &[usize], device: &Device) -> Self {
        let zeros = || -> Vec<Tensor<1>> {
            sizes
                .iter()
                .map(|&n| Tensor::<1>::zeros([n], device))
                .collect()
        };
        let first = match rule {
            Rule::RmspropKeras { .. } => Vec::new(),
            _ => zeros(),
        };
        Optimizer {
            rule,
            step: 0,
            first,
            second: zeros(),
        }
    }

    /// One update of every parameter with its gradient.
    pub fn update(&mut self, params: &mut [Tensor<1>], grads: Vec<Tensor<1>>) {
        assert_eq!(params.len(), grads.len());
        self.step += 1;
        let t = self.step as i32;
        for (i, g) in grads.into_iter().enumerate() {
            let p = params[i].clone();
            params[i] = match self.rule {
                Rule::AdamKeras {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => {
                    let alpha = lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t));
                    let (m, v) = self.moments(i, &g, beta1, beta2);
                    p - m.mul_scalar(alpha).div(v.sqrt().add_scalar(eps))
                }
                Rule::AdamTorch {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => {
                    let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                    let (m, v) = self.moments(i, &g, beta1, beta2);
                    p - m
                        .mul_scalar(lr / c1)
                        .div(v.div_scalar(c2).sqrt().add_scalar(eps))
                }
                Rule::RmspropKeras { lr, rho, eps } => {
                    let v = self.second[i]
                        .clone()
                        .mul_scalar(rho)
                        .add(g.clone().square().mul_scalar(1.0 - rho));
                    self.second[i] = v.clone();
                    p - g.mul_scalar(lr).div(v.add_scalar(eps).sqrt())
                }
            };
        }
    }

    /// Updates and returns the moments of parameter `i`.
    fn moments(
        &mut self,
        i: usize,
        g: &Tensor<1>,
        beta1: f64,
        beta2: f64,
    ) -> (Tensor<1>, Tensor<1>) {
        let m = self.first[i]
            .clone()
            .mul_scalar(beta1)
            .add(g.clone().mul_scalar(1.0 - beta1));
        let v = self.second[i]
            .clone()
            .mul_scalar(beta2)
            .add(g.clone().square().mul_scalar(1.0 - beta2));
        self.first[i] = m.clone();
        self.second[i] = v.clone();
        (m, v)
    }

    /// Adds the state to a checkpoint as `{prefix}.m.{name}`, `{prefix}.v.{name}`
    /// and the metadata entry `genlab.{prefix}.step`.
    pub fn save(&self, ck: &mut Checkpoint, prefix: &str, names: &[&str]) -> Result<()> {
        for (i, name) in names.iter().enumerate() {
            if let Some(m) = self.first.get(i) {
                ck.insert(&format!("{prefix}.m.{name}"), to_checkpoint(m)?);
            }
            ck.insert(
                &format!("{prefix}.v.{name}"),
                to_checkpoint(&self.second[i])?,
            );
        }
        ck.set_meta(&format!("genlab.{prefix}.step"), self.step.to_string());
        Ok(())
    }

    /// Restores what [`Optimizer::save`] wrote.
    pub fn load(
        rule: Rule,
        ck: &Checkpoint,
        prefix: &str,
        names: &[&str],
        sizes: &[usize],
        device: &Device,
    ) -> Result<Self> {
        let mut opt = Optimizer::new(rule, sizes, device);
        for (i, name) in names.iter().enumerate() {
            if !opt.first.is_empty() {
                opt.first[i] =
                    from_checkpoint(ck, &format!("{prefix}.m.{name}"), sizes[i], device)?;
            }
            opt.second[i] = from_checkpoint(ck, &format!("{prefix}.v.{name}"), sizes[i], device)?;
        }
        let key = format!("genlab.{prefix}.step");
        opt.step = ck
            .meta(&key)?
            .parse()
            .map_err(|_| anyhow::anyhow!("checkpoint entry {key} is not a number"))?;
        Ok(opt)
    }
}
