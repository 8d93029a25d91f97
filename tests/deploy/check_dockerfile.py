#!/usr/bin/env python3
"""Static checks of the Dockerfile and .dockerignore (no Docker needed).

    python3 tests/deploy/check_dockerfile.py

Checks that the build is multi-stage and locked, that the runtime stage holds only the
binary copied from the build stage, runs as uid 65532, exposes 8080 and starts
`sts-bridge serve --config /etc/sts-bridge/config.toml`, and that .dockerignore keeps
local state out of the build context without dropping what the build needs.
Standard library only. Prints a closing "dockerfile: N passed, N failed" line and exits
1 on any failure.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

failures: list[str] = []
passed = 0


def check(what: str, ok: bool, detail: str = "") -> None:
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what + (f": {detail}" if detail else ""))
        print(f"FAIL {what}" + (f": {detail}" if detail else ""))


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def main() -> int:
    dockerfile = ROOT / "Dockerfile"
    ignore = ROOT / ".dockerignore"
    check("Dockerfile exists", dockerfile.is_file(), str(dockerfile))
    check(".dockerignore exists", ignore.is_file(), str(ignore))
    if failures:
        return finish()

    steps = instructions(dockerfile.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for word, rest in steps:
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    check("multi-stage build", len(stages) >= 2, f"{len(stages)} stage(s)")
    if len(stages) < 2:
        return finish()

    build, runtime = stages[0], stages[-1]
    build_from = build[0][1]
    match = re.match(r"(\S+)\s+AS\s+(\S+)", build_from, re.IGNORECASE)
    check("build stage is named", match is not None, build_from)
    build_name = match.group(2) if match else ""
    check("build stage uses a Rust Debian image", "rust:" in build_from and "bookworm" in build_from,
          build_from)
    runs = " ".join(rest for word, rest in build if word == "RUN")
    check("cargo build --release --locked", re.search(r"cargo build\b.*--release", runs) is not None
          and "--locked" in runs, runs)

    runtime_from = runtime[0][1].split()[0]
    check("runtime image is distroless or slim Debian",
          runtime_from.startswith("gcr.io/distroless/") or "slim" in runtime_from, runtime_from)
    runtime_words = [word for word, _ in runtime]
    check("runtime stage runs no commands", "RUN" not in runtime_words,
          "RUN in the runtime stage (a distroless image has no shell)")
    check("runtime stage adds nothing from outside", "ADD" not in runtime_words, "ADD used")
    copies = [rest for word, rest in runtime if word == "COPY"]
    check("runtime stage copies only from the build stage",
          bool(copies) and all(f"--from={build_name}" in c for c in copies), repr(copies))
    check("binary installed as /usr/local/bin/sts-bridge",
          any(c.endswith("/usr/local/bin/sts-bridge") for c in copies), repr(copies))

    users = [rest for word, rest in runtime if word == "USER"]
    user = users[-1] if users else ""
    check("runs as uid 65532", user.split(":")[0] in {"65532", "nonroot"}, repr(user))
    exposed = " ".join(rest for word, rest in runtime if word == "EXPOSE").split()
    check("exposes 8080", "8080" in exposed or "8080/tcp" in exposed, repr(exposed))
    entry = [exec_form(rest) for word, rest in runtime if word == "ENTRYPOINT"]
    check("ENTRYPOINT in exec form", bool(entry) and entry[-1] == ["/usr/local/bin/sts-bridge"],
          repr(entry))
    cmd = [exec_form(rest) for word, rest in runtime if word == "CMD"]
    check("CMD serves the mounted config",
          bool(cmd) and cmd[-1] == ["serve", "--config", "/etc/sts-bridge/config.toml"], repr(cmd))

    patterns = {line.strip().rstrip("/") for line in ignore.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".git", "target", ".venv", ".dev"):
        check(f".dockerignore excludes {needed}", needed in patterns or f"/{needed}" in patterns,
              repr(sorted(patterns)))
    for kept in ("src", "migrations", "Cargo.toml", "Cargo.lock"):
        check(f".dockerignore keeps {kept}", kept not in patterns and f"/{kept}" not in patterns
              and "*" not in patterns, repr(sorted(patterns)))
    return finish()


def finish() -> int:
    print(f"dockerfile: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
