//! Names: top-level actor names (paths `/user/<name>/...`), path lookup with `*`, and a
//! registry of well-known names (Erlang's `register`/`whereis`).
//!
//! Child names live with their parent (shard-local, no lock). The two runtime-wide tables
//! below are behind a `Mutex`: they are touched only when a *named top-level* actor is
//! spawned or stops, and by lookups; never by `tell`. A ref resolved once is then used
//! with the ordinary lock-free send path.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::actor::header::ErasedRef;
use crate::actor::ActorRef;
use crate::id::ActorId;
use crate::error::{LookupError, SpawnError};

/// Checks a name given at spawn: non-empty, no `/`, not starting with `$` (reserved for
/// ids), no `*` (the wildcard).
pub(crate) fn validate_name(name: &str) -> Result<(), SpawnError> {
    if name.is_empty() || name.contains('/') || name.starts_with('$') || name.contains('*') {
        return Err(SpawnError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// The runtime-wide name tables.
#[derive(Default)]
pub(crate) struct Names {
    /// Named top-level actors; `None` while a spawn has claimed the name but not finished.
    /// Lock, off the message path: named top-level spawn/stop and lookups only.
    top: Mutex<HashMap<Box<str>, Option<ErasedRef>>>,
    /// `register`ed well-known names. Lock, off the message path: register/whereis only.
    registry: Mutex<HashMap<String, ErasedRef>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent (single
    // insert/remove operations), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Names {
    /// Claims a top-level name before the actor is allocated.
    pub(crate) fn claim_top_level(&self, name: &str) -> Result<(), SpawnError> {
        let mut top = lock(&self.top);
        if let Some(existing) = top.get(name) {
            if existing.as_ref().is_none_or(|r| !r.header().state.is_closed()) {
                return Err(SpawnError::DuplicateName(name.to_string()));
            }
        }
        top.insert(name.into(), None);
        Ok(())
    }

    /// Completes a claim with the spawned actor.
    pub(crate) fn fill_top_level(&self, name: &str, r: ErasedRef) {
        lock(&self.top).insert(name.into(), Some(r));
    }

    /// Gives a claimed name back (spawn failed).
    pub(crate) fn abandon_top_level(&self, name: &str) {
        let mut top = lock(&self.top);
        if top.get(name).is_some_and(Option::is_none) {
            top.remove(name);
        }
    }

    /// The actor `id` stopped: free its name.
    pub(crate) fn release_top_level(&self, name: &str, id: ActorId) {
        let mut top = lock(&self.top);
        if top.get(name).is_some_and(|r| r.as_ref().is_some_and(|r| r.header().id == id)) {
            top.remove(name);
        }
    }

    /// Top-level actors matching a segment (a name or `*`).
    pub(crate) fn top_level(&self, pattern: &str) -> Vec<ErasedRef> {
        let top = lock(&self.top);
        if pattern == "*" {
            top.values().flatten().cloned().collect()
        } else {
            top.get(pattern).cloned().flatten().into_iter().collect()
        }
    }

    pub(crate) fn register(&self, name: &str, r: ErasedRef) -> Result<(), LookupError> {
        let mut reg = lock(&self.registry);
        if let Some(existing) = reg.get(name) {
            if !existing.header().state.is_closed() {
                return Err(LookupError::NameTaken(name.to_string()));
            }
        }
        reg.insert(name.to_string(), r);
        Ok(())
    }

    pub(crate) fn unregister(&self, name: &str) -> bool {
        lock(&self.registry).remove(name).is_some()
    }

    pub(crate) fn whereis(&self, name: &str) -> Option<ErasedRef> {
        let mut reg = lock(&self.registry);
        match reg.get(name) {
            Some(r) if r.header().state.is_closed() => {
                reg.remove(name); // stopped: forget it
                None
            }
            other => other.cloned(),
        }
    }
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names").finish_non_exhaustive()
    }
}

/// Converts a type-erased ref into `ActorRef<M>` if the actor's message type is `M`.
pub(crate) fn typed<M: 'static>(r: ErasedRef, path: &str) -> Result<ActorRef<M>, LookupError> {
    let vt = r.header().vtable;
    if (vt.msg_type)() != std::any::TypeId::of::<M>() {
        return Err(LookupError::WrongType { path: path.to_string(), actual: (vt.msg_type_name)() });
    }
    let h = r.as_ptr();
    std::mem::forget(r);
    // SAFETY: the count moves from `r` into the new ref, and the message type was checked.
    Ok(unsafe { ActorRef::from_raw(h) })
}

/// The single actor a lookup of `path` found, typed.
pub(crate) fn the_one<M: 'static>(mut found: Vec<ErasedRef>, path: &str) -> Result<ActorRef<M>, LookupError> {
    match found.len() {
        0 => Err(LookupError::NotFound(path.to_string())),
        1 => typed(found.remove(0), path),
        count => Err(LookupError::Ambiguous { path: path.to_string(), count }),
    }
}

/// Splits `percore://<runtime>/user/a/b`, `/user/a/b` or `user/a/b` into the segments
/// after `user`, checking the runtime name when one is given.
pub(crate) fn parse_path<'p>(path: &'p str, runtime: &str) -> Result<Vec<&'p str>, LookupError> {
    let invalid = || LookupError::InvalidPath(path.to_string());
    let rest = match path.strip_prefix("percore://") {
        Some(r) => {
            let (rt, rest) = r.split_once('/').ok_or_else(invalid)?;
            if rt != runtime {
                return Err(LookupError::OtherRuntime { path: path.to_string(), runtime: runtime.to_string() });
            }
            rest
        }
        None => path.trim_start_matches('/'),
    };
    let mut segs = rest.split('/').filter(|s| !s.is_empty());
    if segs.next() != Some("user") {
        return Err(invalid());
    }
    let segs: Vec<&str> = segs.collect();
    if segs.is_empty() {
        return Err(invalid());
    }
    Ok(segs)
}
