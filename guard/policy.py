"""Parse, validate and version policy files (docs/policy-format.md). Pure: no network."""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path

from guard.errors import PolicyError, PolicyErrors
from guard.types import Decision, Example, PolicySection

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_HEADING = re.compile(r"^##\s+(?P<title>.+?)\s*(?:\{#(?P<id>[^}]*)\})?\s*$")
_META = re.compile(r"^(?P<key>[a-z_]+):\s*(?P<value>.*)$")
_EXAMPLE = re.compile(r"^[-*]\s+(?P<decision>[a-z_]+):\s*(?P<text>.+)$")
_SUBSECTIONS = {"precedence", "safe completion", "examples"}
_META_KEYS = {"kind", "decision", "priority", "refusal", "safe_reply", "stage"}
_DECISIONS = ", ".join(d.value for d in Decision)



def bundled_policy_dir() -> Path:
    """The policies that ship with the package: ``policies/`` of the source tree, installed as the
    package data ``guard.policies`` (see setup.py). An editable install has no such package: there
    the source tree's folder is the one beside the code."""
    try:
        # a data-only package is a namespace package: files() is a MultiplexedPath, its children real paths
        folder = Path(str(importlib.resources.files("guard.policies").joinpath("default.md"))).parent
    except ModuleNotFoundError:
        folder = Path(__file__).resolve().parent.parent / "policies"
    return folder


DEFAULT_POLICY_DIR = bundled_policy_dir()


@dataclass(frozen=True)
class Spec:
    """The loaded policies: every section, by id, and the content hash that versions them."""

    sections: tuple[PolicySection, ...]
    version: str
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {s.id: s for s in self.sections})

    def get(self, section_id: str) -> PolicySection | None:
        return self._by_id.get(section_id)  # type: ignore[attr-defined]

    @property
    def rules(self) -> list[PolicySection]:
        return [s for s in self.sections if s.kind == "rule"]

    @property
    def always(self) -> list[PolicySection]:
        """Overview and style sections: sent to the judge with every retrieval."""
        return [s for s in self.sections if s.kind != "rule"]

    def default_refusal(self) -> str:
        for s in self.sections:
            if s.kind == "style" and s.refusal:
                return s.refusal
        return "I can't help with that."


def default_policy_paths() -> list[Path]:
    return [DEFAULT_POLICY_DIR / "default.md"]


def bundled(path: str | Path) -> Path:
    """``policies/examples/support-bot.md`` (or ``examples/support-bot.md``) names a bundled policy
    when no such file exists where the guard runs: an installed guard or a container finds the
    policies it ships with the same paths as a checkout."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    parts = p.parts[1:] if p.parts[:1] == ("policies",) else p.parts
    candidate = DEFAULT_POLICY_DIR.joinpath(*parts) if parts else DEFAULT_POLICY_DIR
    return candidate if candidate.exists() else p


def expand(paths: list[str | Path]) -> list[Path]:
    """Files named directly, and every ``*.md`` (sorted) in named directories."""
    out: list[Path] = []
    for p in map(bundled, paths):
        out.extend(sorted(p.glob("*.md")) if p.is_dir() else [p])
    return out


def load_spec(paths: list[str | Path] | None = None) -> Spec:
    """Load and validate policies; raise PolicyErrors listing every problem found."""
    files = expand(paths) if paths else default_policy_paths()
    errors: list[PolicyError] = []
    sections: list[PolicySection] = []
    digest = hashlib.sha256()
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            errors.append(PolicyError(str(f), 0, f"cannot read policy: {getattr(e, 'strerror', None) or e}"))
            continue
        digest.update(text.encode())
        digest.update(b"\0")
        found, errs = parse_policy(text, str(f))
        sections.extend(found)
        errors.extend(errs)
    seen: dict[str, PolicySection] = {}
    for s in sections:
        if s.id in seen:
            first = seen[s.id]
            errors.append(PolicyError(s.source, s.line, f"duplicate section id '{s.id}' (first at {first.source}:{first.line})"))
        seen[s.id] = s
    if not files:
        errors.append(PolicyError(str(paths), 0, "no policy files found"))
    elif not errors and not any(s.kind == "rule" for s in sections):
        errors.append(PolicyError(str(files[0]), 1, "no rule sections: a spec needs at least one '## Title {#id}' with a decision"))
    if errors:
        raise PolicyErrors(errors)
    return Spec(sections=tuple(sections), version=digest.hexdigest()[:12], sources=tuple(map(str, files)))


def parse_policy(text: str, source: str = "<policy>") -> tuple[list[PolicySection], list[PolicyError]]:
    """Parse one file. Returns the sections it could read and every error, with line numbers."""
    lines = text.splitlines()
    errors: list[PolicyError] = []

    def err(line: int, reason: str) -> None:
        errors.append(PolicyError(source, line, reason))

    # front matter
    policy_id = ""
    i = 0
    if not lines or lines[0].strip() != "---":
        err(1, "missing front matter: the file must start with '---', then 'id:' and 'title:', then '---'")
    else:
        meta: dict[str, str] = {}
        i = 1
        while i < len(lines) and lines[i].strip() != "---":
            m = _META.match(lines[i].strip())
            if m:
                meta[m["key"]] = m["value"].strip()
            elif lines[i].strip():
                err(i + 1, f"front matter: expected 'key: value', got {lines[i].strip()!r}")
            i += 1
        if i >= len(lines):
            err(1, "front matter is not closed with '---'")
        for key in ("id", "title"):
            if not meta.get(key):
                err(1, f"front matter: missing '{key}'")
        policy_id = meta.get("id", "")
        if policy_id and not _ID.match(policy_id):
            err(2, f"front matter: id {policy_id!r} must be lowercase letters, digits and '-'")
        i += 1

    # split into sections at level-2 headings
    blocks: list[tuple[int, list[str]]] = []
    for n in range(i, len(lines)):
        line = lines[n]
        if line.startswith("## ") or line.strip() == "##":
            blocks.append((n + 1, [line]))
        elif blocks:
            blocks[-1][1].append(line)
        elif line.startswith("### "):
            err(n + 1, "subsection before the first '## Title {#id}' section")

    sections = []
    for start, block in blocks:
        s = _parse_section(block, start, source, policy_id, err)
        if s is not None:
            sections.append(s)
    return sections, errors


def _parse_section(block: list[str], start: int, source: str, policy_id: str, err) -> PolicySection | None:
    head = _heading(block[0], start, err)
    if head is None:
        return None
    sid, title = head
    meta, k = _meta(block, start, sid, err)
    fields = _settings(meta, sid, start, err)
    if fields is None:
        return None
    parts, examples = _body(block, k, start, sid, err)
    body = "\n".join(parts["body"]).strip()
    if not body and fields["kind"] == "rule":
        err(start, f"section '{sid}': a rule needs a description of what it covers")
        return None
    return PolicySection(
        id=sid, policy=policy_id or "?", title=title, **fields,
        refusal=meta.get("refusal", (None, 0))[0] or None, safe_reply=meta.get("safe_reply", (None, 0))[0] or None,
        body=body, precedence="\n".join(parts.get("precedence", [])).strip(),
        safe_completion="\n".join(parts.get("safe completion", [])).strip(), examples=tuple(examples),
        source=source, line=start,
    )


def _heading(line: str, start: int, err) -> tuple[str, str] | None:
    """(id, title) of a '## Title {#id}' heading."""
    m = _HEADING.match(line)
    if not m or not m["title"]:
        err(start, "section heading must be '## Title {#section-id}'")
        return None
    sid = (m["id"] or "").strip()
    if not sid:
        err(start, f"section {m['title']!r} has no id: write '## {m['title']} {{#some-id}}'")
        return None
    if not _ID.match(sid):
        err(start, f"section id {sid!r} must be lowercase letters, digits and '-'")
        return None
    return sid, m["title"].strip()


def _meta(block: list[str], start: int, sid: str, err) -> tuple[dict[str, tuple[str, int]], int]:
    """The 'key: value' lines directly under the heading (value, line), and where the body starts."""
    meta: dict[str, tuple[str, int]] = {}
    k = 1
    while k < len(block) and block[k].strip():
        mm = _META.match(block[k].strip())
        if not mm or mm["key"] not in _META_KEYS:
            if mm and mm["key"] not in _META_KEYS and k == 1:
                err(start + k, f"section '{sid}': unknown key '{mm['key']}' (one of {', '.join(sorted(_META_KEYS))})")
            break
        meta[mm["key"]] = (mm["value"].strip(), start + k)
        k += 1
    return meta, k


def _settings(meta: dict[str, tuple[str, int]], sid: str, start: int, err) -> dict | None:
    """kind, decision, priority and stage from the meta lines, validated; None after an error."""
    kind = meta.get("kind", ("rule", start))[0]
    if kind not in ("rule", "overview", "style"):
        err(meta["kind"][1], f"section '{sid}': unknown kind '{kind}' (rule, overview, style)")
        return None
    decision = None
    if "decision" in meta:
        value, ln = meta["decision"]
        try:
            decision = Decision(value)
        except ValueError:
            err(ln, f"section '{sid}': unknown decision '{value}' ({_DECISIONS})")
            return None
    elif kind == "rule":
        err(start, f"section '{sid}': a rule needs a 'decision:' line under its heading ({_DECISIONS})")
        return None
    priority = 0
    if "priority" in meta:
        value, ln = meta["priority"]
        try:
            priority = int(value)
        except ValueError:
            err(ln, f"section '{sid}': priority must be an integer, got '{value}'")
            return None
    stage = meta.get("stage", ("both", start))[0]
    if stage not in ("input", "output", "both"):
        err(meta["stage"][1], f"section '{sid}': unknown stage '{stage}' (input, output, both)")
        return None
    return {"kind": kind, "decision": decision, "priority": priority, "stage": stage}


def _body(block: list[str], k: int, start: int, sid: str, err) -> tuple[dict[str, list[str]], list[Example]]:
    """The body's lines by level-3 subsection, and the labelled examples."""
    parts: dict[str, list[str]] = {"body": []}
    current = "body"
    examples: list[Example] = []
    for j in range(k, len(block)):
        line, ln = block[j], start + j
        if line.startswith("### "):
            name = line[4:].strip().lower()
            if name not in _SUBSECTIONS:
                err(ln, f"section '{sid}': unknown subsection {line[4:].strip()!r} (Precedence, Safe completion, Examples)")
                current = "ignored"
            else:
                current = name
            parts.setdefault(current, [])
        elif current != "examples":
            parts[current].append(line)
        elif line.strip():
            ex = _example(line.strip(), ln, f"{sid}#{len(examples) + 1}", err)
            if ex is not None:
                examples.append(ex)
    return parts, examples


def _example(line: str, ln: int, eid: str, err) -> Example | None:
    sid = eid.split("#")[0]
    em = _EXAMPLE.match(line)
    if not em:
        err(ln, f"section '{sid}': example must be '- allow|refuse|safe_complete: text', got {line[:60]!r}")
        return None
    try:
        dec = Decision(em["decision"])
    except ValueError:
        err(ln, f"section '{sid}': unknown example decision '{em['decision']}' ({_DECISIONS})")
        return None
    text, _, response = em["text"].partition(" => ")
    return Example(id=eid, decision=dec, text=text.strip(), response=response.strip() or None, line=ln)
