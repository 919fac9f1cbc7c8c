#!/usr/bin/python3
"""gen_sesv2_model.py — writes api/sesv2_model.c, kiln's tables of the SES v2 REST surface,
from the sesv2 service model that Debian's python3-botocore carries (read, not guessed).

Every operation becomes a row (name, method, requestUri template, success status =
http.responseCode or 200). For the operations kiln answers (KILN_OPS) the whole input shape
graph is written too: structures (members with location, locationName, required), lists
(member, min/max), maps (key/value, min/max), strings (enum, min/max), integer/long/double
(min/max), boolean, timestamp, blob. The output is plain C data (api/sesv2_model.h gives the
types), deterministic for a given model file: shapes in name order, each once; shapes that
are the same (type, constraints, enums, members and the shapes they refer to) merged into
one entry, so ListEmailTemplatesRequest and ListConfigurationSetsRequest share a row.

The model is read as a file, without importing botocore, so the python running this does
not matter. Run: make sesv2-model (or
/usr/bin/python3 tools/gen_sesv2_model.py [--botocore DIR] [-o api/sesv2_model.c])."""
import argparse
import hashlib
import json
import os
import re
import sys

DEFAULT_BOTOCORE = "/usr/lib/python3/dist-packages/botocore"
MODEL_REL = "data/sesv2/2019-09-27/service-2.json"

# The operations kiln answers (issue 13); their input shapes go into the table.
KILN_OPS = [
    "SendEmail", "SendBulkEmail",
    "CreateEmailTemplate", "GetEmailTemplate", "ListEmailTemplates", "UpdateEmailTemplate",
    "DeleteEmailTemplate", "TestRenderEmailTemplate",
    "GetAccount",
    "GetDedicatedIps", "GetDedicatedIp", "PutDedicatedIpWarmupAttributes",
    "ListDedicatedIpPools", "GetDedicatedIpPool", "CreateDedicatedIpPool",
    "DeleteDedicatedIpPool", "PutDedicatedIpInPool",
    "PutSuppressedDestination", "GetSuppressedDestination", "DeleteSuppressedDestination",
    "ListSuppressedDestinations",
    "ListEmailIdentities", "GetEmailIdentity", "ListConfigurationSets", "GetConfigurationSet",
]

TYPES = {
    "structure": "MODEL_STRUCTURE", "list": "MODEL_LIST", "map": "MODEL_MAP",
    "string": "MODEL_STRING", "integer": "MODEL_INTEGER", "long": "MODEL_LONG",
    "boolean": "MODEL_BOOLEAN", "double": "MODEL_DOUBLE", "float": "MODEL_DOUBLE",
    "timestamp": "MODEL_TIMESTAMP", "blob": "MODEL_BLOB",
}
LOCATIONS = {None: "MODEL_LOC_BODY", "uri": "MODEL_LOC_URI",
             "querystring": "MODEL_LOC_QUERY", "header": "MODEL_LOC_HEADER"}
SCALARS = ("string", "integer", "long", "boolean", "double", "float", "timestamp", "blob")


def die(msg):
    sys.exit("gen_sesv2_model: " + msg)


def c_str(s):
    if s is None:
        return "NULL"
    if not re.fullmatch(r"[\x20-\x7e]*", s):
        die("non-ASCII or control character in %r" % s)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def botocore_version(botocore_dir):
    with open(os.path.join(botocore_dir, "__init__.py"), encoding="utf-8") as f:
        m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read(), re.M)
    if not m:
        die("no __version__ in %s/__init__.py" % botocore_dir)
    return m.group(1)


class Gen:
    def __init__(self, model):
        self.model = model
        self.shapes = model["shapes"]
        self.names = []          # shape names reachable from KILN_OPS inputs
        self.index = {}          # shape name -> table index
        self.rows = []           # table rows: (key, [names])

    def reach(self, name, seen):
        if name in seen:
            return
        if name not in self.shapes:
            die("unknown shape " + name)
        seen.add(name)
        s = self.shapes[name]
        if s["type"] not in TYPES:
            die("shape %s of unsupported type %s" % (name, s["type"]))
        for m in s.get("members", {}).values():
            self.reach(m["shape"], seen)
        if s["type"] == "list":
            self.reach(s["member"]["shape"], seen)
        if s["type"] == "map":
            self.reach(s["key"]["shape"], seen)
            self.reach(s["value"]["shape"], seen)

    def signature(self, name, rep):
        """What makes two shapes the same table entry: type, constraints, enums, and the
        (merged) shapes they refer to."""
        s = self.shapes[name]
        t = "double" if s["type"] == "float" else s["type"]
        sig = [t, s.get("min"), s.get("max"), tuple(s.get("enum", ()))]
        if t == "structure":
            req = set(s.get("required", ()))
            sig.append(tuple((m, v.get("location"), v.get("locationName"), m in req,
                              rep[v["shape"]]) for m, v in s["members"].items()))
        elif t == "list":
            sig.append(rep[s["member"]["shape"]])
        elif t == "map":
            sig.append((rep[s["key"]["shape"]], rep[s["value"]["shape"]]))
        return tuple(sig)

    def build(self):
        ops = self.model["operations"]
        for o in KILN_OPS:
            if o not in ops:
                die("operation %s is not in the model" % o)
        seen = set()
        for o in KILN_OPS:
            inp = ops[o].get("input")
            if inp:
                self.reach(inp["shape"], seen)
        # Merge shapes that are the same entry (a fixed point: structures are the same once
        # the shapes they refer to are), each group named by its first name.
        names = sorted(seen)
        rep = {n: n for n in names}
        while True:
            groups = {}
            for n in names:
                groups.setdefault(self.signature(n, rep), []).append(n)
            new = {n: g[0] for g in groups.values() for n in g}
            if new == rep:
                break
            rep = new
        # Scalars first, then the rest; each group once, in the order of its first name.
        reps = sorted(set(rep.values()))
        order = ([r for r in reps if self.shapes[r]["type"] in SCALARS] +
                 [r for r in reps if self.shapes[r]["type"] not in SCALARS])
        for r in order:
            group = [n for n in names if rep[n] == r]
            for n in group:
                self.index[n] = len(self.rows)
            self.rows.append(group)
        if len(self.rows) >= 0xffff:
            die("too many shapes for uint16_t indices")

    def emit(self, out, source, version, digest):
        w = out.write
        ops = self.model["operations"]
        w("/* sesv2_model.c — GENERATED by tools/gen_sesv2_model.py: do not edit by hand.\n")
        w(" * From botocore/%s (python3-botocore %s,\n" % (MODEL_REL, version))
        w(" * sha256 %s).\n" % digest)
        w(" * Regenerate with `make sesv2-model` (/usr/bin/python3 tools/gen_sesv2_model.py).\n")
        w(" * What it promises: every operation of the model with its method, URI template and\n")
        w(" * success status; the input shapes of the %d operations kiln answers (types, members\n"
          % len(KILN_OPS))
        w(" * with their location, required members, enums, min/max), as api/sesv2_model.h\n")
        w(" * describes them. Plain constant data; api/model.c routes and validates with it. */\n")
        w('#include "api/sesv2_model.h"\n\n')

        enums, members, shape_lines = [], [], []
        for row in self.rows:
            s = self.shapes[row[0]]
            t = s["type"]
            first = count = 0
            member = value = "MODEL_NONE"
            if t == "string" and "enum" in s:
                first, count = len(enums), len(s["enum"])
                enums.extend(s["enum"])
            elif t == "structure":
                required = set(s.get("required", ()))
                first = len(members)
                for mname, m in s["members"].items():
                    loc = m.get("location")
                    if loc not in LOCATIONS:
                        die("member %s.%s has location %s" % (row[0], mname, loc))
                    lname = m.get("locationName") if loc else None
                    if loc and not lname:
                        lname = mname
                    members.append("    {%s, %s, %s, %s, %d}, /* %s.%s */" % (
                        c_str(mname), c_str(lname), LOCATIONS[loc],
                        "true" if mname in required else "false", self.index[m["shape"]],
                        row[0], mname))
                count = len(members) - first
                for r in required:
                    if r not in s["members"]:
                        die("%s requires unknown member %s" % (row[0], r))
            elif t == "list":
                member = str(self.index[s["member"]["shape"]])
            elif t == "map":
                member = str(self.index[s["key"]["shape"]])
                value = str(self.index[s["value"]["shape"]])
            has_min, has_max = "min" in s, "max" in s
            shape_lines.append("    {%s, %s, %s, %d, %d, %d, %d, %s, %s}, /* %d %s */" % (
                TYPES[t], "true" if has_min else "false", "true" if has_max else "false",
                int(s.get("min", 0)), int(s.get("max", 0)), first, count, member, value,
                len(shape_lines), ", ".join(row)))

        w("static const char *const sesv2_enums[] = {\n")
        for i in range(0, len(enums), 4):
            w("    " + " ".join(c_str(e) + "," for e in enums[i:i + 4]) + "\n")
        w("};\n\n")
        w("static const model_member sesv2_members[] = {\n")
        w("    /* name, location name, location, required, shape */\n")
        w("\n".join(members) + "\n};\n\n")
        w("static const model_shape sesv2_shapes[] = {\n")
        w("    /* type, has_min, has_max, min, max, first, count, member/key, value */\n")
        w("\n".join(shape_lines) + "\n};\n\n")
        w("static const struct api_model_op sesv2_ops[] = {\n")
        w("    /* name, method, URI template, success status, input shape */\n")
        for o in sorted(ops):
            http = ops[o]["http"]
            inp = "MODEL_NONE"
            if o in KILN_OPS:
                inp = str(self.index[ops[o]["input"]["shape"]]) if "input" in ops[o] else "MODEL_NONE"
            w("    {%s, %s, %s, %d, %s},\n" % (c_str(o), c_str(http["method"]),
                                              c_str(http["requestUri"]),
                                              int(http.get("responseCode", 200)), inp))
        w("};\n\n")
        w("const model_table api_sesv2_model = {\n")
        w("    sesv2_ops, sizeof sesv2_ops / sizeof sesv2_ops[0],\n")
        w("    sesv2_shapes, sizeof sesv2_shapes / sizeof sesv2_shapes[0],\n")
        w("    sesv2_members, sizeof sesv2_members / sizeof sesv2_members[0],\n")
        w("    sesv2_enums, sizeof sesv2_enums / sizeof sesv2_enums[0],\n")
        w("};\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--botocore", default=DEFAULT_BOTOCORE,
                    help="botocore package directory (default: Debian's)")
    ap.add_argument("-o", "--output", help="output file (default: stdout)")
    a = ap.parse_args()
    path = os.path.join(a.botocore, MODEL_REL)
    with open(path, "rb") as f:
        raw = f.read()
    model = json.loads(raw)
    if model.get("metadata", {}).get("protocol") != "rest-json":
        die("%s is not a rest-json model" % path)
    g = Gen(model)
    g.build()
    version = botocore_version(a.botocore)
    digest = hashlib.sha256(raw).hexdigest()
    if a.output:
        tmp = a.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            g.emit(out, path, version, digest)
        os.replace(tmp, a.output)
    else:
        g.emit(sys.stdout, path, version, digest)


if __name__ == "__main__":
    main()
