//! One party's side of private inference: model setup (weights) and the forward pass over shares.

use std::time::{Duration, Instant};

use veil_protocols::domain::{Domain, Semi2k};
use veil_protocols::material::MaterialUse;
use veil_protocols::net::{Net, NetStats};
use veil_protocols::ops::WeightOps;
use veil_protocols::rep3::{RepShare, RepWeight};
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

/// What the model owner publishes for one weight under `spdz2k`: `W - B` and `bias - R` against masks whose
/// plaintexts it got from the dealer (uniform masks: the published words reveal nothing). The parties derive
/// authenticated shares `[W] = [B] + (W - B)` without communicating.
#[derive(Clone)]
pub struct PublishedWeight {
    /// `W - B` modulo 2^64 (shared weights), or the plaintext matrix (public weights).
    pub matrix: Vec<u64>,
    /// `bias - R` modulo 2^64 (shared weights), or the plaintext bias (public weights).
    pub bias: Option<Vec<u64>>,
}

impl std::fmt::Debug for PublishedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublishedWeight[{}]", self.matrix.len())
    }
}

/// One weight as a party holds it after setup: the protocol's prepared secret-shared form `W` (with the
/// bias's share `S`), or the public plaintext.
enum PartyWeight<W, S> {
    Shared {
        fixed: W,
        bias: Option<S>,
    },
    Public {
        matrix: Vec<u64>,
        bias: Option<Vec<u64>>,
    },
}

/// A party's model after setup: ready for any number of inferences.
pub struct PartyModel<'p, D: Domain = Semi2k> {
    plan: &'p Plan,
    weights: Vec<PartyWeight<FixedWeight<D>, D::Arith>>,
}

/// A `rep3` party's model after setup (replicated shares of the weights, no dealt masks).
pub struct Rep3Model<'p> {
    plan: &'p Plan,
    weights: Vec<PartyWeight<RepWeight, RepShare>>,
}

/// Model setup at one `rep3` party from its replicated shares of each weight (matrix and bias), or the
/// plaintexts if the plan's weights are public. No communication.
pub fn setup_rep3<'p>(
    plan: &'p Plan,
    weights: Vec<(RepShare, Option<RepShare>)>,
    public: &[WeightShare],
) -> Result<Rep3Model<'p>> {
    let mut out = Vec::with_capacity(plan.weights.len());
    match plan.mode {
        WeightMode::Shared => {
            if weights.len() != plan.weights.len() {
                return Err(EngineError::Weights(format!(
                    "{} weight shares for a plan of {} weights",
                    weights.len(),
                    plan.weights.len()
                )));
            }
            for ((matrix, bias), spec) in weights.into_iter().zip(&plan.weights) {
                out.push(PartyWeight::Shared {
                    fixed: RepWeight::new(&matrix, [spec.inner, spec.outputs])?,
                    bias,
                });
            }
        }
        WeightMode::Public => {
            if public.len() != plan.weights.len() {
                return Err(EngineError::Weights(format!(
                    "{} public weights for a plan of {} weights",
                    public.len(),
                    plan.weights.len()
                )));
            }
            for w in public {
                out.push(PartyWeight::Public {
                    matrix: w.matrix.clone(),
                    bias: w.bias.clone(),
                });
            }
        }
    }
    Ok(Rep3Model { plan, weights: out })
}

impl Rep3Model<'_> {
    /// Runs the plan on this party's share of a batch (see [`PartyModel::infer`]).
    pub fn infer<P: WeightOps<Share = RepShare, Weight = RepWeight>>(
        &self,
        party: &mut P,
        input: RepShare,
        batch: usize,
        profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<RepShare> {
        run_plan(self.plan, &self.weights, party, input, batch, profile)
    }
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

/// Model setup at one party of any domain from what the model owner published (see [`PublishedWeight`]):
/// takes each shared weight's dealt mask (and its bias's input mask) from the material, in the order of
/// [`Plan::setup_requests`]. No communication among the parties.
pub fn setup_published<'p, N: Net, D: Domain>(
    party: &mut Party<N, D>,
    plan: &'p Plan,
    published: &[PublishedWeight],
) -> Result<PartyModel<'p, D>> {
    if published.len() != plan.weights.len() {
        return Err(EngineError::Weights(format!(
            "{} published weights for a plan of {} weights",
            published.len(),
            plan.weights.len()
        )));
    }
    let mut out = Vec::with_capacity(published.len());
    for (index, (p, spec)) in published.iter().zip(&plan.weights).enumerate() {
        out.push(match plan.mode {
            WeightMode::Shared => {
                let dims = [spec.inner, spec.outputs];
                let mask = party
                    .material()
                    .weight_mask(index, spec.inner * spec.outputs)?;
                let fixed = party.fixed_weight(index, mask, p.matrix.clone(), dims)?;
                let bias = match &p.bias {
                    Some(b) => {
                        let mask = party.material().input(b.len())?;
                        Some(party.input_from_masked(mask, b))
                    }
                    None => None,
                };
                PartyWeight::Shared { fixed, bias }
            }
            WeightMode::Public => PartyWeight::Public {
                matrix: p.matrix.clone(),
                bias: p.bias.clone(),
            },
        });
    }
    Ok(PartyModel { plan, weights: out })
}

impl<D: Domain> PartyModel<'_, D> {
    /// The plan this model runs.
    pub fn plan(&self) -> &Plan {
        self.plan
    }

    /// The preprocessing this model allows once a party's material for an inference is prepared: each
    /// secret-shared weight's product with its dealt activation mask (see
    /// `Party::precompute_weight_products`).
    pub fn precompute<N: Net>(&self, party: &mut Party<N, D>) -> Result<()> {
        let fixed: Vec<&FixedWeight<D>> = self
            .weights
            .iter()
            .filter_map(|w| match w {
                PartyWeight::Shared { fixed, .. } => Some(fixed),
                PartyWeight::Public { .. } => None,
            })
            .collect();
        party.precompute_weight_products(&fixed)?;
        party.precompute_comparisons();
        Ok(())
    }

    /// Runs the plan on this party's share of a batch; returns its share of the output (`f` fractional bits).
    /// `profile`, if given, receives one entry per step.
    pub fn infer<N: Net>(
        &self,
        party: &mut Party<N, D>,
        input: D::Arith,
        batch: usize,
        profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<D::Arith> {
        run_plan(self.plan, &self.weights, party, input, batch, profile)
    }
}

/// The plan's steps on any protocol's shares: one party's side of an inference.
fn run_plan<P: WeightOps>(
    plan: &Plan,
    weights: &[PartyWeight<P::Weight, P::Share>],
    party: &mut P,
    input: P::Share,
    batch: usize,
    mut profile: Option<&mut Vec<StepProfile>>,
) -> Result<P::Share> {
    if batch == 0 {
        return Err(EngineError::EmptyBatch);
    }
    if P::len(&input) != batch * plan.input_len {
        return Err(EngineError::InputShape {
            got: P::len(&input),
            expected: batch * plan.input_len,
            batch,
            item: vec![plan.input_len],
        });
    }
    let mut x = input;
    for step in &plan.steps {
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
                let rows = batch * lowering.rows_per_item();
                // Row-major `rows x outputs`: element i belongs to column i % outputs.
                let columns: Vec<usize> = (0..rows * outputs).map(|i| i % outputs).collect();
                let z = match &weights[*weight] {
                    PartyWeight::Shared { fixed, bias } => {
                        let z = party.weight_product(&x, batch, *lowering, fixed)?;
                        match bias {
                            Some(b) => P::add(&z, &P::gather(b, &columns)),
                            None => z,
                        }
                    }
                    PartyWeight::Public { matrix, bias } => {
                        let mut z = P::gemm_right(
                            party.gemm(),
                            [rows, lowering.inner(), *outputs],
                            &P::lower(lowering, &x, batch)?,
                            matrix,
                        );
                        if let Some(b) = bias {
                            let tiled: Vec<u64> = columns.iter().map(|&c| b[c]).collect();
                            party.add_public(&mut z, &tiled);
                        }
                        z
                    }
                };
                match conv_positions {
                    Some(positions) => P::gather(&z, &channels_first(batch, *positions, *outputs)),
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

/// The gather indices that move `[batch, positions, channels]` (the product's layout) to
/// `[batch, channels, positions]`.
fn channels_first(batch: usize, positions: usize, channels: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch * positions * channels);
    for b in 0..batch {
        let base = b * positions * channels;
        for c in 0..channels {
            for p in 0..positions {
                out.push(base + p * channels + c);
            }
        }
    }
    out
}
