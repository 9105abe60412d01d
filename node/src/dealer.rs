//! The dealer role: a node that serves a committee's correlated randomness.
//!
//! For a job, the dealer draws fresh seeds (one model seed and one job seed per party) when the job is
//! registered, and works out once, on the first request, what the job deals (its requests, from the job's
//! public description, the manifest: model name and seed, weight mode, fixed point, batch, number of
//! inferences) and how large that is, without dealing it ([`veil_protocols::material::count`]). It sends each
//! party its two seeds; the last party's stream then carries its corrections, generated while they are sent:
//! the dealer deals the weight masks ([`veil_protocols::material::deal_masks`]), then the job's requests one
//! at a time ([`veil_protocols::material::Dealer`]), hands each full frame of corrections to the stream, and
//! deals the next inference only once the previous one was written. QUIC's flow control thus bounds what the
//! dealer holds: about one inference's corrections (at most [`CORRECTION_CHUNK_WORDS`] plus one request's,
//! plus one frame in flight) and the fixed per-job part (weight masks), whatever the number of inferences.
//! [`DealerState::peak_words`] records the most it held at once.
//!
//! For a `spdz2k` job the dealer deals authenticated material from the job seeds instead (no weight masks to
//! open: the owners publish masked values; [`veil_protocols::material::auth::AuthDealer`]) and also answers
//! the client, right after accepting its manifest, with the plaintext masks of the client's inputs and
//! weights ([`DealerState::owner`]). Those come from the same deterministic streams without dealing the rest
//! (the PRGs skip the other requests' draws), so serving the client and the last party are independent and
//! either may come first. The MAC key alpha is not part of it: the client gets alpha from the parties'
//! reports, after their checks (`wire::PartyReport::output_key_share`), so that it cannot help a party pass
//! a check.
//!
//! Invariants: the dealer never receives anything from a party but the request to be served, and serves each
//! party at most once (a party whose service started, even if it failed, is never served again), only to the
//! connection that proved that party's key; the owner material goes only to the manifest's client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::SendStream;
use tokio::sync::{mpsc, oneshot, Notify, OnceCell};
use veil_engine::kernel::RingGemm;
use veil_protocols::material::auth::AuthDealer;
use veil_protocols::material::{self, Draws, Request};
use veil_protocols::prg::Seed;
use veil_protocols::semi2k::local::DealtSeeds;

use crate::error::{NodeError, Result};
use crate::manifest::{Manifest, Protocol};
use crate::party::{JobProgram, JobRequests};
use crate::wire::{Dealt, Msg, OwnerMaterial, Words, CORRECTION_CHUNK_WORDS};

/// What a job deals, worked out once from its manifest, before anything is dealt.
struct Preparation {
    /// The requests, by part (setup, then each inference).
    requests: JobRequests,
    /// `semi2k`: element counts of the model's weight masks (empty for `spdz2k`).
    mask_shapes: Vec<usize>,
    /// Whether the job runs `spdz2k` (authenticated material).
    spdz2k: bool,
    /// Correction words the last party gets.
    corrections: u64,
    /// Bytes the dealer sends the committee (seeds, corrections, owner masks).
    bytes: u64,
    /// Seconds the preparation took.
    seconds: f64,
}

/// Where a party's service stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// Not asked for yet.
    Waiting,
    /// Its stream is being served, or failed.
    Started,
    /// Everything was written to its stream.
    Done,
}

/// A dealer's state for one job.
pub struct DealerState {
    seeds: Arc<DealtSeeds>,
    preparation: OnceCell<std::result::Result<Arc<Preparation>, String>>,
    service: Mutex<Vec<Service>>,
    /// The most correction words held at once while streaming (see [`DealerState::peak_words`]).
    peak: AtomicU64,
    /// Notified once every party has been served.
    pub all_served: Notify,
}

impl DealerState {
    /// State for a committee of `parties`, with fresh seeds, or seeds derived from the test-only `seed`
    /// ([`crate::config::NodeConfig::insecure_dealer_seed`]).
    pub fn new(parties: usize, seed: Option<u64>) -> Self {
        let seeds = match seed {
            Some(s) => DealtSeeds::from_master(&Seed::random_from(s), parties),
            None => DealtSeeds::random(parties),
        };
        Self {
            seeds: Arc::new(seeds),
            preparation: OnceCell::new(),
            service: Mutex::new(vec![Service::Waiting; parties]),
            peak: AtomicU64::new(0),
            all_served: Notify::new(),
        }
    }

    /// The most correction words this dealer held at once for the job (dealt and not yet written to the
    /// last party's stream, the frame in flight included); zero until the last party is served.
    pub fn peak_words(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The job's preparation, done on the first call (on a blocking thread) and shared by every later one.
    async fn preparation(&self, manifest: &Manifest) -> Result<Arc<Preparation>> {
        self.preparation
            .get_or_init(|| async {
                let m = manifest.clone();
                match tokio::task::spawn_blocking(move || prepare(&m)).await {
                    Ok(Ok(p)) => Ok(Arc::new(p)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("dealing task failed: {e}")),
                }
            })
            .await
            .clone()
            .map_err(NodeError::Job)
    }

    /// `spdz2k`: the client's material (its masks), computed on a blocking thread from the job's streams
    /// without dealing anything else. The caller must have checked that it serves the manifest's client.
    /// Fails for a `semi2k` job.
    pub async fn owner(&self, manifest: &Manifest) -> Result<OwnerMaterial> {
        let preparation = self.preparation(manifest).await?;
        if !preparation.spdz2k {
            return Err(NodeError::Job("a semi2k job has no owner material".into()));
        }
        let seeds = self.seeds.clone();
        tokio::task::spawn_blocking(move || owner_material(&preparation, &seeds))
            .await
            .map_err(|e| NodeError::Job(format!("dealing task failed: {e}")))?
    }

    /// Marks party `party`'s service as started; fails if there is no such party or it was served already.
    fn start(&self, party: usize) -> Result<()> {
        let mut service = self
            .service
            .lock()
            .map_err(|_| NodeError::Job("dealer state poisoned".into()))?;
        match service.get_mut(party) {
            None => Err(NodeError::Unexpected(format!("no party {party}"))),
            Some(Service::Waiting) => {
                service[party] = Service::Started;
                Ok(())
            }
            Some(_) => Err(NodeError::Unexpected(format!(
                "party {party} was served already"
            ))),
        }
    }

    /// Marks party `party` served, and notifies [`DealerState::all_served`] once every party is.
    fn done(&self, party: usize) -> Result<()> {
        let mut service = self
            .service
            .lock()
            .map_err(|_| NodeError::Job("dealer state poisoned".into()))?;
        if let Some(s) = service.get_mut(party) {
            *s = Service::Done;
        }
        if service.iter().all(|s| *s == Service::Done) {
            self.all_served.notify_one();
        }
        Ok(())
    }

    /// Serves party `party` of `manifest` on `send` (the caller finishes the stream, or writes `Failed` on
    /// an error): its [`Dealt`] header, then, for the last party, its corrections as they are generated and
    /// the dealer's time. Fails if the party was served already.
    pub async fn serve(
        &self,
        manifest: &Manifest,
        party: usize,
        send: &mut SendStream,
    ) -> Result<()> {
        self.start(party)?;
        let preparation = self.preparation(manifest).await?;
        let last = party + 1 == manifest.parties.len();
        let (model_seed, job_seed) = match (self.seeds.model.get(party), self.seeds.job.get(party))
        {
            (Some(m), Some(j)) => (m.clone(), j.clone()),
            _ => return Err(NodeError::Unexpected(format!("no party {party}"))),
        };
        let header = Dealt {
            model_seed,
            job_seed,
            corrections: Words(Vec::new()),
            more_corrections: if last { preparation.corrections } else { 0 },
            dealer_bytes: preparation.bytes,
            dealer_seconds: preparation.seconds,
        };
        write(send, &Msg::Dealt(header)).await?;
        if last {
            let seconds = self.stream_corrections(&preparation, send).await?;
            let seconds = preparation.seconds + seconds;
            write(send, &Msg::DealerTime { seconds }).await?;
        }
        self.done(party)
    }

    /// Deals the last party's corrections on a blocking thread and writes them to `send` as they come, one
    /// frame in flight at most; returns the seconds spent dealing (not waiting for the stream).
    async fn stream_corrections(
        &self,
        preparation: &Arc<Preparation>,
        send: &mut SendStream,
    ) -> Result<f64> {
        let (tx, mut rx) = mpsc::channel::<(Vec<u64>, oneshot::Sender<()>)>(1);
        let (preparation, seeds) = (preparation.clone(), self.seeds.clone());
        let producer = tokio::task::spawn_blocking(move || {
            let mut link = Link { tx, written: None };
            let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
            produce(
                &preparation,
                &seeds,
                threads,
                CORRECTION_CHUNK_WORDS,
                &mut link,
            )
            .map(|p| (p, preparation.corrections))
        });
        while let Some((chunk, written)) = rx.recv().await {
            // On a failed write, `written` is dropped with this future, which stops the producer.
            write(send, &Msg::Corrections(Words(chunk))).await?;
            let _ = written.send(());
        }
        let (produced, announced) = producer
            .await
            .map_err(|e| NodeError::Job(format!("dealing task failed: {e}")))??;
        if produced.words != announced {
            return Err(NodeError::Job(format!(
                "dealt {} correction words where {announced} were announced",
                produced.words
            )));
        }
        self.peak.fetch_max(produced.peak, Ordering::Relaxed);
        crate::metrics::METRICS.dealer_held(produced.peak);
        Ok(produced.dealing.as_secs_f64())
    }
}

async fn write(send: &mut SendStream, msg: &Msg) -> Result<()> {
    crate::frame::write(send, msg)
        .await
        .map_err(|e| NodeError::Quic(e.to_string()))
}

/// Works out what `manifest`'s job deals and its size, without dealing it.
fn prepare(manifest: &Manifest) -> Result<Preparation> {
    let started = Instant::now();
    let n = manifest.parties.len();
    // A generation job (semi2k, public weights): its steps' material, no masks, in one list.
    let (requests, mask_shapes, spdz2k) =
        if crate::generation::is_generation(&manifest.model.workload) {
            let job = crate::generation::GenerationJob::of(manifest)?;
            (JobRequests::single(job.requests()), Vec::new(), false)
        } else {
            let program = JobProgram::of(manifest)?;
            let spdz2k = manifest.protocol == Protocol::Spdz2k;
            let shapes = if spdz2k {
                Vec::new()
            } else {
                program.mask_shapes()
            };
            (program.request_parts(manifest), shapes, spdz2k)
        };
    let count = |r: &[Request]| {
        if spdz2k {
            material::auth::count(r)
        } else {
            material::count(r)
        }
    };
    let inferences = requests.inferences as u64;
    let draws: Draws = count(&requests.setup)?.plus(count(&requests.inference)?.times(inferences));
    let owner_words = if spdz2k {
        owner_words(&requests.setup)
            .saturating_add(owner_words(&requests.inference).saturating_mul(inferences))
    } else {
        0
    };
    let bytes = (n as u64).saturating_mul(32).saturating_add(
        draws
            .corrections
            .saturating_add(owner_words)
            .saturating_mul(8),
    );
    tracing::info!(job = %manifest.job, parties = n, corrections = draws.corrections, spdz2k, "dealing prepared");
    Ok(Preparation {
        requests,
        mask_shapes,
        spdz2k,
        corrections: draws.corrections,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Elements of the owner masks (`Input` and `WeightMask` requests) among `requests`.
fn owner_words(requests: &[Request]) -> u64 {
    requests
        .iter()
        .map(|r| match *r {
            Request::Input { len } | Request::WeightMask { len, .. } => len as u64,
            _ => 0,
        })
        .sum()
}

/// `spdz2k`: the client's masks, every inference's, from the job seeds (no correction is dealt).
fn owner_material(preparation: &Preparation, seeds: &DealtSeeds) -> Result<OwnerMaterial> {
    let mut dealer = AuthDealer::new(&seeds.job)?;
    let mut masks = Vec::new();
    for part in preparation.requests.parts() {
        masks.extend(dealer.owner_masks(part)?.into_iter().map(Words));
    }
    Ok(OwnerMaterial { masks })
}

/// Where the correction producer hands its frames.
trait Sink {
    /// Hands over `chunk`; returns once the chunk handed over before it (if any) was written.
    fn emit(&mut self, chunk: Vec<u64>) -> Result<()>;
    /// Returns once every chunk handed over was written.
    fn flush(&mut self) -> Result<()>;
}

/// The producer's end of the link to the stream writer.
struct Link {
    tx: mpsc::Sender<(Vec<u64>, oneshot::Sender<()>)>,
    /// Fires when the last chunk handed over was written.
    written: Option<oneshot::Receiver<()>>,
}

fn stream_closed() -> NodeError {
    NodeError::Job("the last party's stream closed while dealing".into())
}

impl Sink for Link {
    fn emit(&mut self, chunk: Vec<u64>) -> Result<()> {
        self.flush()?;
        let (done, written) = oneshot::channel();
        self.tx
            .blocking_send((chunk, done))
            .map_err(|_| stream_closed())?;
        self.written = Some(written);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        match self.written.take() {
            Some(w) => w.blocking_recv().map_err(|_| stream_closed()),
            None => Ok(()),
        }
    }
}

/// What the correction producer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Produced {
    /// Correction words dealt and handed over.
    words: u64,
    /// The most correction words held at once (dealt and not yet known written).
    peak: u64,
    /// Time spent dealing.
    dealing: Duration,
}

/// Deals the last party's corrections request by request and hands them to `sink` in chunks of `chunk`
/// words (the remainder of a part in a smaller one), waiting at the end of each part (the setup, each
/// inference) until everything was written. Holds at most `chunk` words plus one request's, and one chunk
/// in flight; a part starts with nothing held, so the peak does not depend on the number of inferences.
fn produce(
    preparation: &Preparation,
    seeds: &DealtSeeds,
    threads: usize,
    chunk: usize,
    sink: &mut dyn Sink,
) -> Result<Produced> {
    let gemm = RingGemm::new(threads);
    let requests = &preparation.requests;
    if preparation.spdz2k {
        let mut dealer = AuthDealer::new(&seeds.job)?;
        stream_parts(
            requests,
            |r| Ok(dealer.deal(std::slice::from_ref(r), &gemm)?.corrections),
            chunk,
            sink,
        )
    } else {
        let masks = material::deal_masks(&seeds.model, &preparation.mask_shapes)?;
        let mut dealer = material::Dealer::new(&seeds.job, &masks)?;
        stream_parts(
            requests,
            |r| Ok(dealer.deal(std::slice::from_ref(r), &gemm)?),
            chunk,
            sink,
        )
    }
}

/// [`produce`]'s loop over the parts, with `deal` dealing one request.
fn stream_parts(
    requests: &JobRequests,
    mut deal: impl FnMut(&Request) -> Result<Vec<u64>>,
    chunk: usize,
    sink: &mut dyn Sink,
) -> Result<Produced> {
    let chunk = chunk.max(1);
    let mut produced = Produced {
        words: 0,
        peak: 0,
        dealing: Duration::ZERO,
    };
    let mut held: Vec<u64> = Vec::new();
    // Words handed over and not yet known written (the sink says so when the next chunk goes).
    let mut in_flight = 0u64;
    for part in requests.parts() {
        for request in part {
            let started = Instant::now();
            let dealt = deal(request)?;
            produced.dealing += started.elapsed();
            if held.is_empty() {
                held = dealt;
            } else {
                held.extend_from_slice(&dealt);
            }
            produced.peak = produced.peak.max(held.len() as u64 + in_flight);
            while held.len() >= chunk {
                let rest = held.split_off(chunk);
                let full = std::mem::replace(&mut held, rest);
                produced.words += full.len() as u64;
                in_flight = full.len() as u64;
                sink.emit(full)?;
            }
        }
        if !held.is_empty() {
            let tail = std::mem::take(&mut held);
            produced.words += tail.len() as u64;
            sink.emit(tail)?;
        }
        sink.flush()?;
        in_flight = 0;
    }
    Ok(produced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Member, ModelSpec};
    use crate::wire::JobId;

    /// A job of `inferences` inferences of `network-a` (shared weights) under `protocol`.
    fn manifest(protocol: Protocol, inferences: u32) -> Manifest {
        let key = || {
            crate::identity::Identity::generate()
                .expect("key")
                .public_key()
        };
        let member = |port| Member {
            address: ([127, 0, 0, 1], port).into(),
            public_key: key(),
        };
        Manifest {
            job: JobId([3; 16]),
            protocol,
            model: ModelSpec {
                workload: "network-a".into(),
                seed: 1,
                weights: veil_engine::WeightMode::Shared,
                frac_bits: 16,
                deployed: None,
            },
            batch: 2,
            inferences,
            parties: vec![member(1), member(2), member(3)],
            dealer: Some(member(4)),
            client: key(),
            output_key: None,
            verifier: None,
        }
    }

    /// Collects what the producer hands over; checks that it waits for a chunk before the next.
    #[derive(Default)]
    struct Collect {
        chunks: Vec<Vec<u64>>,
        flushes: usize,
    }

    impl Sink for Collect {
        fn emit(&mut self, chunk: Vec<u64>) -> Result<()> {
            self.chunks.push(chunk);
            Ok(())
        }
        fn flush(&mut self) -> Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    /// Streams `manifest`'s corrections with chunks of `chunk` words: the preparation, what was produced
    /// and the chunks.
    fn stream(manifest: &Manifest, chunk: usize) -> (Preparation, Produced, Vec<Vec<u64>>) {
        let preparation = prepare(manifest).expect("prepare");
        let seeds = DealtSeeds::from_master(&Seed::random_from(5), 3);
        let mut sink = Collect::default();
        let produced = produce(&preparation, &seeds, 1, chunk, &mut sink).expect("produce");
        assert!(sink
            .chunks
            .iter()
            .all(|c| !c.is_empty() && c.len() <= chunk));
        assert_eq!(sink.flushes, 1 + manifest.inferences as usize);
        (preparation, produced, sink.chunks)
    }

    #[test]
    fn streamed_semi2k_corrections_are_the_whole_jobs_and_the_peak_does_not_grow_with_inferences() {
        let seeds = DealtSeeds::from_master(&Seed::random_from(5), 3);
        let mut peaks = Vec::new();
        for inferences in [1, 20] {
            let m = manifest(Protocol::Semi2k, inferences);
            let (preparation, produced, chunks) = stream(&m, CORRECTION_CHUNK_WORDS);
            let program = JobProgram::of(&m).expect("program");
            let masks = material::deal_masks(&seeds.model, &program.mask_shapes()).expect("masks");
            let whole = material::deal(
                &seeds.job,
                &program.requests(&m),
                &masks,
                &veil_protocols::gemm::NaiveGemm,
            )
            .expect("whole job");
            assert_eq!(chunks.concat(), whole);
            assert_eq!(produced.words, whole.len() as u64);
            assert_eq!(preparation.corrections, whole.len() as u64);
            assert_eq!(
                preparation.bytes,
                material::dealer_bytes(3, whole.len()),
                "the bytes announced before dealing"
            );
            // One frame per inference: each is smaller than a chunk.
            assert_eq!(chunks.len(), inferences as usize);
            peaks.push(produced.peak);
        }
        assert_eq!(peaks[0], peaks[1]);
        assert_eq!(peaks[0], 3_820, "one inference's corrections");
        // Small chunks: more frames, the same words, and still the same peak for 1 and 20 inferences.
        let small: Vec<(u64, u64)> = [1, 20]
            .map(|k| {
                let (_, produced, chunks) = stream(&manifest(Protocol::Semi2k, k), 1000);
                assert!(chunks.len() > k as usize);
                (produced.peak, produced.words)
            })
            .to_vec();
        assert_eq!(small[0].0, small[1].0);
        assert!(small[0].0 < peaks[0], "chunks bound what is held");
        assert_eq!(small[1].1, 20 * small[0].1);
    }

    #[test]
    fn streamed_spdz2k_corrections_and_owner_masks_are_the_whole_jobs() {
        let seeds = DealtSeeds::from_master(&Seed::random_from(5), 3);
        let mut peaks = Vec::new();
        for inferences in [1, 20] {
            let m = manifest(Protocol::Spdz2k, inferences);
            let (preparation, produced, chunks) = stream(&m, CORRECTION_CHUNK_WORDS);
            let program = JobProgram::of(&m).expect("program");
            let requests = program.requests(&m);
            assert_eq!(
                requests,
                veil_engine::local::spdz2k_requests(
                    match &program {
                        JobProgram::Plan(p) => p,
                        _ => panic!("network-a is a plan"),
                    },
                    2,
                    inferences as usize
                )
            );
            let committee = veil_protocols::semi2k::local::Committee::new(
                3,
                Arc::new(veil_protocols::gemm::NaiveGemm),
            );
            let whole = veil_protocols::spdz2k::local::deal_job(&committee, &requests, &seeds.job)
                .expect("whole job");
            assert_eq!(chunks.concat(), whole.deal.corrections);
            assert_eq!(preparation.bytes, whole.dealer_bytes);
            let owner = owner_material(&preparation, &seeds).expect("owner");
            let want: Vec<Words> = whole.deal.owner_masks.into_iter().map(Words).collect();
            assert_eq!(owner.masks, want);
            peaks.push(produced.peak);
        }
        assert_eq!(peaks[0], peaks[1]);
        assert_eq!(
            peaks[0], 236_564,
            "the larger of the setup's and one inference's corrections"
        );
    }

    /// A stream that breaks after `ok` chunks.
    struct Breaks {
        ok: usize,
    }

    impl Sink for Breaks {
        fn emit(&mut self, _chunk: Vec<u64>) -> Result<()> {
            match self.ok.checked_sub(1) {
                Some(left) => {
                    self.ok = left;
                    Ok(())
                }
                None => Err(stream_closed()),
            }
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_broken_stream_stops_the_dealing() {
        let requests = JobRequests {
            setup: Vec::new(),
            inference: vec![Request::Triples { len: 1 }; 100],
            inferences: 20,
        };
        let mut dealt = 0usize;
        let produced = stream_parts(
            &requests,
            |_| {
                dealt += 1;
                Ok(vec![0; 10])
            },
            25,
            &mut Breaks { ok: 3 },
        );
        assert!(produced.is_err());
        // Three chunks of 25 words went out; the fourth failed once 100 words were dealt.
        assert_eq!(dealt, 10);
    }

    #[test]
    fn a_party_is_served_at_most_once() {
        let state = DealerState::new(2, Some(1));
        state.start(0).expect("first");
        assert!(state.start(0).is_err(), "twice");
        assert!(state.start(2).is_err(), "no such party");
        state.done(0).expect("done");
        assert!(state.start(0).is_err(), "after being served");
    }
}
