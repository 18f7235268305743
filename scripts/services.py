#!/usr/bin/env python3
"""Start and stop what the tests need: a single-node SLURM, PostgreSQL, and Chromium.

    python scripts/services.py start postgres [--dir DIR]   # prints url=postgresql+psycopg2://...
    python scripts/services.py start slurm [--dir DIR]      # prints SLURM_CONF=DIR/etc/slurm.conf
    python scripts/services.py start ray [--dir DIR]        # prints address=127.0.0.1:PORT
    python scripts/services.py start chromium               # installs it; prints executable=...
    python scripts/services.py status slurm|postgres|ray [--dir DIR]
    python scripts/services.py stop slurm|postgres|ray [--dir DIR]

Missing Debian packages are installed first (root only): ``postgresql`` for PostgreSQL;
``slurmctld slurmd slurm-client munge slurmdbd mariadb-server`` for SLURM, with MariaDB and
slurmdbd for accounting (submitit needs ``sacct`` to see cancelled or killed jobs);
``chromium`` for the browser tests of the MLflow UI and optuna-dashboard. ``ray`` is a Ray
cluster of two nodes on this machine (a head and a second node joining it, one CPU each), from
the ``ray`` Python package of the interpreter running this script (``pip install 'nasfw[ray]'``);
its token authentication uses a token under ``--dir``, so a driver needs the
``RAY_AUTH_MODE`` and ``RAY_AUTH_TOKEN_PATH`` that ``start`` prints. Every file
of a service (config, data, logs, pid files) lives under ``--dir`` (default
``/tmp/nasfw-services/<service>``), which ``start`` wipes first: ``slurmctld -c`` numbers jobs
from 1 again, so an old accounting database would answer for new jobs. Daemons are stopped by
their pid files, SIGKILL after a grace period. ``start`` exits 1 with the reason on stderr when
a service cannot start. Standard library only, no systemd: this runs in containers and CI.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SLURM_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
POSTGRES_PACKAGES = ["postgresql"]
CLUSTER = "nasfw"
PARTITION = "debug"


class ServiceError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"services: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if out.returncode != 0:
        raise ServiceError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()[-800:]}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: object, timeout: float = 60, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.2)
    tail = ""
    if log_file is not None and log_file.is_file():
        tail = "; last log lines:\n" + "\n".join(
            log_file.read_text(errors="replace").splitlines()[-15:]
        )
    raise ServiceError(f"{what} not ready after {timeout:.0f} s{tail}")


def apt_install(packages: list[str], binaries: list[str]) -> None:
    """Install ``packages`` unless every one of ``binaries`` is already there."""
    if all(shutil.which(b) or Path(b).exists() for b in binaries):
        return
    if os.geteuid() != 0:
        raise ServiceError(f"{', '.join(packages)} not installed and not root to install them")
    if not shutil.which("apt-get"):
        raise ServiceError(f"{', '.join(packages)} not installed and no apt-get to install them")
    log(f"installing {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], timeout=300, env=env)
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        timeout=900,
        env=env,
    )


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"  # a zombie is not running
    except OSError:
        return False


def kill_pidfile(path: Path, grace: float = 10) -> None:
    pid = read_pid(path)
    if not alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def as_user(user: str, cmd: list[str]) -> list[str]:
    if os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--", *cmd]
    return cmd


def fresh_dir(path: Path, owner: str | None = None) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    path.chmod(0o755)
    for parent in path.parents:  # daemons running as other users must reach it
        if parent == Path("/tmp") or parent == Path("/"):
            break
        with contextlib.suppress(OSError):
            parent.chmod(parent.stat().st_mode | 0o011)
    if owner and os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)


# -- PostgreSQL -----------------------------------------------------------------------------


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise ServiceError("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return Path(found[-1]).parent


def postgres_start(root: Path) -> dict[str, str]:
    apt_install(
        POSTGRES_PACKAGES,
        sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:] or ["initdb-missing"],
    )
    postgres_stop(root, quiet=True)
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    fresh_dir(root, owner=user)
    bin_dir, data, port = pg_bin(), root / "data", free_port()
    run(as_user(user, [str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)]))
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    )
    run(
        as_user(
            user,
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "postgres.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    )
    run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nasfw"])
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nasfw"
    (root / "url").write_text(url)
    return {"url": url}


def postgres_status(root: Path) -> dict[str, str]:
    pid = read_pid(root / "data" / "postmaster.pid")
    if not alive(pid) or not (root / "url").is_file():
        raise ServiceError(f"PostgreSQL is not running from {root}")
    return {"url": (root / "url").read_text()}


def postgres_stop(root: Path, quiet: bool = False) -> None:
    pidfile = root / "data" / "postmaster.pid"
    if not alive(read_pid(pidfile)):
        return
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    with contextlib.suppress(Exception):
        run(
            as_user(
                user,
                [str(pg_bin() / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"],
            ),
            timeout=30,
        )
    kill_pidfile(pidfile)
    if not quiet:
        log(f"PostgreSQL in {root} stopped")


# -- SLURM ----------------------------------------------------------------------------------


def slurm_env(root: Path) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(root / "etc" / "slurm.conf")}


def slurm_start(root: Path) -> dict[str, str]:
    if os.geteuid() != 0:
        raise ServiceError("starting a SLURM cluster needs root (SlurmUser=root, munged as munge)")
    apt_install(
        SLURM_PACKAGES,
        [
            "slurmctld",
            "slurmd",
            "slurmdbd",
            "sbatch",
            "sacct",
            "munged",
            "mariadbd",
            "mariadb-install-db",
        ],
    )
    slurm_stop(root, quiet=True)
    fresh_dir(root)
    etc, state, spool, db = root / "etc", root / "state", root / "spool", root / "mysql"
    for d in (etc, state, spool, db):
        d.mkdir()
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    db_port, dbd_port, ctld_port, d_port = free_port(), free_port(), free_port(), free_port()

    start_munge()

    # MariaDB for accounting, its own data directory and port; slurmdbd logs in as root.
    run(
        [
            "mariadb-install-db",
            "--user=root",
            f"--datadir={db}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        timeout=180,
    )
    subprocess.Popen(
        [
            shutil.which("mariadbd") or "mariadbd",
            "--user=root",
            f"--datadir={db}",
            f"--port={db_port}",
            "--bind-address=127.0.0.1",
            f"--socket={root / 'mysql.sock'}",
            f"--pid-file={root / 'mariadb.pid'}",
            f"--log-error={root / 'mariadb.log'}",
            "--skip-log-bin",
            "--innodb-flush-log-at-trx-commit=0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for("MariaDB", lambda: _port_open(db_port), 60, root / "mariadb.log")

    (etc / "slurm.conf").write_text(
        f"""# Written by scripts/services.py: a single-node cluster for tests.
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
KillWait=5
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    dbd_conf = etc / "slurmdbd.conf"
    dbd_conf.write_text(
        f"""AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
PidFile={root / "slurmdbd.pid"}
LogFile={root / "slurmdbd.log"}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
"""
    )
    dbd_conf.chmod(0o600)
    env = slurm_env(root)
    run(["slurmdbd"], env=env)
    wait_for("slurmdbd", lambda: _port_open(dbd_port), 60, root / "slurmdbd.log")
    wait_for(
        "sacctmgr",
        lambda: (
            subprocess.run(
                ["sacctmgr", "-i", "add", "cluster", CLUSTER],
                env=env,
                capture_output=True,
                timeout=20,
            ).returncode
            == 0
        ),
        60,
        root / "slurmdbd.log",
    )
    run(["slurmctld", "-c"], env=env)
    run(["slurmd", "-c"], env=env)

    def node_idle() -> bool:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() == "idle"

    wait_for("the SLURM node", node_idle, 60, root / "slurmctld.log")
    return {"SLURM_CONF": str(etc / "slurm.conf"), "partition": PARTITION}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_munge() -> None:
    """munged on its default socket (what SLURM's auth/munge uses); left running if up."""
    if alive(read_pid(Path("/run/munge/munged.pid"))):
        return
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        run(["mungekey", "--create", f"--keyfile={key}"])
        shutil.chown(key, "munge", "munge")
        key.chmod(0o600)
    for d in (Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
        d.mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
    wait_for(
        "munged",
        lambda: subprocess.run(["munge", "-n"], capture_output=True, timeout=5).returncode == 0,
        20,
    )


def slurm_status(root: Path) -> dict[str, str]:
    for name in ("slurmctld", "slurmd", "slurmdbd"):
        if not alive(read_pid(root / f"{name}.pid")):
            raise ServiceError(f"{name} is not running from {root}")
    return {"SLURM_CONF": str(root / "etc" / "slurm.conf"), "partition": PARTITION}


def slurm_stop(root: Path, quiet: bool = False) -> None:
    env = slurm_env(root)
    if alive(read_pid(root / "slurmctld.pid")) and shutil.which("scancel"):
        # Jobs first: their processes would otherwise outlive slurmd.
        with contextlib.suppress(Exception):
            subprocess.run(
                ["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=10
            )
    for name in ("slurmd", "slurmctld", "slurmdbd", "mariadb"):
        kill_pidfile(root / f"{name}.pid")
    if not quiet:
        log(f"SLURM in {root} stopped (munged left running)")


# -- Ray ------------------------------------------------------------------------------------

# Each node's object store (bytes): small, both nodes share this machine's memory.
RAY_OBJECT_STORE = 100 * 2**20


def ray_env(root: Path) -> dict[str, str]:
    """What a process needs to join or drive the test cluster: its token, no usage reports."""
    return {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(root / "auth_token"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def ray_cli(*args: str) -> list[str]:
    """``ray ...`` of the interpreter running this script (the one whose nasfw the nodes run)."""
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def ray_processes(root: Path) -> dict[int, str]:
    """Pid -> command of every process of the cluster in ``root``: those whose command line or
    open files name its Ray temp dir ``root/ray`` (Ray's daemons, their logs and sockets are
    all there), and their descendants (workers and agents, which rename themselves
    ``ray::...``); never this process or its ancestors."""
    mark = str(root / "ray")  # Ray's temp dir: not the --dir on this script's command line
    table: dict[int, tuple[int, str]] = {}
    found: set[int] = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(proc.name)
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        table[pid] = (ppid, command.strip())
        if mark in command:
            found.add(pid)
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(mark):
                        found.add(pid)
                        break
    grew = True
    while grew:
        children = {p for p, (ppid, _) in table.items() if ppid in found} - found
        grew = bool(children)
        found |= children
    # Never this process or those it runs under (a test session driving the cluster itself).
    pid = os.getpid()
    while pid in table and pid > 1:
        found.discard(pid)
        pid = table[pid][0]
    return {pid: table[pid][1] for pid in sorted(found) if alive(pid)}


def _raylets(root: Path) -> set[int]:
    return {
        pid
        for pid, command in ray_processes(root).items()
        if command.split(" ", 1)[0].endswith("/raylet")
    }


def _ray_start_node(log_file: Path, cmd: list[str], env: dict[str, str]) -> None:
    """``ray start ...`` with its output in ``log_file`` (not a pipe: the daemons it leaves
    running would hold a pipe open)."""
    with log_file.open("w") as out:
        code = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=180
        ).returncode
    if code != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
        raise ServiceError(f"{' '.join(cmd[3:5])} exited {code}:\n{tail}")


def ray_start(root: Path) -> dict[str, str]:
    try:
        import ray  # noqa: F401  (only whether it is there)
    except ImportError as err:
        raise ServiceError(
            f"the ray package is not installed for {sys.executable}: pip install 'nasfw[ray]'"
        ) from err
    ray_stop(root, quiet=True)
    fresh_dir(root)
    import secrets

    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env, port = ray_env(root), free_port()
    # Ray runs its workers at niceness 15 (its worker_niceness): on this machine, shared with
    # the test session and everything else at niceness 0, its evaluations would get only what
    # the others leave, and a search could take minutes per trial under load.
    nodes_env = {**env, "RAY_worker_niceness": "0"}
    common = [
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--num-gpus=0",
        f"--object-store-memory={RAY_OBJECT_STORE}",
        "--disable-usage-stats",
        f"--temp-dir={root / 'ray'}",
    ]
    _ray_start_node(
        root / "head.log",
        ray_cli("start", "--head", f"--port={port}", "--include-dashboard=false", *common),
        nodes_env,
    )
    head = _raylets(root)
    if len(head) != 1:
        raise ServiceError(f"the head started {len(head)} raylets (see {root / 'head.log'})")
    address = f"127.0.0.1:{port}"
    _ray_start_node(root / "node.log", ray_cli("start", f"--address={address}", *common), nodes_env)
    node = _raylets(root) - head
    if len(node) != 1:
        raise ServiceError(f"the second node started {len(node)} raylets (see {root / 'node.log'})")
    count = (
        "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )

    def both_nodes() -> bool:
        out = subprocess.run(
            [sys.executable, "-c", count, address],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip().splitlines()[-1:] == ["2"]

    wait_for("both Ray nodes", both_nodes, 90, root / "node.log")
    info = {
        "address": address,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "head_raylet_pid": str(head.pop()),
        "node_raylet_pid": str(node.pop()),
    }
    (root / "info").write_text("".join(f"{k}={v}\n" for k, v in info.items()))
    return info


def ray_status(root: Path) -> dict[str, str]:
    try:
        info = dict(
            line.split("=", 1) for line in (root / "info").read_text().splitlines() if "=" in line
        )
    except OSError:
        raise ServiceError(f"no Ray cluster was started from {root}") from None
    for name in ("head_raylet_pid", "node_raylet_pid"):
        if not alive(int(info[name])):
            raise ServiceError(f"the Ray {name.split('_')[0]} node of {root} is not running")
    return info


def ray_stop(root: Path, quiet: bool = False) -> None:
    """SIGTERM to every process of this cluster, SIGKILL after a grace period. Not ``ray
    stop``, which stops every Ray of this user on the machine (a search's own, another
    test's cluster)."""
    processes = ray_processes(root)
    for pid in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in processes:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if not quiet:
        log(f"Ray cluster in {root} stopped ({len(processes)} processes)")


CHROMIUM = Path("/usr/bin/chromium")


def chromium_start(root: Path) -> dict[str, str]:
    """Debian's Chromium for the browser tests (Playwright drives it; it is not a daemon)."""
    apt_install(["chromium"], [str(CHROMIUM)])
    return chromium_status(root)


def chromium_status(root: Path) -> dict[str, str]:
    out = run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--version"])
    return {"executable": str(CHROMIUM), "version": out.stdout.strip().splitlines()[0]}


def chromium_stop(root: Path, quiet: bool = False) -> None:
    """Nothing runs between tests: each test starts and closes its own browser."""


SERVICES = {
    "chromium": (chromium_start, chromium_status, chromium_stop),
    "postgres": (postgres_start, postgres_status, postgres_stop),
    "ray": (ray_start, ray_status, ray_stop),
    "slurm": (slurm_start, slurm_status, slurm_stop),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["start", "status", "stop"])
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument(
        "--dir", type=Path, help="state directory (default /tmp/nasfw-services/<service>)"
    )
    args = parser.parse_args()
    root = (args.dir or Path("/tmp/nasfw-services") / args.service).resolve()
    start, status, stop = SERVICES[args.service]
    started = time.monotonic()
    try:
        if args.action == "stop":
            stop(root)
            return 0
        info = start(root) if args.action == "start" else status(root)
    except (ServiceError, subprocess.TimeoutExpired, OSError) as err:
        print(f"services: cannot {args.action} {args.service}: {err}", file=sys.stderr)
        if args.action == "start":
            with contextlib.suppress(Exception):
                stop(root, quiet=True)
        return 1
    if args.action == "start":
        log(f"{args.service} up in {time.monotonic() - started:.1f} s (state in {root})")
    for key, value in info.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
