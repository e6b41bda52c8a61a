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
    /// Switches thrown with this one (see [`Interrupt::child`]).
    children: Mutex<Vec<std::sync::Weak<State>>>,
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

    /// Throws the switch, and every child's; the first reason given is kept.
    pub fn request(&self, reason: impl Into<String>) {
        let reason = reason.into();
        {
            let mut slot = self.0.reason.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(reason.clone());
            }
        }
        self.0.requested.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
        let children: Vec<Interrupt> = {
            let mut children = self.0.children.lock().unwrap_or_else(|e| e.into_inner());
            children.retain(|c| c.strong_count() > 0);
            children
                .iter()
                .filter_map(|c| c.upgrade().map(Interrupt))
                .collect()
        };
        for child in children {
            child.request(reason.clone());
        }
    }

    /// A new switch that this one's throw also throws (at once, with its reason), but that can
    /// be thrown alone: one part of a run (a search's probe) stopped without stopping the rest.
    pub fn child(&self) -> Interrupt {
        let child = Interrupt::new();
        self.0
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&child.0));
        // Thrown between the check and the registration is caught by this check.
        if let Some(reason) = self.reason() {
            child.request(reason);
        }
        child
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

    #[test]
    fn a_child_is_thrown_with_its_parent_but_not_the_other_way() {
        let parent = Interrupt::new();
        let child = parent.child();
        child.request("probe done");
        assert!(!parent.is_requested());
        let other = parent.child();
        parent.request("SIGINT");
        assert_eq!(other.reason().as_deref(), Some("SIGINT"));
        assert_eq!(
            child.reason().as_deref(),
            Some("probe done"),
            "the first reason stays"
        );
        // A child made after the throw is thrown already.
        assert_eq!(parent.child().reason().as_deref(), Some("SIGINT"));
    }
}
