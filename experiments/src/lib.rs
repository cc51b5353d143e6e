//! pezoo-experiments: the `zoo` command's subcommands as a library (the binary is thin).
//!
//! The modules follow the data: [`train`] writes a [`run`] directory; [`eval`] and [`analyze`]
//! read its model and add their results to it; [`compare`] runs those stages over a sweep of
//! (encoding × seed) runs and hands the results to [`report`]. [`device`], [`signals`],
//! [`bench`], [`generate`] and [`inspect`] serve them.

pub mod analyze;
pub mod bench;
pub mod compare;
pub mod device;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod report;
pub mod run;
pub mod signals;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically (a uniquely named temporary file in the same directory,
/// then a rename): a kill leaves the old file or the new one, and concurrent writers never share
/// a temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        // as `std::fs::write` would create it (0o666 less the umask), not tempfile's private 0o600
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).with_context(|| format!("writing {}", path.display()))?;
    tmp.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Shared test fixtures.
#[cfg(test)]
pub(crate) mod testing {
    use pezoo_models::Tokenizer;

    /// A small byte-level BPE (400 tokens) learned on the synthetic corpus, once per test binary.
    pub fn small_bpe() -> Tokenizer {
        static TOK: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
        TOK.get_or_init(|| {
            let c = pezoo_models::Corpus::synthetic(1, 40, 1000);
            Tokenizer::learn_bpe(&c.train, 400).expect("learning a small BPE")
        })
        .clone()
    }
}

thread_local! {
    /// Set while this thread runs inside [`quiet_panics`]; holds the last panic's message.
    static QUIET: std::cell::RefCell<Option<Option<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, turning a panic on this thread into an `Err` with its message and location, printed
/// by nobody (the caller reports it as one error line, not a backtrace); other threads' panics
/// print as usual. One process-wide hook, installed once, consults a thread-local flag, so calls
/// may nest or run concurrently. After an `Err`, do not keep using what `f` was training.
pub fn quiet_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_with: a panic during thread-local teardown must not panic inside the hook
            let quiet = QUIET
                .try_with(|q| match q.borrow_mut().as_mut() {
                    Some(slot) => {
                        *slot = Some(info.to_string());
                        true
                    }
                    None => false,
                })
                .unwrap_or(false);
            if !quiet {
                previous(info)
            }
        }));
    });
    let outer = QUIET.with(|q| q.replace(Some(None)));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let message = QUIET.with(|q| q.replace(outer)).flatten();
    out.map_err(|p| {
        message
            .or_else(|| p.downcast_ref::<String>().cloned())
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::quiet_panics;

    #[test]
    fn quiet_panics_returns_the_message_and_location_and_nests() {
        assert_eq!(quiet_panics(|| 3), Ok(3));
        let err = quiet_panics(|| -> u8 { panic!("boom {}", 7) }).unwrap_err();
        assert!(err.contains("boom 7") && err.contains("lib.rs"), "{err}");
        let inner = quiet_panics(|| quiet_panics(|| -> u8 { panic!("inner") }));
        assert!(inner.unwrap().unwrap_err().contains("inner"));
        // another thread's panic is not recorded as this call's: only the caller's own message
        let err = quiet_panics(|| -> u8 {
            let _ = std::thread::spawn(|| -> u8 { panic!("elsewhere") }).join();
            panic!("here")
        })
        .unwrap_err();
        assert!(err.contains("here") && !err.contains("elsewhere"), "{err}");
    }
}
