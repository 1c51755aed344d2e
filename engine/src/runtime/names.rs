//! Names: top-level actor names (paths `/user/<name>/...`), path lookup with `*`, and a
//! registry of well-known names (Erlang's `register`/`whereis`).
//!
//! Child names live with their parent (shard-local, no lock). The two runtime-wide tables
//! below are behind a `Mutex`: they are touched only when a *named top-level* actor is
//! spawned or stops, when a *registered* actor stops, and by lookups; never by `tell`. A ref
//! resolved once is then used with the ordinary lock-free send path.
//!
//! ## A registration ends with its actor
//! A registered actor's stop removes its names (Erlang: a process's name goes when it
//! exits), so the registry never keeps a dead cell alive. The actor's header carries a
//! `registered` flag so that the many actors that were never registered stop without
//! touching the lock. `register` and the stopping shard meet in a Dekker pair:
//! ```text
//!  register (any thread)                      owner shard, finish_stop
//!  insert name; registered = true             state.terminate()  (CLOSED)
//!  fence(SeqCst)       ◄── Dekker pair ──►    fence(SeqCst)
//!  if CLOSED: release_registered(id)          if registered: release_registered(id)
//! ```
//! At least one side sees the other's write, so a registration racing with the stop is
//! removed by one of them (both may try: removal is by identity and idempotent).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::actor::header::{ErasedRef, Header};
use crate::actor::ActorRef;
use crate::id::ActorId;
use crate::error::{LookupError, SpawnError};
use crate::sync::atomic::{fence, Ordering};

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
    /// `register`ed well-known names. Lock, off the message path: register/whereis and the
    /// stop of a registered actor only.
    registry: Mutex<Registry>,
}

/// The well-known names, both ways round.
#[derive(Default)]
struct Registry {
    by_name: HashMap<String, ErasedRef>,
    /// Every name of each registered actor, so that its stop removes them in O(its names)
    /// (an actor may hold several).
    by_actor: HashMap<ActorId, Vec<String>>,
}

impl Registry {
    /// Removes `name` if it is registered; returns the ref (to be dropped outside the lock).
    fn remove_name(&mut self, name: &str) -> Option<ErasedRef> {
        let r = self.by_name.remove(name)?;
        let id = r.header().id;
        if let Some(names) = self.by_actor.get_mut(&id) {
            names.retain(|n| n != name);
            if names.is_empty() {
                self.by_actor.remove(&id);
            }
        }
        Some(r)
    }

    /// Removes every name of actor `id`; returns the refs (to be dropped outside the lock).
    fn remove_actor(&mut self, id: ActorId) -> Vec<ErasedRef> {
        let names = self.by_actor.remove(&id).unwrap_or_default();
        names
            .into_iter()
            .filter_map(|n| match self.by_name.get(&n) {
                Some(r) if r.header().id == id => self.by_name.remove(&n),
                _ => None,
            })
            .collect()
    }
}

/// The shard side of the registry's Dekker pair (module doc): called by the owner shard in
/// `finish_stop`, right after the actor's state became CLOSED for good.
pub(crate) fn release_on_stop(header: &Header) {
    // ORDERING: pairs with the fence in `Names::register` (Dekker): either `register` sees
    // our CLOSED bit, or we see its `registered` flag.
    fence(Ordering::SeqCst);
    // ORDERING: Relaxed: ordered by the fence above.
    if header.registered.load(Ordering::Relaxed) {
        header.runtime.names().release_registered(header.id);
    }
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

    /// Registers `r` under `name`, replacing a stopped holder. Registering an actor that
    /// has already stopped (or is stopping) succeeds, and the registration lapses at once.
    pub(crate) fn register(&self, name: &str, r: ErasedRef) -> Result<(), LookupError> {
        let me = r.clone();
        let id = r.header().id;
        let replaced;
        {
            let mut reg = lock(&self.registry);
            if let Some(existing) = reg.by_name.get(name) {
                if !existing.header().state.is_closed() {
                    return Err(LookupError::NameTaken(name.to_string()));
                }
            }
            replaced = reg.remove_name(name);
            reg.by_name.insert(name.to_string(), r);
            reg.by_actor.entry(id).or_default().push(name.to_string());
        }
        drop(replaced);
        let header = me.header();
        // ORDERING: Relaxed: ordered by the fence below.
        header.registered.store(true, Ordering::Relaxed);
        // ORDERING: pairs with the fence in `release_on_stop` (Dekker, module doc).
        fence(Ordering::SeqCst);
        if header.state.is_closed() {
            // Stopped (or stopping) already: its shard may have looked at the flag before
            // we set it, so the registration ends here.
            self.release_registered(id);
        }
        Ok(())
    }

    pub(crate) fn unregister(&self, name: &str) -> bool {
        let removed = lock(&self.registry).remove_name(name);
        removed.is_some()
    }

    pub(crate) fn whereis(&self, name: &str) -> Option<ErasedRef> {
        let mut reg = lock(&self.registry);
        match reg.by_name.get(name) {
            Some(r) if r.header().state.is_closed() => {
                let gone = reg.remove_name(name); // stopped: forget it
                drop(reg);
                drop(gone);
                None
            }
            other => other.cloned(),
        }
    }

    /// Removes every name registered for actor `id` (it stopped).
    pub(crate) fn release_registered(&self, id: ActorId) {
        let gone = lock(&self.registry).remove_actor(id);
        // Dropped outside the lock: the last count of a cell runs its drop.
        drop(gone);
    }

    /// How many names are registered.
    pub(crate) fn registered(&self) -> usize {
        lock(&self.registry).by_name.len()
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
