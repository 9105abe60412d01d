//! One party's side of private inference: model setup (weights) and the forward pass over shares.

use std::time::{Duration, Instant};

use veil_protocols::material::MaterialUse;
use veil_protocols::net::{Net, NetStats};
use veil_protocols::ring;
use veil_protocols::semi2k::{FixedWeight, Party};

use crate::error::{EngineError, Result};
use crate::plan::{Plan, StepKind, WeightMode};

/// A party's share of one weight and its bias, as the model owner deals it (or the plaintext, if public).
#[derive(Clone)]
pub struct WeightShare {
    /// Share of the `inner x outputs` matrix.
    pub matrix: Vec<u64>,
    /// Share of the bias.
    pub bias: Option<Vec<u64>>,
}

impl std::fmt::Debug for WeightShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightShare[{}]", self.matrix.len())
    }
}

enum PartyWeight {
    Shared {
        fixed: FixedWeight,
        bias: Option<Vec<u64>>,
    },
    Public {
        matrix: Vec<u64>,
        bias: Option<Vec<u64>>,
    },
}

/// A party's model after setup: ready for any number of inferences.
pub struct PartyModel<'p> {
    plan: &'p Plan,
    weights: Vec<PartyWeight>,
}

/// Cost of one step at one party.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepProfile {
    /// The step's label.
    pub label: String,
    /// Wall time of the step.
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// Communication during the step.
    pub net: NetStats,
    /// Dealer material the step consumed.
    pub material: MaterialUse,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Model setup at one party: for shared weights, opens `W - B` for each weight against its dealt mask
/// (one round per weight, once per model); for public weights, nothing to do.
pub fn setup<'p, N: Net>(
    party: &mut Party<N>,
    plan: &'p Plan,
    weights: Vec<WeightShare>,
    masks: Vec<Vec<u64>>,
) -> Result<PartyModel<'p>> {
    if weights.len() != plan.weights.len() {
        return Err(EngineError::Weights(format!(
            "{} weight shares for a plan of {} weights",
            weights.len(),
            plan.weights.len()
        )));
    }
    let mut out = Vec::with_capacity(weights.len());
    let mut masks = masks.into_iter();
    for (index, (share, spec)) in weights.into_iter().zip(&plan.weights).enumerate() {
        out.push(match plan.mode {
            WeightMode::Shared => {
                let mask = masks.next().unwrap_or_default();
                let fixed =
                    party.setup_weight(index, &share.matrix, &mask, [spec.inner, spec.outputs])?;
                PartyWeight::Shared {
                    fixed,
                    bias: share.bias,
                }
            }
            WeightMode::Public => PartyWeight::Public {
                matrix: share.matrix,
                bias: share.bias,
            },
        });
    }
    Ok(PartyModel { plan, weights: out })
}

impl PartyModel<'_> {
    /// Runs the plan on this party's share of a batch; returns its share of the output (`f` fractional bits).
    /// `profile`, if given, receives one entry per step.
    pub fn infer<N: Net>(
        &self,
        party: &mut Party<N>,
        input: Vec<u64>,
        batch: usize,
        mut profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<Vec<u64>> {
        if batch == 0 {
            return Err(EngineError::EmptyBatch);
        }
        if input.len() != batch * self.plan.input_len {
            return Err(EngineError::InputShape {
                got: input.len(),
                expected: batch * self.plan.input_len,
                batch,
                item: vec![self.plan.input_len],
            });
        }
        let mut x = input;
        for step in &self.plan.steps {
            let started = Instant::now();
            let before = party.stats().clone();
            let material_before = party.material_use();
            x = match &step.kind {
                StepKind::Product {
                    weight,
                    lowering,
                    outputs,
                    conv_positions,
                } => {
                    let (mut z, bias) = match &self.weights[*weight] {
                        PartyWeight::Shared { fixed, bias } => {
                            (party.weight_product(&x, batch, *lowering, fixed)?, bias)
                        }
                        PartyWeight::Public { matrix, bias } => {
                            let rows = batch * lowering.rows_per_item();
                            let mut z = vec![0u64; rows * outputs];
                            party.gemm().gemm(
                                rows,
                                lowering.inner(),
                                *outputs,
                                &lowering.lower(&x, batch)?,
                                matrix,
                                &mut z,
                            );
                            (z, bias)
                        }
                    };
                    if let Some(bias) = bias {
                        let public = matches!(self.weights[*weight], PartyWeight::Public { .. });
                        if !public || party.id() == 0 {
                            for row in z.chunks_mut(*outputs) {
                                ring::add_assign(row, bias);
                            }
                        }
                    }
                    match conv_positions {
                        Some(positions) => channels_first(&z, batch, *positions, *outputs),
                        None => z,
                    }
                }
                StepKind::Rescale => party.trunc(&x)?,
                StepKind::RescaleRelu => party.trunc_relu(&x)?,
                StepKind::Relu => party.relu(&x)?,
                StepKind::MaxPool(pool) => party.max_pool2d(&x, batch, pool)?,
            };
            if let Some(p) = profile.as_deref_mut() {
                p.push(StepProfile {
                    label: step.label.clone(),
                    elapsed: started.elapsed(),
                    net: party.stats().since(&before),
                    material: party.material_use().since(&material_before),
                });
            }
        }
        Ok(x)
    }
}

/// `[batch, positions, channels]` (the product's layout) to `[batch, channels, positions]`.
fn channels_first(z: &[u64], batch: usize, positions: usize, channels: usize) -> Vec<u64> {
    let mut out = vec![0u64; z.len()];
    for b in 0..batch {
        let item = &z[b * positions * channels..(b + 1) * positions * channels];
        let dst = &mut out[b * positions * channels..(b + 1) * positions * channels];
        for p in 0..positions {
            for c in 0..channels {
                dst[c * positions + p] = item[p * channels + c];
            }
        }
    }
    out
}
