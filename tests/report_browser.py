"""A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages, NUL-terminated, on file descriptors 3 and 4), with no client library: open a
Snakemake HTML report, read the text a reader sees (inside the frames that show a result too),
navigate it as its buttons do, and take screenshots.

Needs Debian's chromium (``scripts/install-chromium.sh``; ``make test`` runs it). Also a script:

    .venv/bin/python tests/report_browser.py results/report.html docs/figures

writes docs/figures/report_landing.png and report_table.png (the diversity table's page).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, width: int = 1400, height: int = 1000, timeout: float = 60):
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium not found: install Debian's chromium (scripts/install-chromium.sh)")
        self.timeout = timeout
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # above 9, so that the shell's redirections onto 3 and 4 cannot overwrite one another
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe"]
        flags += [
            "--disable-site-isolation-trials",
            "--disable-features=IsolateOrigins,site-per-process",
        ]  # frames in-page
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{high[0]} 4>&{high[1]} {high[0]}<&- {high[1]}>&-', "bash", binary]
            + flags
            + [f"--window-size={width},{height}", "about:blank"],
            pass_fds=high,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for fd in high:
            os.close(fd)
        self._buf, self._id, self.session = b"", 0, None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    # -- protocol -------------------------------------------------------------------------------
    def call(self, method: str, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        t0 = time.monotonic()
        while True:
            while b"\0" not in self._buf:
                if time.monotonic() - t0 > self.timeout:
                    raise TimeoutError(f"chromium did not answer {method} in {self.timeout}s")
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str, context_id: int | None = None):
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if context_id is not None:
            params["contextId"] = context_id
        out = self.call("Runtime.evaluate", **params)
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait_for(self, expression: str, what: str):
        t0 = time.monotonic()
        while not self.evaluate(expression):
            if time.monotonic() - t0 > self.timeout:
                raise TimeoutError(f"report: no {what} after {self.timeout}s")
            time.sleep(0.2)

    # -- a reader's actions ---------------------------------------------------------------------
    def open(self, path: Path) -> None:
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for("document.readyState === 'complete' && typeof app !== 'undefined'", "report app")
        time.sleep(0.5)  # React renders after load

    def text(self) -> str:
        return self.evaluate("document.body.innerText")

    def in_frames(self, expression: str) -> list:
        """``expression``'s value in every frame below the page (a result the report shows is a
        frame, with a data: URL of its own origin)."""
        tree = self.call("Page.getFrameTree")["frameTree"]
        out = []
        for child in tree.get("childFrames", []):
            frame_id = child["frame"]["id"]
            ctx = self.call("Page.createIsolatedWorld", frameId=frame_id, worldName="reader")["executionContextId"]
            out.append(self.evaluate(expression, ctx))
        return out

    def frame_texts(self) -> list[str]:
        return self.in_frames("document.body ? document.body.innerText : ''")

    def show_category(self, category: str) -> None:
        self.evaluate(f"app.showCategory({json.dumps(category)})")
        time.sleep(0.5)

    def show_result(self, result_path: str) -> None:
        """What a result's button does: show it (an HTML result in a frame)."""
        js = (
            f"(() => {{ const r = results[{json.dumps(result_path)}]; "
            "app.setView({content: r.mime_type === 'text/html' ? 'html' : 'img', contentPath: r.data_uri, "
            f"resultPath: {json.dumps(result_path)}}}); return true; }})()"
        )
        self.evaluate(js)
        self.wait_for("document.querySelector('main iframe, iframe, main img') !== null", f"frame of {result_path}")
        time.sleep(1.0)

    def screenshot(self, out: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(out).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
        os.close(self._w)
        os.close(self._r)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    report, outdir = Path(sys.argv[1]), Path(sys.argv[2])
    with Browser(height=1100) as b:
        b.open(report)
        b.screenshot(outdir / "report_landing.png")
        b.show_category("Diversity")
        b.show_result("results/report/table_diversity.html")
        b.screenshot(outdir / "report_table.png")
    print(f"wrote {outdir / 'report_landing.png'} and {outdir / 'report_table.png'}")
