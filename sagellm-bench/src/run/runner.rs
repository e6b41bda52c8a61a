//! Drives workloads against a backend and stamps every event.
//!
//! Closed loop: `concurrency` workers each send a request, read its stream to the end, and send
//! the next. Open loop: each request starts at its time in the schedule (a seeded Poisson process
//! or a steady pace, see [`Arrival`]), whatever the backend is doing, and its scheduling lag
//! (actual minus intended start) is recorded.
//! Warm-up requests go first, one at a time, and are not recorded.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use crate::backend::clock::{Clock, Stalled};
use crate::backend::{
    Backend, BackendError, ErrorKind, GenerationRequest, RequestError, StreamEvent,
};
use crate::results::metrics::{self, WallClock};
use crate::results::record::{RawRequest, RequestRecord, Turn};
use crate::results::samples::{RequestSample, WorkloadSamples};
use crate::results::summary::{Provenance, Summary};
use crate::results::WorkloadResult;
use crate::run::hooks::{Report, ReportError};
use crate::run::interrupt::Interrupt;
use crate::run::memory::MemorySampler;
use crate::workload::session::{History, Role};
use crate::workload::setup::Response;
use crate::workload::{Arrival, Workload};

/// Why a run stopped before finishing its workloads.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("workload `{workload}`: {message}")]
    /// A workload's settings do not make a run.
    InvalidWorkload {
        /// The workload's name.
        workload: String,
        /// What is wrong with it.
        message: String,
    },
    #[error(transparent)]
    /// The backend failed to start a workload or to report its figures.
    Backend(#[from] BackendError),
    #[error("could not start the async runtime: {0}")]
    /// The async runtime could not start.
    Runtime(std::io::Error),
    #[error("{0} (this is a bug in the mock engine; please report it)")]
    /// The virtual clock found every task waiting with nothing scheduled.
    Stalled(#[from] Stalled),
    #[error("{0}")]
    /// A reporter failed (typically: a file could not be written).
    Report(#[from] ReportError),
}

/// How a run can be stopped early.
#[derive(Debug, Clone)]
pub struct RunControl {
    /// Once thrown: send no new request, let those in flight finish within `grace`, write what
    /// was completed, and mark the run incomplete.
    pub interrupt: Interrupt,
    /// How long requests in flight may take to finish after an interrupt.
    pub grace: Duration,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl {
            interrupt: Interrupt::new(),
            grace: Duration::from_secs(30),
        }
    }
}

/// Runs `workloads` in order against `backend`, feeding every reporter as results arrive, and
/// returns the run's summary.
pub fn run(
    backend: Arc<dyn Backend>,
    workloads: &[Workload],
    provenance: Provenance,
    reporter: &mut dyn Report,
) -> Result<Summary, RunError> {
    run_with(
        backend,
        workloads,
        provenance,
        reporter,
        &RunControl::default(),
    )
}

/// [`run`], stoppable through `control`. An interrupted run still returns its summary (marked
/// incomplete) and has written every file for what it completed.
pub fn run_with(
    backend: Arc<dyn Backend>,
    workloads: &[Workload],
    provenance: Provenance,
    reporter: &mut dyn Report,
    control: &RunControl,
) -> Result<Summary, RunError> {
    // Everything is checked before the first request of the first workload: a workload that
    // cannot run must not fail after the others have run for an hour.
    for (i, w) in workloads.iter().enumerate() {
        let invalid = |message| RunError::InvalidWorkload {
            workload: w.name.clone(),
            message,
        };
        w.validate().map_err(invalid)?;
        if workloads[..i].iter().any(|earlier| earlier.name == w.name) {
            return Err(invalid(
                "the name is given twice; each workload's files are named after it".to_string(),
            ));
        }
        crate::run::limits::check_memory(w).map_err(invalid)?;
    }
    let clock = backend.clock();
    let runtime = clock.build_runtime().map_err(RunError::Runtime)?;
    reporter.run_started(&provenance, workloads)?;
    let mut results = Vec::with_capacity(workloads.len());
    for workload in workloads {
        if control.interrupt.is_requested() {
            break;
        }
        reporter.workload_started(workload)?;
        let result = runtime.block_on(clock.drive(run_workload_with(
            backend.clone(),
            clock.clone(),
            workload,
            reporter,
            control,
        )))??;
        reporter.workload_finished(&result)?;
        results.push(result);
    }
    let mut summary = Summary::new(provenance, &results);
    if control.interrupt.is_requested() {
        summary.complete = false;
        summary.incomplete_reason = control.interrupt.reason();
    }
    reporter.run_finished(&summary)?;
    Ok(summary)
}

/// Runs one workload, stoppable through `control`: warm-up, then the measured requests.
async fn run_workload_with(
    backend: Arc<dyn Backend>,
    clock: Clock,
    workload: &Workload,
    reporter: &mut dyn Report,
    control: &RunControl,
) -> Result<WorkloadResult, RunError> {
    let interrupt = &control.interrupt;
    backend.start_workload(workload).await?;
    for i in 0..workload.warmup_requests {
        if interrupt.is_requested() {
            break;
        }
        let prompt = workload.prompt(i, true);
        let request = GenerationRequest {
            prompt: prompt.text,
            prompt_tokens: prompt.tokens,
            max_output_tokens: workload.output_tokens,
            ..GenerationRequest::default()
        };
        // Stoppable like the measured requests: after an interrupt, the warm-up request in
        // flight gets the grace period, then is abandoned (it is not recorded anyway).
        let warm_up = send(backend.as_ref(), &clock, request, false);
        let grace_over = async {
            interrupt.requested().await;
            clock.sleep(control.grace).await;
        };
        let raw = tokio::select! {
            biased;
            (_, raw, _) = warm_up => raw,
            () = grace_over => {
                tracing::warn!(workload = %workload.name, "grace period over: warm-up request {i} abandoned");
                break;
            }
        };
        if let Some(error) = raw.error {
            tracing::warn!(workload = %workload.name, "warm-up request {i} failed: {error}");
        }
    }
    backend.reset_statistics().await;

    let sampler = backend
        .model_in_process()
        .then(|| MemorySampler::start(Duration::from_millis(10)));
    let started_unix = unix_now();
    let origin = clock.now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RequestRecord>();
    let slots = crate::run::limits::open_loop_slots();
    let held = Arc::new(AtomicU64::new(0));
    let capped = Arc::new(AtomicU64::new(0));
    let wake_lag_ms = Arc::new(std::sync::Mutex::new(Vec::new()));
    let driver = tokio::spawn(send_all(
        backend.clone(),
        clock.clone(),
        workload.clone(),
        origin,
        tx,
        interrupt.clone(),
        OpenLoopSlots {
            slots,
            held: held.clone(),
            capped: capped.clone(),
            wake_lag_ms: wake_lag_ms.clone(),
        },
    ));
    // Each record goes to the reporters (which write it to disk), leaves its sample here, and
    // is dropped: memory grows by a sample a request, not by the request's tokens.
    let mut samples = WorkloadSamples::with_capacity(workload.own_requests());
    // After an interrupt, requests in flight get `grace` to finish; then they are abandoned.
    let mut grace: Option<std::pin::Pin<Box<crate::backend::clock::Sleep>>> = None;
    // Records are taken in batches, with a pause between (real time only: on a virtual clock
    // a real pause would only slow the simulation): a thread woken for each record cost a
    // tenth of the client's CPU against a server answering at once, in futex wake-ups on the
    // worker and in the wait of this thread (docs/PERFORMANCE.md, "Beside the floor"). The
    // records carry their own stamps, so when they are read changes no figure.
    let pause_between = matches!(clock, Clock::Real { .. }).then_some(RECORDS_PAUSE);
    let mut pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut batch = Vec::with_capacity(RECORDS_BATCH);
    loop {
        let received = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, RECORDS_BATCH), if pause.is_none() => n,
            _ = async { pause.as_mut().expect("guarded").await }, if pause.is_some() => {
                pause = None;
                continue;
            }
            _ = interrupt.requested(), if grace.is_none() => {
                grace = Some(Box::pin(clock.sleep(control.grace)));
                continue;
            }
            _ = async { grace.as_mut().expect("guarded").await }, if grace.is_some() => {
                driver.abort();
                let abandoned = workload.own_requests().saturating_sub(samples.requests().len());
                tracing::warn!(workload = %workload.name, "grace period over: {abandoned} requests not recorded");
                // Keep whatever finished before the abort landed.
                while let Ok(record) = rx.try_recv() {
                    reporter.request_finished(workload, &record)?;
                    samples.add(&record);
                }
                break;
            }
        };
        // Zero only once the channel is closed and empty.
        if received == 0 {
            break;
        }
        for record in batch.drain(..) {
            tracing::debug!(
                workload = %workload.name,
                index = record.index,
                // Options as values (a missing one is left out), never as `Some(..)`.
                ttft_ms = record.ttft_ms,
                e2el_ms = record.e2el_ms,
                tokens = record.output_tokens,
                error = record.error.as_ref().map(tracing::field::display),
                "request finished"
            );
            reporter.request_finished(workload, &record)?;
            samples.add(&record);
        }
        pause = pause_between.map(|d| Box::pin(tokio::time::sleep(d)));
    }
    // The channel closes only when every sender, and so every request task, is gone.
    let _ = driver.await;
    let complete = !interrupt.is_requested();
    samples.sort_by_index();

    let mut engine = backend.finish_workload().await?;
    if let Some(sampler) = sampler {
        if engine.memory.is_none() {
            engine.memory = Some(sampler.stop());
        }
    }
    let requests = samples.requests();
    let first_send = requests
        .iter()
        .map(|r| r.start_ms())
        .fold(f64::INFINITY, f64::min);
    let last_end = requests.iter().map(|r| r.end_ms()).fold(0.0, f64::max);
    let first_send = if first_send.is_finite() {
        first_send
    } else {
        0.0
    };
    let wall = WallClock {
        start_unix_s: started_unix + first_send / 1000.0,
        total_time_s: (last_end - first_send).max(0.0) / 1000.0,
    };
    let mut metrics = metrics::aggregate_samples(
        &workload.name,
        backend.name(),
        backend.model(),
        &samples,
        wall,
        &engine,
    );
    metrics.complete = complete;
    // Times on a virtual clock are the simulation's, not the machine's: the mock's 5.4 s run
    // takes a fraction of a second.
    if matches!(clock, Clock::Virtual(_)) {
        metrics.sources.latency = crate::backend::FigureSource::Simulated;
    }
    metrics.set_percentiles(&workload.percentiles, &samples);
    if let Some(slo) = &workload.goodput {
        metrics.set_goodput(slo, samples.requests().iter().map(RequestSample::latency));
    }
    metrics.set_steady_state(&workload.arrival, samples.requests());
    // A multi-turn loop keeps sessions in flight, not requests: its think times are no dips.
    if let (Arrival::Closed { concurrency }, None) = (&workload.arrival, &workload.sessions) {
        if let Some(d) = metrics.set_delivery(*concurrency, samples.requests()) {
            if d.fell_short() {
                tracing::warn!(
                    "workload {}: the client kept {:.2} of {} requests in flight on average ({:.0}% of the time fewer, in {} dips between a request's end and the next send): the server saw less load than asked",
                    workload.name,
                    d.mean_in_flight,
                    d.target,
                    100.0 * d.below_target_share(),
                    d.dips
                );
            }
        }
    }
    if !matches!(workload.arrival, Arrival::Closed { .. }) {
        let mut schedule = workload.arrival.describe();
        if let Some(cap) = workload.own_max_concurrency() {
            schedule.push_str(&format!(", at most {cap} in flight"));
            metrics.max_concurrency = Some(cap);
            metrics.capped_requests = Some(capped.load(Ordering::Relaxed));
        }
        // Under a cap, the recorded lag holds the waits for a slot, which are the cap's
        // doing: the client is judged by how late it woke for each request instead.
        let own_lag = workload.max_concurrency.map(|_| {
            let mut lags = std::mem::take(&mut *wake_lag_ms.lock().expect("not poisoned"));
            lags.sort_by(f64::total_cmp);
            (!lags.is_empty()).then(|| metrics::percentile(&lags, 99.0))
        });
        falling_behind(
            &mut metrics,
            &samples,
            held.load(Ordering::Relaxed),
            slots,
            &schedule,
            own_lag,
        );
    }
    Ok(WorkloadResult {
        workload: workload.clone(),
        metrics,
        samples: Arc::new(samples),
    })
}

/// Pause between two batches of finished requests' records taken from the request tasks: long
/// enough that the thread reading them wakes a few hundred times a second at most, not once a
/// request, short enough that a run's end waits for it unnoticed.
const RECORDS_PAUSE: Duration = Duration::from_millis(5);

/// Most records taken at once.
const RECORDS_BATCH: usize = 4096;

/// Sets the open-loop figures of the client keeping up with its schedule, warning when it did
/// not: the server saw a lower rate than the one asked for.
fn falling_behind(
    metrics: &mut metrics::WorkloadMetrics,
    samples: &WorkloadSamples,
    held: u64,
    slots: usize,
    schedule: &str,
    own_lag_p99: Option<Option<f64>>,
) {
    let p99 = metrics::schedule_lag_p99(samples);
    let judged = own_lag_p99.unwrap_or(p99);
    let overloaded = metrics::fell_behind(held, judged);
    metrics.schedule_lag_p99_ms = p99;
    metrics.client_held_requests = Some(held);
    metrics.client_overloaded = Some(overloaded);
    if overloaded {
        tracing::warn!(
            "workload {}: the client fell behind its schedule ({schedule}): {held} requests waited for one of its {slots} in-flight slots, scheduling lag p99 {:.1} ms; the server saw a lower rate than asked (lower --request-rate or --trace-speed, or raise `ulimit -n`)",
            metrics.workload,
            judged.unwrap_or(0.0)
        );
    }
}

/// An open loop's bound on requests in flight, and the count of those that had to wait for
/// a free slot past their scheduled time.
struct OpenLoopSlots {
    /// The client's own bound (what its open files and memory allow).
    slots: usize,
    /// Requests that waited because the client's own bound was full.
    held: Arc<AtomicU64>,
    /// Requests that waited because the workload's `max_concurrency` was full.
    capped: Arc<AtomicU64>,
    /// How late the client woke for each scheduled request, ms, before any wait for a slot.
    wake_lag_ms: Arc<std::sync::Mutex<Vec<f64>>>,
}

/// Sends every measured request of `workload` as its arrival process says: single requests,
/// or the turns of its sessions.
async fn send_all(
    backend: Arc<dyn Backend>,
    clock: Clock,
    workload: Workload,
    origin: Duration,
    records: tokio::sync::mpsc::UnboundedSender<RequestRecord>,
    interrupt: Interrupt,
    open_loop: OpenLoopSlots,
) {
    let context = Arc::new(Sender {
        backend,
        clock,
        workload,
        origin,
        records,
        interrupt,
    });
    let mut tasks = tokio::task::JoinSet::new();
    // What a closed loop or a schedule starts: one request, or one whole session.
    let (count, job): (usize, Job) = match &context.workload.sessions {
        Some(sessions) => {
            let first_turns: Arc<Vec<usize>> = Arc::new(
                (0..sessions.count)
                    .scan(0, |next, s| {
                        let first = *next;
                        *next += sessions.turns_of(s);
                        Some(first)
                    })
                    .collect(),
            );
            let context = context.clone();
            let job: Job = Arc::new(move |session, scheduled| {
                let (context, first_turns) = (context.clone(), first_turns.clone());
                Box::pin(async move {
                    context
                        .session(session, first_turns[session], scheduled)
                        .await
                })
            });
            (sessions.count, job)
        }
        None => {
            let requests = context.workload.num_requests;
            let context = context.clone();
            let job: Job = Arc::new(move |index, scheduled| {
                let context = context.clone();
                Box::pin(async move {
                    let planned = context.single(index, scheduled);
                    let (record, _) = context.measure(planned).await;
                    let _ = context.records.send(record);
                })
            });
            (requests, job)
        }
    };
    // A shard sends items `index`, `index + count`, ... of the global schedule.
    let shard = context.workload.shard;
    let (first, step) = shard.map_or((0, 1), |s| (s.index, s.count));
    match context.workload.arrival {
        Arrival::Closed { concurrency } => {
            let own = shard.map_or(count, |s| s.owned_of(count));
            let workers = shard.map_or(concurrency, |s| s.concurrency(concurrency));
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..workers.min(own) {
                let (next, job, interrupt) = (next.clone(), job.clone(), context.interrupt.clone());
                tasks.spawn(async move {
                    loop {
                        if interrupt.is_requested() {
                            break;
                        }
                        let taken = next.fetch_add(1, Ordering::Relaxed);
                        if taken >= own {
                            break;
                        }
                        job(first + taken * step, None).await;
                    }
                });
            }
        }
        Arrival::Poisson { .. }
        | Arrival::Constant { .. }
        | Arrival::Gamma { .. }
        | Arrival::Ramp { .. }
        | Arrival::Trace => {
            let schedule = context.workload.schedule().unwrap_or_default();
            // The user's cap (`--max-concurrency`, this shard's share of it) and the client's
            // own bound are one semaphore of the smaller size; a wait counts against the
            // client only when its own bound is the smaller.
            let cap = context.workload.own_max_concurrency();
            let (size, capped_by_user) = match cap {
                Some(cap) if cap <= open_loop.slots => (cap, true),
                _ => (open_loop.slots, false),
            };
            let slots = Arc::new(tokio::sync::Semaphore::new(size));
            let (clock, interrupt) = (&context.clock, &context.interrupt);
            let owned = schedule
                .into_iter()
                .enumerate()
                .filter(|(i, _)| shard.map_or(true, |s| s.owns(*i)));
            let mut last_sent = Duration::ZERO;
            for (index, offset) in owned {
                tokio::select! {
                    _ = clock.sleep_until(origin + offset) => {}
                    _ = interrupt.requested() => break,
                }
                // How late the client itself woke for this request, before any wait for a
                // slot: what judges the client when a cap makes waits part of the design.
                if cap.is_some() {
                    // Counted from its time, or from when the request before it got its slot
                    // if that came later: the driver starts requests in order, so a wait for
                    // the cap delays the ones behind it, and that is the cap's doing too.
                    let due = (origin + offset).max(last_sent);
                    let woke = clock.now().saturating_sub(due);
                    open_loop
                        .wake_lag_ms
                        .lock()
                        .expect("not poisoned")
                        .push(ms(woke));
                }
                // At most `slots` in flight: beyond, the client would run out of connections
                // (file handles) and memory, and measure itself instead of the server. Under
                // a user's cap, the request waits for a slot as vLLM's --max-concurrency
                // makes it wait, and is timed (its TTFT, its start) from when it is sent.
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        if capped_by_user {
                            open_loop.capped.fetch_add(1, Ordering::Relaxed);
                        } else {
                            open_loop.held.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::select! {
                            permit = slots.clone().acquire_owned() => match permit {
                                Ok(permit) => permit,
                                Err(_) => break,
                            },
                            _ = interrupt.requested() => break,
                        }
                    }
                };
                last_sent = clock.now();
                let job = job.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    job(index, Some(offset)).await;
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// What the arrival process starts: request (or session) `index`, meant to start at the
/// given offset from the workload's start (`None` in a closed loop).
type Job =
    Arc<dyn Fn(usize, Option<Duration>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// What every request task of a workload shares.
struct Sender {
    backend: Arc<dyn Backend>,
    clock: Clock,
    workload: Workload,
    origin: Duration,
    records: tokio::sync::mpsc::UnboundedSender<RequestRecord>,
    interrupt: Interrupt,
}

/// One measured request, ready to send.
struct Planned {
    index: usize,
    request: GenerationRequest,
    turn: Option<Turn>,
    scheduled: Option<Duration>,
    /// Whether the answer's text is kept (a session feeds it back).
    keep_answer: bool,
}

impl Sender {
    /// Measured request `index` of a single-turn workload (synthetic, a prompt list or a trace).
    fn single(&self, index: usize, scheduled: Option<Duration>) -> Planned {
        let workload = &self.workload;
        let prompt = workload.prompt(index, false);
        let session_id = workload
            .trace
            .as_ref()
            .and_then(|t| t.requests()[index % t.len()].session_id.clone());
        Planned {
            index,
            request: GenerationRequest {
                prompt: prompt.text,
                prompt_tokens: prompt.tokens,
                max_output_tokens: workload.output_tokens_of(index),
                session_id,
                ..GenerationRequest::default()
            },
            turn: None,
            scheduled,
            keep_answer: false,
        }
    }

    /// Sends every turn of `session`, one after the other, each holding the conversation so
    /// far; its first turn is measured request `first_index`. After a failed turn, the
    /// session's remaining turns are recorded as not sent; after an interrupt, they are not
    /// recorded (like every request an interrupt keeps from being sent).
    async fn session(&self, session: usize, first_index: usize, scheduled: Option<Duration>) {
        let workload = &self.workload;
        let sessions = workload.sessions.as_ref().expect("a multi-turn workload");
        let seed = workload.seed;
        let turns = sessions.turns_of(session);
        let mut history = History::new(sessions.system_of(seed, session));
        for turn in 0..turns {
            if self.interrupt.is_requested() {
                return;
            }
            history.push(Role::User, sessions.user_message(seed, session, turn));
            let prompt = history.render();
            let planned = Planned {
                index: first_index + turn,
                request: GenerationRequest {
                    prompt_tokens: prompt.split_whitespace().count(),
                    prompt,
                    max_output_tokens: workload.output_tokens,
                    messages: history.messages().to_vec(),
                    session_id: Some(format!("{}-{session}", workload.name)),
                },
                turn: Some(Turn { session, turn }),
                // Later turns follow the answer before them, not the schedule.
                scheduled: scheduled.filter(|_| turn == 0),
                keep_answer: true,
            };
            let (record, answer) = self.measure(planned).await;
            let failure = record.error.clone();
            let _ = self.records.send(record);
            if let Some(failure) = failure {
                self.not_sent(session, first_index, turn + 1..turns, &failure);
                return;
            }
            history.push(Role::Assistant, answer);
            if turn + 1 < turns {
                let pause = sessions.think_time.after(seed, session, turn);
                tokio::select! {
                    _ = self.clock.sleep(pause) => {}
                    _ = self.interrupt.requested() => return,
                }
            }
        }
    }

    /// Records turns `turns` of `session` as never sent, because of `failure` before them.
    fn not_sent(
        &self,
        session: usize,
        first_index: usize,
        turns: std::ops::Range<usize>,
        failure: &RequestError,
    ) {
        let failed_turn = turns.start - 1;
        let start_ms = ms(self.clock.now() - self.origin);
        for turn in turns {
            let raw = RawRequest {
                index: first_index + turn,
                start_ms,
                turn: Some(Turn { session, turn }),
                error: Some(RequestError::new(
                    ErrorKind::NotSent,
                    format!("not sent: turn {failed_turn} of this session failed ({failure})"),
                )),
                ..RawRequest::default()
            };
            let _ = self.records.send(RequestRecord::new(raw));
        }
    }

    /// Sends a planned request and builds its record; returns the answer's text too when the
    /// plan keeps it.
    async fn measure(&self, planned: Planned) -> (RequestRecord, String) {
        let (backend, clock, workload) = (self.backend.as_ref(), &self.clock, &self.workload);
        let Planned {
            index,
            request,
            turn,
            scheduled,
            keep_answer,
        } = planned;
        let check = workload.check.as_ref();
        let prompt_text = check.map(|_| request.prompt.clone()).unwrap_or_default();
        let counter = backend.output_token_counter();
        let (t0, mut raw, mut text) = send(
            backend,
            clock,
            request,
            keep_answer || check.is_some() || counter.is_some(),
        )
        .await;
        if let (Some(counter), None) = (counter, raw.usage_tokens) {
            // After the last stamp, and off the runtime's workers: tokenizing must not delay
            // the stamps of the requests still streaming.
            let counted = tokio::task::spawn_blocking(move || (counter.count(&text), text)).await;
            (raw.tokenizer_tokens, text) = counted.unwrap_or_default();
        }
        if let (Some(check), None) = (check, &raw.error) {
            let response = Response {
                index,
                prompt: &prompt_text,
                text: &text,
                output_tokens: raw
                    .usage_tokens
                    .or(raw.tokenizer_tokens)
                    .unwrap_or_else(|| raw.token_counts.iter().sum()),
            };
            if let Err(message) = check.check(&response) {
                raw.error = Some(RequestError::new(ErrorKind::Check, message));
            }
        }
        raw.index = index;
        raw.turn = turn;
        raw.start_ms = ms(t0 - self.origin);
        raw.scheduled_ms = scheduled.map(ms);
        (RequestRecord::new(raw), text)
    }
}

/// Sends one request and stamps each event as it arrives, relative to `t0`, the moment the
/// request is handed to the backend; returns `t0` on the clock, the stamps, and the output text
/// when `capture_text` asks for it.
async fn send(
    backend: &dyn Backend,
    clock: &Clock,
    request: GenerationRequest,
    capture_text: bool,
) -> (Duration, RawRequest, String) {
    let mut text = String::new();
    let mut sent = RawRequest {
        prompt_tokens: request.prompt_tokens,
        ..RawRequest::default()
    };
    // Room for the stamps of the tokens asked for, allocated once instead of grown as they
    // come (bounded: a request asking for a huge `max_tokens` may stop early).
    let expected = request.max_output_tokens.min(8192);
    sent.token_times_ms.reserve(expected);
    sent.token_counts.reserve(expected);
    sent.tokenizer_on_server = backend
        .output_token_counter()
        .is_some_and(|c| c.counter() == crate::backend::Counter::Server);
    let t0 = clock.now();
    let mut stream = backend.generate(request);
    loop {
        let event = stream.next().await;
        let received = clock.now();
        // A stamped event is timed when the backend produced it, within the request's life.
        let (event, at) = match event {
            Some(StreamEvent::Stamped { at, event }) => (Some(*event), at.clamp(t0, received)),
            event => (event, received),
        };
        let at = ms(at - t0);
        match event {
            Some(StreamEvent::Tokens { tokens: 0, .. })
            | Some(StreamEvent::Reasoning { tokens: 0, .. }) => {} // role-only or empty
            Some(StreamEvent::PrefixCached { tokens }) => {
                sent.cached_prompt_tokens.get_or_insert(tokens);
            }
            Some(StreamEvent::Tokens {
                tokens,
                text: chunk,
            }) => {
                sent.token_times_ms.push(at);
                sent.token_counts.push(tokens);
                if !sent.reasoning_counts.is_empty() {
                    sent.reasoning_counts.push(0);
                }
                // The answer only: what a response check reads and a tokenizer counts (the
                // reasoning tokens are the stream's count, added to it).
                if capture_text {
                    text.push_str(&chunk);
                }
            }
            Some(StreamEvent::Reasoning { tokens, .. }) => {
                // One entry per event once the request has reasoning; none before.
                sent.reasoning_counts.resize(sent.token_counts.len(), 0);
                sent.token_times_ms.push(at);
                sent.token_counts.push(tokens);
                sent.reasoning_counts.push(tokens);
            }
            Some(StreamEvent::Done { usage }) => {
                sent.finish_ms = at;
                finish(stream).await;
                sent.usage_tokens = usage.map(|u| u.completion_tokens);
                if let Some(usage) = usage {
                    sent.prompt_tokens = usage.prompt_tokens;
                }
                if sent.token_times_ms.is_empty() {
                    sent.error = Some(RequestError::new(
                        ErrorKind::Protocol,
                        "the request finished without any output token",
                    ));
                }
                return (t0, sent, text);
            }
            Some(StreamEvent::Error(error)) => {
                sent.finish_ms = at;
                finish(stream).await;
                sent.error = Some(error);
                return (t0, sent, text);
            }
            None => {
                sent.finish_ms = at;
                sent.error = Some(RequestError::new(
                    ErrorKind::Protocol,
                    "the stream ended without a final event",
                ));
                return (t0, sent, text);
            }
            Some(StreamEvent::Stamped { .. }) => {
                sent.finish_ms = at;
                finish(stream).await;
                sent.error = Some(RequestError::new(
                    ErrorKind::Protocol,
                    "the backend stamped an event twice (a Stamped event inside another)",
                ));
                return (t0, sent, text);
            }
        }
    }
}

/// Polls a stream past its final event to its end, after that event was stamped: a backend
/// may have work left that belongs to the request but not to its latency (a server's answer
/// whose body has not quite ended, whose connection is reused only once it has), and it must
/// finish before the same worker sends its next request.
async fn finish(mut stream: futures::stream::BoxStream<'static, StreamEvent>) {
    while stream.next().await.is_some() {}
}

fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
