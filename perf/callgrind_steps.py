#!/usr/bin/env python3
"""Self instructions per step of a same-shard pingpong round trip on the shard thread:
(Ir(400k) - Ir(200k)) / 200k from two callgrind files, grouped by function and source line.
Usage: callgrind_steps.py CG_200K CG_400K [--lines]  (see perf/callgrind-same-shard.sh)."""
import sys, re, collections
def parse(path):
    names = {'fl': {}, 'fn': {}}
    def resolve(kind, val):
        m = re.match(r'\((\d+)\)(?:\s+(.*))?', val)
        t = names['fn' if kind in ('fn', 'cfn') else 'fl']
        if m:
            if m.group(2) is not None: t[m.group(1)] = m.group(2)
            return t.get(m.group(1), '?')
        return val
    cost = collections.Counter(); incl = collections.Counter()
    fl = fi = fn = cfn = None; skip = False; last = 0
    for raw in open(path):
        line = raw.rstrip('\n')
        if not line: continue
        m = re.match(r'^([a-z]+)=(.*)', line)
        if m:
            k, v = m.groups()
            if k == 'fl': fl = resolve(k, v); fi = fl
            elif k in ('fi', 'fe'): fi = resolve(k, v)
            elif k == 'fn': fn = resolve(k, v); fi = fl
            elif k in ('cfl', 'cfi'): resolve(k, v)
            elif k == 'cfn': cfn = resolve(k, v)
            elif k == 'calls': skip = True
            continue
        if not (line[0].isdigit() or line[0] in '+-*'): continue
        parts = line.split(); p = parts[0]
        ln = last if p == '*' else (last + int(p) if p[0] in '+-' else int(p))
        last = ln
        c = int(parts[1]) if len(parts) > 1 else 0
        if skip:
            skip = False; incl[(fn, cfn)] += c; continue
        cost[(fn, fi, ln)] += c
    return cost, incl
def short_fn(fn):
    for k in ['tell_sized', 'try_tell', 'push_back', 'run_general', 'finish_general', 'run_ready', 'tell_from_other_thread', 'Pinger as', 'Ponger as', 'activation::run', 'run_loop']:
        if k in fn: return k.replace(' as', '::handle')
    return fn[:60]
_srcs = {}
def src(f, ln):
    try:
        if f not in _srcs: _srcs[f] = open(f).read().split('\n')
        return _srcs[f][ln - 1]
    except Exception:
        return ''
_fns = {}
def enclosing_fn(f, ln):
    """The name of the `fn` whose body holds line `ln` of `f` (the last `fn` line above it)."""
    if f not in _fns:
        _fns[f] = [(i + 1, m.group(1)) for i, l in enumerate(src(f, 1) and _srcs[f]) if (m := re.match(r'\s*(?:pub(?:\([a-z]+\))? )?(?:unsafe )?fn (\w+)', l))]
    name = '?'
    for start, n in _fns[f]:
        if start <= ln: name = n
    return name
def step(fn, f, ln):
    s = short_fn(fn); f = f or '?'
    base = f.split('/src/')[-1]
    if s in ('tell_sized', 'try_tell') or s.endswith('::handle'):
        # The sender's side, wherever the compiler put it (inlined into the handler or not).
        if base == 'workloads/pingpong.rs' or (s.endswith('::handle') and 'result.rs' in f and base != 'actor/cell.rs'):
            return '5 handlers (Pinger/Ponger user code, self)'
        if base == 'workloads/engine.rs' or s == 'tell_sized': return '1 sender: tell_sized (workload wrapper: call, result)'
        if 'vec_deque' in f or 'raw_vec' in f or base == 'shard/run_queue.rs' or (base == 'shard/mod.rs' and ln in range(80, 98)) or (base == 'shard/mod.rs' and 'push_run' in src(f, ln)): return '2 try_tell: run-queue push'
        if base == 'shard/mod.rs': return '2 try_tell: owner-shard check (thread-local, index, runtime)'
        if base == 'actor/cell.rs' and ('first' in src(f, ln) or ln in range(110, 140)): return '2 try_tell: inline slot write'
        if base == 'actor/cell.rs': return '2 try_tell: capacity check, queued flag'
        if base in ('actor/actor_ref.rs', 'actor/state.rs', 'actor/header.rs') and s == 'try_tell' and ln in (116, 128): return '2 try_tell: call entry/exit (prologue, result)'
        if base in ('actor/actor_ref.rs', 'actor/state.rs', 'actor/header.rs'): return '2 try_tell: closed check, dispatch'
        return '2 try_tell: other inlined (option/ptr/result)'
    if s == 'push_back': return '2 try_tell: run-queue push'
    if s in ('run_general', 'finish_general'): return '4 activation: general path (out of line)'
    if s in ('run_loop', 'run_ready'):
        if 'watchdog' in f: return '3 shard loop: stall watchdog begin/end'
        if 'vec_deque' in f or 'raw_vec' in f or 'run_queue' in f: return '3 shard loop: run-queue pop'
        if 'panicking' in f or (base == 'shard/mod.rs' and ln == 437): return '3 shard loop: backstop catch_unwind + vtable call'
        return '3 shard loop: pop loop, entry decode, outcome'
    if s in ('activation::run', 'run_general', 'finish_general'):
        if base == 'actor/activation.rs':
            if ln == 0: return '4 activation: unattributed (spills, moves)'
            fn_name = enclosing_fn(f, ln)
            if fn_name in ('run_general', 'finish_general'): return '4 activation: general path (out of line)'
            if fn_name == 'run': return '4 activation: entry and exit of run (prologue, queued flag, state tests, epilogue)'
            if fn_name == 'requeue': return '4 activation: re-queue decision'
            if fn_name == 'process_user_messages': return '4 activation: process_user_messages (budget, ctx, catch_unwind, result)'
            if fn_name == 'handle_messages':
                if 'next_message' in src(f, ln) or 'pop_local' in src(f, ln): return '4 activation: message read (pop local queue, inline slot)'
                return '4 activation: message loop (unstash test, count, flags, handler call)'
            return '4 activation: other (%s)' % fn_name
        if base == 'actor/cell.rs' or 'option.rs' in f or 'ptr/' in f or 'mem/' in f: return '4 activation: message read (pop local queue, inline slot)'
        if base == 'actor/meta.rs': return '4 activation: flag/lifecycle tests (meta.rs)'
        if 'panicking' in f: return '4 activation: process_user_messages (budget, ctx, catch_unwind, result)'
        if base in ('shard/mod.rs', 'shard/run_queue.rs') or 'vec_deque' in f: return '4 activation: re-queue decision'
        return '4 activation: other inlined (%s)' % base
    return '9 other: ' + s
a, ia = parse(sys.argv[1]); b, ib = parse(sys.argv[2])
d = collections.Counter()
for k in set(a) | set(b): d[k] = (b[k] - a[k]) / 200000.0
steps = collections.Counter(); lines = collections.defaultdict(collections.Counter)
for (fn, f, ln), c in d.items():
    st = step(fn, f, ln); steps[st] += c; lines[st][(f.split('/src/')[-1] if f else '?', ln)] += c
tot = sum(d.values())
print('total per round trip: %.1f' % tot)
for st in sorted(steps):
    if abs(steps[st]) >= 0.05:
        print('%7.1f  %s' % (steps[st], st))
        if '--lines' in sys.argv:
            for (f, ln), c in sorted(lines[st].items(), key=lambda x: -x[1]):
                if abs(c) >= 0.5: print('            %6.1f %s:%d' % (c, f, ln))
fi = collections.Counter()
for (fn, cfn), c in ib.items(): fi[(short_fn(fn), short_fn(cfn))] += (c - ia.get((fn, cfn), 0)) / 200000.0
print('calls (inclusive cost of callee, per round trip):')
for (x, y), c in sorted(fi.items(), key=lambda x: -x[1]):
    if c >= 1: print('%7.1f  %s -> %s' % (c, x, y))
