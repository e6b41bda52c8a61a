//! The clock every event is stamped with.
//!
//! Real backends run on the machine's monotonic clock. The mock backend runs on a virtual clock:
//! a discrete-event simulation in which time jumps straight to the next pending timer as soon as
//! every task is waiting. That makes the mock instant (no real sleeping) and exact (the same
//! command gives the same nanoseconds on any machine), while the runner measures it through the
//! very same code path as a real server.
//!
//! Why not tokio's own paused clock alone: tokio's timer wheel rounds every deadline up to a whole
//! millisecond, which would quantise a simulated 10.5 ms decode step to 11 ms. So virtual time is
//! kept here, in nanoseconds, and tokio's paused clock serves only as the idle detector: a driver
//! task sleeps on it, and tokio wakes that sleep only when no other task can run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A monotonic clock: real time, or the virtual time of a simulation.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The machine's monotonic clock, counted from `epoch`.
    Real {
        /// The instant that reads as zero.
        epoch: Instant,
    },
    /// Simulated time; see the module documentation.
    Virtual(Arc<VirtualTime>),
}

/// Workers of the real-time runtime, which sends the requests and reads and stamps every
/// streamed chunk: one on a machine of two cores or fewer, two beyond. On the project's 2-core
/// machine, against a server on the same cores, one worker cost 17% less CPU per request than
/// two and cut the mean TTFT error at 500 in flight from 7.6 to 3.3 ms, for 10% fewer
/// requests/s against a server answering at once (docs/PERFORMANCE.md, "Beside the floor"):
/// hyper's connection task reads the socket and hands each chunk to the request's task, and on
/// one worker that hand-off never wakes another thread.
/// Beyond two cores a second worker keeps a long burst of chunks from delaying the others.
fn real_time_workers() -> usize {
    match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        0..=2 => 1,
        _ => 2,
    }
}

impl Clock {
    /// The real clock. Every real clock of the process shares one zero (the first call's
    /// instant), so a stamp taken on one (a backend's [`TokenSink`](crate::TokenSink)) reads the
    /// same on another (the runner's): `Backend::clock` may be called more than once.
    pub fn real() -> Self {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Clock::Real {
            epoch: *EPOCH.get_or_init(Instant::now),
        }
    }

    /// A fresh virtual clock at zero.
    pub fn virtual_time() -> Self {
        Clock::Virtual(Arc::new(VirtualTime::default()))
    }

    /// Time elapsed since this clock's zero.
    pub fn now(&self) -> Duration {
        match self {
            Clock::Real { epoch } => epoch.elapsed(),
            Clock::Virtual(v) => v.now(),
        }
    }

    /// Completes once `now() >= deadline`.
    pub fn sleep_until(&self, deadline: Duration) -> Sleep {
        match self {
            Clock::Real { epoch } => Sleep::Real(Box::pin(tokio::time::sleep_until(
                tokio::time::Instant::from_std(*epoch + deadline),
            ))),
            Clock::Virtual(v) => Sleep::Virtual {
                time: v.clone(),
                deadline,
                timer: None,
            },
        }
    }

    /// Completes after `duration` has passed on this clock.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(self.now() + duration)
    }

    /// The tokio runtime this clock needs: any runtime for real time; a single-threaded one with
    /// tokio's clock paused for virtual time (one thread makes the simulation deterministic).
    pub fn build_runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            Clock::Real { .. } => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(real_time_workers())
                .enable_all()
                .build(),
            Clock::Virtual(_) => tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build(),
        }
    }

    /// Runs `future` to completion on this clock. For virtual time this also drives the
    /// simulation; if every task waits and no timer is pending (a deadlock in the simulated
    /// engine), it returns [`Stalled`] instead of hanging.
    pub async fn drive<F: Future>(&self, future: F) -> Result<F::Output, Stalled> {
        match self {
            Clock::Real { .. } => Ok(future.await),
            Clock::Virtual(v) => {
                tokio::select! {
                    biased;
                    out = future => Ok(out),
                    stalled = v.clone().run_driver() => Err(stalled),
                }
            }
        }
    }
}

/// Every task of a virtual-time run was waiting and no timer was pending.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the simulation stalled at {at:?}: every task is waiting and no timer is pending")]
pub struct Stalled {
    pub at: Duration,
}

/// The state of a virtual clock: its current time and the timers waiting on it.
#[derive(Debug, Default)]
pub struct VirtualTime {
    inner: Mutex<VirtualInner>,
}

#[derive(Debug, Default)]
struct VirtualInner {
    now: Duration,
    /// Pending timers, earliest first; `seq` breaks ties in registration order, which keeps the
    /// wake-up order (and so the whole simulation) deterministic.
    timers: BinaryHeap<Reverse<(Duration, u64)>>,
    wakers: std::collections::HashMap<u64, Waker>,
    next_seq: u64,
}

impl VirtualTime {
    fn now(&self) -> Duration {
        self.lock().now
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VirtualInner> {
        // The lock is never held across a panic-prone call, so poisoning cannot happen; recover
        // the data anyway rather than propagate a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Advances virtual time whenever every other task is idle, waking timers in order.
    async fn run_driver(self: Arc<Self>) -> Stalled {
        loop {
            // With tokio's clock paused, this sleep completes only when no task is runnable.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let due = {
                let mut inner = self.lock();
                match inner.timers.pop() {
                    None => return Stalled { at: inner.now },
                    Some(Reverse((deadline, seq))) => {
                        if deadline > inner.now {
                            inner.now = deadline;
                        }
                        let mut due = Vec::new();
                        due.extend(inner.wakers.remove(&seq));
                        // Wake every timer due at the same instant together.
                        while let Some(Reverse((d, s))) = inner.timers.peek().copied() {
                            if d > inner.now {
                                break;
                            }
                            inner.timers.pop();
                            due.extend(inner.wakers.remove(&s));
                        }
                        due
                    }
                }
            };
            for waker in due {
                waker.wake();
            }
        }
    }
}

/// The future returned by [`Clock::sleep_until`].
pub enum Sleep {
    Real(Pin<Box<tokio::time::Sleep>>),
    Virtual {
        time: Arc<VirtualTime>,
        deadline: Duration,
        /// The sequence number of this sleep's timer, once registered.
        timer: Option<u64>,
    },
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Sleep::Real(sleep) => sleep.as_mut().poll(cx),
            Sleep::Virtual {
                time,
                deadline,
                timer,
            } => {
                let mut inner = time.lock();
                if inner.now >= *deadline {
                    return Poll::Ready(());
                }
                let seq = match *timer {
                    Some(seq) => seq,
                    None => {
                        let seq = inner.next_seq;
                        inner.next_seq += 1;
                        inner.timers.push(Reverse((*deadline, seq)));
                        *timer = Some(seq);
                        seq
                    }
                };
                inner.wakers.insert(seq, cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // A cancelled sleep forgets its waker; its heap entry stays and, when reached, only moves
        // time to a moment at which nothing else was due anyway.
        if let Sleep::Virtual {
            time,
            timer: Some(seq),
            ..
        } = self
        {
            time.lock().wakers.remove(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: Future>(clock: &Clock, f: F) -> F::Output {
        let rt = clock.build_runtime().unwrap();
        rt.block_on(clock.drive(f)).unwrap()
    }

    #[test]
    fn virtual_sleeps_are_exact_to_the_nanosecond() {
        let clock = Clock::virtual_time();
        let c = clock.clone();
        let t = run(&clock, async move {
            c.sleep(Duration::from_micros(10_500)).await;
            c.sleep(Duration::from_nanos(7)).await;
            c.now()
        });
        assert_eq!(t, Duration::from_nanos(10_500_007));
    }

    #[test]
    fn virtual_time_is_instant_in_real_time() {
        let clock = Clock::virtual_time();
        let c = clock.clone();
        let started = Instant::now();
        let t = run(&clock, async move {
            c.sleep(Duration::from_secs(3600)).await;
            c.now()
        });
        assert_eq!(t, Duration::from_secs(3600));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn concurrent_sleepers_wake_in_deadline_order() {
        let clock = Clock::virtual_time();
        let c = clock.clone();
        let order = run(&clock, async move {
            let log = Arc::new(Mutex::new(Vec::new()));
            let mut handles = Vec::new();
            for (name, ms) in [("c", 30u64), ("a", 10), ("b", 20)] {
                let (c, log) = (c.clone(), log.clone());
                handles.push(tokio::spawn(async move {
                    c.sleep(Duration::from_millis(ms)).await;
                    log.lock().unwrap().push((name, c.now()));
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
            let v = log.lock().unwrap().clone();
            v
        });
        assert_eq!(
            order,
            vec![
                ("a", Duration::from_millis(10)),
                ("b", Duration::from_millis(20)),
                ("c", Duration::from_millis(30)),
            ]
        );
    }

    #[test]
    fn a_deadlocked_simulation_reports_stalled_instead_of_hanging() {
        let clock = Clock::virtual_time();
        let rt = clock.build_runtime().unwrap();
        let result = rt.block_on(clock.drive(async {
            let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
            rx.await.ok();
        }));
        assert!(result.is_err());
    }
}
