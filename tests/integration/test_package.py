"""Install rules, the Debian package and the container's runtime packages.

1. `cmake --install` of the build into a scratch prefix puts the binary, the
   man page, the warren.testing kit under share/lua/5.1 and the example
   (config and handlers) under share/doc/warren/examples. The installed
   binary answers --version with the project's version and `warren check`
   passes on the installed example, as shipped; the kit loads in LuaJIT from
   the installed path; the man page documents the commands of --help.
2. `cpack -G DEB` builds the package. Its Depends name every package that
   owns a library warren links (the NEEDED entries, resolved with ldd and
   looked up with dpkg -S) and lua-cjson (loaded by require "cjson"), and
   nothing else; it holds the same files as the install; the binary it
   unpacks (dpkg -x) runs.
3. The runtime stage of deploy/container/Dockerfile installs exactly those
   packages plus ca-certificates: the image's package list matches ldd.

Installing the package with dpkg into a clean Debian root, and building the
image, take minutes and the network: deploy/package.sh and
deploy/container/build.sh do that, outside this suite.
"""
import fnmatch
import glob
import gzip
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import BUILD_DIR, SOURCE_DIR, WARREN, check, check_eq, finish, tempdir  # noqa: E402

EXTRA_DEPENDS = {"lua-cjson"}                       # loaded at run time, not linked
EXTRA_RUNTIME = EXTRA_DEPENDS | {"ca-certificates"}  # the image's TLS roots


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def version():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as fh:
        return re.search(r"project\(warren VERSION ([0-9.]+)", fh.read()).group(1)


def owner(path):
    """The Debian package that owns PATH (tries the usr-merged twins too)."""
    cands = [path, os.path.realpath(path)]
    for p in list(cands):
        if p.startswith("/usr/lib/"):
            cands.append(p[len("/usr"):])
        elif p.startswith("/lib/"):
            cands.append("/usr" + p)
    for p in cands:
        r = run(["dpkg", "-S", p])
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].strip()
    return None


def linked_packages(binary):
    """{NEEDED library: owning package} of BINARY."""
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]", run(["readelf", "-d", binary]).stdout)
    where = {}
    for line in run(["ldd", binary]).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            where[m.group(1)] = m.group(2)
    out = {}
    for lib in needed:
        out[lib] = owner(where[lib]) if lib in where else None
    return out


V = version()
tmp = tempdir()

# ---- 1. cmake --install ------------------------------------------------------------
prefix = os.path.join(tmp, "prefix")
r = run(["cmake", "--install", BUILD_DIR, "--prefix", prefix])
check_eq(r.returncode, 0, "cmake --install into a scratch prefix (%s)" % r.stderr.strip()[-300:])
files = sorted(os.path.relpath(p, prefix) for p in glob.glob(prefix + "/**", recursive=True)
               if os.path.isfile(p))
print("  installed: %s" % ", ".join(files), flush=True)
handlers = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SOURCE_DIR, "handlers",
                                                                      "*.lua")))
for f in ["bin/warren", "share/man/man1/warren.1.gz", "share/lua/5.1/warren/testing.lua",
          "share/warren/scripts/record.lua", "share/warren/scripts/finish.lua",
          "share/warren/lua/commit_model.lua", "share/warren/lua/contract.lua",
          "share/warren/lua/sandbox.lua",
          "share/doc/warren/examples/config/warren.yaml",
          "share/doc/warren/examples/config/contracts.yaml",
          "share/doc/warren/examples/config/upcasters/order_created_v1.lua",
          "share/doc/warren/README.md",
          "share/doc/warren/operations.md", "share/doc/warren/handlers.md",
          "share/doc/warren/configuration.md", "share/doc/warren/architecture.md"] + \
        ["share/doc/warren/examples/handlers/" + h for h in handlers]:
    check(f in files, "installed %s" % f)
# docs/operations.md's list of what the package holds: each line names files that
# are installed, and every installed file is on a line ("a, b" is a and b in a's
# folder; a "(...)" after the paths says what they are)
with open(os.path.join(SOURCE_DIR, "docs", "operations.md")) as fh:
    listing = re.search(r"The package holds:\n\n```\n(.*?)```", fh.read(), re.S)
patterns = []
for line in (listing.group(1) if check(listing, "operations.md lists what the package holds")
             else "").splitlines():
    if line.startswith("/"):
        names = re.split(r"\s+\(|\s{2,}", line)[0].strip().split(", ")
        patterns += [names[0]] + [os.path.join(os.path.dirname(names[0]), n) for n in names[1:]]
for pattern in patterns:
    check(any(fnmatch.fnmatchcase("/usr/" + f, pattern) for f in files),
          "operations.md: the package holds %s" % pattern)
check_eq([f for f in files if not any(fnmatch.fnmatchcase("/usr/" + f, p) for p in patterns)],
         [], "operations.md's list names every installed file")
installed = os.path.join(prefix, "bin", "warren")
r = run([installed, "--version"])
check_eq(r.stdout.strip(), "warren " + V, "the installed warren --version")
example = os.path.join(prefix, "share/doc/warren/examples/config/warren.yaml")
r = run([installed, "check", "-c", example])
check(r.returncode == 0 and "all handlers compiled" in r.stdout,
      "warren check on the installed example passes (exit %d: %s)"
      % (r.returncode, (r.stdout + r.stderr).strip()[-300:]))
lua_path = os.path.join(prefix, "share/lua/5.1/?.lua") + ";;"
r = run(["luajit", "-e", 'local t = require "warren.testing"; io.write(t._VERSION)'],
        env=dict(os.environ, LUA_PATH=lua_path))
check(r.returncode == 0 and r.stdout, "the installed kit loads as require \"warren.testing\" "
      "(version %r; %s)" % (r.stdout, r.stderr.strip()[-200:]))
# ... and commits ctx.store writes with the installed commit script (from /, far from the tree)
commit = ('local t = require "warren.testing"; local c = t.ctx{store = {k = "text"}}; '
          'io.write(t.run({handle = function(e, ctx) ctx.store.incrby("k", 1) end}, '
          't.event{}, c).commit)')
r = subprocess.run(["luajit", "-e", commit], capture_output=True, text=True, cwd="/",
                   env=dict(os.environ, LUA_PATH=lua_path))
check_eq((r.stdout, r.stderr.strip()[-200:]), ("refused", ""),
         "the installed kit commits with the installed commit script")
with gzip.open(os.path.join(prefix, "share/man/man1/warren.1.gz"), "rt") as fh:
    man = fh.read()
for want in (".TH WARREN \"1\"", "dlq replay", "config\\-reference", "warren.testing"):
    check(want in man, "the man page has %r" % want)

# ---- 2. the Debian package ------------------------------------------------------------
out = os.path.join(tmp, "deb")
r = run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD_DIR, "CPackConfig.cmake"),
         "-B", out])
debs = glob.glob(os.path.join(out, "warren_*.deb"))
if check(r.returncode == 0 and len(debs) == 1, "cpack -G DEB builds one package (%s)"
         % (r.stdout + r.stderr).strip()[-300:]):
    deb = debs[0]
    check_eq(os.path.basename(deb), "warren_%s_amd64.deb" % V, "the package's file name")
    depends = run(["dpkg-deb", "-f", deb, "Depends"]).stdout.strip()
    print("  Depends: %s" % depends, flush=True)
    alternatives = [set(re.sub(r"\s*\(.*?\)", "", a).strip() for a in d.split("|"))
                    for d in depends.split(",")]
    linked = linked_packages(WARREN)
    print("  NEEDED -> package: %s" % linked, flush=True)
    check(all(linked.values()), "every library warren links belongs to a Debian package")
    need = set(linked.values()) - {None}
    for pkg in sorted(need | EXTRA_DEPENDS):
        check(any(pkg in a for a in alternatives), "Depends names %s" % pkg)
    stray = [a for a in alternatives if not a & (need | EXTRA_DEPENDS)]
    check_eq(stray, [], "Depends names nothing warren does not need")
    listing = run(["dpkg-deb", "-c", deb]).stdout
    in_deb = sorted(re.sub(r"^\./usr/", "", ln.split()[-1]) for ln in listing.splitlines()
                    if not ln.split()[-1].endswith("/"))
    check_eq(in_deb, files, "the package holds the installed files (under /usr)")
    x = os.path.join(tmp, "x")
    run(["dpkg-deb", "-x", deb, x])
    r = run([os.path.join(x, "usr/bin/warren"), "--version"])
    check_eq(r.stdout.strip(), "warren " + V, "the packaged binary runs")

    # ---- 3. the image's runtime packages ------------------------------------------------
    with open(os.path.join(SOURCE_DIR, "deploy/container/Dockerfile")) as fh:
        stages = re.split(r"(?m)^FROM ", fh.read())
    runtime = stages[-1]
    m = re.search(r"apt-get install[^\n]*\\\n((?:[^\n]*\\\n)*?)[^\n]*&&", runtime)
    pkgs = set()
    if check(m is not None, "the Dockerfile's runtime stage installs packages"):
        pkgs = set(t for t in m.group(1).split() if t != "\\" and not t.startswith("-"))
    print("  Dockerfile runtime packages: %s" % " ".join(sorted(pkgs)), flush=True)
    check_eq(sorted(pkgs), sorted(need | EXTRA_RUNTIME),
             "the image's runtime packages are those of ldd warren, lua-cjson and ca-certificates")
    check("AS build" in stages[1] and len(stages) == 3, "the Dockerfile has two stages")
    for want in ("USER 10001", "STOPSIGNAL SIGTERM", 'ENTRYPOINT ["/usr/bin/warren"]'):
        check(want in runtime, "the runtime stage has %s" % want)
    check(not re.search(r"(?m)^(COPY|ADD)\b.*\b(config|handlers)\b", runtime),
          "no config or handler is copied into the runtime image")
finish()
