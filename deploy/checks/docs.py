"""Executable docs: the shell examples of README.md, docs/clients.md and docs/publishers.md
run against real processes, so that a doc edit that breaks an example fails the build.

    python3 deploy/checks/docs.py [FILE.md ...]      (`make test-docs`, part of `make test`)

What the runner does, and the conventions a page follows:
- Everything runs in a private network namespace (`netns.py`): the ports the pages name
  (8080, 9090, 6379, 8081, ...) are the real ones, free, and nothing on the machine can
  collide with them.
- First it starts what the pages assume is running: `make run`'s gateway, with the flags of
  the Makefile's `run` recipe (`--demo`, its LISTEN, METRICS_LISTEN and DEV_JWT_SECRET).
  The debug binaries stand for the release ones (`./target/release/` in a command is read
  as `./target/debug/`, which `cargo test` has built); `sse-gateway` and `sse-publish` are
  on PATH.
- Every ```sh block of a page runs, in page order, in one bash session per page (so
  variables carry from block to block, as in one terminal), under `set -euo pipefail`: a
  failing command fails the check. A block right after `<!-- not run: REASON -->` (a line
  the rendered page does not show) is skipped.
- A step is a run of non-blank lines. The `#` lines after a step's last command are the
  output the page shows for it; the runner compares them with what the step printed to
  stdout, with event ids (`<ms>-<seq>`) and millisecond timestamps masked, `...` in a line
  matching any text and a line `...` matching any number of lines. A step without such
  lines is run, not compared.
- `curl -N` (a stream) is cut after STREAM_SECONDS, as a reader's Ctrl-C would; that is not
  a failure.
- README.md's ```rust block must equal the region between `// README: begin` and
  `// README: end` of publisher-sdk/examples/readme.rs, which the README runs.
- Whatever a page leaves running in the background is stopped at the end (by process
  group); so is the gateway.
Prints one line per page and ends with `docs: N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PAGES = ["README.md", "docs/clients.md", "docs/publishers.md"]
EXAMPLE = "publisher-sdk/examples/readme.rs"
# A stream is cut after this long (a reader's Ctrl-C).
STREAM_SECONDS = 1.5
# The whole of one page's session, at most.
PAGE_SECONDS = 120
START_SECONDS = 20
NOT_RUN = re.compile(r"^<!--\s*not run:\s*\S.*-->\s*$")
ID = re.compile(r"\b\d{13}-\d+\b")
TIMESTAMP = re.compile(r"\b\d{13}\b")
MARKER = "@@docs-step {}@@"
MARKER_LINE = re.compile(r"^@@docs-step (\d+)@@$")

PRELUDE = f"""
set -euo pipefail
# A stream is cut after a while, as a reader's Ctrl-C would; curl's timeout is no failure.
curl() {{
    local arg status=0
    for arg in "$@"; do
        if [ "$arg" = -N ]; then
            command curl --max-time {STREAM_SECONDS} "$@" || status=$?
            if [ "$status" -eq 28 ]; then status=0; fi
            return "$status"
        fi
    done
    command curl "$@"
}}
"""


@dataclass
class Step:
    page: str
    line: int
    command: str
    expected: list[str] | None


@dataclass
class Page:
    path: str
    steps: list[Step] = field(default_factory=list)
    rust_blocks: list[tuple[int, str]] = field(default_factory=list)
    skipped: int = 0


def parse_page(path: str) -> Page:
    page = Page(path)
    lines = (REPO / path).read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)", lines[index])
        if not fence:
            index += 1
            continue
        language, start = fence.group(1), index + 1
        end = start
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        body = lines[start:end]
        if language == "sh":
            if NOT_RUN.match(previous):
                page.skipped += 1
            else:
                page.steps.extend(block_steps(path, start + 1, body))
        elif language == "rust":
            page.rust_blocks.append((start + 1, "\n".join(body)))
        index = end + 1
    return page


def block_steps(path: str, first_line: int, body: list[str]) -> list[Step]:
    steps, run, run_start = [], [], first_line
    for offset, line in enumerate(body + [""]):
        if line.strip():
            if not run:
                run_start = first_line + offset
            run.append(line)
            continue
        if run:
            commands = [i for i, text in enumerate(run) if not text.lstrip().startswith("#")]
            if commands:
                last = commands[-1]
                shown = run[last + 1:]
                expected = [re.sub(r"^# ?", "", text) for text in shown] if shown else None
                steps.append(Step(path, run_start, "\n".join(run[:last + 1]), expected))
            run = []
    return steps


def mask(text: str) -> str:
    return TIMESTAMP.sub("<ts>", ID.sub("<id>", text))


def trimmed(lines: list[str]) -> list[str]:
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def matches(expected: list[str], actual: list[str]) -> bool:
    """`...` in a line: any text; a line `...`: any number of lines."""
    if not expected:
        return not actual
    head = expected[0]
    if head.strip() == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    if not actual:
        return False
    pattern = ".*".join(re.escape(part) for part in head.split("..."))
    return re.fullmatch(pattern, actual[0]) is not None and matches(expected[1:], actual[1:])


def as_written(command: str) -> str:
    """The command as the runner runs it: the debug binaries for the release ones."""
    return command.replace("./target/release/", "./target/debug/")


def make_run_command() -> list[str]:
    """`make run`'s gateway command line, from the Makefile (its variables substituted)."""
    text = (REPO / "Makefile").read_text()
    variables = dict(re.findall(r"^([A-Z_]+) \?= (.*)$", text, re.M))
    recipe = re.search(r"^run:\n((?:\t.*\n)+)", text, re.M)
    if not recipe:
        raise SystemExit("docs.py: no `run` target in the Makefile")
    joined = re.sub(r"\\\n\t*", " ", recipe.group(1))
    line = next((l.strip() for l in joined.splitlines()
                 if l.strip().startswith("./target/release/sse-gateway ")), None)
    if line is None:
        raise SystemExit("docs.py: the Makefile's run recipe does not start target/release/sse-gateway")
    line = re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m.group(1), ""), line)
    return shlex.split(as_written(line))


def wait_ready(url: str, process: subprocess.Popen, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    return False


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group the runner started, then SIGKILL what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_page(page: Page, env: dict[str, str], work: Path) -> list[str]:
    """Runs a page's steps in one bash session; returns its failures."""
    if not page.steps:
        return []
    script = [PRELUDE, f"cd {shlex.quote(str(REPO))}"]
    for number, step in enumerate(page.steps):
        script.append(f"printf '\\n{MARKER.format(number)}\\n' | tee /dev/stderr")
        script.append(as_written(step.command))
    script.append(f"printf '\\n{MARKER.format(len(page.steps))}\\n' | tee /dev/stderr")
    name = page.path.replace("/", "_")
    script_path, stdout_path, stderr_path = (work / f"{name}.sh", work / f"{name}.out", work / f"{name}.err")
    script_path.write_text("\n".join(script) + "\n")
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        session = subprocess.Popen(["bash", str(script_path)], stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            code = session.wait(timeout=PAGE_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            # What the page left in the background (and a session that hung).
            stop_group(session)
    outputs = by_step(stdout_path)
    errors = by_step(stderr_path)
    failures = []
    reached = max(outputs, default=-1)
    if code is None or code != 0:
        failed = page.steps[min(reached, len(page.steps) - 1)] if reached >= 0 else page.steps[0]
        what = f"did not finish within {PAGE_SECONDS}s" if code is None else f"exited with status {code}"
        stderr_tail = trimmed(errors.get(reached, []))[-15:]
        failures.append(f"{failed.page}:{failed.line}: the step {what}:\n"
                        + indent(failed.command)
                        + ("\n      stderr:\n" + indent("\n".join(stderr_tail)) if stderr_tail else ""))
    for number, step in enumerate(page.steps):
        if step.expected is None or number not in outputs or number >= reached:
            continue
        expected = trimmed([mask(line) for line in step.expected])
        actual = trimmed([mask(line) for line in outputs[number]])
        if not matches(expected, actual):
            failures.append(f"{step.page}:{step.line}: the output differs from what the page shows\n"
                            + indent(step.command) + "\n      shown (masked):\n" + indent("\n".join(expected))
                            + "\n      printed (masked):\n" + indent("\n".join(actual)))
    return failures


def by_step(path: Path) -> dict[int, list[str]]:
    """The lines of a session's output, by the step that printed them."""
    outputs: dict[int, list[str]] = {}
    current = None
    for line in path.read_text(errors="replace").splitlines():
        marker = MARKER_LINE.match(line)
        if marker:
            current = int(marker.group(1))
            outputs[current] = []
        elif current is not None:
            outputs[current].append(line)
    return outputs


def indent(text: str) -> str:
    return "\n".join("        " + line for line in text.splitlines())


def check_rust_example(page: Page) -> list[str]:
    source = (REPO / EXAMPLE).read_text()
    region = re.search(r"^// README: begin\n(.*?)^// README: end$", source, re.M | re.S)
    if not region:
        return [f"{EXAMPLE}: no region between `// README: begin` and `// README: end`"]
    if len(page.rust_blocks) != 1:
        return [f"{page.path}: {len(page.rust_blocks)} ```rust blocks, expected the one mirroring {EXAMPLE}"]
    line, block = page.rust_blocks[0]
    if block.strip() != region.group(1).strip():
        return [f"{page.path}:{line}: the ```rust block differs from the README region of {EXAMPLE}"]
    return []


def build() -> None:
    """What the pages run, built before any page's clock starts. One package per command, as
    the pages' own `cargo run -p sse-publisher …` select it: cargo unifies the features of the
    dependencies of all the packages a command selects, so a build of both packages at once
    (or `cargo test --workspace`) leaves `cargo run -p sse-publisher` a rebuild of its own
    (over a minute on two cores, inside a page's time budget)."""
    for command in (
        ["cargo", "build", "-q", "--locked", "-p", "sse-gateway", "--bins"],
        # An example brings the dev-dependencies' features in: built apart from the binary.
        ["cargo", "build", "-q", "--locked", "-p", "sse-publisher", "--bins"],
        ["cargo", "build", "-q", "--locked", "-p", "sse-publisher", "--example", "readme"],
    ):
        if subprocess.run(command, cwd=REPO, timeout=1800).returncode != 0:
            raise SystemExit(f"docs.py: {' '.join(command)} failed")


def main() -> int:
    pages = sys.argv[1:] or PAGES
    missing = [tool for tool in ("bash", "curl", "redis-server", "redis-cli") if not shutil.which(tool)]
    if missing:
        print(f"docs.py: the pages need {', '.join(missing)} (make deps installs redis-server)")
        print("docs: 0 passed, 1 failed")
        return 1
    if os.environ.get(netns.MARK) != "1":
        build()
    netns.enter()
    parsed = [parse_page(path) for path in pages]
    env = dict(os.environ)
    env["PATH"] = f"{REPO / 'target/debug'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["CARGO_NET_OFFLINE"] = "true"
    env.pop("SSE_GATEWAY_URL", None)
    env.pop("SSE_PUBLISH_TOKEN", None)
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="sse-docs-") as work_dir:
        work = Path(work_dir)
        gateway_log = open(work / "gateway.log", "w")
        gateway = subprocess.Popen(make_run_command(), cwd=REPO, stdout=gateway_log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
        try:
            if not wait_ready("http://127.0.0.1:8080/readyz", gateway, START_SECONDS):
                print("FAIL  make run's gateway did not become ready:")
                print(indent((work / "gateway.log").read_text(errors="replace")[-2000:]))
                print("docs: 0 passed, 1 failed")
                return 1
            for page in parsed:
                started = time.monotonic()
                failures = run_page(page, env, work)
                if page.path == "README.md":
                    failures += check_rust_example(page)
                if gateway.poll() is not None:
                    failures.append(f"make run's gateway exited ({gateway.returncode}) during {page.path}")
                took = time.monotonic() - started
                if failures:
                    failed += 1
                    print(f"FAIL  {page.path} ({len(page.steps)} steps, {took:.1f}s)")
                    for failure in failures:
                        print(indent(failure))
                else:
                    passed += 1
                    note = f", {page.skipped} not run" if page.skipped else ""
                    print(f"ok    {page.path} ({len(page.steps)} steps{note}, {took:.1f}s)")
        finally:
            stop_group(gateway)
            gateway_log.close()
    print(f"docs: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
