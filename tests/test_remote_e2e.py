"""Remote data end to end: file input, a side input and a model served over HTTP on loopback."""
from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jobkit import launch

pytestmark = pytest.mark.mpi
pytest.importorskip("aiohttp", reason="fsspec's http filesystem needs aiohttp: pip install -e '.[remote]'")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


REMOTE = """
import argparse, json, os
from prs_mpi import get_model_path, get_side_input

def init():
    global labels, weight, arg_labels
    labels = json.load(open(get_side_input("labels")))
    weight = float(open(os.path.join(get_model_path("scale"))).read())
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels")
    arg_labels = parser.parse_known_args()[0].labels

def run(mini_batch):
    out = []
    for p in mini_batch:
        assert os.path.exists(p) and not p.startswith("http"), p     # downloaded to local scratch
        name = os.path.basename(p)
        out.append(f"{name} {labels[name]} {float(open(p).read()) * weight} {arg_labels == get_side_input('labels')}")
    return out
"""


def test_http_inputs_side_input_and_model(jobdir, served, tmp_path):
    root, url = served
    data = root / "data"
    data.mkdir()
    for i in range(12):
        (data / f"x{i:02d}.txt").write_text(f"{i}\n")
    (root / "labels.json").write_text(__import__("json").dumps({f"x{i:02d}.txt": f"L{i}" for i in range(12)}))
    (root / "scale.txt").write_text("2.5\n")
    jobdir.script(REMOTE)
    scratch = tmp_path / "scratch"
    job = jobdir.job(input_paths=[f"{url}/data/"], mini_batch_size=5, models={"scale": f"{url}/scale.txt"},
                     side_inputs={"labels": f"{url}/labels.json"}, input={"scratch_dir": str(scratch)})
    r = launch(2, ["run", str(job)])
    assert r.returncode == 0, r.output
    rows = sorted(jobdir.rows())
    assert rows == sorted(f"x{i:02d}.txt L{i} {i * 2.5} True" for i in range(12))
    leftovers = [p for p in scratch.rglob("x*.txt")] if scratch.exists() else []
    assert leftovers == [], "downloaded mini-batch files are removed after the mini-batch"


def test_unreachable_store_fails_with_the_url(jobdir):
    jobdir.script(REMOTE)
    job = jobdir.job(input_paths=["http://127.0.0.1:9/data/"])
    r = launch(1, ["run", str(job)], timeout=120)
    assert r.returncode == 2
    assert "127.0.0.1:9" in r.stderr and r.stderr.count("prs-mpi: error:") == 1
