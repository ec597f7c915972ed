"""End-to-end check of the pack inside a real ComfyUI.

Links this repository into ``<comfyui>/custom_nodes/ComfyUI-LandmarkTalk``, starts ComfyUI headless on
127.0.0.1 (a free port, ``--cpu`` by default, scratch input/output/user folders), waits for it, reads
``/object_info`` and checks the ``LandmarkTalk*`` nodes against the expected list, then stops the server.

    python scripts/comfy_e2e.py --comfyui-dir /path/to/ComfyUI --python /path/to/comfy-venv/bin/python

Without ``--comfyui-dir`` or ``COMFYUI_DIR`` it prints a skip message and exits 0. Exit codes: 0 passed or
skipped, 1 a check failed, 2 ComfyUI could not be set up or started. Standard library only.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
LINK_NAME = "ComfyUI-LandmarkTalk"
NODE_PREFIX = "LandmarkTalk"
MODELS_FOLDER = "landmarktalk"
LOOPBACK = "127.0.0.1"
# Log lines with which ComfyUI's custom-node loader reports a pack that failed to load.
_PACK_FAILURE_PATTERNS = ("IMPORT FAILED", "Cannot import", "Error while calling comfy_entrypoint", "Skip ")


class E2EError(RuntimeError):
    """ComfyUI could not be set up or started (exit code 2)."""


def expected_node_ids(pack_dir: Path = PACK_DIR) -> list[str]:
    """Every ``node_id="LandmarkTalk..."`` written in ``nodes/*.py``, read with ast (nothing is imported)."""
    found = set()
    for path in sorted((pack_dir / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "node_id"
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and node.value.value.startswith(NODE_PREFIX)
            ):
                found.add(node.value.value)
    return sorted(found)


def link_pack(comfyui_dir: Path, pack_dir: Path = PACK_DIR) -> Path:
    """Symlink the pack into custom_nodes (idempotent); refuse to touch anything that is not our link."""
    custom_nodes = comfyui_dir / "custom_nodes"
    if not (comfyui_dir / "main.py").is_file() or not custom_nodes.is_dir():
        raise E2EError(f"--comfyui-dir {comfyui_dir}: no main.py and custom_nodes/ there; point it at a ComfyUI checkout")
    link = custom_nodes / LINK_NAME
    if link.is_symlink():
        if link.resolve() == pack_dir.resolve():
            return link
        link.unlink()  # our link name pointing at another checkout: repoint it
    elif link.exists():
        if link.resolve() == pack_dir.resolve():
            return link
        raise E2EError(f"{link} exists and is not a link to {pack_dir}; move it away and rerun")
    link.symlink_to(pack_dir.resolve(), target_is_directory=True)
    return link


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def fetch_json(base_url: str, route: str, payload: dict | None = None, timeout_s: float = 30.0):
    """GET (or POST ``payload`` as JSON) ``route`` and decode the JSON answer; HTTP errors keep their body."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(base_url + route, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        raise RuntimeError(f"{route}: HTTP {exc.code}: {body[:2000].decode('utf-8', 'replace')}") from exc
    return json.loads(body) if body else None


class ComfyServer:
    """A ComfyUI process on 127.0.0.1 with its own scratch folders; a context manager that always stops it."""

    def __init__(self, comfyui_dir: Path, python: str, work_dir: Path, device: str = "cpu", port: int | None = None):
        self.comfyui_dir = comfyui_dir
        self.python = python
        self.work_dir = work_dir
        self.device = device
        self.port = port or find_free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = work_dir / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self._log_file = None

    def command(self) -> list[str]:
        cmd = [self.python, "main.py", "--listen", LOOPBACK, "--port", str(self.port), "--disable-auto-launch",
               "--disable-api-nodes", "--database-url", "sqlite:///:memory:"]
        for flag, name in (("--input-directory", "input"), ("--output-directory", "output"),
                           ("--temp-directory", "temp"), ("--user-directory", "user")):
            (self.work_dir / name).mkdir(parents=True, exist_ok=True)
            cmd += [flag, str(self.work_dir / name)]
        if self.device == "cpu":
            cmd.append("--cpu")
        return cmd

    def start(self, timeout_s: float) -> None:
        self._log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), cwd=self.comfyui_dir, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise E2EError(f"ComfyUI exited with code {self.process.returncode} while starting; log:\n{self.log_tail()}")
            try:
                fetch_json(self.base_url, "/system_stats", timeout_s=5.0)
                return
            except (OSError, RuntimeError):
                time.sleep(1.0)
        raise E2EError(f"ComfyUI did not answer on {self.base_url} within {timeout_s:.0f} s; log:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            # Ctrl-C is ComfyUI's own clean shutdown path; escalate only if it hangs.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                self.process.send_signal(sig)
                try:
                    self.process.wait(timeout=timeout_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(_strip_ansi(self.log_text()).splitlines()[-lines:])

    def __enter__(self) -> ComfyServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def pack_log_lines(log_text: str) -> list[str]:
    """The server log lines that mention the pack (its import time, warnings, tracebacks' last line)."""
    return [line for line in _strip_ansi(log_text).splitlines() if LINK_NAME in line or NODE_PREFIX in line]


def check_node_schema(node_id: str, info: dict) -> list[str]:
    """STYLE.md §4 rules that /object_info can show: category, description, a tooltip on every input."""
    problems = []
    if not str(info.get("category", "")).startswith(f"{NODE_PREFIX}/"):
        problems.append(f"{node_id}: category {info.get('category')!r} is not under '{NODE_PREFIX}/'")
    if not info.get("description"):
        problems.append(f"{node_id}: no description")
    for section in ("required", "optional"):
        for input_id, spec in (info.get("input", {}).get(section) or {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if not options.get("tooltip"):
                problems.append(f"{node_id}: input {input_id!r} has no tooltip")
    return problems


def check_pack(server: ComfyServer, expected: list[str] | None, strict: bool) -> list[str]:
    """Run the checks against a started server; return the failures (empty when all passed)."""
    failures = []
    pack_lines = pack_log_lines(server.log_text())
    print("pack lines in the server log:")
    for line in pack_lines:
        print(f"  {line}")
    failures += [f"log: {line}" for line in pack_lines if any(p in line for p in _PACK_FAILURE_PATTERNS)]

    folders = fetch_json(server.base_url, "/api/experiment/models")
    if not any(folder.get("name") == MODELS_FOLDER for folder in folders):
        failures.append(f"/api/experiment/models has no '{MODELS_FOLDER}' folder: the entry point did not register it")
    else:
        folder = next(f for f in folders if f.get("name") == MODELS_FOLDER)
        print(f"models folder: {folder}")

    object_info = fetch_json(server.base_url, "/object_info", timeout_s=120.0)
    registered = sorted(node_id for node_id in object_info if node_id.startswith(NODE_PREFIX))
    print(f"/object_info: {len(object_info)} nodes, {len(registered)} {NODE_PREFIX}* nodes: {registered}")
    if expected is not None:
        print(f"expected {len(expected)} nodes: {expected}")
        missing = sorted(set(expected) - set(registered))
        unexpected = sorted(set(registered) - set(expected))
        if missing:
            failures.append(f"nodes not registered: {missing} (see the pack lines above for the import error)")
        if unexpected:
            failures.append(f"nodes registered but not expected: {unexpected}")
    style_problems = [p for node_id in registered for p in check_node_schema(node_id, object_info[node_id])]
    for problem in style_problems:
        print(f"style: {problem}")
    if strict:
        failures += style_problems
    return failures


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"),
                        help="ComfyUI checkout (default: $COMFYUI_DIR); without it the run is skipped")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable),
                        help="Python of ComfyUI's environment (default: $COMFYUI_PYTHON or this Python)")
    parser.add_argument("--expect", action="append", metavar="NODE_ID",
                        help="expected node id (repeatable); default: every node_id written in nodes/*.py")
    parser.add_argument("--device", choices=("cpu", "auto"), default="cpu",
                        help="cpu passes --cpu to ComfyUI; auto lets it pick the GPU")
    parser.add_argument("--start-timeout", type=float, default=240.0, help="seconds to wait for the server")
    parser.add_argument("--strict", action="store_true", help="fail on style problems (category, tooltips)")
    parser.add_argument("--keep-dir", action="store_true", help="keep the scratch folder (log, outputs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if not args.comfyui_dir:
        print("skipped: COMFYUI_DIR not set (give --comfyui-dir or set COMFYUI_DIR to a ComfyUI checkout)")
        return 0
    comfyui_dir = Path(args.comfyui_dir).expanduser().resolve()
    expected = args.expect if args.expect is not None else expected_node_ids()
    work_dir = Path(tempfile.mkdtemp(prefix="comfy_e2e_"))
    try:
        link = link_pack(comfyui_dir)
        print(f"pack linked: {link} -> {os.readlink(link) if link.is_symlink() else link}")
        with ComfyServer(comfyui_dir, args.python, work_dir, device=args.device) as server:
            print(f"starting: {' '.join(server.command())}")
            started = time.monotonic()
            server.start(args.start_timeout)
            print(f"ComfyUI answered on {server.base_url} after {time.monotonic() - started:.1f} s")
            try:
                failures = check_pack(server, expected, args.strict)
            except (RuntimeError, OSError, ValueError) as exc:  # a route failed or answered non-JSON
                failures = [f"{type(exc).__name__}: {exc}"]
            if failures:
                print(f"server log tail:\n{server.log_tail()}")
        print(f"server stopped (exit code {server.process.returncode})")
    except E2EError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep_dir:
            print(f"scratch folder kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    for failure in failures:
        print(f"FAILED: {failure}")
    print("e2e: passed" if not failures else f"e2e: {len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
