#!/usr/bin/python3
"""The Redis scripts of the idempotency records, run directly.

sidecar/scripts/claim.lua and finish.lua (each with record.lua in front, as
the build embeds them) are loaded into a throwaway redis-server started here in
a temporary directory, and driven the way idem.c drives them: every transition
of the record's state machine (idem.h), the record's exact string form
(record.h), the expiries, records of the hash form earlier versions wrote, and
the ctx.store writes a done carries: applied all or none, refused on a key of
another type or a counter Redis would refuse, conflicts on guarded reads, and
the "sum" keys whose increments are applied as one (less those of records that
did not apply). Every expectation is computed here from the inputs; nothing is
read back from warren's own code.

Exit status 0 when every check passed.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "..", "sidecar", "scripts")
MODEL = os.path.join(HERE, "..", "..", "sidecar", "lua", "commit_model.lua")

checks = 0
failures = 0


def check(cond, what):
    global checks, failures
    checks += 1
    if not cond:
        failures += 1
        print("  failed: %s" % what, flush=True)


def check_eq(got, want, what):
    check(got == want, "%s (got %r, want %r)" % (what, got, want))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_redis():
    d = tempfile.mkdtemp(prefix="warren-scripts-")
    port = free_port()
    user = []
    if os.getuid() == 0:
        shutil.chown(d, "redis", "redis")
        user = ["runuser", "-u", "redis", "--"]
    p = subprocess.Popen(user + ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--dir", d, "--save", "", "--appendonly", "yes"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    r = redis.Redis(port=port, decode_responses=True)
    for _ in range(100):
        try:
            r.ping()
            return p, d, r
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    p.kill()
    sys.exit("redis-server did not start on port %d" % port)


def source(name):
    with open(os.path.join(SCRIPTS, "record.lua")) as a, open(os.path.join(SCRIPTS, name)) as b:
        return a.read() + "\n" + b.read()


TTL, LEASE = 604800000, 30000


class Scripts:
    def __init__(self, r):
        self.r = r
        self.claim_sha = r.script_load(source("claim.lua"))
        self.finish_sha = r.script_load(source("finish.lua"))

    def claim(self, keys, token, lease=LEASE, ttl=TTL):
        out = self.r.evalsha(self.claim_sha, len(keys), *keys, token, lease, ttl)
        return [(out[i], out[i + 1]) for i in range(0, len(out), 2)]

    def finish(self, token, recs, ttl=TTL, lease=LEASE):
        """RECS: dicts with key, op, value and optionally writes (list of (op, key,
        a, b)), sums (list of (key, delta)), guards (list of (cmd, key, arg,
        items)), shape. Builds the argument layout finish.lua documents."""
        store_keys = []

        def kidx(k):
            if k not in store_keys:
                store_keys.append(k)
            return len(recs) + store_keys.index(k) + 1
        sum_keys = {}
        for rec in recs:
            for k, d in rec.get("sums", []):
                t = sum_keys.setdefault(k, [0, 0, 0])
                t[0] += d
                t[1 if d < 0 else 2] += d
        head, blocks, data = [], [], []
        for k, (tot, neg, pos) in sum_keys.items():
            head += [kidx(k), tot, neg, pos]
        for rec in recs:
            guards, writes, sums = rec.get("guards", []), rec.get("writes", []), rec.get("sums", [])
            g = []
            for cmd, k, arg, items in guards:
                g += [cmd, kidx(k), arg, len(items)] + list(items)
            w = []
            for op, k, a, b in writes:
                w += [op, kidx(k), a, b]
            s = []
            for k, d in sums:
                s += [kidx(k), d]
            blocks += [rec["op"], rec.get("value", ""), len(writes), len(g),
                       rec.get("shape", "1"), len(sums)]
            data += g + w + s
        keys = [rec["key"] for rec in recs] + store_keys
        args = [token, ttl, lease, len(recs), len(sum_keys)] + head + blocks + data
        return self.r.evalsha(self.finish_sha, len(keys), *keys, *args)


def gates(r):
    """gate.lua (gates.h): parking behind a causal gate's mark and behind a
    lane's holder, taking, sending and sweeping, against this Redis."""
    sha = r.script_load(source("gate.lua"))

    def g(keys, *args):
        return r.evalsha(sha, len(keys), *keys, *args)
    P = "t:"
    idx, marks, sending, seq = P + "~parked:s", P + "~parkmark:s", P + "~sending:s", P + "~seq:s"
    mark, lst = P + "~gate:s:created:o1", P + "~park:s:0:o1"
    far = str(int(time.time() * 1000) + 600000)
    # the mark absent: parked, in order; present: run
    check_eq(g([mark, lst, idx, marks], "park", far + "|a", 5000), 1, "park without the mark")
    check_eq(g([mark, lst, idx, marks], "park", far + "|b", 5000), 1, "park a second")
    check_eq(r.lrange(lst, 0, -1), [far + "|a", far + "|b"], "parked in arrival order")
    check_eq(r.hget(marks, lst), mark, "the list's mark noted")
    check(r.zscore(idx, lst) is not None, "the list is in the index")
    r.set(mark, "1")
    check_eq(g([mark, lst, idx, marks], "park", far + "|c", 5000), 0, "the mark exists: run")
    check_eq(r.llen(lst), 2, "nothing more parked")
    # take: moved to a sending list, returned; sent drops it
    out = g([lst, idx, marks, sending, seq], "take", 10000)
    check_eq(out[1:], [far + "|a", far + "|b"], "take returns the entries in order")
    check(out[0].startswith(sending + ":"), "into a sending list: %r" % out[0])
    check_eq(r.exists(lst), 0, "the parked list is gone")
    check_eq(r.zscore(idx, lst), None, "and out of the index")
    check_eq(r.lrange(out[0], 0, -1), [far + "|a", far + "|b"], "the sending list holds them")
    check(r.zscore(sending, "o" + out[0]) is not None, "the sending list is noted")
    check_eq(g([lst, idx, marks, sending, seq], "take", 10000), [], "a second take: nothing")
    # a sender that never says sent: the sweep sends it again once retry_ms passed
    r.zadd(sending, {"o" + out[0]: 0})
    sw = g([idx, marks, sending, seq], "sweep", 5000, 10000, 20)
    check_eq(sw, [["o", out[0], far + "|a", far + "|b"]], "the sweep resends a stale list")
    check_eq(g([out[0], sending], "sent"), 1, "sent")
    check_eq((r.exists(out[0]), r.zcard(sending)), (0, 0), "sent drops the list and its note")
    # timeouts: past their deadline, dead-lettered through a "d" sending list
    mark2, lst2 = P + "~gate:s:created:o2", P + "~park:s:0:o2"
    past = str(int(time.time() * 1000) - 1)
    g([mark2, lst2, idx, marks], "park", past + "|x", 5000)
    g([mark2, lst2, idx, marks], "park", far + "|y", 5000)
    sw = g([idx, marks, sending, seq], "sweep", 5000, 10000, 20)
    check_eq(len(sw), 1, "one group")
    check_eq((sw[0][0], sw[0][2:]), ("d", [past + "|x"]), "the late entry goes to the DLQ")
    check_eq(r.lrange(lst2, 0, -1), [far + "|y"], "the other stays parked")
    g([sw[0][1], sending], "sent")
    # a mark written with nobody taking the list: the sweep releases it once due
    r.set(mark2, "1")
    r.zadd(idx, {lst2: 0})
    sw = g([idx, marks, sending, seq], "sweep", 5000, 10000, 20)
    check_eq([(x[0], x[2:]) for x in sw], [("o", [far + "|y"])], "the sweep releases it")
    g([sw[0][1], sending], "sent")
    check_eq((r.zcard(idx), r.hlen(marks), r.zcard(sending)), (0, 0, 0), "all clean")

    # on_timeout run (gate 1 of ",1,"): late entries go to an "r" sending list that
    # remembers its parked list; a pass names that list; park lets its bearer run
    mark3, lst3, lst4 = P + "~gate:s:paid:o4", P + "~park:s:1:o4", P + "~park:s:10:o4"
    g([mark3, lst3, idx, marks], "park", past + "|r", 5000)
    g([mark3, lst4, idx, marks], "park", past + "|q", 5000)  # gate 10: not a run gate
    sw = g([idx, marks, sending, seq], "sweep", 5000, 10000, 20, P + "~park:s:", ",1,")
    check_eq(sorted((x[0], x[2:]) for x in sw), [("d", [past + "|q"]), ("r", [past + "|r"])],
             "gate 1's late entry is sent to run, gate 10's to the DLQ")
    rl = [x[1] for x in sw if x[0] == "r"][0]
    check(r.zscore(sending, "r" + rl) is not None, "the r list is noted")
    pk = P + "~gatepass:s:tok"
    check_eq(g([rl, pk], "pass", 60000), 1, "pass written")
    check_eq(r.get(pk), lst3, "the pass names the parked list")
    check(0 < r.pttl(pk) <= 60000, "and expires")
    check_eq(g([mark3, lst3, idx, marks, pk], "park", far + "|r", 5000), 2,
             "its bearer runs past the gate")
    check_eq(g([mark3, lst4, idx, marks, pk], "park", far + "|z", 5000), 1,
             "the pass opens no other list")
    r.zadd(sending, {"r" + rl: 0})
    sw2 = g([idx, marks, sending, seq], "sweep", 5000, 10000, 20, P + "~park:s:", ",1,")
    check_eq([(x[0], x[1]) for x in sw2], [("r", rl)], "a quiet r list is sent again as r")
    for x in sw:
        g([x[1], sending], "sent")
    check_eq((r.exists(rl), r.exists(rl + ":from"), r.zcard(sending)), (0, 0, 0),
             "sent drops the list, its origin and its note")
    check_eq(g([rl, pk + "2"], "pass", 60000), 0, "no pass for a list sent already")
    r.delete(lst4, pk)
    r.zrem(idx, lst4)
    r.hdel(marks, lst4)
    check_eq((r.zcard(idx), r.hlen(marks), r.zcard(sending)), (0, 0, 0), "all clean")

    # lanes: a retried head holds its key; later messages park behind it, then run
    # one by one in order, each the holder in turn
    hold, lane = P + "~hold:s:o3", P + "~park:s:lane:o3"
    check_eq(g([hold, lane, idx, marks], "lpark", "rec:m1", "0|m1", 5000), 0,
             "no hold: run")
    check_eq(g([hold], "lhold", "rec:m1"), 1, "the retried m1 holds o3")
    check_eq(g([hold], "lhold", "rec:m2"), 0, "m2 cannot take it")
    check_eq(g([hold, lane, idx, marks], "lpark", "rec:m1", "0|m1", 5000), 0,
             "the holder itself runs")
    for m in ("m2", "m3", "m4"):
        check_eq(g([hold, lane, idx, marks], "lpark", "rec:" + m, "0|" + m, 5000), "rec:m1",
                 "%s parks behind m1 (named)" % m)
    check_eq(r.hget(marks, lane), "L" + hold, "the lane's hold noted")
    check_eq(g([hold, lane, idx, marks, sending, seq], "lnext", 10000, "rec:m3", "release"), [],
             "not the holder: nothing")
    nx = g([hold, lane, idx, marks, sending, seq], "lnext", 10000, "rec:m1", "release")
    check_eq(nx[1:], ["0|m2"], "m1 done: m2 is released, alone")
    check_eq(r.get(hold), "rec:m2", "and holds the key")
    g([nx[0], sending], "sent")
    check_eq(g([hold, lane, idx, marks], "lpark", "rec:m5", "0|m5", 5000), "rec:m2",
             "a new message parks behind the released ones (m2 holds)")
    check_eq(g([hold, lane, idx, marks], "lpark", "rec:m2", "0|m2", 5000), 0, "m2 runs")
    nx = g([hold, lane, idx, marks, sending, seq], "lnext", 10000, "rec:m2", "release")
    check_eq(nx[1:], ["0|m3"], "then m3")
    g([nx[0], sending], "sent")
    # m3's worker died after its commit: the sweep hands over once m3's record is done
    r.set("rec:m3", "d|1|ok|1|")
    r.zadd(idx, {lane: 0})
    sw = g([idx, marks, sending, seq], "sweep", 5000, 10000, 20)
    check_eq([(x[0], x[2:]) for x in sw], [("o", ["0|m4"])], "the sweep releases m4")
    check_eq(r.get(hold), "rec:m4", "m4 holds")
    g([sw[0][1], sending], "sent")
    r.zadd(idx, {lane: 0})
    sw = g([idx, marks, sending, seq], "sweep", 5000, 10000, 20)
    check_eq(sw, [], "m4 not done: the sweep waits")
    # dlq_all: the holder dead-lettered takes the rest with it
    nx = g([hold, lane, idx, marks, sending, seq], "lnext", 10000, "rec:m4", "dlq_all")
    check_eq(nx[1:], ["0|m5"], "dlq_all: the parked ones go to the DLQ")
    check(r.zscore(sending, "d" + nx[0]) is not None, "through a 'd' sending list")
    g([nx[0], sending], "sent")
    check_eq((r.exists(hold), r.exists(lane), r.zcard(idx), r.hlen(marks), r.zcard(sending)),
             (0, 0, 0, 0, 0), "the lane is free and clean")
    # the last holder done with nothing behind it: the hold is dropped
    g([hold], "lhold", "rec:m9")
    check_eq(g([hold, lane, idx, marks, sending, seq], "lnext", 10000, "rec:m9", "release"), [],
             "nothing parked: nothing released")
    check_eq(r.exists(hold), 0, "and the key is free")
    # a hold that names earlier messages of the holder's batch (after a NUL each):
    # they run (a kill -9 before that batch's commit sent them back), others park
    check_eq(g([hold], "lhold", "rec:n3", "\0rec:n1\0rec:n2"), 1, "n3 holds, naming n1, n2")
    check_eq(r.get(hold), "rec:n3\0rec:n1\0rec:n2", "the hold as written")
    check_eq(g([hold], "lhold", "rec:n1"), 0, "n1 cannot take it")
    for m in ("n1", "n2", "n3"):
        check_eq(g([hold, lane, idx, marks], "lpark", "rec:" + m, "0|" + m, 5000), 0,
                 "%s runs" % m)
    check_eq(g([hold, lane, idx, marks], "lpark", "rec:n", "0|n", 5000), "rec:n3",
             "a message it does not name parks behind n3 (a prefix of a name is no name)")
    check_eq(g([hold, lane, idx, marks, sending, seq], "lnext", 10000, "rec:n1", "release"), [],
             "a named earlier message is not the holder: nothing")
    r.set("rec:n3", "d|1|ok|1|")
    r.zadd(idx, {lane: 0})
    sw = g([idx, marks, sending, seq], "sweep", 5000, 10000, 20)
    check_eq([(x[0], x[2:]) for x in sw], [("o", ["0|n"])],
             "the sweep reads the holder's record, not the names after it")
    check_eq(r.get(hold), "rec:n", "and hands the key over")
    g([sw[0][1], sending], "sent")
    check_eq(g([hold, lane, idx, marks, sending, seq], "lnext", 10000, "rec:n", "release"), [],
             "the last one done: the key is free")
    check_eq(r.exists(hold), 0, "free")
    # an entry without a deadline (a lane's) is never taken for a late one
    stray = P + "~park:s:lane:zz"
    r.rpush(stray, "5:rec:z0|z")
    r.zadd(idx, {stray: 0})
    check_eq(g([idx, marks, sending, seq], "sweep", 5000, 10000, 20), [],
             "no deadline: nothing dead-lettered")
    check_eq(r.lrange(stray, 0, -1), ["5:rec:z0|z"], "the entry stays")


def main():
    proc, tmp, r = start_redis()
    try:
        run(r)
        gates(r)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d checks, %d failed" % (checks, failures))
    if checks == 0:
        print("no checks ran")
        return 1
    return 1 if failures else 0


def run(r):
    s = Scripts(r)
    A, B = "111-0-aaaa", "222-0-bbbb"

    # -- claim: a fresh key
    check_eq(s.claim(["k1"], A), [(0, 1)], "fresh key: acquired, first start")
    v = r.get("k1")
    check(v.startswith("p|1|%s|" % A), "processing record form: %r" % v)
    lease_until = int(v.rsplit("|", 1)[1])
    now_ms = int(r.time()[0]) * 1000
    check(abs(lease_until - (now_ms + LEASE)) < 2000, "lease_until is the server's now + lease")
    check(TTL - 5000 < r.pttl("k1") <= TTL, "a processing record lives the done ttl")
    # -- the same token again (a redelivery after our own connection dropped)
    check_eq(s.claim(["k1"], A), [(0, 1)], "own claim: acquired again, no new start")
    # -- another token while the lease lives
    st, left = s.claim(["k1"], B)[0]
    check_eq(st, 3, "another worker: busy")
    check(0 < left <= LEASE, "busy: the lease time left (%r)" % left)
    # -- a lease that ran out: takeover counts a start
    check_eq(s.claim(["k2"], A, lease=50), [(0, 1)], "short lease")
    time.sleep(0.12)
    check_eq(s.claim(["k2"], B), [(1, 2)], "expired lease: takeover, second start")
    check_eq(s.finish(A, [{"key": "k2", "op": "done", "value": "d|2|ok|1|"}]), [0],
             "the old owner's done is LOST after a takeover")
    check(r.get("k2").startswith("p|2|%s|" % B), "record unchanged by a lost done")

    # -- done, then a duplicate
    entry = '{"ts":1,"event":"ok","note":"a|b"}'
    check_eq(s.finish(A, [{"key": "k1", "op": "done", "value": "d|1|ok|1700000000000|" + entry}]),
             [1], "done applied")
    check_eq(r.get("k1"), "d|1|ok|1700000000000|" + entry, "done record: the value given")
    check(TTL - 5000 < r.pttl("k1") <= TTL, "done record expires after the ttl")
    check_eq(s.claim(["k1"], B), [(2, "ok")], "done: a duplicate, with its outcome")
    check_eq(s.claim(["k1"], A), [(2, "ok")], "done: a duplicate for its own owner too")

    # -- release (retry) and unclaim (never ran)
    s.claim(["k3"], A)
    check_eq(s.finish(A, [{"key": "k3", "op": "release", "value": "r|1"}]), [1], "release")
    check_eq(r.get("k3"), "r|1", "released record")
    check_eq(s.claim(["k3"], B), [(0, 2)], "released: claimable, the start counted")
    check_eq(s.finish(B, [{"key": "k3", "op": "unclaim", "value": "r|1"}]), [1], "unclaim")
    check_eq(r.get("k3"), "r|1", "unclaimed: the start taken back")
    check_eq(s.finish(B, [{"key": "k3", "op": "unclaim", "value": "r|0"}]), [0],
             "unclaim of a released record: LOST, nothing changes")

    # -- extend pushes the lease
    s.claim(["k4"], A, lease=1000)
    before = int(r.get("k4").rsplit("|", 1)[1])
    time.sleep(0.05)
    check_eq(s.finish(A, [{"key": "k4", "op": "extend"}], lease=60000), [1], "extend")
    after = int(r.get("k4").rsplit("|", 1)[1])
    check(after - before > 55000, "extend: lease pushed out (%d -> %d)" % (before, after))
    check(r.get("k4").startswith("p|1|%s|" % A), "extend keeps starts and token")
    check(r.pttl("k4") > TTL - 5000, "extend keeps the expiry")

    # -- ttl 0: kept forever
    check_eq(s.claim(["k5"], A, ttl=0), [(0, 1)], "ttl 0: acquired")
    check_eq(r.pttl("k5"), -1, "ttl 0: the processing record does not expire")
    s.finish(A, [{"key": "k5", "op": "done", "value": "d|1|ok|1|"}], ttl=0)
    check_eq(r.pttl("k5"), -1, "ttl 0: the done record does not expire")

    # -- records of earlier versions (hashes)
    r.hset("old1", mapping={"state": "done", "outcome": "rejected", "done_at": "5", "starts": "1"})
    check_eq(s.claim(["old1"], A), [(2, "rejected")], "old done hash: a duplicate")
    r.hset("old2", mapping={"state": "processing", "token": B, "starts": "2",
                            "lease_until": str(now_ms + 600000)})
    check_eq(s.claim(["old2"], A)[0][0], 3, "old processing hash with a live lease: busy")
    r.hset("old3", mapping={"state": "processing", "token": B, "starts": "2", "lease_until": "1"})
    check_eq(s.claim(["old3"], A), [(1, 3)], "old processing hash, lease over: takeover")
    check(r.type("old3") == "string" and r.get("old3").startswith("p|3|%s|" % A),
          "the old hash is replaced by the string form")
    r.hset("old4", mapping={"state": "processing", "token": A, "starts": "1",
                            "lease_until": str(now_ms + 600000)})
    check_eq(s.finish(A, [{"key": "old4", "op": "done", "value": "d|1|ok|9|"}]), [1],
             "done over an old processing hash we own")
    check_eq(r.get("old4"), "d|1|ok|9|", "... written in the string form")

    # -- a batch of many keys, one round trip, in order
    keys = ["b%d" % i for i in range(50)]
    r.set("b7", "d|1|ok|1|")
    res = s.claim(keys, A)
    check_eq(len(res), 50, "one answer per key")
    check_eq(res[7], (2, "ok"), "the done one in the middle")
    check_eq(sum(1 for x in res if x == (0, 1)), 49, "the others acquired")

    store_writes(r, s, A, B)
    offline_model(r)


# One message's commit, run by the offline model (sidecar/lua/commit_model.lua:
# what `warren exec` and the test kit use instead of Redis) and by Redis with
# the same KEYS and ARGV: the same answer and the same state after.
# Each case: the state before (kit/exec seed shape), the writes and guards of
# the message (storebuf's form), and what another message changed in between.
MODEL_CASES = [
    ("applied, every kind of write",
     {"n": "5", "h": {"a": "1"}, "s": ["x", "y"], "gone": "v"},
     [["incrby", "n", None, None, 2], ["hset", "h", "b", "2", None],
      ["hincrby", "h", "a", None, 4], ["sadd", "s", "z", None, None],
      ["srem", "s", "x", None, None], ["del", "gone", None, None, None],
      ["set", "t", "v", None, 60000], ["expire", "n", None, None, 120000],
      ["hdel", "h", "b", None, None]], [], {}),
    ("hincrby on a string: refused", {"customer:c-7": "500"},
     [["hincrby", "customer:c-7", "refunded_cents", None, 100]], [], {}),
    ("incrby on a hash: refused", {"h": {"f": "1"}}, [["incrby", "h", None, None, 1]], [], {}),
    ("sadd on a hash after an incrby elsewhere", {"h": {"f": "1"}},
     [["incrby", "n", None, None, 1], ["sadd", "h", "m", None, None]], [], {}),
    ("incrby over 05: refused", {"n": "05"}, [["incrby", "n", None, None, 1]], [], {}),
    ("incrby over -0 with a read: refused", {"n": "-0"}, [["incrby", "n", None, None, 1]],
     [["GET", "n", "", ["-0"]]], {}),
    ("hincrby over a text field: refused", {"h": {"f": "abc"}},
     [["hincrby", "h", "f", None, 1]], [], {}),
    ("del then hincrby over a string: applied", {"x": "text"},
     [["del", "x", None, None, None], ["hincrby", "x", "f", None, 3]], [], {}),
    ("set then incrby twice: applied", {},
     [["set", "c", "10", None, 0], ["incrby", "c", None, None, 5],
      ["incrby", "c", None, None, -20]], [], {}),
    ("past 2^53: exact", {"big": "9007199254740993", "h": {"f": "-9007199254740993"}},
     [["incrby", "big", None, None, 2], ["hincrby", "h", "f", None, -2]], [], {}),
    ("near 2^63: refused", {"big": "9223372036854775000"},
     [["incrby", "big", None, None, 800]], [], {}),
    ("hset emptied by hdel: the key goes", {"h": {"f": "1"}},
     [["hdel", "h", "f", None, None]], [], {}),
    ("a guarded read that holds", {"stock": "5", "h": {"a": "1"}, "s": ["m"]},
     [["incrby", "stock", None, None, -1]],
     [["GET", "stock", "", ["5"]], ["HGETALL", "h", "", ["a", "1"]],
      ["SISMEMBER", "s", "m", ["1"]], ["EXISTS", "nope", "", ["0"]],
      ["SMEMBERS", "s", "", ["m"]], ["HGET", "h", "zz", []]], {}),
    ("a read another message changed: conflict", {"stock": "5"},
     [["incrby", "stock", None, None, -1]], [["GET", "stock", "", ["5"]]], {"stock": "3"}),
    ("a hash field another message added: conflict", {"h": {"a": "1"}},
     [["hset", "h", "b", "x", None]], [["HGETALL", "h", "", ["a", "1"]]],
     {"h": {"a": "1", "c": "2"}}),
    ("a key another message deleted: conflict", {"k": "v"},
     [["set", "k2", "x", None, 0]], [["EXISTS", "k", "", ["1"]]], {"k": None}),
    ("a blind write over a changed key: applied", {"stock": "5"},
     [["incrby", "stock", None, None, -1]], [], {"stock": "3"}),
]


def offline_model(r):
    import json
    script = source("finish.lua")
    driver = r'''
local cjson = require "cjson"
local M = dofile(arg[1])
local f = io.open(arg[2]); local script = f:read("*a"); f:close()
local cases = cjson.decode(io.read("*a"))
local function seed(db, state)
  for k, v in pairs(state) do
    if v == cjson.null then db[k] = nil
    elseif type(v) == "string" then db[k] = { kind = "string", v = v }
    elseif #v > 0 then
      local s = {} for _, m in ipairs(v) do s[m] = true end
      db[k] = { kind = "set", v = s }
    else local h = {} for f, x in pairs(v) do h[f] = x end db[k] = { kind = "hash", v = h } end
  end
end
local out = {}
for i, c in ipairs(cases) do
  local store = { db = {}, exp = {}, now = function() return 1767225600 end, prefix = "m:" }
  seed(store.db, c.seed)
  seed(store.db, c.changes)
  local msg = { writes = {}, guards = {} }
  for _, w in ipairs(c.writes) do
    msg.writes[#msg.writes + 1] = { op = w[1], key = w[2], a = w[3] ~= cjson.null and w[3] or nil,
      b = w[4] ~= cjson.null and w[4] or nil, num = w[5] ~= cjson.null and w[5] or nil }
  end
  for _, g in ipairs(c.guards) do
    msg.guards[#msg.guards + 1] = { cmd = g[1], key = g[2], arg = g[3], items = g[4] }
  end
  local keys, argv = M._script_args(msg, "rec", "tok", "m:")
  local result, why = M.commit(script, store, msg)
  local state = {}
  for k, e in pairs(store.db) do
    local v = e.v
    if e.kind == "set" then v = {} for m in pairs(e.v) do v[#v + 1] = m end table.sort(v) end
    local ttl = store.exp[k] and math.floor((store.exp[k] - 1767225600) * 1000 + 0.5) or -1
    state[k] = { e.kind, v, ttl }
  end
  out[i] = { result = result, why = why or cjson.null, keys = keys, argv = argv, state = state }
end
print(cjson.encode(out))
'''
    tmpd = tempfile.mkdtemp(prefix="warren-model-")
    try:
        dpath = os.path.join(tmpd, "driver.lua")
        spath = os.path.join(tmpd, "finish.lua")
        with open(dpath, "w") as fh:
            fh.write(driver)
        with open(spath, "w") as fh:
            fh.write(script)
        cases = [{"seed": seed, "writes": writes, "guards": guards, "changes": changes}
                 for _, seed, writes, guards, changes in MODEL_CASES]
        p = subprocess.run(["luajit", dpath, MODEL, spath], input=json.dumps(cases),
                           capture_output=True, text=True, timeout=60)
        check_eq(p.returncode, 0, "the model's driver runs (%s)" % p.stderr.strip())
        results = json.loads(p.stdout) if p.returncode == 0 else []
    finally:
        shutil.rmtree(tmpd, ignore_errors=True)
    sha = r.script_load(script)
    for (name, seed, writes, guards, changes), m in zip(MODEL_CASES, results):
        r.flushall()
        for state in (seed, changes):
            for k, v in state.items():
                r.delete("m:" + k)
                if isinstance(v, str):
                    r.set("m:" + k, v)
                elif isinstance(v, list):
                    r.sadd("m:" + k, *v)
                elif isinstance(v, dict):
                    r.hset("m:" + k, mapping=v)
        r.set("rec", "p|1|tok|%d" % (int(time.time() * 1000) + 30000))
        out = r.evalsha(sha, len(m["keys"]), *m["keys"], *m["argv"])[0]
        if out == 1:
            want = ("applied", None)
        elif str(out).startswith("conflict:"):
            want = ("conflict", out)
        else:
            want = ("refused", out)
        check_eq((m["result"], m["why"]), want, "model vs Redis: %s" % name)
        state = {}
        for k in r.keys("m:*"):
            t = r.type(k)
            v = r.get(k) if t == "string" else r.hgetall(k) if t == "hash" else \
                sorted(r.smembers(k))
            pttl = r.pttl(k)
            state[k[2:]] = [t, v, -1 if pttl < 0 else pttl]
        for k, e in m["state"].items():
            if isinstance(e[1], dict) and not e[1] and e[0] != "hash":
                e[1] = []
        for st in (state, m["state"]):
            for e in st.values():
                e[2] = -1 if e[2] < 0 else round(e[2] / 1000)
        check_eq(m["state"], state, "model vs Redis: the state after %s" % name)
    check_eq(len(results), len(MODEL_CASES), "every model case ran")


def store_writes(r, s, A, B):
    def claimed(key):
        s.claim([key], A)
        return {"key": key, "op": "done", "value": "d|1|ok|1|"}

    # all kinds of writes, applied with the done mark
    rec = claimed("w1")
    rec["writes"] = [("set", "s:a", "x", "0"), ("incrby", "s:n", "5", ""),
                     ("hset", "s:h", "f", "v"), ("hincrby", "s:h", "c", "3"),
                     ("sadd", "s:set", "m", ""), ("set", "s:t", "y", "60000"),
                     ("expire", "s:a", "120000", "")]
    check_eq(s.finish(A, [rec]), [1], "writes applied")
    check_eq((r.get("s:a"), r.get("s:n"), r.hgetall("s:h"), r.smembers("s:set"), r.get("s:t")),
             ("x", "5", {"f": "v", "c": "3"}, {"m"}, "y"), "every write landed")
    check(0 < r.pttl("s:t") <= 60000 and 60000 < r.pttl("s:a") <= 120000, "ttls set")
    check(r.get("w1").startswith("d|"), "record done with them")

    # a refused write: nothing of the record applied, the record left processing
    r.hset("s:hash", "f", "1")
    rec = claimed("w2")
    rec["writes"] = [("incrby", "s:n", "1", ""), ("incrby", "s:hash", "1", "")]
    out = s.finish(A, [rec])
    check_eq(out, ["ctx.store.incrby: key s:hash holds a hash in Redis"], "refused: why")
    check_eq(r.get("s:n"), "5", "refused: the first write not applied either")
    check(r.get("w2").startswith("p|1|%s|" % A), "refused: the record left processing")

    # Redis's integer grammar: "05" is not a counter
    for bad in ("05", "-0", "+5", "1.5", " 5"):
        r.set("s:bad", bad)
        rec = claimed("w3" + bad)
        rec["writes"] = [("incrby", "s:bad", "1", "")]
        check_eq(s.finish(A, [rec]),
                 ["ctx.store.incrby: the value of s:bad is not an integer or would overflow"],
                 "incrby over %r refused" % bad)
        check_eq(r.get("s:bad"), bad, "%r untouched" % bad)
    r.set("s:big", "9200000000000000000")
    rec = claimed("w4")
    rec["writes"] = [("incrby", "s:big", "100000000000000000", "")]
    check_eq(s.finish(A, [rec])[0][:25], "ctx.store.incrby: the val", "overflow refused")

    # played forward: del then hincrby over what was a string applies
    r.set("s:x", "text")
    rec = claimed("w5")
    rec["shape"] = "0"
    rec["writes"] = [("del", "s:x", "", ""), ("hincrby", "s:x", "f", "3"),
                     ("incrby", "s:n", "1", ""), ("incrby", "s:n", "1", "")]
    check_eq(s.finish(A, [rec]), [1], "played forward: applied")
    check_eq((r.hgetall("s:x"), r.get("s:n")), ({"f": "3"}, "7"), "del, hincrby, two incrbys")

    # guards: a read that changed is a conflict; nothing applied, record unclaimed
    r.set("s:g", "1")
    rec = claimed("w6")
    rec["guards"] = [("GET", "s:g", "", ["0"])]
    rec["writes"] = [("incrby", "s:n", "1", "")]
    check_eq(s.finish(A, [rec]), ["conflict: s:g changed since the handler read it"], "conflict")
    check_eq((r.get("s:n"), r.get("w6")), ("7", "r|0"), "conflict: nothing applied, unclaimed")
    rec = claimed("w7")
    rec["guards"] = [("GET", "s:g", "", ["1"]), ("HGETALL", "s:x", "", ["f", "3"]),
                     ("SISMEMBER", "s:set", "m", ["1"])]
    rec["writes"] = [("incrby", "s:n", "1", "")]
    check_eq(s.finish(A, [rec]), [1], "guards that hold: applied")
    check_eq(r.get("s:n"), "8", "guarded write landed")

    # records of one batch see each other's writes, in order
    r.delete("s:c")
    recs = []
    for i in range(3):
        rec = claimed("w8-%d" % i)
        rec["writes"] = [("incrby", "s:c", str(i + 1), "")]
        recs.append(rec)
    recs[1]["key"] = "w8-lost"  # never claimed: LOST, its write not applied
    check_eq(s.finish(A, recs), [1, 0, 1], "a lost record in the middle")
    check_eq(r.get("s:c"), "4", "1 + 3: the lost one's write not applied")

    # sums: increments of a key only incremented, applied as one, less the lost
    r.set("s:stock", "100")
    recs = []
    deltas = [-1, -2, -3, 5, -4]
    for i, d in enumerate(deltas):
        rec = claimed("w9-%d" % i)
        rec["sums"] = [("s:stock", d), ("s:total", abs(d))]
        recs.append(rec)
    recs[3]["key"] = "w9-lost"
    res = s.finish(A, recs)
    check_eq(res, [1, 1, 1, 0, 1], "sums: the lost record answers 0")
    check_eq(r.get("s:stock"), str(100 - 1 - 2 - 3 - 4), "sums: stock less the lost one's")
    check_eq(r.get("s:total"), str(1 + 2 + 3 + 4), "sums: a key absent before")
    # a sum key of another type refuses every record that increments it
    r.delete("s:sumh")
    r.hset("s:sumh", "f", "1")
    a, b = claimed("w10-a"), claimed("w10-b")
    a["sums"] = [("s:sumh", 1)]
    b["sums"] = [("s:ok", 2)]
    check_eq(s.finish(A, [a, b]), ["ctx.store.incrby: key s:sumh holds a hash in Redis", 1],
             "a sum key holding a hash refuses its record only")
    check_eq(r.get("s:ok"), "2", "the other record's sum applied")
    # a sum that could pass 64 bits refuses
    r.set("s:near", "9100000000000000000")
    a = claimed("w11")
    a["sums"] = [("s:near", 200000000000000000)]
    check_eq(s.finish(A, [a])[0][:17], "ctx.store.incrby:", "sum past 64 bits refused")
    check_eq(r.get("s:near"), "9100000000000000000", "untouched")
    # a sum with "05" in Redis refuses
    r.set("s:z", "05")
    a = claimed("w12")
    a["sums"] = [("s:z", 1)]
    check(str(s.finish(A, [a])[0]).endswith("not an integer or would overflow"), "sum over 05")


if __name__ == "__main__":
    sys.exit(main())
