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
