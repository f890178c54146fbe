"""The Kubernetes manifests (deploy/k8s) agree with warren.

Every overlay under deploy/k8s/overlays is rendered offline with the kubectl
on PATH (`kubectl kustomize`; its version is printed) and parsed. For each:

- the objects the deployment needs are there: Deployment, the warren-config
  ConfigMap, the Secret, PodDisruptionBudget, PodMonitor, PrometheusRule,
  KEDA ScaledObject and TriggerAuthentication, and every name one refers to
  (volumes, secretKeyRefs, scaleTargetRef, authenticationRef, PDB selector)
  resolves to an object of the output;
- warren is a container of the pod, or a native sidecar (an init container
  with restartPolicy: Always); the ConfigMap is mounted as a directory (no
  subPath, so updates reach the pod) and holds the file `run -c` names;
- the ConfigMap's warren.yaml, written out with its handlers, passes `warren
  check`, with every ${VAR} it uses (without a default) set by the warren
  container's env from a Secret key that exists, or a literal;
- http.listen (its ${VAR:-default} resolved with the pod's env) listens on all
  interfaces on the port the liveness (/healthz) and readiness (/readyz)
  probes, the prometheus.io/port annotation and the PodMonitor name;
- terminationGracePeriodSeconds covers shutdown.grace plus every preStop wait
  that comes before warren's SIGTERM (together in the classic form, one after
  the other in the native form) plus 5 s; in the classic form the service's
  preStop wait is at least shutdown.grace, so it answers warren's in-flight
  handlers while warren drains;
- the warren container has CPU and memory requests and limits; the KEDA
  trigger's queue is one the config consumes;
- the PrometheusRule's groups pass `promtool check rules`, and every metric
  their expressions name, with every label a matcher uses (and its value, for
  `=` matchers), appears in the /metrics of a real warren: one started here
  with the first overlay's ConfigMap (against the test stack, its HTTP port
  moved to a free loopback one through WARREN_HTTP_LISTEN), which must also
  answer 200 on /healthz and /readyz, the probes' paths.
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, SOURCE_DIR, WARREN, check, check_eq, delete_queues, finish,  # noqa: E402
                    wait_for)

K8S = os.path.join(SOURCE_DIR, "deploy", "k8s")
OVERLAYS = sorted(os.path.join(K8S, "overlays", d) for d in os.listdir(os.path.join(K8S, "overlays"))
                  if os.path.isfile(os.path.join(K8S, "overlays", d, "kustomization.yaml")))
MARGIN = 5  # seconds of the grace period left for warren's own exit after shutdown.grace
VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")


def duration_s(text):
    """warren's durations (500ms, 5s, 2m, 1m30s, 1h, 7d) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", str(text))
    if str(text) == "0":
        return 0.0
    if not parts or "".join(a + b for a, b in parts) != str(text):
        raise ValueError("not a duration: %r" % text)
    return sum(int(a) * units[b] for a, b in parts)


def expand(text, env):
    """${VAR} and ${VAR:-default} as warren expands them (None when a VAR is unset)."""
    missing = []

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        v = env.get(m.group(1))
        if v:
            return v
        if m.group(2) is not None:
            return m.group(3)
        if m.group(1) in env:
            return v
        missing.append(m.group(1))
        return ""
    out = VAR.sub(sub, text)
    return None if missing else out


def prestop_sleep(c):
    """Seconds a container's preStop hook waits (exec sleep N or the sleep action), 0 if none."""
    pre = (c.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    cmd = (pre.get("exec") or {}).get("command") or []
    if len(cmd) == 2 and os.path.basename(cmd[0]) == "sleep":
        return float(cmd[1])
    return 0.0


def kubectl_info():
    kubectl = shutil.which("kubectl")
    if not check(kubectl is not None, "kubectl on PATH (renders the overlays)"):
        return None
    r = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                       text=True, timeout=60)
    try:
        v = json.loads(r.stdout)
    except ValueError:
        v = {}
    client = v.get("clientVersion", {}).get("gitVersion", "?")
    kz = v.get("kustomizeVersion", "")
    print("  rendering with %s: client %s, Kustomize %s" % (kubectl, client, kz or "unknown"),
          flush=True)
    m = re.match(r"v(\d+)", kz)
    check(m is not None and int(m.group(1)) >= 4,
          "kubectl embeds Kustomize v4 or later (the overlays use `patches`; got %r)" % kz)
    return kubectl


def render(kubectl, overlay):
    r = subprocess.run([kubectl, "kustomize", overlay], capture_output=True, text=True,
                       timeout=120)
    if not check_eq(r.returncode, 0, "%s renders (%s)" % (overlay_name(overlay),
                                                          r.stderr.strip()[:300])):
        return []
    if r.stderr.strip():
        print("  kustomize said: %s" % r.stderr.strip()[:500], flush=True)
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def overlay_name(overlay):
    return os.path.relpath(overlay, SOURCE_DIR)


def pick(docs, kind, name=None):
    return [d for d in docs if d.get("kind") == kind and
            (name is None or d["metadata"]["name"] == name)]


def check_overlay(kubectl, overlay):
    """All static checks of one overlay. Returns (config dir, env) for the live run."""
    name = overlay_name(overlay)
    docs = render(kubectl, overlay)
    if not docs:
        return None
    kinds = sorted(set(d["kind"] for d in docs))
    print("  %s: %d objects: %s" % (name, len(docs), ", ".join(kinds)), flush=True)
    for k in ("Deployment", "ConfigMap", "Secret", "PodDisruptionBudget", "PodMonitor",
              "PrometheusRule", "ScaledObject", "TriggerAuthentication"):
        check(pick(docs, k), "%s: has a %s" % (name, k))
    deps = pick(docs, "Deployment")
    if not check_eq(len(deps), 1, "%s: one Deployment" % name):
        return None
    dep = deps[0]
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    containers = spec.get("containers", [])
    inits = spec.get("initContainers", [])
    in_main = [c for c in containers if c["name"] == "warren"]
    in_init = [c for c in inits if c["name"] == "warren"]
    native = bool(in_init)
    if not check(len(in_main) + len(in_init) == 1, "%s: one warren container" % name):
        return None
    w = (in_init or in_main)[0]
    if native:
        check_eq(w.get("restartPolicy"), "Always",
                 "%s: warren as an init container is a native sidecar (restartPolicy Always)"
                 % name)
    form = "native sidecar (init container)" if native else "second container of the pod"
    print("  %s: warren is a %s" % (name, form), flush=True)
    others = [c for c in containers if c is not w]
    check(others, "%s: a service container beside warren" % name)

    # ---- the ConfigMap, mounted as a directory
    args = w.get("args", [])
    cfg_path = args[args.index("-c") + 1] if "-c" in args[:-1] else None
    check(args[:1] == ["run"] and cfg_path, "%s: warren runs `run -c FILE` (%r)" % (name, args))
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mount = None
    for m in w.get("volumeMounts", []):
        if cfg_path and cfg_path.startswith(m["mountPath"].rstrip("/") + "/"):
            mount = m
    if not check(mount is not None, "%s: the config file %s is on a mounted volume" %
                 (name, cfg_path)):
        return None
    check("subPath" not in mount, "%s: the config volume is mounted without subPath (updates "
          "reach the pod, hot reload sees them)" % name)
    cm_name = volumes.get(mount["name"], {}).get("configMap", {}).get("name")
    cms = pick(docs, "ConfigMap", cm_name)
    if not check(cm_name and len(cms) == 1, "%s: the volume is the ConfigMap %s, rendered" %
                 (name, cm_name)):
        return None
    data = cms[0].get("data", {})
    key = os.path.relpath(cfg_path, mount["mountPath"])
    if not check(key in data, "%s: the ConfigMap holds %s" % (name, key)):
        return None
    cfgdir = tempfile.mkdtemp(prefix="warren-k8s-")
    for k, v in data.items():
        with open(os.path.join(cfgdir, k), "w") as fh:
            fh.write(v)
    print("  %s: ConfigMap %s: %s" % (name, cm_name, ", ".join(sorted(data))), flush=True)

    # ---- env: every ${VAR} set, from a Secret key that exists
    secrets = {d["metadata"]["name"]: d for d in pick(docs, "Secret")}
    env, sources = {}, {}
    for e in w.get("env", []):
        if "value" in e:
            env[e["name"]], sources[e["name"]] = e["value"], "literal"
            continue
        ref = (e.get("valueFrom") or {})
        if "secretKeyRef" in ref:
            sk = ref["secretKeyRef"]
            sec = secrets.get(sk["name"])
            ok = check(sec is not None and sk["key"] in (sec.get("data") or {}),
                       "%s: env %s: Secret %s has key %s" % (name, e["name"], sk["name"], sk["key"]))
            if ok:
                env[e["name"]] = base64.b64decode(sec["data"][sk["key"]]).decode()
                sources[e["name"]] = "Secret %s" % sk["name"]
        elif ref:
            env[e["name"]], sources[e["name"]] = "from-the-pod", "pod"
    for ef in w.get("envFrom", []):
        if "secretRef" in ef:
            sec = secrets.get(ef["secretRef"]["name"], {})
            for k, v in (sec.get("data") or {}).items():
                env[k], sources[k] = base64.b64decode(v).decode(), "Secret"
    with open(os.path.join(cfgdir, key)) as fh:
        text = fh.read()
    used = sorted(set((m.group(1), m.group(2) is not None) for m in VAR.finditer(text)
                      if m.group(1)))
    print("  %s: ${VAR}s in %s: %s" % (name, key, ", ".join(
        "%s%s <- %s" % (v, " (has a default)" if d else "", sources.get(v, "unset"))
        for v, d in used)), flush=True)
    for v, has_default in used:
        if not has_default:
            check(v in env, "%s: ${%s} is set in the warren container's env" % (name, v))
    r = subprocess.run([WARREN, "check", "-c", os.path.join(cfgdir, key)], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, **env))
    check(r.returncode == 0 and "all handlers compiled" in r.stdout,
          "%s: warren check passes on the ConfigMap's config and handlers (exit %d: %s)"
          % (name, r.returncode, (r.stdout + r.stderr).strip()[-400:]))

    # ---- http.listen, probes, annotations, PodMonitor
    conf = yaml.safe_load(text)
    listen = expand(str((conf.get("http") or {}).get("listen", "0.0.0.0:9464")), env)
    host, _, port = (listen or ":").rpartition(":")
    print("  %s: http.listen resolves to %s" % (name, listen), flush=True)
    check(host == "0.0.0.0", "%s: http.listen listens on all interfaces (the kubelet probes the "
          "pod's IP; got %r)" % (name, listen))
    ports = {p.get("name"): p["containerPort"] for p in w.get("ports", [])}
    check(str(port) in [str(p) for p in ports.values()],
          "%s: http.listen's port %s is a containerPort of warren %s" % (name, port, ports))

    def probe_port(probe):
        p = (probe or {}).get("httpGet", {}).get("port")
        return ports.get(p, p)
    for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        pr = w.get(kind)
        if check(pr is not None, "%s: warren has a %s" % (name, kind)):
            check_eq((pr["httpGet"]["path"], str(probe_port(pr))), (path, str(port)),
                     "%s: %s path and port" % (name, kind))
    ann = pod["metadata"].get("annotations", {})
    check_eq((ann.get("prometheus.io/scrape"), ann.get("prometheus.io/port")), ("true", str(port)),
             "%s: prometheus.io annotations scrape warren's port" % name)
    for pm in pick(docs, "PodMonitor"):
        eps = pm["spec"]["podMetricsEndpoints"]
        check(all(str(ports.get(e.get("port"), e.get("port"))) == str(port) and
                  e.get("path", "/metrics") == "/metrics" for e in eps),
              "%s: PodMonitor scrapes /metrics on warren's port (%s)" % (name, eps))
        sel = pm["spec"]["selector"]["matchLabels"]
        check(all(pod["metadata"]["labels"].get(k) == v for k, v in sel.items()),
              "%s: PodMonitor selects the pod" % name)

    # ---- grace periods
    grace = duration_s((conf.get("shutdown") or {}).get("grace", "25s"))
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    waits = {c["name"]: prestop_sleep(c) for c in containers + inits}
    if native:
        # main containers stop first (all together), then the sidecar
        need = max([waits[c["name"]] for c in others] or [0]) + waits["warren"] + grace + MARGIN
    else:
        need = max([waits["warren"] + grace] + [waits[c["name"]] for c in others]) + MARGIN
    check(tgps >= need, "%s: terminationGracePeriodSeconds %s >= %s (shutdown.grace %ss, preStop "
          "waits %s, %ss margin)" % (name, tgps, need, grace, waits, MARGIN))
    if not native:
        for c in others:
            check(waits[c["name"]] >= grace + waits["warren"],
                  "%s: %s's preStop wait (%ss) outlasts warren's drain (%ss)"
                  % (name, c["name"], waits[c["name"]], grace + waits["warren"]))

    # ---- resources, PDB, KEDA
    res = w.get("resources", {})
    check(all(res.get(a, {}).get(b) for a in ("requests", "limits") for b in ("cpu", "memory")),
          "%s: warren has cpu and memory requests and limits (%s)" % (name, res))
    for pdb in pick(docs, "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        check(all(pod["metadata"]["labels"].get(k) == v for k, v in sel.items()),
              "%s: the PodDisruptionBudget selects the pod" % name)
    queues = [s["queue"] for s in conf.get("subscriptions", [])]
    auths = {d["metadata"]["name"]: d for d in pick(docs, "TriggerAuthentication")}
    for so in pick(docs, "ScaledObject"):
        check_eq(so["spec"]["scaleTargetRef"]["name"], dep["metadata"]["name"],
                 "%s: the ScaledObject scales the Deployment" % name)
        check(so["spec"].get("minReplicaCount", 0) >= 2,
              "%s: at least 2 replicas (the PDB can allow a drain)" % name)
        for t in so["spec"]["triggers"]:
            check_eq(t["type"], "rabbitmq", "%s: a RabbitMQ trigger" % name)
            check(t["metadata"].get("queueName") in queues,
                  "%s: the trigger's queue %s is consumed by the config (%s)"
                  % (name, t["metadata"].get("queueName"), queues))
            ta = auths.get((t.get("authenticationRef") or {}).get("name"))
            if check(ta is not None, "%s: the trigger's TriggerAuthentication exists" % name):
                for ref in ta["spec"]["secretTargetRef"]:
                    sec = secrets.get(ref["name"], {})
                    check(ref["key"] in (sec.get("data") or {}),
                          "%s: TriggerAuthentication %s: Secret %s has key %s"
                          % (name, ref["parameter"], ref["name"], ref["key"]))

    # ---- the alerts
    rules = []
    for pr in pick(docs, "PrometheusRule"):
        rules_file = os.path.join(cfgdir, "rules-%s.yaml" % pr["metadata"]["name"])
        with open(rules_file, "w") as fh:
            yaml.safe_dump({"groups": pr["spec"]["groups"]}, fh)
        r = subprocess.run(["promtool", "check", "rules", rules_file], capture_output=True,
                           text=True, timeout=60)
        check_eq(r.returncode, 0, "%s: promtool check rules on %s (%s)"
                 % (name, pr["metadata"]["name"], (r.stdout + r.stderr).strip()[-300:]))
        for g in pr["spec"]["groups"]:
            rules.extend(g["rules"])
    alerts = [x.get("alert") for x in rules]
    print("  %s: alerts %s" % (name, ", ".join(alerts)), flush=True)
    return {"cfgdir": cfgdir, "key": key, "env": env, "rules": rules, "queues": queues,
            "conf": conf, "name": name}


def scrape(found):
    """Run warren with the ConfigMap's config; its families and label sets from /metrics."""
    import urllib.request
    import urllib.error
    env = dict(os.environ)
    env.update(found["env"])
    env.update(ENV)                                    # the test stack's broker and Redis
    env["WARREN_HTTP_LISTEN"] = "127.0.0.1:0"
    log_path = os.path.join(found["cfgdir"], "warren.log")
    logfh = open(log_path, "wb")
    proc = subprocess.Popen([WARREN, "run", "-c", os.path.join(found["cfgdir"], found["key"])],
                            stdout=logfh, stderr=subprocess.STDOUT, env=env)

    def started():
        with open(log_path, "rb") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if rec.get("msg") == "warren started" and "http" in rec:
                    return int(rec["http"].rsplit(":", 1)[1])
        return None if proc.poll() is None else -1

    families, samples = set(), {}
    try:
        port = wait_for(started, 30, "warren started with the ConfigMap's config")
        if not check(port and port > 0, "warren runs with the ConfigMap's config"):
            return families, samples

        def get(path):
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                            timeout=5) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            except OSError:
                return None, ""
        check_eq(get("/healthz")[0], 200, "/healthz (the liveness probe's path) answers 200")
        check(wait_for(lambda: get("/readyz")[0] == 200, 30, "/readyz 200"),
              "/readyz (the readiness probe's path) answers 200 against the real servers: %r"
              % (get("/readyz"),))

        def parse():
            status, text = get("/metrics")
            fams, smp = set(), {}
            for line in text.splitlines():
                if line.startswith("# TYPE "):
                    fams.add(line.split()[2])
                elif line and not line.startswith("#"):
                    head = line.rsplit(" ", 1)[0]
                    metric, _, rest = head.partition("{")
                    labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
                    smp.setdefault(metric, []).append(labels)
            return fams, smp
        # the queue depths come from the probe's first poll
        wait_for(lambda: "warren_queue_messages" in parse()[1], 30, "the first queue poll")
        families, samples = parse()
        print("  /metrics of the running warren: %d families, %d series"
              % (len(families), sum(len(v) for v in samples.values())), flush=True)
    finally:
        proc.terminate()
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        logfh.close()
        check_eq(rc, 0, "warren exits 0 on SIGTERM")
    return families, samples


def check_alert_metrics(found, families, samples):
    """Every metric and matcher of the alerts exists in the scraped /metrics."""
    kinds = {"_bucket", "_sum", "_count"}
    for rule in found["rules"]:
        expr = rule["expr"]
        names = set(re.findall(r"\b(warren_[a-z0-9_]+)\b", expr))
        check(names, "%s: alert %s names a warren metric" % (found["name"], rule.get("alert")))
        for n in sorted(names):
            base = n
            for k in kinds:
                if n.endswith(k) and n[: -len(k)] in families:
                    base = n[: -len(k)]
            check(base in families, "%s: alert %s: %s is a metric warren exports"
                  % (found["name"], rule.get("alert"), n))
        for metric, matchers in re.findall(r"\b(warren_[a-z0-9_]+)\{([^}]*)\}", expr):
            have = samples.get(metric, [])
            for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
                check(any(label in s for s in have), "%s: alert %s: %s has a label %r"
                      % (found["name"], rule.get("alert"), metric, label))
                if op == "=":
                    check(any(s.get(label) == value for s in have),
                          "%s: alert %s: %s{%s=%r} is a series warren exports (values: %s)"
                          % (found["name"], rule.get("alert"), metric, label, value,
                             sorted(set(s.get(label) for s in have))))


def main():
    check(len(OVERLAYS) >= 2, "deploy/k8s has overlays to render (%s)"
          % [overlay_name(o) for o in OVERLAYS])
    kubectl = kubectl_info()
    if kubectl is None:
        finish()
    found = [f for f in (check_overlay(kubectl, o) for o in OVERLAYS) if f]
    if not check(found, "at least one overlay passed the static checks"):
        finish()
    declared = []
    try:
        families, samples = scrape(found[0])
        for f in found:
            check_alert_metrics(f, families, samples)
        for s in found[0]["conf"].get("subscriptions", []):
            q = s["queue"]
            declared += [q, q + ".dlq", q + ".wait"]
            delays = (s.get("retry") or (found[0]["conf"].get("defaults") or {}).get("retry")
                      or {}).get("delays", [])
            declared += ["%s.retry.%s" % (q, d) for d in delays]
    finally:
        delete_queues(declared)
    for f in found:
        shutil.rmtree(f["cfgdir"], ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
