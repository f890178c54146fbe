#!/usr/bin/python3
"""The mutations of tests/mutations.sh: each breaks one property the
integration tests stand for, by a small edit of the source, so that the run
shows which tests notice. The table below is the one place to edit them.

Every edit is an exact snippet (ANCHOR) replaced by another: the anchor must
occur exactly once in its file, or applying the mutation fails loudly with the
file and the anchor (the code moved on: update the anchor here, keeping what
the mutation breaks).

    mutations.py list                 name, the tests it runs, what it breaks
    mutations.py tests NAME           the tests NAME runs (stems of test_*.py)
    mutations.py snapshot ROOT        keep ROOT's pristine sources (once, first)
    mutations.py apply NAME ROOT      restore the pristine sources, then mutate
    mutations.py restore ROOT         restore the pristine sources

ROOT is a copy of the tree (tests/mutations.sh makes one), never the working
tree: apply writes into it.
"""
import os
import sys

# The tests the rewrite of the batch path leans on most; every mutation runs them.
CORE = ["lease", "idempotency", "reload", "crash", "store_crash"]

MUTATIONS = [
    {
        "name": "claim-always-acquired",
        # Breaks: a message is handled at most once. The claim script answers
        # "acquired" for every key, so a done record (a duplicate) and a record
        # another live worker holds (a concurrent copy) are both run again.
        "file": "sidecar/scripts/claim.lua",
        "edits": [
            ("    if st == 'd' then\n", "    if false then\n"),
            ("    elseif st == 'p' and a ~= token and b > now then\n", "    elseif false then\n"),
        ],
        "tests": CORE,
    },
    {
        "name": "finish-ignores-token",
        # Breaks: only the owner of a claim commits. The commit script checks
        # that the record is processing but not whose token holds it, so a run
        # whose lease ran out and was taken over still writes its done mark and
        # ctx.store writes over the taker's claim.
        "file": "sidecar/scripts/finish.lua",
        "edits": [
            ("  if owner_of(k) ~= token then\n", "  if owner_of(k) == nil then\n"),
        ],
        "tests": CORE,
    },
    {
        "name": "ack-before-record",
        # Breaks: nothing is acked before its record is durably written. The
        # batch's deliveries are acked (or returned) when its commit is sent,
        # before Redis has answered it, so a crash or a failed commit in between
        # loses the message: acked, never done, its ctx.store writes never
        # applied.
        "file": "sidecar/src/daemon/worker.c",
        "edits": [
            ("""    bt->commit_sent = 1;
    bt->commit_read = 0;
    bt->nfin = 0;
""", """    for (int i = 0; i < bt->n; i++) { /* mutation: ack before the record */
        if (!bt->items[i].held) {
            if (bt->items[i].act != WR_ACT_NONE) {
                wr_broker_ack(w->b, bt->items[i].d->delivery_tag, 0);
            } else {
                wr_broker_nack(w->b, bt->items[i].d->delivery_tag, 0, 1);
            }
        }
    }
    bt->commit_sent = 1;
    bt->commit_read = 0;
    bt->nfin = 0;
"""),
            ("""    int multiple = all_ok && last != 0 && (low == 0 || low > last);
    if (multiple) {
        rc = wr_broker_ack(w->b, last, 1);
    }
""", """    int multiple = 1; /* mutation: acked when the commit was sent */
    (void)all_ok;
    (void)low;
    (void)last;
"""),
        ],
        "tests": CORE,
    },
    {
        "name": "store-commit-skipped",
        # Breaks: a handled message's ctx.store writes are applied with its done
        # mark. The commit script writes the done mark and skips the writes (the
        # record's own, and the batch's summed increments).
        "file": "sidecar/scripts/finish.lua",
        "edits": [
            ("        if refused then op = 'check' else apply(w + ng, nw) end\n",
             "        if refused then op = 'check' end\n"),
            ("  if total ~= 0 and not unfit[k] then redis.call('INCRBY', k, "
             "string.format('%.0f', total)) end\n",
             "  local _ = {k, total}\n"),
        ],
        "tests": CORE,
    },
    {
        "name": "reload-mid-batch",
        # Breaks: a worker switches handler versions between batches (settling
        # the batches in flight first), so a batch runs under one fully loaded
        # version and what it reports (outcome lines, journal) names the version
        # that ran it. Here a new version is taken before every message, in the
        # middle of a batch.
        "file": "sidecar/src/daemon/worker.c",
        "edits": [
            ("static int unclaim_orphans(wr_worker *w);\n",
             "static int unclaim_orphans(wr_worker *w);\nstatic int apply_live(wr_worker *w);\n"),
            ("        rc = run_one(w, bt, it);\n",
             """        if (atomic_load(&w->live->gen) != w->live_gen) {
            apply_live(w); /* mutation: a new version mid-batch */
        }
        rc = run_one(w, bt, it);
"""),
        ],
        "tests": CORE,
    },
]

PRISTINE = ".mutations-pristine"


class AnchorError(Exception):
    pass


def by_name(name):
    for m in MUTATIONS:
        if m["name"] == name:
            return m
    raise SystemExit("mutations: no mutation named %r (mutations.py list)" % name)


def files():
    return sorted(set(m["file"] for m in MUTATIONS))


def snapshot(root):
    for f in files():
        dst = os.path.join(root, PRISTINE, f)
        if os.path.exists(dst):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(os.path.join(root, f)) as src, open(dst, "w") as out:
            out.write(src.read())


def restore(root):
    """Put the pristine text back where it differs (a fresh mtime: make rebuilds it)."""
    for f in files():
        with open(os.path.join(root, PRISTINE, f)) as fh:
            text = fh.read()
        path = os.path.join(root, f)
        with open(path) as fh:
            if fh.read() == text:
                continue
        with open(path, "w") as fh:
            fh.write(text)


def apply(m, root):
    path = os.path.join(root, m["file"])
    with open(path) as fh:
        text = fh.read()
    for anchor, replacement in m["edits"]:
        n = text.count(anchor)
        if n != 1:
            raise AnchorError(
                "mutation %s: the anchor occurs %d times in %s (want exactly once); the code "
                "changed: update the anchor in tests/mutations/mutations.py:\n%s"
                % (m["name"], n, m["file"], anchor))
        text = text.replace(anchor, replacement)
    with open(path, "w") as fh:
        fh.write(text)


def main(argv):
    if len(argv) >= 2 and argv[1] == "list":
        for m in MUTATIONS:
            print("%s\t%s\t%s" % (m["name"], " ".join(m["tests"]), m["file"]))
        return 0
    if len(argv) == 3 and argv[1] == "tests":
        print(" ".join(by_name(argv[2])["tests"]))
        return 0
    if len(argv) == 3 and argv[1] == "snapshot":
        snapshot(argv[2])
        return 0
    if len(argv) == 3 and argv[1] == "restore":
        restore(argv[2])
        return 0
    if len(argv) == 4 and argv[1] == "apply":
        m = by_name(argv[2])
        restore(argv[3])
        try:
            apply(m, argv[3])
        except AnchorError as e:
            restore(argv[3])
            print("mutations: %s" % e, file=sys.stderr)
            return 3
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
