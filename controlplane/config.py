"""Settings, read once from the environment (documented in README.md)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """Parse `10G`, `512k`, `1024` into bytes; raise ValueError on anything else."""
    text = text.strip()
    if not text:
        raise ValueError("empty size")
    unit = text[-1].lower() if text[-1].isalpha() else ""
    number = text[:-1] if unit else text
    if unit not in _UNITS or not number.isdigit():
        raise ValueError(f"bad size {text!r}")
    return int(number) * _UNITS[unit]


def parse_pools(text: str) -> dict[str, int]:
    """OPENHOSTING_PAD_POOLS: ``name=count`` pairs split by commas (``python3=2,java=1,go=0``); a name
    is a pads language or an image slug, a count is an integer >= 0. Raises ValueError."""
    pools = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = (x.strip() for x in item.partition("="))
        if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name) or not count.isdigit():
            raise ValueError(f"OPENHOSTING_PAD_POOLS: {item!r} is not NAME=COUNT (e.g. python3=2,go=0)")
        pools[name] = int(count)
    return pools


def _env_size(env: dict, name: str, default: int) -> int:
    value = env.get(name)
    return parse_size(value) if value else default


def _choice(env: dict, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    database_url: str
    # The largest request body read into memory (a write chunk, a key/value body).
    max_body: int = 64 * 1024**2
    # Sum of the sizes of all drives in the pool; 0 means "the pool file system's size".
    pool_limit: int = 0
    # Bytes kept free on the pool's file system; a write that would eat into them answers 507.
    pool_reserve: int = 64 * 1024**2
    # Per-user sum of drive sizes (402 billing beyond it); 0 means no limit.
    user_drive_quota: int = 0
    # How long the agent sleeps between polls of the job table.
    job_poll_interval: float = 0.2
    # Longest time between two reconciliations of servers with libvirt (events trigger them sooner).
    reconcile_interval: float = 3.0
    # The public network: an isolated libvirt network on this CIDR. Its first address is the host's;
    # the lower half of the rest is the static pool users take IP resources from, the upper half is
    # leased by DHCP to `nic:N:dhcp auto`. Empty: a free private /24 is picked once and kept in the
    # state directory (services/ippool.py).
    ip_pool: str = ""
    # Forward mode of the public network: "" (isolated: guests reach only each other and the host) or
    # "nat" / "route" / "open" (libvirt forward modes) to give guests an uplink in production.
    public_forward: str = ""
    # Where VNC consoles listen. Loopback by default: reach them through SSH or the control plane.
    console_address: str = "127.0.0.1"
    # The console proxy (browser faces): where `openhosting-admin console-proxy` listens, the public
    # base URL the API puts in console links ("" = http://<console_bind>), and more WebSocket Origins
    # it accepts besides that URL's own (space- or comma-separated, e.g. "https://a.example:8443").
    console_bind: str = "127.0.0.1:8081"
    console_url: str = ""
    console_origins: tuple[str, ...] = ()
    # How often a pad room looks for updates other processes stored (the API's PUT contents), s.
    pad_room_poll: float = 0.5
    # Sandboxes: default and longest run time (s), output kept, files per run, warm VMs per image,
    # running sandboxes per user, and runs waiting in all before new ones are refused (429).
    sandbox_timeout: int = 10
    sandbox_max_timeout: int = 120
    sandbox_output_cap: int = 1024 * 1024
    sandbox_max_files: int = 32
    sandbox_max_file: int = 8 * 1024**2
    sandbox_pool_size: int = 4
    # Warm VMs per pads language or image, over sandbox_pool_size (OPENHOSTING_PAD_POOLS, parse_pools):
    # an image's pool is the largest count naming it or one of its languages; 0 holds no VM.
    pad_pools: dict = field(default_factory=dict)
    sandbox_fillers: int = 0      # clones prepared at once per image; 0: two per host CPU, at most the pool size
    sandbox_user_limit: int = 8
    sandbox_max_queue: int = 64
    # Threads of the agent that run jobs (sandbox runs, imaging) at the same time.
    agent_workers: int = 10
    # Imaging copies at most this many bytes per second (0: as fast as the disks go).
    imaging_rate: int = 0
    # Workspaces: slots per account (a workspace holds its project's slots while starting or running),
    # memory all running workspaces may use on this host (0: three quarters of the host's RAM), memory
    # of one workspace (0: its image's), the init script's time limit (s), how often the agent checks
    # the timers (s), the length of the contract's "minute" in seconds (tests shorten it), and how long
    # a files call waits for a stopped workspace it resumes (`auto_resume`) before answering 404/1008.
    # The agent keeps `workspace_spare_vms` QEMUs started ahead per template, for creates and for
    # resumes each (0: none; every create and resume then waits for libvirt's start). Two: a spare
    # takes 0.4-0.5 s to start, and resumes half a second apart outran one.
    workspace_slots: int = 10
    workspace_spare_vms: int = 2
    workspace_host_memory: int = 0
    workspace_memory: int = 0
    workspace_init_timeout: int = 600
    workspace_timer_interval: float = 20.0
    workspace_minute: float = 60.0
    workspace_resume_wait: float = 30.0
    # Submissions: waiting or running ones per account before POST is refused, how many the agent runs
    # at once (each holds one VM of the warm pool), the cap of each output stream, the whole
    # submission's wall-clock limit (s), and the limits each stage runs under in its VM: processes of
    # the user, one file's size, one process's address space (0: the VM's memory less 64 MiB), what
    # the VM's disk may grow by (its overlay on the host; past it the VM is cut: runtime error), and the
    # network a scenario with `network: true` gets: `none` (no NIC) or `isolated` (a NIC on a libvirt
    # network with no forward: the host and the other such VMs, nothing beyond).
    submission_queue_limit: int = 50
    submission_workers: int = 4
    submission_output_cap: int = 16 * 1024**2
    submission_wall_limit: int = 1800
    submission_nproc: int = 256
    submission_file_limit: int = 256 * 1024**2
    submission_memory_limit: int = 0
    submission_disk_limit: int = 512 * 1024**2
    submission_network: str = "none"
    # Public base URL of the API (for `workspace_url` and stream URIs); "" uses the request's own.
    public_url: str = ""
    # Pads: the monthly pad limit of users outside an organization (0: none) and how long a session
    # token from POST /api/auth/login lives (s).
    pad_monthly_limit: int = 0
    session_ttl: int = 86400
    libvirt_uri: str = "qemu:///system"
    # The SSH gateway to workspaces (terminal service): HOST:PORT, or "none".
    ssh_bind: str = "127.0.0.1:2222"
    extra: dict = field(default_factory=dict)

    @property
    def drive_dir(self) -> Path:
        return self.state_dir / "drives"

    @property
    def console_base(self) -> str:
        """The console proxy's public base URL (no trailing slash)."""
        return self.console_url or f"http://{self.console_bind}"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def installation_id(self) -> str:
        """This installation's mark on the libvirt objects it creates; made once per state directory."""
        path = self.state_dir / "installation-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        import secrets

        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_hex(4) + "\n")
        try:
            os.link(tmp, path)  # first writer wins; a concurrent second one reads the winner's id
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text().strip()

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        state_dir = Path(env.get("OPENHOSTING_STATE_DIR") or Path.cwd() / "var").absolute()
        database_url = env.get("OPENHOSTING_DATABASE_URL") or f"sqlite:///{state_dir / 'openhosting.db'}"
        return cls(
            state_dir=state_dir,
            database_url=database_url,
            max_body=_env_size(env, "OPENHOSTING_MAX_BODY", cls.max_body),
            pool_limit=_env_size(env, "OPENHOSTING_POOL_LIMIT", cls.pool_limit),
            pool_reserve=_env_size(env, "OPENHOSTING_POOL_RESERVE", cls.pool_reserve),
            user_drive_quota=_env_size(env, "OPENHOSTING_USER_DRIVE_QUOTA", cls.user_drive_quota),
            reconcile_interval=float(env.get("OPENHOSTING_RECONCILE_INTERVAL", cls.reconcile_interval)),
            job_poll_interval=float(env.get("OPENHOSTING_JOB_POLL_INTERVAL", cls.job_poll_interval)),
            ip_pool=env.get("OPENHOSTING_IP_POOL", cls.ip_pool).strip(),
            public_forward=env.get("OPENHOSTING_PUBLIC_FORWARD", cls.public_forward),
            console_address=env.get("OPENHOSTING_CONSOLE_ADDRESS", cls.console_address),
            console_bind=env.get("OPENHOSTING_CONSOLE_BIND") or cls.console_bind,
            console_url=(env.get("OPENHOSTING_CONSOLE_URL") or "").strip().rstrip("/"),
            pad_room_poll=float(env.get("OPENHOSTING_PAD_ROOM_POLL") or cls.pad_room_poll),
            console_origins=tuple(o.rstrip("/") for o in
                                  (env.get("OPENHOSTING_CONSOLE_ORIGINS") or "").replace(",", " ").split()),
            sandbox_timeout=int(env.get("OPENHOSTING_SANDBOX_TIMEOUT", cls.sandbox_timeout)),
            sandbox_max_timeout=int(env.get("OPENHOSTING_SANDBOX_MAX_TIMEOUT", cls.sandbox_max_timeout)),
            sandbox_output_cap=_env_size(env, "OPENHOSTING_SANDBOX_OUTPUT_CAP", cls.sandbox_output_cap),
            sandbox_max_files=int(env.get("OPENHOSTING_SANDBOX_MAX_FILES", cls.sandbox_max_files)),
            sandbox_max_file=_env_size(env, "OPENHOSTING_SANDBOX_MAX_FILE", cls.sandbox_max_file),
            sandbox_pool_size=int(env.get("OPENHOSTING_SANDBOX_POOL_SIZE", cls.sandbox_pool_size)),
            sandbox_fillers=int(env.get("OPENHOSTING_SANDBOX_FILLERS", cls.sandbox_fillers)),
            pad_pools=parse_pools(env.get("OPENHOSTING_PAD_POOLS", "")),
            sandbox_user_limit=int(env.get("OPENHOSTING_SANDBOX_USER_LIMIT", cls.sandbox_user_limit)),
            sandbox_max_queue=int(env.get("OPENHOSTING_SANDBOX_MAX_QUEUE", cls.sandbox_max_queue)),
            agent_workers=int(env.get("OPENHOSTING_AGENT_WORKERS", cls.agent_workers)),
            imaging_rate=_env_size(env, "OPENHOSTING_IMAGING_RATE", cls.imaging_rate),
            workspace_slots=int(env.get("OPENHOSTING_WORKSPACE_SLOTS", cls.workspace_slots)),
            workspace_spare_vms=int(env.get("OPENHOSTING_WORKSPACE_SPARE_VMS", cls.workspace_spare_vms)),
            workspace_host_memory=_env_size(env, "OPENHOSTING_WORKSPACE_HOST_MEMORY", cls.workspace_host_memory),
            workspace_memory=_env_size(env, "OPENHOSTING_WORKSPACE_MEMORY", cls.workspace_memory),
            workspace_init_timeout=int(env.get("OPENHOSTING_WORKSPACE_INIT_TIMEOUT", cls.workspace_init_timeout)),
            workspace_timer_interval=float(env.get("OPENHOSTING_WORKSPACE_TIMER_INTERVAL",
                                                   cls.workspace_timer_interval)),
            workspace_minute=float(env.get("OPENHOSTING_WORKSPACE_MINUTE", cls.workspace_minute)),
            workspace_resume_wait=float(env.get("OPENHOSTING_WORKSPACE_RESUME_WAIT", cls.workspace_resume_wait)),
            submission_queue_limit=int(env.get("OPENHOSTING_SUBMISSION_QUEUE_LIMIT", cls.submission_queue_limit)),
            submission_workers=int(env.get("OPENHOSTING_SUBMISSION_WORKERS", cls.submission_workers)),
            submission_output_cap=_env_size(env, "OPENHOSTING_SUBMISSION_OUTPUT_CAP", cls.submission_output_cap),
            submission_wall_limit=int(env.get("OPENHOSTING_SUBMISSION_WALL_LIMIT", cls.submission_wall_limit)),
            submission_nproc=int(env.get("OPENHOSTING_SUBMISSION_NPROC", cls.submission_nproc)),
            submission_file_limit=_env_size(env, "OPENHOSTING_SUBMISSION_FILE_LIMIT", cls.submission_file_limit),
            submission_memory_limit=_env_size(env, "OPENHOSTING_SUBMISSION_MEMORY_LIMIT",
                                              cls.submission_memory_limit),
            submission_disk_limit=_env_size(env, "OPENHOSTING_SUBMISSION_DISK_LIMIT", cls.submission_disk_limit),
            submission_network=_choice(env, "OPENHOSTING_SUBMISSION_NETWORK", ("none", "isolated"),
                                       cls.submission_network),
            public_url=env.get("OPENHOSTING_PUBLIC_URL", cls.public_url).rstrip("/"),
            pad_monthly_limit=int(env.get("OPENHOSTING_PAD_MONTHLY_LIMIT", cls.pad_monthly_limit)),
            session_ttl=int(env.get("OPENHOSTING_SESSION_TTL", cls.session_ttl)),
            libvirt_uri=env.get("OPENHOSTING_LIBVIRT_URI", cls.libvirt_uri),
            ssh_bind=env.get("OPENHOSTING_SSH_BIND", cls.ssh_bind).strip(),
        )
