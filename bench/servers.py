"""The servers under test, on 127.0.0.1 free ports, and the tools they need.

* our stack: ``python -m decoder`` and ``python -m gateway`` over a folder;
* IIPImage: Debian's ``iipsrv.fcgi`` (1.1) spawned by lighttpd's mod_fastcgi,
  as the IIPImage documentation sets it up, one FastCGI process per core.

Both log only warnings: per-request logging is a deployment choice that
would otherwise be measured for one server and not the other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench import procs
from bench.images import ImageType

IIPSRV: Final = Path("/usr/lib/iipimage-server/iipsrv.fcgi")
IIP_PREFIX: Final = "/fcgi-bin/iipsrv.fcgi?IIIF="
# Debian packages the benchmark installs when asked (--install or BENCH_INSTALL=1).
APT_PACKAGES: Final = ("iipimage-server", "lighttpd", "wrk", "libopenjp2-tools", "libopenjp2-7")
INSTALL_ENV: Final = "BENCH_INSTALL"
# Shared by our decoder and IIPImage so output sizes and encode costs match.
JPEG_QUALITY: Final = 85


def cores() -> int:
    """Cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


@dataclass
class RunningServer:
    """A started server as the load client sees it; `stop` ends its processes."""

    name: str
    base_url: str
    # Image API version -> path prefix before the identifier.
    prefixes: dict[int, str]
    serves: frozenset[ImageType]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Processes whose memory is reported (ours: decoder + gateway; IIPImage: lighttpd tree).
    measured: list[int] = field(default_factory=list)
    # Called after the processes stop (e.g. to stop helpers such as an S3 server).
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    # Optional counters of work behind the server (the S3 case: requests to the store).
    reset_stats: Callable[[], None] | None = None
    read_stats: Callable[[], dict[str, float]] | None = None

    def exited(self) -> list[str]:
        """How the processes that are no longer running ended, e.g. ``pid 12: -9``."""
        return [f"pid {p.pid}: {p.returncode}" for p in self.processes if p.poll() is not None]

    def stop(self, timeout_s: float = 4.0) -> None:
        """Stop every process, newest first, then run the cleanups.

        Short timeout: our decoder drains within its 2 s grace period, and
        SeaweedFS, which can take many seconds to exit on SIGTERM, holds
        nothing that a SIGKILL could lose here.
        """
        for proc in reversed(self.processes):
            procs.stop(proc, timeout_s)
        for clean in reversed(self.cleanup):
            clean()


def start_decoder(
    name: str,
    image_root: Path,
    logs: Path,
    decoder_env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """Our decoder over `image_root` (or whatever `decoder_env` says), with
    the benchmark's settings; returns it and its port once it accepts calls."""
    port = procs.free_port()
    env = {
        "IIIF_DECODER_PORT": str(port),
        "IIIF_DECODER_IMAGE_ROOT": str(image_root),
        "IIIF_DECODER_LOG_LEVEL": os.environ.get("BENCH_DECODER_LOG_LEVEL", "warning"),
        "IIIF_DECODER_JPEG_QUALITY": str(JPEG_QUALITY),
        "IIIF_DECODER_GRACE_PERIOD_S": "2",
        # Metrics stay on, as deployed, but on a free port: the default one is
        # shared by every decoder on the machine.
        "IIIF_DECODER_METRICS_PORT": str(procs.free_port()),
        **(decoder_env or {}),
    }
    decoder = procs.spawn([sys.executable, "-m", "decoder"], logs / f"{name}-decoder.log", env)
    try:
        procs.wait_until(lambda: procs.port_open(port), decoder, ready_timeout_s, f"{name} decoder")
    except BaseException:
        procs.stop(decoder)
        raise
    return decoder, port


def start_our_stack(
    name: str,
    image_root: Path,
    logs: Path,
    decoder_env: Mapping[str, str] | None = None,
    gateway_env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 60.0,
) -> RunningServer:
    """Our decoder and gateway over `image_root` (or whatever `decoder_env` says)."""
    gateway_port = procs.free_port()
    server = RunningServer(
        name=name,
        base_url=f"http://127.0.0.1:{gateway_port}",
        prefixes={2: "/iiif/2/", 3: "/iiif/3/"},
        serves=frozenset(ImageType),
    )
    try:
        decoder, decoder_port = start_decoder(name, image_root, logs, decoder_env, ready_timeout_s)
        server.processes.append(decoder)
        genv = {
            "IIIF_GATEWAY_PORT": str(gateway_port),
            "IIIF_GATEWAY_DECODER_TARGET": f"127.0.0.1:{decoder_port}",
            "IIIF_GATEWAY_LOG_LEVEL": os.environ.get("BENCH_GATEWAY_LOG_LEVEL", "warning"),
            **(gateway_env or {}),
        }
        gateway = procs.spawn([sys.executable, "-m", "gateway"], logs / f"{name}-gateway.log", genv)
        server.processes.append(gateway)
        procs.wait_until(
            lambda: procs.http_ok(f"{server.base_url}/health/ready"),
            gateway,
            ready_timeout_s,
            f"{name} gateway",
        )
    except BaseException:
        server.stop()
        raise
    server.measured = [decoder.pid, gateway.pid]
    # Ready means one decoder worker answers; the others may still be
    # importing, and a first (cold) request would pay for their start-up.
    procs.wait_quiet(server.measured)
    return server


def iipimage_missing() -> str | None:
    """Why IIPImage cannot run here, or None when it can."""
    if not IIPSRV.exists():
        return f"{IIPSRV} missing (apt-get install iipimage-server, or pass --install)"
    if shutil.which("lighttpd") is None:
        return "lighttpd missing (apt-get install lighttpd, or pass --install)"
    return None


# A Unix socket's path holds at most 107 bytes, and lighttpd appends "-N"
# for each FastCGI process: a run's folder can be longer than that (pytest's
# temporary folders are), so the socket lives in the temporary folder.
_SOCKET_PATH_MAX: Final = 100


def fastcgi_socket(workdir: Path, port: int) -> Path:
    """Where lighttpd puts IIPImage's FastCGI socket: in `workdir` when its
    path is short enough, else in the system's temporary folder (named by
    our process and the run's port, both unique while it runs)."""
    beside = workdir / "iipsrv.sock"
    if len(os.fsencode(beside)) <= _SOCKET_PATH_MAX:
        return beside
    return Path(tempfile.gettempdir()) / f"iipsrv-{os.getpid()}-{port}.sock"


def lighttpd_config(port: int, workdir: Path, image_root: Path, fcgi_procs: int) -> str:
    """A lighttpd.conf serving IIPImage's FastCGI at /fcgi-bin/iipsrv.fcgi on 127.0.0.1."""
    env = {
        # A trailing slash: IIPImage prepends the prefix verbatim.
        "FILESYSTEM_PREFIX": f"{image_root}/",
        "JPEG_QUALITY": str(JPEG_QUALITY),
        "VERBOSITY": "0",
        # Large outputs such as /full/max/ of the mid image are refused beyond MAX_CVT.
        "MAX_CVT": "5000",
    }
    env_lines = ",\n".join(f'      "{k}" => "{v}"' for k, v in env.items())
    return f"""# Written by bench/servers.py; one run only.
server.modules = ( "mod_fastcgi" )
server.document-root = "{workdir}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{workdir}/lighttpd-error.log"
server.max-connections = 1024
fastcgi.server = ( "/fcgi-bin/iipsrv.fcgi" => ((
    "socket" => "{fastcgi_socket(workdir, port)}",
    "check-local" => "disable",
    "bin-path" => "{IIPSRV}",
    "max-procs" => {fcgi_procs},
    "bin-environment" => (
{env_lines}
    )
)))
"""


def start_iipimage(
    image_root: Path,
    workdir: Path,
    probe_identifier: str,
    fcgi_procs: int | None = None,
    ready_timeout_s: float = 30.0,
) -> RunningServer:
    """lighttpd + IIPImage over `image_root`; ready once `probe_identifier`'s info.json answers."""
    missing = iipimage_missing()
    if missing:
        raise RuntimeError(missing)
    workdir.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    conf = workdir / "lighttpd.conf"
    conf.write_text(lighttpd_config(port, workdir, image_root, fcgi_procs or cores()))
    fastcgi_socket(workdir, port).unlink(missing_ok=True)
    lighttpd = shutil.which("lighttpd") or "lighttpd"
    proc = procs.spawn([lighttpd, "-D", "-f", str(conf)], workdir / "lighttpd.log")
    server = RunningServer(
        name="iipimage",
        base_url=f"http://127.0.0.1:{port}",
        prefixes={2: IIP_PREFIX},
        # IIPImage 1.1 reads tiled TIFF and JPEG 2000, not plain JPEG.
        serves=frozenset({ImageType.JP2_TILED, ImageType.JP2_PRECINCTS, ImageType.TIFF_PYRAMID}),
        processes=[proc],
        measured=[proc.pid],
    )
    try:
        procs.wait_until(
            lambda: procs.http_ok(f"{server.base_url}{IIP_PREFIX}{probe_identifier}/info.json"),
            proc,
            ready_timeout_s,
            "lighttpd + iipsrv",
        )
    except BaseException:
        server.stop()
        raise
    return server


def install_requested(flag: bool) -> bool:
    """--install, or BENCH_INSTALL=1 in the environment."""
    return flag or os.environ.get(INSTALL_ENV, "") not in ("", "0", "false", "no")


def apt_install(packages: Sequence[str], log: Callable[[str], None] = print) -> None:
    """apt-get install `packages`, without starting their services.

    lighttpd and iipimage-server ship services (port 80, and 0.0.0.0:9000)
    that Debian starts on install; the benchmark runs its own private copies,
    so a temporary policy-rc.d (the documented Debian switch) keeps them off.
    """
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"no apt-get here: install {' '.join(packages)} by hand")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    log(f"installing Debian packages: {' '.join(packages)}")
    try:
        if not policy.exists() and os.geteuid() == 0:
            policy.write_text("#!/bin/sh\n# bench/servers.py: no service starts\nexit 101\n")
            policy.chmod(0o755)
            made_policy = True
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)


def missing_packages() -> list[str]:
    """The APT_PACKAGES whose programs are not here."""
    checks = {
        "iipimage-server": IIPSRV.exists(),
        "lighttpd": shutil.which("lighttpd") is not None,
        "wrk": shutil.which("wrk") is not None,
        "libopenjp2-tools": shutil.which("opj_compress") is not None,
        "libopenjp2-7": _have_library("libopenjp2.so.7"),
    }
    return [name for name in APT_PACKAGES if not checks[name]]


def _have_library(soname: str) -> bool:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False)
    except OSError:
        return False
    return soname in out.stdout


def ensure_tools(install: bool, log: Callable[[str], None] = print) -> list[str]:
    """Install missing packages when `install`; returns those still missing."""
    missing = missing_packages()
    if missing and install:
        apt_install(missing, log)
        missing = missing_packages()
    return missing
