//! The registry lets stopped actors go (issue 13, item 9).


use percore::{Actor, ActorError, Context};

use crate::common::*;

/// Counts its own drops: the actor value is dropped when it stops.
struct Dropper(Count);

impl Drop for Dropper {
    fn drop(&mut self) {
        self.0.add(1);
    }
}

impl Actor for Dropper {
    type Msg = ();
    fn handle(&mut self, _ctx: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        Ok(())
    }
}

/// 10,000 registered actors stop: every registration goes with its actor, without anyone
/// calling `whereis` or `unregister`, and every cell is freed (each cell holds one count of
/// the runtime, so `runtime_refs` returns to its baseline).
#[test]
fn stopped_registered_actors_leave_the_registry_and_free_their_cells() {
    const N: u64 = 10_000;
    let rt = runtime(2);
    let drops = Count::default();
    // A live registered actor is the control: it must stay registered throughout.
    let keeper = rt.spawn(Dropper(Count::default())).unwrap();
    rt.register("keeper", &keeper).unwrap();
    let base_names = rt.registered();
    let base_refs = percore::__private::runtime_refs(&rt);

    let mut refs = Vec::with_capacity(N as usize);
    for i in 0..N {
        let r = rt.spawn(Dropper(drops.clone())).unwrap();
        rt.register(&format!("worker-{i}"), &r).unwrap();
        refs.push(r);
    }
    assert_eq!(rt.registered(), base_names + N as usize);
    // Two names for one actor: both go when it stops.
    rt.register("worker-0-alias", &refs[0]).unwrap();
    for r in &refs {
        assert!(r.stop());
    }
    drop(refs);
    assert!(eventually(|| drops.get() == N), "actors stopped: {} of {N}", drops.get());
    assert!(eventually(|| rt.registered() == base_names), "registered names left: {} (baseline {base_names})", rt.registered());
    assert!(
        eventually(|| percore::__private::runtime_refs(&rt) == base_refs),
        "cells still allocated: {} runtime refs (baseline {base_refs})",
        percore::__private::runtime_refs(&rt)
    );
    assert_eq!(rt.whereis::<()>("keeper").unwrap(), keeper, "a live registration is untouched");
    assert!(rt.whereis::<()>("worker-7").is_err());

    // Registering an actor that has already stopped succeeds and lapses at once.
    let late = rt.spawn(Dropper(drops.clone())).unwrap();
    late.stop();
    assert!(eventually(|| drops.get() == N + 1));
    rt.register("late", &late).unwrap();
    assert_eq!(rt.registered(), base_names);
    drop(late);
    assert!(eventually(|| percore::__private::runtime_refs(&rt) == base_refs));
    // The name of a stopped actor is free for a new one.
    let again = rt.spawn(Dropper(Count::default())).unwrap();
    rt.register("worker-7", &again).unwrap();
    assert_eq!(rt.whereis::<()>("worker-7").unwrap(), again);
    rt.shutdown();
}

/// `register` racing the actor's stop (the Dekker pair in `runtime/names.rs`): whichever
/// side comes second removes the registration, so none is left behind.
#[test]
fn register_racing_stop_leaves_no_registration() {
    const ROUNDS: u64 = 2_000;
    let rt = runtime(2);
    let drops = Count::default();
    let base_refs = percore::__private::runtime_refs(&rt);
    let refs: Vec<_> = (0..ROUNDS).map(|_| rt.spawn(Dropper(drops.clone())).unwrap()).collect();
    let registrar = {
        let (rt, refs) = (rt.handle(), refs.clone());
        std::thread::spawn(move || {
            for (i, r) in refs.iter().enumerate() {
                rt.register(&format!("racer-{i}"), r).unwrap();
            }
        })
    };
    for r in &refs {
        r.stop();
    }
    registrar.join().unwrap();
    drop(refs);
    assert!(eventually(|| drops.get() == ROUNDS));
    assert!(eventually(|| rt.registered() == 0), "registrations left behind: {}", rt.registered());
    assert!(eventually(|| percore::__private::runtime_refs(&rt) == base_refs));
    rt.shutdown();
}
