"""A real ComfyUI server for tests (and the demo): started on 127.0.0.1 with this pack, stopped by PID.

Recipe: ../shared/spec/comfyui_host_ci.md §3 (base directory with the pack symlinked into custom_nodes, in-memory
database, API nodes off). Client helpers use only the standard library.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import comfy_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """ComfyUI `main.py` (0.3.75 or 0.7.0) in a subprocess with `base_dir` as its base directory.

    Args:
        base_dir: gets custom_nodes/<pack> (symlink to this repository), models/, input/, output/.
        python: interpreter of the host venv (default: the running one).
        cpu: start ComfyUI with --cpu (the tests; the headless runner passes False when torch sees a GPU).
    """

    def __init__(self, base_dir: str, python: str | None = None, pack_name: str = "musev_nodes", cpu: bool = True):
        self.base_dir = base_dir
        self.cpu = cpu
        self.python = python or sys.executable
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(base_dir, "server.log")
        self.process: subprocess.Popen | None = None
        nodes_dir = os.path.join(base_dir, "custom_nodes")
        os.makedirs(nodes_dir, exist_ok=True)
        link = os.path.join(nodes_dir, pack_name)
        if not os.path.islink(link):
            os.symlink(comfy_env.REPO, link)

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        comfy = comfy_env.comfy_dir()
        if comfy is None:
            raise RuntimeError("COMFYUI_DIR is not set")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [self.python, "main.py"] + (["--cpu"] if self.cpu else []) +
            ["--listen", "127.0.0.1", "--port", str(self.port), "--base-directory", self.base_dir,
             "--database-url", "sqlite:///:memory:", "--disable-api-nodes", "--preview-method", "none"],
            cwd=comfy, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    # HTTP API
    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return r.read()

    def get_json(self, path: str):
        return json.loads(self.get(path))

    def post(self, path: str, body: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, (json.loads(text) if text else None)

    def queue(self, prompt: dict):
        """POST /prompt -> (status, body)."""
        return self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """History entry of a finished prompt (success or error)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            if prompt_id in history:
                return history[prompt_id]
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        status, body = self.queue(prompt)
        if status != 200:
            raise AssertionError(f"/prompt refused the prompt ({status}): {json.dumps(body)[:2000]}")
        return self.wait(body["prompt_id"], timeout)

    def upload_image(self, path: str) -> str:
        """POST /upload/image (multipart) -> the name to put in LoadImage."""
        boundary = uuid.uuid4().hex
        name = os.path.basename(path)
        with open(path, "rb") as f:
            data = f.read()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + \
               f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(self.url + "/upload/image", data=body,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())["name"]

    def view(self, item: dict) -> bytes:
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        return self.get("/view?" + query)


def saved_files(history: dict) -> list[dict]:
    """Every file item (images/videos) in a history entry's outputs."""
    items = []
    for output in history.get("outputs", {}).values():
        for key in ("images", "videos", "gifs"):
            items.extend(output.get(key, []))
    return items


def error_message(history: dict) -> str | None:
    for event, data in history.get("status", {}).get("messages", []):
        if event == "execution_error":
            return data.get("exception_message")
    return None
