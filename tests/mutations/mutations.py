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
        "file": "sidecar/src/idem.c",
        "edits": [
            ('''    "  if h[1] == 'done' then\\n"''', '''    "  if false then\\n"'''),
            ('''    "  elseif h[1] == 'processing' and h[4] ~= token then\\n"''',
             '''    "  elseif false then\\n"'''),
        ],
        "tests": CORE,
    },
    {
        "name": "finish-ignores-token",
        # Breaks: only the owner of a claim commits. The commit script checks the
        # record's state but not its token, so a run whose lease ran out and was
        # taken over still writes its done mark and ctx.store writes over the
        # taker's claim.
        "file": "sidecar/src/idem.c",
        "edits": [
            ('''    "  if h[1] ~= 'processing' or h[2] ~= token then\\n"''',
             '''    "  if h[1] ~= 'processing' then\\n"'''),
        ],
        "tests": CORE,
    },
    {
        "name": "ack-before-record",
        # Breaks: nothing is acked before its record is durably written. The
        # batch is acked (or returned) before the commit script runs, so a crash
        # or a failed commit in between loses the message: acked, never done,
        # its ctx.store writes never applied.
        "file": "sidecar/src/worker.c",
        "edits": [
            ('''    double t0 = wr_mono_ms();
    int frc = 0;
''', '''    for (int i = 0; i < n; i++) { /* mutation: ack before the record */
        if (w->items[i].act != ACT_NONE) {
            wr_broker_ack(w->b, w->items[i].d->delivery_tag, 0);
        } else {
            wr_broker_nack(w->b, w->items[i].d->delivery_tag, 0, 1);
        }
    }
    double t0 = wr_mono_ms();
    int frc = 0;
'''),
            ('''    if (all_ok) {
        rc = wr_broker_ack(w->b, w->items[n - 1].d->delivery_tag, 1);
    }
''', '''    (void)all_ok; /* mutation: acked above already */
'''),
            ('''        if (!all_ok && rc == WR_BROKER_OK) {
            rc = it->act != ACT_NONE''', '''        if (0) {
            rc = it->act != ACT_NONE'''),
        ],
        "tests": CORE,
    },
    {
        "name": "store-commit-skipped",
        # Breaks: a handled message's ctx.store writes are applied with its done
        # mark. The commit script writes the done mark and skips the writes.
        "file": "sidecar/src/idem.c",
        "edits": [
            ('''    "        if refused then op = 'keep' else apply(w + ng, nw) end\\n"''',
             '''    "        if refused then op = 'keep' end\\n"'''),
        ],
        "tests": CORE,
    },
    {
        "name": "reload-mid-batch",
        # Breaks: a worker switches handler versions between batches, so a batch
        # runs under one fully loaded version and what it reports (outcome lines,
        # journal) names the version that ran it. Here a new version is taken
        # before every message, in the middle of a batch.
        "file": "sidecar/src/worker.c",
        "edits": [
            ('''static int process_batch(wr_worker *w, int n);
''', '''static int process_batch(wr_worker *w, int n);
static int apply_live(wr_worker *w);
'''),
            ('''        rc = run_one(w, it);
''', '''        if (atomic_load(&w->live->gen) != w->live_gen) {
            apply_live(w); /* mutation: a new version mid-batch */
        }
        rc = run_one(w, it);
'''),
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
