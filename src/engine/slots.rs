//! The table of loaded models: each key is loaded at most once at a time (concurrent callers
//! wait for the one load), a failed load leaves the slot empty so a later call tries again, and
//! the least recently used entries are dropped past a bound. Dropping an entry drops its handle;
//! the model's worker ends once the callers still holding clones are done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::EngineError;

enum State<W> {
    Empty,
    Loading,
    Ready(W),
}

struct Slot<W> {
    state: Mutex<State<W>>,
    changed: Condvar,
    last_used: AtomicU64,
}

impl<W> Slot<W> {
    fn is_ready(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| matches!(&*s, State::Ready(_)))
    }
}

/// Loaded handles of type `W` (a model worker's channel), by key.
pub(crate) struct Slots<W> {
    table: Mutex<HashMap<String, Arc<Slot<W>>>>,
    clock: AtomicU64,
}

fn poisoned() -> EngineError {
    EngineError::Panicked("the model table is poisoned".into())
}

impl<W: Clone> Slots<W> {
    pub fn new() -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        }
    }

    fn slot(&self, key: &str) -> Result<Arc<Slot<W>>, EngineError> {
        let mut table = self.table.lock().map_err(|_| poisoned())?;
        let slot = table
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(State::Empty),
                    changed: Condvar::new(),
                    last_used: AtomicU64::new(0),
                })
            })
            .clone();
        let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        slot.last_used.store(now, Ordering::Relaxed);
        Ok(slot)
    }

    /// The handle if it is loaded now; never waits for a load.
    pub fn ready(&self, key: &str) -> Option<W> {
        let table = self.table.lock().ok()?;
        let slot = table.get(key)?;
        let state = slot.state.try_lock().ok()?;
        match &*state {
            State::Ready(w) => {
                let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
                slot.last_used.store(now, Ordering::Relaxed);
                Some(w.clone())
            }
            _ => None,
        }
    }

    pub fn is_loaded(&self, key: &str) -> bool {
        let Ok(table) = self.table.lock() else {
            return false;
        };
        table.get(key).is_some_and(|slot| slot.is_ready())
    }

    /// The handle for `key`, calling `load` (blocking) if no caller has loaded it. Returns the
    /// handle and whether this call loaded it.
    pub fn get_or_load(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<W, EngineError>,
    ) -> Result<(W, bool), EngineError> {
        let slot = self.slot(key)?;
        let mut state = slot.state.lock().map_err(|_| poisoned())?;
        loop {
            match &*state {
                State::Ready(w) => return Ok((w.clone(), false)),
                State::Loading => state = slot.changed.wait(state).map_err(|_| poisoned())?,
                State::Empty => break,
            }
        }
        *state = State::Loading;
        drop(state);
        let loaded = load();
        let mut state = slot.state.lock().map_err(|_| poisoned())?;
        *state = match &loaded {
            Ok(w) => State::Ready(w.clone()),
            Err(_) => State::Empty,
        };
        slot.changed.notify_all();
        loaded.map(|w| (w, true))
    }

    /// Drops the least recently used loaded entries (never `keep`) until at most `max` remain;
    /// returns the dropped keys.
    pub fn evict_beyond(&self, max: usize, keep: &str) -> Vec<String> {
        let Ok(mut table) = self.table.lock() else {
            return Vec::new();
        };
        let mut dropped = Vec::new();
        loop {
            let loaded: Vec<(String, u64)> = table
                .iter()
                .filter(|(_, s)| s.is_ready())
                .map(|(k, s)| (k.clone(), s.last_used.load(Ordering::Relaxed)))
                .collect();
            if loaded.len() <= max.max(1) {
                return dropped;
            }
            let victim = loaded
                .into_iter()
                .filter(|(k, _)| k != keep)
                .min_by_key(|(_, t)| *t)
                .map(|(k, _)| k);
            let Some(victim) = victim else {
                return dropped;
            };
            table.remove(&victim);
            dropped.push(victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn concurrent_callers_share_one_load() {
        let slots = Arc::new(Slots::<usize>::new());
        let loads = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (slots, loads) = (slots.clone(), loads.clone());
                std::thread::spawn(move || {
                    slots
                        .get_or_load("m", || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(7)
                        })
                        .unwrap()
                        .0
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_load_is_retried_and_the_oldest_entry_goes_first() {
        let slots = Slots::<usize>::new();
        assert!(slots
            .get_or_load("a", || Err(EngineError::Stopped))
            .is_err());
        assert!(!slots.is_loaded("a"));
        assert_eq!(slots.get_or_load("a", || Ok(1)).unwrap(), (1, true));
        slots.get_or_load("b", || Ok(2)).unwrap();
        slots.get_or_load("c", || Ok(3)).unwrap();
        assert_eq!(slots.ready("a"), Some(1)); // a is now the most recent
        assert_eq!(slots.evict_beyond(2, "c"), vec!["b".to_string()]);
        let loaded: Vec<bool> = ["a", "b", "c"].iter().map(|k| slots.is_loaded(k)).collect();
        assert_eq!(loaded, [true, false, true]);
    }
}
