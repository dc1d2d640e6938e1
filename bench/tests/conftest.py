"""Make bench/ and bench/peers importable as the harness and the peers see them."""
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
for path in (BENCH, BENCH / "peers"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
