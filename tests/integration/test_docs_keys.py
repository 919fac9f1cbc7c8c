"""test_docs_keys.py — the README's configuration table names every key that
conf/examples/full.yaml documents, so the two cannot drift apart.

full.yaml is read with PyYAML (Debian's python3-yaml) after its commented-out examples are
uncommented: a comment line whose text is a key (`# tls: {...}`, `#   dkim:`, `# - identity:
x`) becomes that key at the comment's column, so keys documented only as examples count
too (only comments starting in the left margin, at most 12 columns in: the explanations
aligned further right are prose). Every key path is then looked up in the README's table under "## Configuration": each
key of the path must appear as a word in the rows whose section cell names the path's
top-level key (e.g. `configuration_sets[].events[].max_backlog`: "events" and "max_backlog"
in a `configuration_sets` row). kilnd --check-config accepting the uncommented file would
be a stronger claim than this test makes; it checks names only."""
import os
import re
import unittest

from kilntest import SRCDIR, main

try:
    import yaml
except ImportError:   # pragma: no cover - python3-yaml is in tools/install-deps.sh's list
    yaml = None

KEY_COMMENT = re.compile(r"^( {0,12})# ((?:\s*)(?:- )?[a-z_][a-z0-9_]*:(?:\s|$).*)$")


def uncommented(text):
    """full.yaml with its commented-out keys turned into keys."""
    out = []
    for line in text.splitlines():
        m = KEY_COMMENT.match(line)
        out.append(m.group(1) + m.group(2) if m else line)
    return "\n".join(out) + "\n"


def key_paths(node, prefix=()):
    """Every key path of a parsed YAML document; list items add "[]"."""
    paths = []
    if isinstance(node, dict):
        for k, v in node.items():
            p = prefix + (str(k),)
            paths.append(p)
            paths.extend(key_paths(v, p))
    elif isinstance(node, list):
        for item in node:
            paths.extend(key_paths(item, prefix[:-1] + (prefix[-1] + "[]",) if prefix else prefix))
    return sorted(set(paths))


def readme_table_rows():
    """(section cell, whole row) of every row of the README's configuration table."""
    with open(os.path.join(SRCDIR, "README.md")) as f:
        text = f.read()
    start = text.index("## Configuration")
    end = text.index("\n## ", start + 10)
    rows = []
    for line in text[start:end].splitlines():
        if line.startswith("| ") and not line.startswith("| section") and not line.startswith("|---"):
            cells = line.split(" | ")
            rows.append((cells[0], line))
    return rows


def word_in(word, text):
    return re.search(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % re.escape(word), text) is not None


class DocsKeysTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if yaml is None:
            raise unittest.SkipTest("python3-yaml is not installed")
        with open(os.path.join(SRCDIR, "conf", "examples", "full.yaml")) as f:
            cls.doc = yaml.safe_load(uncommented(f.read()))
        cls.paths = key_paths(cls.doc)
        cls.rows = readme_table_rows()

    def test_uncommenting_finds_the_example_keys(self):
        # keys full.yaml documents only in comments are part of what it documents
        names = {".".join(p) for p in self.paths}
        for want in ("submission.tls", "delivery.tls_ca_file", "delivery.mta_sts.port",
                     "account.identities[].dkim.ed25519.private_key_file",
                     "account.identities[].mail_from.behavior_on_mx_failure",
                     "api.access_keys[].secret_file", "configuration_sets[].events[].ca_file"):
            self.assertIn(want, names)
        self.assertGreater(len(self.paths), 100)

    def test_every_key_is_in_the_readme_table(self):
        missing = []
        for path in self.paths:
            top = path[0].replace("[]", "")
            rows = " ".join(r for cell, r in self.rows if word_in(top, cell))
            if not rows:
                missing.append("%s (no row for section %s)" % (".".join(path), top))
                continue
            for key in path[1:]:
                key = key.replace("[]", "")
                if not word_in(key, rows):
                    missing.append("%s (%s not in the %s rows)" % (".".join(path), key, top))
                    break
        self.assertEqual(missing, [], "keys of conf/examples/full.yaml missing from the README's "
                         "configuration table:\n  " + "\n  ".join(missing))

    def test_the_table_names_no_section_full_yaml_lacks(self):
        tops = {p[0].replace("[]", "") for p in self.paths}
        for cell, _ in self.rows:
            for name in re.findall(r"`([a-z_]+)", cell):
                self.assertIn(name, tops, "README table row %r names a section full.yaml lacks" % cell)


if __name__ == "__main__":
    main()
