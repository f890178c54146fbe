#!/usr/bin/python3
"""Count one ctest run's results for deploy/test.sh, explicitly.

    ctest_tally.py BUILD_DIR LABEL JUNIT_XML

The tests are the ones ctest knows for LABEL (`ctest --show-only=json-v1`);
their results come from the JUnit report that run wrote (`--output-junit`).
A test passed only when the report says it ran and did not fail: skipped,
not run (a fixture it needs failed), disabled, timed out, or missing from the
report (ctest stopped, or never ran) all count as failed, each named on its
own line. Fixtures (tests that set up or clean up a fixture, e.g. the
stack_start/stack_stop pair that starts and stops the test servers) are not
tests: they count nowhere when they pass, and as one failure each when they
do not.

Names the non-passing tests and a summary on stderr, and prints only
"PASSED FAILED" (two numbers) on stdout, for the caller. Exit status 0 unless
the arguments are wrong.
"""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET


def known_tests(build_dir, label):
    """[(name, is_fixture)] of every test ctest has for LABEL, in order."""
    out = subprocess.run(["ctest", "--test-dir", build_dir, "--show-only=json-v1", "-L", label],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True).stdout
    tests = []
    for t in json.loads(out)["tests"]:
        props = {p["name"] for p in t.get("properties", [])}
        tests.append((t["name"], bool(props & {"FIXTURES_SETUP", "FIXTURES_CLEANUP"})))
    return tests


def results(junit):
    """{name: None when it passed, else why not} from a ctest JUnit report."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        status = case.get("status", "")
        failure = case.find("failure")
        skipped = case.find("skipped")
        if status == "run" and failure is None and skipped is None:
            out[case.get("name")] = None
        elif skipped is not None:
            out[case.get("name")] = "%s (%s)" % (status, skipped.get("message", ""))
        else:
            out[case.get("name")] = status or "no status"
    return out


def main(argv):
    if len(argv) != 4:
        print("usage: ctest_tally.py BUILD_DIR LABEL JUNIT_XML", file=sys.stderr)
        return 2
    build_dir, label, junit = argv[1:]
    tests = known_tests(build_dir, label)
    try:
        got = results(junit)
    except (OSError, ET.ParseError) as e:
        print("tally: no usable report from ctest (%s): every %s test counts as failed"
              % (e, label), file=sys.stderr)
        got = {}
    passed = failed = 0
    for name, fixture in tests:
        why = got.get(name, "missing from the report")
        if why is None:
            passed += 0 if fixture else 1
            continue
        failed += 1
        print("tally: %s %s: %s" % ("fixture" if fixture else "test", name, why),
              file=sys.stderr)
    print("tally: %s: %d passed, %d failed (%d fixture(s) not counted as tests)"
          % (label, passed, failed, sum(1 for _, f in tests if f)), file=sys.stderr)
    print("%d %d" % (passed, failed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
