"""Peak resident memory of each MPI rank's supervisor and of its child processes, by sampling.

MPICH's ``hydra_pmi_proxy`` starts the ranks and gives each a ``PMI_RANK`` variable; a rank's
own process is a direct child of the proxy, anything below it counts as that rank's children.
"""
import threading

import psutil

PROXY_NAMES = ("hydra_pmi_proxy",)


class TreeSampler(threading.Thread):
    """Sample the process tree under ``root_pid`` every ``interval`` seconds until ``stop()``."""

    def __init__(self, root_pid: int, interval: float = 0.05, pss: bool = False):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.pss = pss      # PSS reads /proc/<pid>/smaps: ~0.3 ms a process, so only when asked
        self.interval = interval
        # (rank, "supervisor"|"supervisor_pss"|"children") -> bytes. PSS splits the pages a
        # supervisor shares with the other ranks (libpython, libmpi, MPI shared memory) among them:
        # what one more rank really costs the node; RSS counts them in full for every rank.
        self.peak: dict[tuple[int, str], int] = {}
        self._rank_of: dict[int, int] = {}  # supervisor pid -> rank
        self._stopped = threading.Event()

    def stop(self) -> dict[str, dict[int, float]]:
        """Stop sampling; peak MB per rank, keyed ``supervisor``, ``supervisor_pss``, ``children``."""
        self._stopped.set()
        self.join(timeout=5)
        out: dict[str, dict[int, float]] = {"supervisor": {}, "supervisor_pss": {}, "children": {}}
        for (rank, role), nbytes in sorted(self.peak.items()):
            out[role][rank] = nbytes / 2**20
        return out

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.sample()
            except psutil.Error:
                continue

    def _supervisor_rank(self, proc: psutil.Process) -> int | None:
        if proc.pid not in self._rank_of:
            parent = proc.parent()
            if parent is None or parent.name() not in PROXY_NAMES:
                return None
            self._rank_of[proc.pid] = int(proc.environ().get("PMI_RANK", -1))
        return self._rank_of[proc.pid]

    def sample(self) -> None:
        """One pass: RSS of each supervisor, and the summed RSS of each rank's descendants."""
        procs = psutil.Process(self.root_pid).children(recursive=True)
        for proc in procs:  # resolve supervisors first, so their children find an owner
            try:
                self._supervisor_rank(proc)
            except psutil.Error:
                continue
        totals: dict[tuple[int, str], int] = {}
        for proc in procs:
            try:
                key = self._key(proc)
                if key is not None:
                    totals[key] = totals.get(key, 0) + proc.memory_info().rss
                if self.pss and key is not None and key[1] == "supervisor":
                    totals[(key[0], "supervisor_pss")] = proc.memory_full_info().pss
            except psutil.Error:
                continue
        for key, rss in totals.items():
            self.peak[key] = max(self.peak.get(key, 0), rss)

    def _key(self, proc: psutil.Process) -> tuple[int, str] | None:
        if proc.pid in self._rank_of:
            return self._rank_of[proc.pid], "supervisor"
        owner = next((p for p in proc.parents() if p.pid in self._rank_of), None)
        return None if owner is None else (self._rank_of[owner.pid], "children")
