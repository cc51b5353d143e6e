//! pezoo-experiments: the `zoo` command's subcommands as a library (the binary is thin).

pub mod analyze;
pub mod bench;
pub mod compare;
pub mod copy;
pub mod device;
pub mod eval;
pub mod inspect;
pub mod pairs;
pub mod passkey;
pub mod plots;
pub mod report;
pub mod retrieval;
pub mod train;

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync>;

/// Runs `f`, turning a panic into an `Err` with its message; while it runs, a panic on this
/// thread prints nothing (the caller reports the message as one error line, not a backtrace).
/// Other threads' panics print as usual.
pub fn quiet_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let previous: std::sync::Arc<PanicHook> = std::sync::Arc::new(std::panic::take_hook());
    let me = std::thread::current().id();
    let others = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != me {
            others(info)
        }
    }));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let _ = std::panic::take_hook();
    let previous = std::sync::Arc::try_unwrap(previous).ok();
    if let Some(previous) = previous {
        std::panic::set_hook(previous);
    }
    out.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into())
    })
}
