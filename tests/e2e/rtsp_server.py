"""A tiny RTSP test server, plus the helper that runs it from pytest.

Run as a script with Debian's ``/usr/bin/python3``: GstRtspServer's bindings (python3-gi,
gir1.2-gst-rtsp-server-1.0) exist only for that interpreter, not for the project venv, so the
server is always a separate process. That is also what the tests want: killing the process is a
real camera/network failure as the client sees it.

    /usr/bin/python3 tests/e2e/rtsp_server.py --port 8554 --video clip.mp4   # loops the file
    /usr/bin/python3 tests/e2e/rtsp_server.py --port 8554                    # videotestsrc

It serves ``rtsp://127.0.0.1:PORT/stream`` (H.264, a key frame every second so a client that
(re)connects gets a picture quickly) and prints ``READY <url>`` once it listens.

A looping file is decoded by a private pipeline per client (appsink) and pushed through an
appsrc with fresh timestamps; seeking back to the start on EOS there is simple, whereas looping
inside an RTSP media pipeline is not (the media owns its bus and ends the stream on EOS).

The pytest side (`RtspServer`, `rtsp_unavailable_reason`) uses only the standard library, so this
file imports ``gi`` inside `main()` only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).resolve()
APT_PACKAGES = (
    "gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav"
)
_PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "missing = [e for e in ('x264enc', 'rtph264pay', 'decodebin', 'videotestsrc', 'appsrc') "
    "if Gst.ElementFactory.find(e) is None]; "
    "print(' '.join(missing))"
)


# ----------------------------------------------------------------------------- pytest side


def rtsp_unavailable_reason() -> str | None:
    """Why the RTSP server cannot run here (for pytest.skip), or None when it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (the RTSP test server needs Debian's python3 with GstRtspServer)"
    try:
        probe = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot probe {SYSTEM_PYTHON} for GstRtspServer: {e}"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"{SYSTEM_PYTHON} lacks gi/GstRtspServer ({last}); apt-get install -y {APT_PACKAGES}"
    if probe.stdout.strip():
        return f"GStreamer elements missing: {probe.stdout.strip()}; apt-get install -y {APT_PACKAGES}"
    return None


def free_port() -> int:
    """A TCP port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RtspServer:
    """Start/stop `rtsp_server.py` as a subprocess on one port; `kill()` + `start()` = a camera restart."""

    def __init__(self, video: str | Path | None = None, port: int | None = None, log_path: Path | None = None):
        self.video = Path(video) if video is not None else None
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in_s: float | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts TCP connections; the port may still be in
        TIME_WAIT after a kill, so a server that exits early is retried until `timeout`."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("RTSP server already running")
        cmd = [SYSTEM_PYTHON, str(SCRIPT), "--port", str(self.port)]
        if self.video is not None:
            cmd += ["--video", str(self.video)]
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
            try:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            finally:
                if self.log_path:
                    log.close()  # type: ignore[union-attr]
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    self.started_in_s = time.monotonic() - t0
                    return
                time.sleep(0.1)
            if self.proc.poll() is None or time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(f"RTSP server on port {self.port} did not start within {timeout} s")
            time.sleep(0.5)  # exited early (port busy?): try again

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server by its PID (SIGKILL by default: an abrupt camera/network failure)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill(signal.SIGTERM)


# ----------------------------------------------------------------------------- server side

ENCODE = (
    "videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
    "key-int-max={gop} bitrate=1500 ! rtph264pay name=pay0 pt=96 config-interval=1"
)


def main(argv: list[str] | None = None) -> int:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--path", default="/stream")
    p.add_argument("--video", help="video file to serve in a loop (default: videotestsrc)")
    p.add_argument("--fps", type=int, default=30, help="videotestsrc frame rate")
    args = p.parse_args(argv)
    Gst.init(None)

    factory = GstRtspServer.RTSPMediaFactory()
    if args.video is None:
        factory.set_launch(
            f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,"
            f"framerate={args.fps}/1 ! {ENCODE.format(gop=args.fps)} )"
        )
    else:
        video = Path(args.video).resolve()
        if not video.is_file():
            print(f"no such video file: {video}", file=sys.stderr)
            return 2
        factory.set_launch(
            f"( appsrc name=src format=time is-live=false do-timestamp=false ! {ENCODE.format(gop=30)} )"
        )

        def configure(_factory: object, media: GstRtspServer.RTSPMedia) -> None:
            decoder = Gst.parse_launch(
                f'filesrc location="{video}" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! '
                "appsink name=sink sync=false max-buffers=4"
            )
            sink = decoder.get_by_name("sink")
            decoder.set_state(Gst.State.PLAYING)
            appsrc = media.get_element().get_by_name("src")
            state = {"pts": 0, "caps": None}

            def need_data(src: Gst.Element, _length: int) -> None:
                sample = sink.emit("try-pull-sample", 5 * Gst.SECOND)
                if sample is None and sink.get_property("eos"):
                    decoder.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
                    sample = sink.emit("try-pull-sample", 5 * Gst.SECOND)
                if sample is None:
                    src.emit("end-of-stream")
                    return
                if state["caps"] is None:
                    state["caps"] = sample.get_caps()
                    src.set_property("caps", state["caps"])
                s = state["caps"].get_structure(0)
                ok, num, den = s.get_fraction("framerate")
                duration = Gst.SECOND * den // num if ok and num else Gst.SECOND // 30
                buf = sample.get_buffer().copy()
                buf.pts, buf.dts, buf.duration = state["pts"], Gst.CLOCK_TIME_NONE, duration
                state["pts"] += duration
                src.emit("push-buffer", buf)

            appsrc.connect("need-data", need_data)
            media.connect("unprepared", lambda _m: decoder.set_state(Gst.State.NULL))

        factory.connect("media-configure", configure)

    factory.set_shared(True)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda: loop.quit() or False)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
