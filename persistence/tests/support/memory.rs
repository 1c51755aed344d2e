//! In-memory journal and snapshot store for tests, with gates that hold appends or replays
//! until a test releases them (to observe what an actor does meanwhile).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use percore_persistence::{
    AtomicWrite, Completion, Journal, JournalError, PersistenceId, SnapshotError, SnapshotMetadata, SnapshotStore,
};

#[derive(Default)]
struct Stream {
    highest: u64,
    deleted_to: u64,
    events: BTreeMap<u64, Vec<u8>>,
}

enum Held {
    Append(AtomicWrite, Completion),
    Barrier(Completion),
}

#[derive(Default)]
struct State {
    streams: HashMap<String, Stream>,
    hold_appends: bool,
    held: VecDeque<Held>,
    hold_replays: bool,
    replays_waiting: usize,
    /// (id, first_seq, count) of every append received, in order.
    appends: Vec<(String, u64, u32)>,
}

/// A journal in memory. Appends complete synchronously (inside `append`) unless held.
#[derive(Default)]
pub struct MemoryJournal {
    state: Mutex<State>,
    changed: Condvar,
}

impl MemoryJournal {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, appends and barriers wait until `release_appends`.
    pub fn hold_appends(&self) {
        self.lock().hold_appends = true;
    }

    /// Stores and completes every held append and barrier, in order (also those that
    /// arrive while releasing), then stops holding.
    pub fn release_appends(&self) {
        loop {
            let (done, result) = {
                let mut s = self.lock();
                match s.held.pop_front() {
                    Some(Held::Append(w, done)) => {
                        let r = store(&mut s, &w);
                        (done, r)
                    }
                    Some(Held::Barrier(done)) => (done, Ok(())),
                    None => {
                        s.hold_appends = false;
                        return;
                    }
                }
            };
            done(result);
        }
    }

    /// Stores every held append in order, but completes them newest first (as a journal
    /// with several writer threads might), then stops holding.
    pub fn release_appends_in_reverse(&self) {
        let mut done = vec![];
        {
            let mut s = self.lock();
            while let Some(h) = s.held.pop_front() {
                match h {
                    Held::Append(w, d) => {
                        let r = store(&mut s, &w);
                        done.push((d, r));
                    }
                    Held::Barrier(d) => done.push((d, Ok(()))),
                }
            }
            s.hold_appends = false;
        }
        for (d, r) in done.into_iter().rev() {
            d(r);
        }
    }

    /// From now on, replays wait until `release_replays`.
    pub fn hold_replays(&self) {
        self.lock().hold_replays = true;
    }

    pub fn release_replays(&self) {
        self.lock().hold_replays = false;
        self.changed.notify_all();
    }

    /// Waits (up to 10 s) until `n` appends have been received (held or not).
    pub fn wait_for_appends(&self, n: usize) -> Vec<(String, u64, u32)> {
        self.wait(|s| s.appends.len() >= n, "appends");
        self.appends()
    }

    /// Waits (up to 10 s) until `n` replays are blocked on the gate.
    pub fn wait_for_held_replays(&self, n: usize) {
        self.wait(|s| s.replays_waiting >= n, "held replays");
    }

    fn wait(&self, cond: impl Fn(&State) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = self.lock();
        while !cond(&s) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("timed out waiting for {what}"));
            s = self.changed.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    pub fn appends(&self) -> Vec<(String, u64, u32)> {
        self.lock().appends.clone()
    }

    /// Replaces the stored bytes of one event (to simulate damage the codec must catch).
    pub fn overwrite_event(&self, id: &str, seq: u64, bytes: Vec<u8>) {
        self.lock().streams.get_mut(id).expect("stream exists").events.insert(seq, bytes);
    }

    /// Removes one event (to simulate a journal that lost data).
    pub fn remove_event(&self, id: &str, seq: u64) {
        self.lock().streams.get_mut(id).expect("stream exists").events.remove(&seq);
    }
}

fn store(s: &mut State, w: &AtomicWrite) -> Result<(), JournalError> {
    let stream = s.streams.entry(w.persistence_id.as_str().to_string()).or_default();
    if w.events.is_empty() {
        return Ok(());
    }
    if w.first_seq != stream.highest + 1 {
        return Err(JournalError::SequenceConflict {
            persistence_id: w.persistence_id.clone(),
            expected: stream.highest + 1,
            got: w.first_seq,
        });
    }
    for (i, e) in w.events.iter().enumerate() {
        stream.events.insert(w.first_seq + i as u64, e.to_vec());
    }
    stream.highest = w.last_seq();
    Ok(())
}

impl Journal for MemoryJournal {
    fn append(&self, write: AtomicWrite, done: Completion) {
        let mut s = self.lock();
        s.appends.push((write.persistence_id.to_string(), write.first_seq, write.events.count()));
        self.changed.notify_all();
        if s.hold_appends {
            s.held.push_back(Held::Append(write, done));
            return;
        }
        let r = store(&mut s, &write);
        drop(s);
        done(r);
    }

    fn delete_to(&self, id: &PersistenceId, to_seq: u64, done: Completion) {
        let mut s = self.lock();
        let stream = s.streams.entry(id.to_string()).or_default();
        let to = to_seq.min(stream.highest);
        stream.deleted_to = stream.deleted_to.max(to);
        stream.events.retain(|seq, _| *seq > to);
        drop(s);
        done(Ok(()));
    }

    fn barrier(&self, done: Completion) {
        let mut s = self.lock();
        if s.hold_appends {
            s.held.push_back(Held::Barrier(done));
            return;
        }
        drop(s);
        done(Ok(()));
    }

    fn highest_sequence_nr(&self, id: &PersistenceId) -> Result<u64, JournalError> {
        Ok(self.lock().streams.get(id.as_str()).map_or(0, |s| s.highest))
    }

    fn replay(
        &self,
        id: &PersistenceId,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<u64, JournalError> {
        let mut s = self.lock();
        s.replays_waiting += 1;
        self.changed.notify_all();
        while s.hold_replays {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.replays_waiting -= 1;
        let Some(stream) = s.streams.get(id.as_str()) else { return Ok(0) };
        let highest = stream.highest;
        let events: Vec<(u64, Vec<u8>)> = stream.events.range(from..=to).map(|(k, v)| (*k, v.clone())).collect();
        drop(s);
        for (seq, e) in events {
            if !visit(seq, &e) {
                break;
            }
        }
        Ok(highest)
    }
}

/// Per persistence id: sequence number → (metadata, serialised state).
type Snapshots = HashMap<String, BTreeMap<u64, (SnapshotMetadata, Vec<u8>)>>;

/// Snapshots in memory.
#[derive(Default)]
pub struct MemorySnapshotStore {
    snaps: Mutex<Snapshots>,
}

impl MemorySnapshotStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sequence numbers of the stored snapshots of `id`.
    pub fn seqs(&self, id: &str) -> Vec<u64> {
        self.snaps.lock().unwrap().get(id).map(|m| m.keys().copied().collect()).unwrap_or_default()
    }

    /// Replaces the stored state of one snapshot (to simulate one the codec must refuse).
    pub fn overwrite(&self, id: &str, seq: u64, state: Vec<u8>) {
        self.snaps.lock().unwrap().get_mut(id).expect("snapshots exist").get_mut(&seq).expect("snapshot exists").1 = state;
    }
}

impl SnapshotStore for MemorySnapshotStore {
    fn save(&self, meta: &SnapshotMetadata, state: &[u8]) -> Result<(), SnapshotError> {
        let mut s = self.snaps.lock().unwrap();
        s.entry(meta.persistence_id.to_string()).or_default().insert(meta.seq, (meta.clone(), state.to_vec()));
        Ok(())
    }

    fn load_latest(&self, id: &PersistenceId) -> Result<Option<(SnapshotMetadata, Vec<u8>)>, SnapshotError> {
        Ok(self.snaps.lock().unwrap().get(id.as_str()).and_then(|m| m.values().next_back().cloned()))
    }

    fn load(&self, id: &PersistenceId, seq: u64) -> Result<Option<(SnapshotMetadata, Vec<u8>)>, SnapshotError> {
        Ok(self.snaps.lock().unwrap().get(id.as_str()).and_then(|m| m.get(&seq).cloned()))
    }

    fn list(&self, id: &PersistenceId) -> Result<Vec<SnapshotMetadata>, SnapshotError> {
        Ok(self
            .snaps
            .lock()
            .unwrap()
            .get(id.as_str())
            .map(|m| m.values().map(|(m, _)| m.clone()).collect())
            .unwrap_or_default())
    }

    fn delete_to(&self, id: &PersistenceId, max_seq: u64) -> Result<usize, SnapshotError> {
        let mut s = self.snaps.lock().unwrap();
        let Some(m) = s.get_mut(id.as_str()) else { return Ok(0) };
        let before = m.len();
        m.retain(|seq, _| *seq > max_seq);
        Ok(before - m.len())
    }
}
