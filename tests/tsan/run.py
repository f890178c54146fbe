"""Run one integration test against warren built with ThreadSanitizer.

    run.py TEST.py TSAN_BUILD_DIR

The test runs as it does in the integration suite (same servers), but every
`warren` it starts is TSAN_BUILD_DIR/warren (cmake -DWARREN_TSAN=ON), with
TSan's reports written to files. It fails when the test fails or when any
process left a report (each is printed): a data race, a lock-order inversion
or a thread leak in the threads that share state (workers, the reload loop,
the HTTP server reading metrics and status, the prober, the breakers).
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

test, tsan_dir = sys.argv[1], sys.argv[2]
if not os.access(os.path.join(tsan_dir, "warren"), os.X_OK):
    print("no ThreadSanitizer build at %s (cmake -DWARREN_TSAN=ON)" % tsan_dir)
    print("0 checks, 1 failed")
    sys.exit(1)
logdir = tempfile.mkdtemp(prefix="warren-tsan-")
env = dict(os.environ)
env["WR_BUILD_DIR"] = tsan_dir
env["TSAN_OPTIONS"] = "log_path=%s/report exitcode=66 second_deadlock_stack=1" % logdir
rc = subprocess.call(["/usr/bin/python3", test], env=env)
reports = sorted(glob.glob(os.path.join(logdir, "report*")))
for path in reports:
    with open(path, errors="replace") as fh:
        print("---- %s\n%s" % (os.path.basename(path), fh.read()[:8000]))
print("ThreadSanitizer: %d report(s) from %s" % (len(reports), os.path.basename(test)))
shutil.rmtree(logdir, ignore_errors=True)
sys.exit(1 if rc != 0 or reports else 0)
