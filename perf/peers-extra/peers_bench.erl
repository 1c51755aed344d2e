%% Erlang/BEAM side of `percore-perf --peers-extra`: the workloads pingpong, counting, ring
%% and spawn, shaped as percore-perf runs them on percore and on the Rust peers. Compiled
%% by perf/peers-extra.sh; percore-perf runs it as
%%
%%   erl +S THREADS:THREADS -noshell -pa DIR -run peers_bench main WORKLOAD N
%%
%% and reads one line from stdout: `result COUNT SECS RSS_BEFORE RSS_AFTER` (COUNT is what
%% the processes counted, checked by percore-perf; SECS the measured part; RSS in bytes
%% before and after it, spawn only, else 0). THREADS (schedulers): 1 for pingpong and ring,
%% 2 for counting (the producer process stands for percore's foreign thread), the core
%% count for spawn.
%%
%% Differences to percore, for reading the numbers: mailboxes are unbounded (counting's
%% sends never wait, though BEAM charges a sender to a long queue extra reductions);
%% a reply is an ordinary message; processes are preemptively scheduled.
-module(peers_bench).
-export([main/1]).

main([Workload, NStr]) ->
    N = list_to_integer(NStr),
    {Count, Nanos, Before, After} = run(Workload, N),
    io:format("result ~b ~.9f ~b ~b~n", [Count, Nanos / 1.0e9, Before, After]),
    halt(0).

now_ns() -> erlang:monotonic_time(nanosecond).

rss() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]), binary:match(L, <<"VmRSS:">>) =/= nomatch],
    [_, Kib | _] = string:lexemes(binary_to_list(Line), " \t"),
    list_to_integer(Kib) * 1024.

fail(What) ->
    io:format(standard_error, "peers_bench: ~s~n", [What]),
    halt(1).

%% --- pingpong

ponger(Pings) ->
    receive
        {ping, From} -> From ! pong, ponger(Pings + 1);
        {count, From} -> From ! {pings, Pings}, ponger(Pings)
    end.

pinger(_Ponger, N, N, Parent) -> Parent ! {done, N};
pinger(Ponger, N, K, Parent) ->
    Ponger ! {ping, self()},
    receive pong -> pinger(Ponger, N, K + 1, Parent) end.

%% --- counting

counter(Count) ->
    receive
        {add, K} -> counter(Count + K);
        {get, From} -> From ! {total, Count}, counter(Count)
    end.

producer(Counter, 0, Parent) ->
    Counter ! {get, Parent};
producer(Counter, Left, Parent) ->
    Counter ! {add, 1},
    producer(Counter, Left - 1, Parent).

%% --- ring

member(Next, Leader, Received, Waiter) ->
    receive
        {link, Next2, Leader2} -> member(Next2, Leader2, Received, Waiter);
        {start, Hops, From} -> Next ! {token, Hops}, member(Next, Leader, Received, {From, Hops});
        {token, 1} -> Leader ! done, member(Next, Leader, Received + 1, Waiter);
        {token, Left} -> Next ! {token, Left - 1}, member(Next, Leader, Received + 1, Waiter);
        done -> {From, Hops} = Waiter, From ! {ring_done, Hops}, member(Next, Leader, Received, none);
        {count, From} -> From ! {hops, Received}, member(Next, Leader, Received, Waiter)
    end.

%% --- spawn: one spawner per scheduler starts its children, says hello to each and counts
%% the replies; the children stay alive (waiting) until the resident set has been read.
%% Waves of 512, as percore's spawner: a spawner with a long queue of replies on its heap
%% pays for the queue at every garbage collection (100k children in one go took 15 s).

child(Spawner) ->
    receive hello -> Spawner ! child_done end,
    receive stop -> ok end.

-define(WAVE, 512).

spawner(Count, Parent) ->
    spawn_waves(Count, self()),
    Parent ! {spawned, Count}.

spawn_waves(0, _) -> ok;
spawn_waves(Left, Self) ->
    Wave = min(Left, ?WAVE),
    spawn_children(Wave, Self),
    wait_children(Wave),
    spawn_waves(Left - Wave, Self).

spawn_children(0, _) -> ok;
spawn_children(K, Spawner) ->
    spawn(fun() -> child(Spawner) end) ! hello,
    spawn_children(K - 1, Spawner).

wait_children(0) -> ok;
wait_children(K) -> receive child_done -> wait_children(K - 1) end.

collect(0, Sum) -> Sum;
collect(K, Sum) -> receive {spawned, C} -> collect(K - 1, Sum + C) end.

run("pingpong", N) ->
    Self = self(),
    Ponger = spawn(fun() -> ponger(0) end),
    T0 = now_ns(),
    spawn(fun() -> pinger(Ponger, N, 0, Self) end),
    Pongs = receive {done, P} -> P end,
    T1 = now_ns(),
    Pongs =:= N orelse fail(io_lib:format("pongs: expected ~b, got ~b", [N, Pongs])),
    Ponger ! {count, Self},
    Pings = receive {pings, C} -> C end,
    {Pings, T1 - T0, 0, 0};
run("counting", N) ->
    Self = self(),
    Counter = spawn(fun() -> counter(0) end),
    T0 = now_ns(),
    spawn(fun() -> producer(Counter, N, Self) end),
    Total = receive {total, C} -> C end,
    {Total, now_ns() - T0, 0, 0};
run("ring", N) ->
    Self = self(),
    Members = [spawn(fun() -> member(none, none, 0, none) end) || _ <- lists:seq(1, 1000)],
    Leader = hd(Members),
    Nexts = tl(Members) ++ [Leader],
    [M ! {link, Next, Leader} || {M, Next} <- lists:zip(Members, Nexts)],
    T0 = now_ns(),
    Leader ! {start, N, Self},
    Done = receive {ring_done, H} -> H end,
    T1 = now_ns(),
    Done =:= N orelse fail(io_lib:format("hops reported by the leader: expected ~b, got ~b", [N, Done])),
    Hops = lists:sum([begin M ! {count, Self}, receive {hops, C} -> C end end || M <- Members]),
    {Hops, T1 - T0, 0, 0};
run("spawn", N) ->
    Self = self(),
    Spawners = erlang:system_info(schedulers),
    Before = rss(),
    T0 = now_ns(),
    [spawn(fun() -> spawner(N div Spawners + (if I < N rem Spawners -> 1; true -> 0 end), Self) end)
     || I <- lists:seq(0, Spawners - 1)],
    Reported = collect(Spawners, 0),
    T1 = now_ns(),
    {Reported, T1 - T0, Before, rss()};
run(Other, _) ->
    fail(io_lib:format("unknown workload ~s", [Other])).
