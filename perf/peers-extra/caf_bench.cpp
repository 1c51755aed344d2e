// CAF 0.17 (Debian's libcaf-dev) side of `percore-perf --peers-extra`: the workloads
// pingpong, counting, ring and spawn, shaped as percore-perf runs them on percore and on
// the Rust peers. Built and run by perf/peers-extra.sh; percore-perf calls it as
//
//   caf-bench WORKLOAD N THREADS
//
// and reads one line from stdout:
//
//   result COUNT SECS RSS_BEFORE RSS_AFTER
//
// COUNT is what the actors counted (percore-perf checks it), SECS the measured part,
// RSS_* the resident set in bytes before and after it (spawn; 0 otherwise). THREADS is
// CAF's scheduler.max-threads: 1 for the one-thread workloads (pingpong, ring; counting's
// counter, fed from this foreign main thread), the core count for spawn.
//
// Differences to percore, for reading the numbers: CAF mailboxes are unbounded (counting's
// sends never wait), the scheduler steals work between threads, and replies travel as
// ordinary messages.

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

using namespace caf;

using ping_atom = atom_constant<atom("ping")>;
using pong_atom = atom_constant<atom("pong")>;
using count_atom = atom_constant<atom("count")>;
using start_atom = atom_constant<atom("start")>;
using add_atom = atom_constant<atom("add")>;
using get_atom = atom_constant<atom("get")>;
using link_atom = atom_constant<atom("link")>;
using token_atom = atom_constant<atom("token")>;
using done_atom = atom_constant<atom("done")>;
using spawn_atom = atom_constant<atom("spawn")>;
using hello_atom = atom_constant<atom("hello")>;
using child_atom = atom_constant<atom("childdone")>;

namespace {

uint64_t rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      uint64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "caf-bench: %s\n", what.c_str());
  std::exit(1);
}

// --- pingpong

struct pong_state {
  uint64_t pings = 0;
};

behavior ponger(stateful_actor<pong_state>* self) {
  return {
    [=](ping_atom) {
      ++self->state.pings;
      return pong_atom::value;  // the reply goes back to the pinger as a message
    },
    [=](count_atom) { return self->state.pings; },
  };
}

struct ping_state {
  actor ponger;
  uint64_t target = 0;
  uint64_t pongs = 0;
  response_promise done;
};

behavior pinger(stateful_actor<ping_state>* self, actor ponger) {
  self->state.ponger = ponger;
  return {
    [=](start_atom, uint64_t n) {
      auto& s = self->state;
      s.target = n;
      s.pongs = 0;
      s.done = self->make_response_promise();
      self->send(s.ponger, ping_atom::value);
      return s.done;
    },
    [=](pong_atom) {
      auto& s = self->state;
      if (++s.pongs < s.target)
        self->send(s.ponger, ping_atom::value);
      else
        s.done.deliver(s.pongs);
    },
  };
}

// --- counting

struct count_state {
  uint64_t count = 0;
};

behavior counter(stateful_actor<count_state>* self) {
  return {
    [=](add_atom, uint64_t k) { self->state.count += k; },
    [=](get_atom) { return self->state.count; },
  };
}

// --- ring

struct member_state {
  actor next;
  actor leader;
  uint64_t received = 0;
  uint64_t hops = 0;
  response_promise done;
};

behavior member(stateful_actor<member_state>* self) {
  return {
    [=](link_atom, actor next, actor leader) {
      self->state.next = next;
      self->state.leader = leader;
    },
    [=](start_atom, uint64_t hops) {
      auto& s = self->state;
      s.hops = hops;
      s.done = self->make_response_promise();
      self->send(s.next, token_atom::value, hops);
      return s.done;
    },
    [=](token_atom, uint64_t left) {
      auto& s = self->state;
      ++s.received;
      if (left == 1)
        self->send(s.leader, done_atom::value);
      else
        self->send(s.next, token_atom::value, left - 1);
    },
    [=](done_atom) { self->state.done.deliver(self->state.hops); },
    [=](count_atom) { return self->state.received; },
  };
}

// --- spawn: a spawner per thread starts its children, says hello to each, counts the
// replies; it keeps every child's handle, so all are alive when the resident set is read.

behavior child(event_based_actor* self, actor spawner) {
  return {
    [=](hello_atom) { self->send(spawner, child_atom::value); },
  };
}

struct spawner_state {
  std::vector<actor> children;
  uint64_t expected = 0;
  uint64_t reported = 0;
  response_promise done;
};

behavior spawner(stateful_actor<spawner_state>* self) {
  return {
    [=](spawn_atom, uint64_t count) {
      auto& s = self->state;
      s.expected = count;
      s.done = self->make_response_promise();
      s.children.reserve(count);
      auto me = actor_cast<actor>(self);
      for (uint64_t i = 0; i < count; ++i) {
        auto c = self->spawn(child, me);
        self->send(c, hello_atom::value);
        s.children.push_back(c);
      }
      if (count == 0)
        s.done.deliver(uint64_t{0});
      return s.done;
    },
    [=](child_atom) {
      auto& s = self->state;
      if (++s.reported == s.expected)
        s.done.deliver(s.reported);
    },
  };
}

uint64_t ask_u64(scoped_actor& self, const actor& who, message msg, const char* what) {
  uint64_t out = 0;
  self->request(who, infinite, std::move(msg))
    .receive([&](uint64_t v) { out = v; },
             [&](error& e) { die(std::string(what) + ": " + to_string(e)); });
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4)
    die("usage: caf-bench pingpong|counting|ring|spawn N THREADS");
  std::string workload = argv[1];
  uint64_t n = std::strtoull(argv[2], nullptr, 10);
  size_t threads = std::strtoull(argv[3], nullptr, 10);
  if (n == 0 || threads == 0)
    die("N and THREADS must be at least 1");

  actor_system_config cfg;
  cfg.set("scheduler.max-threads", threads);
  actor_system sys{cfg};
  scoped_actor self{sys};

  uint64_t count = 0, rss_before = 0, rss_after = 0;
  double secs = 0;
  if (workload == "pingpong") {
    auto pg = sys.spawn(ponger);
    auto pi = sys.spawn(pinger, pg);
    auto t0 = std::chrono::steady_clock::now();
    auto pongs = ask_u64(self, pi, make_message(start_atom::value, n), "the game");
    secs = since(t0);
    if (pongs != n)
      die("pongs: expected " + std::to_string(n) + ", got " + std::to_string(pongs));
    count = ask_u64(self, pg, make_message(count_atom::value), "counting pings");
  } else if (workload == "counting") {
    auto c = sys.spawn(counter);
    auto t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < n; ++i)
      anon_send(c, add_atom::value, uint64_t{1});
    count = ask_u64(self, c, make_message(get_atom::value), "asking the total");
    secs = since(t0);
  } else if (workload == "ring") {
    const size_t actors = 1000;
    std::vector<actor> members;
    for (size_t i = 0; i < actors; ++i)
      members.push_back(sys.spawn(member));
    for (size_t i = 0; i < actors; ++i)
      anon_send(members[i], link_atom::value, members[(i + 1) % actors], members[0]);
    auto t0 = std::chrono::steady_clock::now();
    auto done = ask_u64(self, members[0], make_message(start_atom::value, n), "running the ring");
    secs = since(t0);
    if (done != n)
      die("hops reported by the leader: expected " + std::to_string(n) + ", got " + std::to_string(done));
    for (auto& m : members)
      count += ask_u64(self, m, make_message(count_atom::value), "counting hops");
  } else if (workload == "spawn") {
    std::vector<actor> spawners;
    for (size_t i = 0; i < threads; ++i)
      spawners.push_back(sys.spawn(spawner));
    rss_before = rss_bytes();
    auto t0 = std::chrono::steady_clock::now();
    // All spawners start at once; each answers (a plain message back to `self`) when all
    // of its children have reported.
    for (size_t i = 0; i < threads; ++i) {
      uint64_t share = n / threads + (i < n % threads ? 1 : 0);
      self->send(spawners[i], spawn_atom::value, share);
    }
    for (size_t i = 0; i < threads; ++i)
      self->receive([&](uint64_t reported) { count += reported; },
                    after(std::chrono::seconds(300)) >> [&] { die("spawning timed out"); });
    secs = since(t0);
    rss_after = rss_bytes();
  } else {
    die("unknown workload " + workload);
  }
  std::printf("result %llu %.9f %llu %llu\n", static_cast<unsigned long long>(count), secs,
              static_cast<unsigned long long>(rss_before), static_cast<unsigned long long>(rss_after));
  std::fflush(stdout);
  // The actor system's destructor waits for every actor, and these never stop on their
  // own (the ring, the children): the measurement is done, leave without it.
  std::_Exit(0);
}
