//! Stopping a run early without losing what it measured.
//!
//! An [`Interrupt`] is a one-way switch the runner watches: once requested, no new request is
//! sent, requests in flight get a grace period to finish, and the run's files are written with
//! what was completed, marked incomplete with the reason. [`Interrupt::on_signals`] throws the
//! switch on SIGINT or SIGTERM (Ctrl-C off Unix); a second signal ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// A request to stop, shared between whoever asks (a signal, a test) and the runner.
#[derive(Clone, Default, Debug)]
pub struct Interrupt(Arc<State>);

#[derive(Default, Debug)]
struct State {
    requested: AtomicBool,
    reason: Mutex<Option<String>>,
    notify: Notify,
}

/// The exit status after a second signal: 128 + SIGINT, as shells report an interrupted command.
pub const EXIT_ON_SECOND_SIGNAL: i32 = 130;

impl Interrupt {
    /// A switch nobody has thrown.
    pub fn new() -> Self {
        Self::default()
    }

    /// A switch thrown by the first SIGINT or SIGTERM this process receives; the second one
    /// exits the process at once with status 130.
    #[cfg(unix)]
    pub fn on_signals() -> std::io::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let interrupt = Interrupt::new();
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let handle = interrupt.clone();
        std::thread::Builder::new()
            .name("sagellm-bench-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    handle.signalled(if signal == SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    });
                }
            })?;
        Ok(interrupt)
    }

    /// A switch thrown by the first Ctrl-C (or Ctrl-Break) this process receives; the second
    /// one exits the process at once with status 130.
    #[cfg(not(unix))]
    pub fn on_signals() -> std::io::Result<Self> {
        let interrupt = Interrupt::new();
        let handle = interrupt.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("sagellm-bench-signals".into())
            .spawn(move || {
                runtime.block_on(async {
                    while tokio::signal::ctrl_c().await.is_ok() {
                        handle.signalled("Ctrl-C");
                    }
                })
            })?;
        Ok(interrupt)
    }

    /// What a signal does: the first throws the switch, the second ends the process.
    fn signalled(&self, name: &str) {
        if self.is_requested() {
            eprintln!("second signal: stopping now; requests in flight are lost");
            std::process::exit(EXIT_ON_SECOND_SIGNAL);
        }
        eprintln!(
            "{name} received: no new requests; waiting for those in flight, then \
             writing the results (signal again to stop at once)"
        );
        self.request(format!("interrupted by {name}"));
    }

    /// Throws the switch; the first reason given is kept.
    pub fn request(&self, reason: impl Into<String>) {
        {
            let mut slot = self.0.reason.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(reason.into());
            }
        }
        self.0.requested.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// Why the run stopped, once requested.
    pub fn reason(&self) -> Option<String> {
        self.0
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Completes once the switch is thrown (at once if it already was). Waits without timers,
    /// so it does not disturb a virtual clock.
    pub async fn requested(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Register interest before checking, so a request between the two is not missed.
            notified.as_mut().enable();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_wakes_when_requested_from_another_thread() {
        let interrupt = Interrupt::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let other = interrupt.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            other.request("first");
            other.request("second");
        });
        rt.block_on(interrupt.requested());
        assert!(interrupt.is_requested());
        assert_eq!(interrupt.reason().as_deref(), Some("first"));
        // Already thrown: completes at once.
        rt.block_on(interrupt.requested());
    }
}
