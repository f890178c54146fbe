"""Every command's options, parsed the same way (getopt_long): `warren CMD
--help` (and -h) prints that command's own usage on stdout, naming its
options, and exits 0; an unknown option, an option of another command, or an
option without its value prints one line naming it and the command's usage
on stderr, and exits 2. Options may come before or after positional
arguments, and --name=value works as --name value. The usage errors that
docs/cli.md shows are what the commands print; every option docs/cli.md's
overview and docs/operations.md's dlq synopsis show is one the command takes,
and the overview names every command."""
import os
import re
import shlex
import subprocess

from wrtest import ENV, SOURCE_DIR, WARREN, check, check_eq, finish


def run(*args):
    env = dict(os.environ)
    env.update(ENV)
    p = subprocess.run([WARREN] + list(args), capture_output=True, text=True, env=env, timeout=30)
    return p.returncode, p.stdout, p.stderr


FILTERS = ["--id", "--reason", "--grep", "--older-than", "--limit"]
# command -> (the options its --help names, one option that takes a value)
COMMANDS = {
    "run": (["-c, --config"], "--config"),
    "check": (["-c, --config", "--lint"], "--lint"),
    "exec": (["--subscription", "--event", "--json", "--live-http", "--envelope", "--result"],
             "--event"),
    "config-reference": (["-h, --help"], None),
    "dlq list": (["--subscription", "--json", "--group-by"] + FILTERS, "--id"),
    "dlq show": (["--subscription", "--json"], "--subscription"),
    "dlq replay": (["--subscription", "--rate", "--dry-run"] + FILTERS, "--rate"),
    "dlq purge": (["--subscription", "--yes"] + FILTERS, "--grep"),
    "trace": (["--subscription", "--grep", "--depth", "--json", "--status-url", "--scan-limit"],
              "--depth"),
    "status": (["--url", "--json", "--no-dlq", "--dlq-max"], "--url"),
}
# what the overview lists of each command: a command's own usage names none of the others
FIRST_LINE = {"run": "  run -c FILE", "check": "  check -c FILE", "exec": "  exec -c FILE",
              "config-reference": "  config-reference", "dlq list": "  dlq list -c FILE",
              "dlq show": "  dlq show ID", "dlq replay": "  dlq replay -c FILE",
              "dlq purge": "  dlq purge -c FILE", "trace": "  trace -c FILE",
              "status": "  status -c FILE"}

for cmd, (names, valued) in COMMANDS.items():
    argv = cmd.split()
    for flag in ("--help", "-h"):
        rc, out, err = run(*argv, flag)
        check_eq((rc, err), (0, ""), "%s %s exits 0, nothing on stderr" % (cmd, flag))
        check(out.startswith("usage: warren %s " % cmd),
              "%s %s: its own usage on stdout: %r" % (cmd, flag, out[:60]))
        missing = [n for n in names + ["-h, --help"] if n not in out]
        check_eq(missing, [], "%s %s names every option of the command" % (cmd, flag))
        others = [c for c, line in FIRST_LINE.items() if c != cmd and line in out]
        check_eq(others, [], "%s %s: no other command's usage" % (cmd, flag))
        check(FIRST_LINE[cmd] in out, "%s %s: the command's line" % (cmd, flag))

    rc, out, err = run(*argv, "--no-such-option")
    check_eq(rc, 2, "%s --no-such-option exits 2" % cmd)
    lines = err.splitlines()
    check_eq(lines[0] if lines else "", "warren %s: unknown option '--no-such-option'" % cmd,
             "%s: one line names the unknown option" % cmd)
    check("usage: warren %s " % cmd in err and out == "",
          "%s: the command's usage on stderr, nothing on stdout" % cmd)

    rc, out, err = run(*argv, "-q")
    check_eq((rc, err.splitlines()[0] if err else ""), (2, "warren %s: unknown option '-q'" % cmd),
             "%s -q: an unknown short option" % cmd)

    if valued is not None:
        rc, out, err = run(*argv, valued)
        check_eq((rc, err.splitlines()[0] if err else ""),
                 (2, "warren %s: option '%s' needs a value" % (cmd, valued)),
                 "%s %s without its value" % (cmd, valued))

# an option of another command is not one of this command's
for argv, opt in ((["dlq", "show", "x", "--yes"], "--yes"), (["dlq", "list", "--rate", "5"], "--rate"),
                  (["dlq", "purge", "--dry-run"], "--dry-run"), (["run", "--lint", "warn"], "--lint"),
                  (["check", "--json"], "--json")):
    rc, _, err = run(*argv)
    check_eq((rc, err.splitlines()[0] if err else ""),
             (2, "warren %s: unknown option '%s'" % (" ".join(argv[:2 if argv[0] == "dlq" else 1]), opt)),
             "%s: %s belongs to another command" % (" ".join(argv), opt))

# the overview and dlq's own overview
rc, out, err = run("--help")
check(rc == 0 and all(line in out for line in FIRST_LINE.values()), "--help lists every command")
rc, out, err = run("dlq", "--help")
check(rc == 0 and out.startswith("usage: warren dlq <command>") and
      all(FIRST_LINE[c] in out for c in ("dlq list", "dlq show", "dlq replay", "dlq purge")),
      "dlq --help lists the dlq commands")
rc, _, err = run("dlq", "frob")
check(rc == 2 and err.startswith("warren dlq: unknown dlq command 'frob'"), "unknown dlq command")

# --name=value, and options after the positional arguments
example = os.path.join(SOURCE_DIR, "config", "warren.yaml")
rc, out, err = run("check", "--config=" + example)
check_eq(rc, 0, "check --config=FILE (stderr: %s)" % err.strip())
rc, out, err = run("check", "--lint=warn", "-c", example)
check_eq(rc, 0, "check --lint=warn -c FILE (stderr: %s)" % err.strip())
rc, _, err = run("dlq", "show", "-c", example, "--subscription")
check_eq((rc, err.splitlines()[0] if err else ""),
         (2, "warren dlq show: option '--subscription' needs a value"), "the value missing at the end")
rc, _, err = run("dlq", "show", "--subscription", "orders", "-c", example)
check_eq((rc, err.splitlines()[0] if err else ""), (2, "warren dlq show: dlq show needs a message ID"),
         "dlq show without its ID")
rc, _, err = run("trace", "an-id", "another-id", "-c", example)
check_eq((rc, err.splitlines()[0] if err else ""),
         (2, "warren trace: unexpected argument 'another-id'"), "trace takes one ID")
rc, _, err = run("config-reference", "extra")
check_eq((rc, err.splitlines()[0] if err else ""),
         (2, "warren config-reference: config-reference takes no arguments (got 'extra')"),
         "config-reference takes no arguments")

# docs/cli.md's examples: "$ warren ..." and what it prints on stderr, up to the
# "..." that stands for the rest of the usage
with open(os.path.join(SOURCE_DIR, "docs", "cli.md")) as fh:
    doc = fh.read()
errors_block = re.search(r"```\n(\$ warren .*?)```", doc, re.S)
shown = re.findall(r"^\$ (warren [^\n]*)\n(.*?)^\.\.\.$",
                   errors_block.group(1) if errors_block else "", re.M | re.S)
check(len(shown) >= 2, "docs/cli.md shows usage errors: %d" % len(shown))
for cmdline, lines in shown:
    args = [a.replace("config/warren.yaml", example) for a in shlex.split(cmdline)[1:]]
    rc, out, err = run(*args)
    want = lines.rstrip("\n").split("\n")
    check_eq((rc, err.split("\n")[:len(want)]), (2, want), "docs/cli.md: %s" % cmdline)


def synopsis(block):
    """The commands of a synopsis block: [(command words, options named)] for each
    line that starts with "warren" (up to its description, spaces then a word), and
    the lines that continue its options ("   [--opt ...]")."""
    out = []
    for line in block.split("\n"):
        if line.startswith("warren "):
            line = re.split(r" {2,}(?=[a-z(])", line)[0]
            cmd = []
            for w in line.split()[1:]:
                if not re.fullmatch(r"[a-zA-Z][a-zA-Z-]*(\|[a-z-]+)*", w):
                    break
                cmd.append(w)
            out.append((cmd, []))
        elif not (out and re.match(r" {1,19}\[", line)):
            continue
        out[-1][1].extend(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", line))
    return out


# docs/cli.md's overview of the commands, and docs/operations.md's dlq synopsis:
# every option they show is one the command takes (its --help names it), and the
# overview names every command
with open(os.path.join(SOURCE_DIR, "docs", "operations.md")) as fh:
    ops = fh.read()
blocks = {"cli.md": re.search(r"```\n(warren run -c FILE.*?)```", doc, re.S),
          "operations.md": re.search(r"```sh\n(warren dlq list .*?)```", ops, re.S)}
named = set()
for page, m in blocks.items():
    if not check(m is not None, "docs/%s shows a synopsis" % page):
        continue
    commands = synopsis(m.group(1))
    check(sum(len(opts) for _, opts in commands) >= 2 * len(commands),
          "docs/%s: the synopsis's options are read" % page)
    for cmd, opts in commands:
        if not cmd:  # warren --version | --help
            for opt in opts:
                rc, out, err = run(opt)
                check_eq((rc, err), (0, ""), "docs/%s: warren %s" % (page, opt))
            continue
        if cmd[0] == "COMMAND":
            continue
        subs = cmd[1].split("|") if len(cmd) > 1 else [None]
        for sub in subs:
            argv = [cmd[0]] + ([sub] if sub else [])
            named.add(" ".join(argv))
            rc, out, err = run(*(argv + ["--help"]))
            check_eq(rc, 0, "docs/%s: warren %s --help" % (page, " ".join(argv)))
            unknown = [o for o in opts if o not in ("-c", "--help") and o not in out]
            check_eq(unknown, [], "docs/%s: the options shown for warren %s are its own"
                     % (page, " ".join(argv)))
check_eq(sorted(set(FIRST_LINE) - named), [], "docs/cli.md's overview names every command")
finish()
