//! The reference path's cache of parameter-free coefficient tables: RoPE-family tables depend
//! only on (device, positions, side, context), so a training run builds and uploads them once.

use burn::prelude::*;

use super::{RotaryEncoding, Side};

/// A handful of entries (training uses one or two; a long evaluation one per query block —
/// beyond the capacity they are rebuilt, which is what the uncached path always did).
#[derive(Clone, Default)]
pub struct TableCache(std::sync::Arc<std::sync::Mutex<Vec<TableEntry>>>);

type TableEntry = (TableKey, [Tensor<4>; 2]);

#[derive(Clone, PartialEq)]
struct TableKey {
    device: Device,
    autodiff: bool,
    starts: Vec<i64>,
    seq: usize,
    side: Side,
    context_len: usize,
}

impl std::fmt::Debug for TableCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.try_lock() {
            Ok(v) => write!(f, "TableCache({} entries)", v.len()),
            Err(_) => write!(f, "TableCache(in use)"),
        }
    }
}

const TABLE_CACHE_ENTRIES: usize = 64;

impl RotaryEncoding {
    /// The tables for this key from the cache, or `build` them and keep them.
    pub(crate) fn cached_tables(
        &self,
        starts: &[i64],
        seq: usize,
        side: Side,
        context_len: usize,
        device: &Device,
        build: impl FnOnce() -> [Tensor<4>; 2],
    ) -> [Tensor<4>; 2] {
        let key = TableKey {
            device: device.clone(),
            autodiff: device.is_autodiff(),
            starts: starts.to_vec(),
            seq,
            side,
            context_len: if self.spec.dynamic.is_some() { context_len } else { 0 },
        };
        let mut cache = self.tables.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = cache.iter().find(|(k, _)| *k == key) {
            return t.clone();
        }
        let t = build();
        if cache.len() >= TABLE_CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push((key, t.clone()));
        t
    }
}
