//! SIGINT / SIGTERM / SIGHUP (Slurm ends jobs with SIGTERM on preemption and at the time limit):
//! a training run finishes its current step, writes a checkpoint there and exits non-zero with
//! how to resume; outside training the process exits at once (status 130). While a run is
//! stopping, a second signal exits at once only in an interactive session (a terminal on stdin:
//! Ctrl-C twice); in batch jobs repeated signals are one request (Slurm may signal a job's
//! processes and its batch shell, which forwards the signal, within milliseconds).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static REQUESTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static TRAINING: AtomicBool = AtomicBool::new(false);

/// The process-wide stop flag, set by the first signal during training (installs the handler
/// on first use).
pub fn stop_flag() -> Arc<AtomicBool> {
    REQUESTED
        .get_or_init(|| {
            let flag = Arc::new(AtomicBool::new(false));
            let f = flag.clone();
            let installed = ctrlc::set_handler(move || {
                let interactive = std::io::stdin().is_terminal();
                if TRAINING.load(Ordering::SeqCst) && !f.swap(true, Ordering::SeqCst) {
                    let again = if interactive { " (a second signal exits now)" } else { "" };
                    eprintln!("signal received: stopping after the current step{again}");
                } else if TRAINING.load(Ordering::SeqCst) && !interactive {
                    eprintln!("signal received: already stopping after the current step");
                } else {
                    eprintln!("signal received: exiting");
                    std::process::exit(130);
                }
            });
            if let Err(e) = installed {
                eprintln!("warning: no signal handler ({e}): a signal ends training without a checkpoint");
            }
            flag
        })
        .clone()
}

/// Whether a signal asked this process to stop (a sweep starts no further run).
pub fn stop_requested() -> bool {
    REQUESTED.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Marks the process as training while alive: a signal then stops at a step boundary.
pub struct Training;

impl Training {
    pub fn start() -> Self {
        stop_flag();
        TRAINING.store(true, Ordering::SeqCst);
        Training
    }
}

impl Drop for Training {
    fn drop(&mut self) {
        TRAINING.store(false, Ordering::SeqCst);
    }
}
