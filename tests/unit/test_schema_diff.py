"""Differential test of warren's JSON Schema validator (sidecar/src/contracts/schema.c)
against python3-jsonschema (Debian, Draft7Validator) on generated schemas and
instances: every pair must get the same answer.

Schemas are drawn from the keywords both sides implement (formats left out:
python3-jsonschema checks date-time and uuid only with packages Debian does not
install with it, and its email check is a bare '@'; the JSON Schema Test Suite
covers formats), with patterns that mean the same in PCRE2 and Python's re.
Instances are drawn near each schema's boundaries. A fixed seed
(WR_DIFF_SEED overrides it) keeps a failure reproducible.

Usage: test_schema_diff.py PATH_TO_schema_diff [COUNT]
"""
import json
import os
import random
import subprocess
import sys

import jsonschema

# python3-jsonschema 4.10 sorts the extra items or properties to word its
# error message, and raises TypeError when they are of mixed types ([1, "a"]):
# word the message without sorting (the answer, valid or not, is unchanged).
if hasattr(jsonschema._utils, "extras_msg"):
    def _extras_msg(extras):
        verb = "was" if len(extras) == 1 else "were"
        return ", ".join(repr(extra) for extra in extras), verb
    jsonschema._utils.extras_msg = _extras_msg
    import jsonschema._validators
    jsonschema._validators.extras_msg = _extras_msg

HELPER = sys.argv[1]
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
SEED = int(os.environ.get("WR_DIFF_SEED", "20261205"))
rnd = random.Random(SEED)

PATTERNS = ["^[a-z]+$", "a+", "^\\d{2,3}-x$", "^(ab|cd)*$", "[0-9]", "^$", "^.{2}$", "é"]
TYPES = ["null", "boolean", "object", "array", "number", "string", "integer"]
NAMES = ["a", "b", "c", "x-1"]


def scalar():
    return rnd.choice([None, True, False, 0, 1, -1, 1.0, 2.5, 3, 10, "", "a", "ab", "abc", "é",
                       "12-x", "abcd", "0"])


def value(depth=0):
    k = rnd.random()
    if depth > 2 or k < 0.55:
        return scalar()
    if k < 0.78:
        return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
    return {rnd.choice(NAMES): value(depth + 1) for _ in range(rnd.randint(0, 4))}


def schema(depth=0):
    if rnd.random() < 0.08:
        return rnd.choice([True, False])
    s = {}
    for _ in range(rnd.randint(1, 3)):
        kw = rnd.choice(["type", "type", "required", "properties", "additionalProperties",
                         "items", "enum", "const", "minimum", "maximum", "exclusiveMinimum",
                         "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems",
                         "maxItems", "uniqueItems", "allOf", "anyOf", "oneOf", "not",
                         "patternProperties"] if depth < 3 else
                        ["type", "minimum", "maxLength", "enum", "pattern", "required"])
        if kw == "type":
            s[kw] = (rnd.choice(TYPES) if rnd.random() < 0.6 else
                     rnd.sample(TYPES, rnd.randint(1, 3)))
        elif kw == "required":
            s[kw] = rnd.sample(NAMES, rnd.randint(0, 2))
        elif kw == "properties":
            s[kw] = {n: schema(depth + 1) for n in rnd.sample(NAMES, rnd.randint(1, 2))}
        elif kw == "patternProperties":
            s[kw] = {rnd.choice(["^x-", "^[ab]$", "c"]): schema(depth + 1)}
        elif kw == "additionalProperties":
            s[kw] = rnd.choice([False, True]) if rnd.random() < 0.5 else schema(depth + 1)
        elif kw == "items":
            s[kw] = (schema(depth + 1) if rnd.random() < 0.7 else
                     [schema(depth + 1) for _ in range(rnd.randint(1, 2))])
            if isinstance(s[kw], list) and rnd.random() < 0.5:
                s["additionalItems"] = rnd.choice([False, schema(depth + 1)])
            elif not isinstance(s[kw], list):
                # python3-jsonschema 4.10 raises on additionalItems beside a
                # boolean items (len(True)); draft 7 ignores it there anyway
                s.pop("additionalItems", None)
        elif kw in ("enum",):
            s[kw] = [value(2) for _ in range(rnd.randint(1, 3))]
        elif kw == "const":
            s[kw] = value(1)
        elif kw in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            s[kw] = rnd.choice([0, 1, 2.5, -1, 3])
        elif kw in ("minLength", "maxLength", "minItems", "maxItems"):
            s[kw] = rnd.randint(0, 3)
        elif kw == "pattern":
            s[kw] = rnd.choice(PATTERNS)
        elif kw == "uniqueItems":
            s[kw] = rnd.choice([True, False])
        elif kw in ("allOf", "anyOf", "oneOf"):
            s[kw] = [schema(depth + 1) for _ in range(rnd.randint(1, 3))]
        elif kw == "not":
            s[kw] = schema(depth + 1)
    return s


def main():
    pairs = []
    for _ in range(COUNT):
        sc = schema()
        pairs.append((sc, value()))
    text = "".join(json.dumps({"schema": sc, "data": d}) + "\n" for sc, d in pairs)
    out = subprocess.run([HELPER], input=text.encode(), capture_output=True, check=True)
    answers = out.stdout.decode().splitlines()
    if len(answers) != len(pairs):
        print("schema_diff answered %d of %d" % (len(answers), len(pairs)))
        return 1
    agree = differ = refused = 0
    for (sc, d), got in zip(pairs, answers):
        if got.startswith("E "):
            refused += 1
            print("refused a generated schema: %s: %s" % (json.dumps(sc), got))
            continue
        want = jsonschema.Draft7Validator(sc).is_valid(d)
        if (got == "1") == want:
            agree += 1
        else:
            differ += 1
            if differ <= 10:
                print("DIFFER: schema %s data %s: warren %s, python3-jsonschema %s"
                      % (json.dumps(sc), json.dumps(d), got == "1", want))
    valid = sum(1 for a in answers if a == "1")
    print("schema diff (seed %d): %d pairs, %d agree (%d valid, %d invalid), %d differ, "
          "%d refused" % (SEED, len(pairs), agree, valid, agree - valid, differ, refused))
    return 1 if differ or refused or agree != len(pairs) else 0


sys.exit(main())
