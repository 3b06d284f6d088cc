"""Drift check: the deployment files must agree with the gateway they deploy.

Run by deploy/check.sh as `python drift.py REPO RENDERED_DIR GATEWAY_BIN PUBLISH_BIN`.

What is compared, and with what:
- every GATEWAY_* name in deploy/ and k8s/ (comments included) against the `[env: ...]`
  names of `sse-gateway --help` and `sse-gateway mint-token --help`;
- every --flag given to `sse-gateway` or `sse-publish` on a command line in deploy/,
  k8s/ or docs/operations.md, and in the args/command of gateway containers (rendered
  manifests, compose), against the --help of that binary and subcommand;
- probes, ports and the drain budget in the rendered manifests against the contract
  (/healthz, /readyz on 8080; /metrics on 9090; grace > drain timeout + preStop sleep);
- the Dockerfile against the workspace (every member's manifest copied for the fetch
  layer, Rust image new enough for the locked dependencies) and the images' defaults;
- docs/configuration.md against the --help of `sse-gateway` (serve and mint-token) and
  `sse-publish` (and its subcommands), both ways: every flag has its row (or, for the
  subcommands of sse-publish, its mention) with the same environment variable, and every
  flag and variable the page names is one a binary has;
- the metrics table of docs/operations.md against what a real gateway exports (started on
  ephemeral loopback ports, every labelled family preset at start), both ways: every
  `sse_gateway_*` family has a row and every row a family, every label value is listed in
  its row and every value listed is one the gateway emits (in a row of a labelled family,
  each backticked lowercase word of the second column is read as a label value).
Prints nothing and exits 0 when all agree; otherwise one line per disagreement, exit 1.
"""

from __future__ import annotations

import json
import shutil
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import yaml

HTTP_PORT = 8080
METRICS_PORT = 9090
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"
# Read by the gateway outside its flag parser (the log filter); configuration.md names it.
ENV_OUTSIDE_FLAGS = {"GATEWAY_LOG"}
# Every binary has these; no page needs a row for them.
STANDARD_FLAGS = {"--help", "--version"}
STARTUP_SECONDS = 15
SECRET = "drift-check-secret-not-used-anywhere-0123456789"
# The gateway's own default (--drain-timeout), used when a manifest does not set it.
DEFAULT_DRAIN_SECONDS = 30.0
# Tooling, not deployment configuration: it quotes names to look for, not to use.
NOT_SCANNED = {Path("deploy/checks"), Path("deploy/check.sh")}

problems: list[str] = []


def problem(text: str) -> None:
    problems.append(text)


def run_help(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def help_option_flags(text: str) -> set[str]:
    """Long options declared in an `Options:` block (the first token(s) of each line)."""
    flags = set()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            head = stripped.split("  ")[0]
            flags.update(re.findall(r"--[a-z0-9][a-z0-9-]*", head))
    return flags


def help_env(text: str) -> set[str]:
    return set(re.findall(r"\[env: (GATEWAY_[A-Z0-9_]+)", text))


def help_options(text: str) -> dict[str, set[str]]:
    """Each long option of an `Options:` block with the environment variables it reads."""
    options: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"\s+(?:-\w, )?(--[a-z0-9][a-z0-9-]*)", line)
        if match:
            current = match.group(1)
            options[current] = set()
        elif not line.strip() or not line.startswith(" "):
            current = None
        if current:
            options[current].update(re.findall(r"\[env: ([A-Z][A-Z0-9_]*)", line))
    return {flag: env for flag, env in options.items() if flag not in STANDARD_FLAGS}


def help_subcommands(text: str) -> list[str]:
    """The names under `Commands:` (without `help`)."""
    block = text.split("Commands:", 1)[1].split("\n\n", 1)[0] if "Commands:" in text else ""
    return [m for m in re.findall(r"^  ([a-z][a-z0-9-]*)\s", block, re.M) if m != "help"]


def seconds(value: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value)
    if not match:
        raise ValueError(f"cannot read the duration {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def scanned_files(repo: Path) -> list[Path]:
    files = []
    for top in ("deploy", "k8s"):
        for path in sorted((repo / top).rglob("*")):
            rel = path.relative_to(repo)
            if not path.is_file() or any(rel == n or n in rel.parents for n in NOT_SCANNED):
                continue
            files.append(path)
    operations = repo / "docs" / "operations.md"
    if operations.is_file():
        files.append(operations)
    return files


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with shell continuations (trailing backslash) joined."""
    out, buffer, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not buffer:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        out.append((start, buffer + line))
        buffer = ""
    if buffer:
        out.append((start, buffer))
    return out


class Cli:
    """The flags each binary and subcommand accepts, read from their --help."""

    def __init__(self, gateway: str, publish: str) -> None:
        serve_help = run_help(gateway, "--help")
        mint_help = run_help(gateway, "mint-token", "--help")
        self.gateway_serve = help_option_flags(serve_help)
        self.gateway_mint = help_option_flags(mint_help)
        self.env = help_env(serve_help) | help_env(mint_help)
        publish_help = run_help(publish, "--help")
        self.publish_top = help_option_flags(publish_help)
        self.publish_sub = {
            sub: help_option_flags(run_help(publish, sub, "--help"))
            for sub in help_subcommands(publish_help)
        }
        # Flag -> environment variables, per command, for the configuration page.
        self.serve_options = help_options(serve_help)
        self.serve_subcommand_options = help_options(run_help(gateway, "serve", "--help"))
        self.mint_options = help_options(mint_help)
        self.publish_options = help_options(publish_help)
        self.publish_sub_options = {
            sub: help_options(run_help(publish, sub, "--help")) for sub in self.publish_sub
        }


def flags_of(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if re.fullmatch(r"--[a-z0-9][a-z0-9-]*(=.*)?", t)]


SEPARATORS = re.compile(r"\s(?:\||;|&&|\|\||#)\s|[`)]|\$\(")
INVOCATION = re.compile(r"(?:^|(?<=[\s\"'/=(]))(sse-gateway|sse-publish)(?=\s|$)")


def check_command_lines(cli: Cli, path: Path, rel: Path) -> None:
    for number, line in logical_lines(path.read_text(errors="replace")):
        for match in INVOCATION.finditer(line):
            rest = SEPARATORS.split(line[match.end():], maxsplit=1)[0]
            tokens = [t.strip("\"'`,[]") for t in rest.split()]
            where = f"{rel}:{number}"
            if match.group(1) == "sse-gateway":
                if tokens and tokens[0] == "mint-token":
                    allowed, used = cli.gateway_mint, flags_of(tokens[1:])
                elif tokens and tokens[0] == "serve":
                    allowed, used = cli.gateway_serve, flags_of(tokens[1:])
                elif not tokens or tokens[0].startswith("--"):
                    allowed, used = cli.gateway_serve, flags_of(tokens)
                else:
                    continue  # a name, not a command (kubectl -n sse-gateway get ...)
                for flag in used:
                    if flag not in allowed:
                        problem(f"{where}: sse-gateway does not accept {flag}")
            else:
                sub_index = next((i for i, t in enumerate(tokens) if t in cli.publish_sub), None)
                if sub_index is None:
                    if tokens and not tokens[0].startswith("--"):
                        continue
                    top, sub, allowed_sub = tokens, [], set()
                else:
                    top, sub = tokens[:sub_index], tokens[sub_index + 1:]
                    allowed_sub = cli.publish_sub[tokens[sub_index]]
                for flag in flags_of(top):
                    if flag not in cli.publish_top:
                        problem(f"{where}: sse-publish does not accept {flag}")
                for flag in flags_of(sub):
                    if flag not in allowed_sub:
                        problem(f"{where}: sse-publish {tokens[sub_index]} does not accept {flag}")


def check_env_names(cli: Cli, path: Path, rel: Path) -> None:
    if path.suffix == ".md":
        return  # prose may name variables read outside the flag parser (GATEWAY_LOG)
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        for name in re.findall(r"(?<![A-Za-z0-9_])GATEWAY_[A-Z][A-Z0-9_]*", line):
            if name not in cli.env:
                problem(f"{rel}:{number}: the gateway reads no variable {name}")


def load_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def port_number(container: dict, port: object) -> object:
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return declared.get("containerPort")
    return port


def check_rendered(cli: Cli, rendered: Path) -> None:
    files = sorted(rendered.glob("*.yaml"))
    if not files:
        problem(f"no rendered manifests in {rendered}")
    for path in files:
        docs = load_documents(path)
        where = path.name
        by_kind: dict[str, list[dict]] = {}
        for doc in docs:
            by_kind.setdefault(doc.get("kind", ""), []).append(doc)
        gateways = [
            d for d in by_kind.get("Deployment", [])
            if any("sse-gateway" in c.get("image", "") for c in d["spec"]["template"]["spec"]["containers"])
        ]
        if len(gateways) != 1:
            problem(f"{where}: expected one gateway Deployment, found {len(gateways)}")
            continue
        deployment = gateways[0]
        pod = deployment["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if "sse-gateway" in c.get("image", ""))
        pod_labels = deployment["spec"]["template"]["metadata"].get("labels", {})

        for key in ("command", "args"):
            for flag in flags_of([str(a) for a in container.get(key, [])]):
                if flag not in cli.gateway_serve:
                    problem(f"{where}: container {key} has {flag}, which sse-gateway does not accept")

        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
        if ports.get("http") != HTTP_PORT or ports.get("metrics") != METRICS_PORT:
            problem(f"{where}: container ports {ports} are not http={HTTP_PORT}, metrics={METRICS_PORT}")
        for probe, path_expected in (
            ("startupProbe", LIVENESS_PATH),
            ("livenessProbe", LIVENESS_PATH),
            ("readinessProbe", READINESS_PATH),
        ):
            get = container.get(probe, {}).get("httpGet")
            if not get:
                problem(f"{where}: {probe} is not an HTTP GET")
                continue
            if get.get("path") != path_expected or port_number(container, get.get("port")) != HTTP_PORT:
                problem(f"{where}: {probe} is {get.get('path')} on {get.get('port')}, "
                        f"expected {path_expected} on {HTTP_PORT}")

        # Settings: the ConfigMap(s) the container reads, then its own env.
        settings: dict[str, str] = {}
        config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
        for source in container.get("envFrom", []):
            name = source.get("configMapRef", {}).get("name")
            if name is not None:
                if name not in config_maps:
                    problem(f"{where}: envFrom names ConfigMap {name}, which is not rendered")
                settings.update(config_maps.get(name, {}))
        for entry in container.get("env", []):
            if "value" in entry:
                settings[entry["name"]] = entry["value"]
        for name in settings:
            if name.startswith("GATEWAY_") and name not in cli.env:
                problem(f"{where}: the gateway reads no variable {name}")
        if not settings.get("GATEWAY_LISTEN", "").endswith(f":{HTTP_PORT}"):
            problem(f"{where}: GATEWAY_LISTEN is not on port {HTTP_PORT}")
        if not settings.get("GATEWAY_METRICS_LISTEN", "").endswith(f":{METRICS_PORT}"):
            problem(f"{where}: GATEWAY_METRICS_LISTEN is not on port {METRICS_PORT}")
        if settings.get("GATEWAY_LOG_FORMAT") not in ("json", "text"):
            problem(f"{where}: GATEWAY_LOG_FORMAT is not json or text")

        drain = seconds(settings.get("GATEWAY_DRAIN_TIMEOUT", f"{DEFAULT_DRAIN_SECONDS}s"))
        sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
        if not isinstance(sleep, int):
            problem(f"{where}: no preStop sleep action")
            sleep = 0
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if not grace > drain + sleep:
            problem(f"{where}: terminationGracePeriodSeconds {grace} is not above "
                    f"drain timeout {drain:g}s + preStop sleep {sleep}s")

        services = [s for s in by_kind.get("Service", [])
                    if all(pod_labels.get(k) == v for k, v in s["spec"].get("selector", {}).items())]
        if len(services) != 1:
            problem(f"{where}: expected one Service selecting the gateway pods, found {len(services)}")
            continue
        service = services[0]
        service_ports = {p["name"]: p for p in service["spec"]["ports"]}
        for name, number in (("http", HTTP_PORT), ("metrics", METRICS_PORT)):
            declared = service_ports.get(name)
            if not declared or port_number(container, declared.get("targetPort", declared.get("port"))) != number:
                problem(f"{where}: Service port {name} does not reach container port {number}")

        for ingress in by_kind.get("Ingress", []):
            for rule in ingress["spec"].get("rules", []):
                for http_path in rule.get("http", {}).get("paths", []):
                    backend = http_path["backend"]["service"]
                    port = backend["port"].get("name") or backend["port"].get("number")
                    if backend["name"] != service["metadata"]["name"] or port not in ("http", HTTP_PORT):
                        problem(f"{where}: Ingress backend {backend} is not the gateway's http port")

        for monitor in by_kind.get("ServiceMonitor", []):
            selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
            labels = service["metadata"].get("labels", {})
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                problem(f"{where}: ServiceMonitor selector {selector} does not select the gateway Service")
            for endpoint in monitor["spec"].get("endpoints", []):
                if endpoint.get("port") != "metrics" or endpoint.get("path", METRICS_PATH) != METRICS_PATH:
                    problem(f"{where}: ServiceMonitor endpoint {endpoint} is not metrics{METRICS_PATH}")
        if not by_kind.get("ServiceMonitor"):
            problem(f"{where}: no ServiceMonitor")

        for policy in by_kind.get("NetworkPolicy", []):
            selector = policy["spec"]["podSelector"].get("matchLabels", {})
            if any(pod_labels.get(k) != v for k, v in selector.items()):
                continue
            opened = {p.get("port") for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}
            if opened != {HTTP_PORT, METRICS_PORT}:
                problem(f"{where}: NetworkPolicy {policy['metadata']['name']} opens {opened}, "
                        f"expected {HTTP_PORT} and {METRICS_PORT}")

        for hpa in by_kind.get("HorizontalPodAutoscaler", []):
            if hpa["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"]:
                problem(f"{where}: HorizontalPodAutoscaler does not target the gateway Deployment")
        for pdb in by_kind.get("PodDisruptionBudget", []):
            selector = pdb["spec"]["selector"].get("matchLabels", {})
            if any(pod_labels.get(k) != v for k, v in selector.items()):
                problem(f"{where}: PodDisruptionBudget does not select the gateway pods")


def check_compose(cli: Cli, repo: Path) -> None:
    compose = yaml.safe_load((repo / "deploy/compose.yaml").read_text())
    for name, service in compose["services"].items():
        build = service.get("build") or {}
        is_gateway = (isinstance(build, dict) and build.get("target") == "runtime") or str(
            service.get("image", "")).startswith("sse-gateway:")
        if not is_gateway:
            continue
        command = service.get("command", [])
        tokens = command.split() if isinstance(command, str) else [str(t) for t in command]
        for flag in flags_of(tokens):
            if flag not in cli.gateway_serve:
                problem(f"deploy/compose.yaml: service {name} passes {flag}, which sse-gateway does not accept")
        for key in service.get("environment", {}) or {}:
            if key.startswith("GATEWAY_") and key not in cli.env:
                problem(f"deploy/compose.yaml: service {name} sets {key}, which the gateway does not read")
        grace = seconds(service.get("stop_grace_period", "10s"))
        drain = seconds((service.get("environment") or {}).get("GATEWAY_DRAIN_TIMEOUT", "30s"))
        if not grace > drain:
            problem(f"deploy/compose.yaml: stop_grace_period of {name} is not above its drain timeout")
    conf = (repo / "deploy/nginx/compose.conf").read_text()
    if f"server gateway:{HTTP_PORT}" not in conf:
        problem(f"deploy/nginx/compose.conf: upstream is not gateway:{HTTP_PORT}")


def check_lb_configs(repo: Path) -> None:
    haproxy = (repo / "deploy/haproxy/haproxy.cfg").read_text()
    if not re.search(rf"http-check send meth GET uri {READINESS_PATH}\b", haproxy):
        problem(f"deploy/haproxy/haproxy.cfg: the health check is not GET {READINESS_PATH}")
    for path in scanned_files(repo):
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for probe in re.findall(r"(?<![\w.-])/[a-z]*(?:health|ready|live)[a-z]*\b", line):
                if probe not in (LIVENESS_PATH, READINESS_PATH):
                    problem(f"{path.relative_to(repo)}:{number}: {probe} is not a gateway probe path")


def check_dockerfile(repo: Path) -> None:
    text = (repo / "deploy/Dockerfile").read_text()
    members = tomllib.loads((repo / "Cargo.toml").read_text())["workspace"]["members"]
    ignored = {line.strip().rstrip("/") for line in (repo / ".dockerignore").read_text().splitlines()}
    for member in members:
        if not re.search(rf"^COPY {re.escape(member)}/Cargo.toml ", text, re.M):
            problem(f"deploy/Dockerfile: workspace member {member} has no `COPY {member}/Cargo.toml` "
                    "for the dependency layer")
        if member in ignored:
            problem(f".dockerignore: excludes workspace member {member}")
    runtime = text.split(" AS runtime", 1)[-1]
    for expected in (f"GATEWAY_LISTEN=0.0.0.0:{HTTP_PORT}", f"GATEWAY_METRICS_LISTEN=0.0.0.0:{METRICS_PORT}",
                     "GATEWAY_LOG_FORMAT=json", f"EXPOSE {HTTP_PORT} {METRICS_PORT}"):
        if expected not in runtime:
            problem(f"deploy/Dockerfile: the runtime stage lacks {expected}")
    match = re.search(r"^ARG RUST_VERSION=(\d+)\.(\d+)", text, re.M)
    if not match:
        problem("deploy/Dockerfile: no `ARG RUST_VERSION=<major>.<minor>`")
        return
    image = (int(match.group(1)), int(match.group(2)))
    metadata = json.loads(subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1"],
        cwd=repo, check=True, capture_output=True, text=True, timeout=300).stdout)
    needed, by = (0, 0), "nothing"
    for package in metadata["packages"]:
        version = package.get("rust_version")
        if version:
            parts = tuple(int(p) for p in version.split(".")[:2])
            if parts > needed:
                needed, by = parts, f"{package['name']} {package['version']}"
    if image < needed:
        problem(f"deploy/Dockerfile: RUST_VERSION {image[0]}.{image[1]} is older than the "
                f"{needed[0]}.{needed[1]} that {by} needs")


def markdown_sections(text: str) -> dict[str, list[tuple[int, str]]]:
    """`## ` headings -> their lines (with line numbers)."""
    sections: dict[str, list[tuple[int, str]]] = {}
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            current = line[3:].strip()
        sections.setdefault(current, []).append((number, line))
    return sections


def table_rows(lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """The body rows of the Markdown tables among `lines`, as cells."""
    rows = []
    for number, line in lines:
        if not line.startswith("|") or re.fullmatch(r"[|\s:-]+", line):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in ("flag", "metric"):
            continue
        rows.append((number, cells))
    return rows


def long_flags(text: str) -> list[str]:
    return re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", text)


def check_configuration_doc(cli: Cli, repo: Path) -> None:
    """docs/configuration.md against every binary's --help, both ways."""
    rel = "docs/configuration.md"
    text = (repo / rel).read_text()
    sections = markdown_sections(text)

    def section(title: str) -> list[tuple[int, str]]:
        found = [lines for name, lines in sections.items() if name.startswith(title)]
        if not found:
            problem(f"{rel}: no section {title!r}")
            return []
        return found[0]

    # sse-gateway (serve): one row per flag, its variable in the env column.
    if cli.serve_subcommand_options != cli.serve_options:
        problem("sse-gateway serve --help and sse-gateway --help list different options")
    rows: dict[str, tuple[int, set[str]]] = {}
    for number, cells in table_rows(section("`sse-gateway` (serve)")):
        for flag in long_flags(cells[0]):
            rows[flag] = (number, set(re.findall(r"[A-Z][A-Z0-9_]+", cells[1] if len(cells) > 1 else "")))
    for flag, env in sorted(cli.serve_options.items()):
        if flag not in rows:
            problem(f"{rel}: sse-gateway {flag} ({', '.join(sorted(env)) or 'no variable'}) has no row")
        elif rows[flag][1] != env:
            problem(f"{rel}:{rows[flag][0]}: {flag} reads {sorted(env)}, the row says {sorted(rows[flag][1])}")
    for flag, (number, _) in sorted(rows.items()):
        if flag not in cli.serve_options:
            problem(f"{rel}:{number}: a row for {flag}, which sse-gateway does not accept")

    # sse-gateway mint-token: every flag in the table, every variable named in the section.
    mint = section("`sse-gateway mint-token`")
    mint_rows = {flag: number for number, cells in table_rows(mint) for flag in long_flags(cells[0])}
    mint_text = "\n".join(line for _, line in mint)
    for flag, env in sorted(cli.mint_options.items()):
        if flag not in mint_rows:
            problem(f"{rel}: sse-gateway mint-token {flag} has no row")
        for name in sorted(env):
            if name not in mint_text:
                problem(f"{rel}: sse-gateway mint-token {flag} reads {name}, which its section does not name")
    for flag, number in sorted(mint_rows.items()):
        if flag not in cli.mint_options:
            problem(f"{rel}:{number}: a row for {flag}, which sse-gateway mint-token does not accept")

    # sse-publish: its own flags in the table, the subcommands' flags at least named.
    publish = section("`sse-publish`")
    publish_rows = {}
    for number, cells in table_rows(publish):
        for flag in long_flags(cells[0]):
            publish_rows[flag] = (number, set(re.findall(r"[A-Z][A-Z0-9_]+", cells[1] if len(cells) > 1 else "")))
    for flag, env in sorted(cli.publish_options.items()):
        if flag not in publish_rows:
            problem(f"{rel}: sse-publish {flag} has no row")
        elif publish_rows[flag][1] != env:
            problem(f"{rel}:{publish_rows[flag][0]}: sse-publish {flag} reads {sorted(env)}, "
                    f"the row says {sorted(publish_rows[flag][1])}")
    publish_text = "\n".join(line for _, line in publish)
    named = set(long_flags(publish_text))
    for sub, options in sorted(cli.publish_sub_options.items()):
        if not re.search(rf"`{sub}\b", publish_text):
            problem(f"{rel}: the sse-publish command {sub} is not named")
        for flag in sorted(set(options) - set(cli.publish_options)):
            if flag not in named:
                problem(f"{rel}: sse-publish {sub} {flag} is not named")
    publish_all = set(cli.publish_options).union(*cli.publish_sub_options.values())
    for flag, (number, _) in sorted(publish_rows.items()):
        if flag not in publish_all:
            problem(f"{rel}:{number}: a row for {flag}, which sse-publish does not accept")

    # Anywhere on the page: a flag is one of some binary's, a variable one that is read.
    known_flags = (set(cli.serve_options) | set(cli.mint_options) | publish_all | STANDARD_FLAGS)
    known_env = set(ENV_OUTSIDE_FLAGS)
    for options in [cli.serve_options, cli.mint_options, cli.publish_options,
                    *cli.publish_sub_options.values()]:
        for env in options.values():
            known_env |= env
    for number, line in enumerate(text.splitlines(), 1):
        for flag in long_flags(line):
            if flag not in known_flags:
                problem(f"{rel}:{number}: {flag} is not a flag of sse-gateway or sse-publish")
        for name in re.findall(r"(?<![A-Za-z0-9_])(?:GATEWAY|SSE)_[A-Z][A-Z0-9_]*", line):
            if name not in known_env:
                problem(f"{rel}:{number}: no binary reads {name}")


def exported_metrics(gateway: str) -> str:
    """The /metrics text of a fresh gateway (embedded broker, ephemeral loopback ports),
    serving HTTPS with a throwaway self-signed certificate: the TLS families are exported
    only by a node with --tls-cert, and the table documents them too."""
    work = Path(tempfile.mkdtemp(prefix="drift-tls-"))
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    process = subprocess.Popen(
        [gateway, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--log-format", "json", "--jwt-secret", SECRET, "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={"PATH": "/usr/bin:/bin"},
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            try:
                fields = json.loads(line).get("fields", {})
            except json.JSONDecodeError:
                continue
            if fields.get("message") == "listening":
                url = f"http://{fields['metrics_addr']}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    return response.read().decode()
        problem("the gateway did not log its listening addresses")
        return ""
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(work, ignore_errors=True)


def check_metrics_doc(gateway: str, repo: Path) -> None:
    """The metrics table of docs/operations.md against a real gateway's /metrics."""
    rel = "docs/operations.md"
    exposition = exported_metrics(gateway)
    if not exposition:
        return
    families = dict(re.findall(r"^# TYPE (sse_gateway_[a-z0-9_]+) (\w+)", exposition, re.M))
    values: dict[str, set[str]] = {name: set() for name in families}
    for family, labels in re.findall(r"^(sse_gateway_[a-z0-9_]+)\{([^}]*)\}", exposition, re.M):
        base = re.sub(r"_(bucket|sum|count)$", "", family) if family not in families else family
        for label, value in re.findall(r'(\w+)="([^"]*)"', labels):
            if label != "le":
                values.setdefault(base, set()).add(value)
    table = markdown_sections((repo / rel).read_text()).get("Metrics", [])
    documented: dict[str, int] = {}
    for number, cells in table_rows(table):
        if len(cells) < 2:
            continue
        names = re.findall(r"`(sse_gateway_[a-z0-9_]+)(?:\{[a-z_,]+\})?`", cells[0])
        listed = set(re.findall(r"`([a-z][a-z0-9_]*)`", cells[1]))
        for name in names:
            documented[name] = number
            emitted = values.get(name, set())
            for value in sorted(emitted - listed):
                problem(f"{rel}:{number}: {name} emits the label value {value!r}, which its row does not list")
            if emitted:
                for value in sorted(listed - emitted):
                    problem(f"{rel}:{number}: {name} never emits the label value {value!r} its row lists")
    if not documented:
        problem(f"{rel}: no metrics table under '## Metrics'")
    for name in sorted(set(families) - set(documented)):
        problem(f"{rel}: the gateway exports {name} ({families[name]}), which the metrics table lacks")
    for name, number in sorted(documented.items()):
        if name not in families:
            problem(f"{rel}:{number}: {name} is in the metrics table but the gateway does not export it")


def main() -> int:
    repo, rendered, gateway, publish = (Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    cli = Cli(gateway, publish)
    if not cli.env or not cli.gateway_serve:
        problem("could not read the gateway's flags from its --help")
    for path in scanned_files(repo):
        rel = path.relative_to(repo)
        check_command_lines(cli, path, rel)
        check_env_names(cli, path, rel)
    check_rendered(cli, rendered)
    check_compose(cli, repo)
    check_lb_configs(repo)
    check_dockerfile(repo)
    check_configuration_doc(cli, repo)
    check_metrics_doc(gateway, repo)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
