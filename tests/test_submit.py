"""Unit tests for prs_mpi.submit: rendering, the script's signal/requeue logic and wait(),
with fake ``srun`` / ``scontrol`` / ``sbatch`` on PATH (no Slurm needed)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prs_mpi import submit as sb
from prs_mpi.status import fmt_duration
from prs_mpi.submit import SubmitError, render_sbatch


def fake_bin(tmp_path, name, body):
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    exe = d / name
    exe.write_text("#!/bin/bash\n" + body)
    exe.chmod(0o755)
    return d


def sbatch_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]


# ---------------------------------------------------------------- rendering

def test_render_header_and_command(tmp_path):
    job = tmp_path / "job.toml"
    text = render_sbatch(job, tmp_path / "out", nodes=2, ntasks_per_node=8, gpus_per_node=4,
                         time="01:00:00", partition="gpu", account="proj",
                         run_args=["--set", "mini_batch_size=1"])
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    first_code = next(i for i, ln in enumerate(lines[1:], 1) if ln and not ln.startswith("#"))
    assert all(not ln.startswith("#SBATCH") for ln in lines[first_code:]), "#SBATCH block first"
    heads = sbatch_lines(text)
    for want in ("--job-name=prs-job", "--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=4",
                 "--time=01:00:00", "--partition=gpu", "--account=proj", "--requeue",
                 "--signal=B:USR1@120", f"--output={tmp_path}/out/slurm-%j.out"):
        assert f"#SBATCH {want}" in heads
    launch = next(ln for ln in lines if ln.startswith("srun "))
    assert launch.startswith("srun --mpi=pmi2 ")
    assert f"-m prs_mpi run {job} --set output_dir={tmp_path}/out --set mini_batch_size=1" \
        in launch
    assert sys.executable in launch
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_render_leaves_out_unset_options(tmp_path):
    heads = " ".join(sbatch_lines(render_sbatch(tmp_path / "j.toml", tmp_path, 1, 4)))
    for absent in ("--gpus-per-node", "--time", "--partition", "--account"):
        assert absent not in heads


def test_render_mpiexec_uses_this_environments_mpiexec(tmp_path):
    py = tmp_path / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    (py.parent / "mpiexec").write_text("")
    text = render_sbatch(tmp_path / "j.toml", tmp_path, 1, 8, launcher="mpiexec", python=str(py))
    launch = next(ln for ln in text.splitlines() if "-m prs_mpi run" in ln)
    assert launch.startswith(f'{py.parent / "mpiexec"} -n "$SLURM_NTASKS" {py} -m prs_mpi')
    text = render_sbatch(tmp_path / "j.toml", tmp_path, 1, 8, launcher="mpiexec",
                         python=str(tmp_path / "python"))
    assert '\nmpiexec -n "$SLURM_NTASKS"' in text


def test_extra_args_become_sbatch_lines(tmp_path):
    text = render_sbatch(tmp_path / "j.toml", tmp_path, extra_args=[
        "--mem=4G", "--qos", "high", "--comment=two words"])
    heads = sbatch_lines(text)
    assert heads[-2:] == ["#SBATCH --mem=4G", '#SBATCH --qos high "--comment=two words"']


@pytest.mark.parametrize("kwargs,match", [
    ({"launcher": "aprun"}, "launcher"), ({"nodes": 0}, "--nodes"),
    ({"partition": "a;rm -rf /"}, "--partition"), ({"time": "1:00\n#SBATCH x"}, "--time"),
    ({"extra_args": ["mem=4G"]}, "does not start with '-'"),
    ({"extra_args": ["--x=\"y\""]}, "double quotes")])
def test_render_rejects_bad_values(tmp_path, kwargs, match):
    with pytest.raises(SubmitError, match=match):
        render_sbatch(tmp_path / "j.toml", tmp_path, **kwargs)


def test_write_script(tmp_path):
    path = sb.write_script("#!/bin/bash\n", tmp_path / "run")
    assert path == tmp_path / "run" / "submit.sbatch" and path.read_text() == "#!/bin/bash\n"
    assert os.access(path, os.X_OK)


# ---------------------------------------------------------------- the script's own logic

FAKE_SRUN = """\
echo "$@" > "$FAKE_DIR/srun.args"
[[ -n ${FAKE_NOTRAP:-} ]] || trap 'exit 75' USR1
echo started > "$FAKE_DIR/srun.started"
for i in $(seq ${FAKE_N:-200}); do sleep 0.05; done
exit "${FAKE_RC:-0}"
"""


def run_script(tmp_path, env_extra, send_usr1):
    bindir = fake_bin(tmp_path, "srun", FAKE_SRUN)
    fake_bin(tmp_path, "scontrol", 'echo "$@" >> "$FAKE_DIR/scontrol.log"\n')
    script = tmp_path / "s.sbatch"
    script.write_text(render_sbatch(tmp_path / "j.toml", tmp_path / "out", 1, 2))
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_DIR=str(tmp_path),
               SLURM_JOB_ID="41", **env_extra)
    proc = subprocess.Popen(["bash", str(script)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not (tmp_path / "srun.started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if send_usr1:
        proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=30)
    log = tmp_path / "scontrol.log"
    return proc.returncode, err, log.read_text() if log.exists() else ""


def test_usr1_is_forwarded_and_the_job_requeued(tmp_path):
    rc, err, scontrol = run_script(tmp_path, {"SLURM_CPUS_PER_TASK": "3"}, send_usr1=True)
    assert rc == 75, err
    assert scontrol.split() == ["requeue", "41"]
    assert "USR1 received" in err
    assert "--resume" not in (tmp_path / "srun.args").read_text()


def test_requeued_run_resumes_and_plain_exit_does_not_requeue(tmp_path):
    rc, err, scontrol = run_script(tmp_path, {"SLURM_RESTART_COUNT": "1", "FAKE_N": "1"},
                                   send_usr1=False)
    assert rc == 0 and scontrol == ""
    assert (tmp_path / "srun.args").read_text().split()[-1] == "--resume"


def test_step_killed_by_the_forwarded_usr1_is_requeued_too(tmp_path):
    rc, _, scontrol = run_script(tmp_path, {"FAKE_NOTRAP": "1"}, send_usr1=True)
    assert rc == 128 + signal.SIGUSR1 and scontrol.split() == ["requeue", "41"]


def test_failed_step_without_usr1_is_not_requeued(tmp_path):
    rc, _, scontrol = run_script(tmp_path, {"FAKE_N": "1", "FAKE_RC": "1"}, send_usr1=False)
    assert rc == 1 and scontrol == ""


def test_requeue_stops_after_max_restarts(tmp_path):
    rc, _, scontrol = run_script(tmp_path, {"SLURM_RESTART_COUNT": "5"}, send_usr1=True)
    assert rc == 75 and scontrol == ""


# ---------------------------------------------------------------- Slurm commands

def test_submit_parses_parsable_output(tmp_path, monkeypatch):
    bindir = fake_bin(tmp_path, "sbatch", 'echo "$@" > "$FAKE_DIR/sbatch.args"; echo "123;clu"\n')
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    assert sb.submit(tmp_path / "s.sbatch") == "123"
    assert (tmp_path / "sbatch.args").read_text().split() == ["--parsable", f"{tmp_path}/s.sbatch"]


def test_submit_reports_sbatch_errors(tmp_path, monkeypatch):
    bindir = fake_bin(tmp_path, "sbatch", 'echo "sbatch: error: invalid partition" >&2; exit 1\n')
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with pytest.raises(SubmitError, match="invalid partition"):
        sb.submit(tmp_path / "s.sbatch")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(SubmitError, match="sbatch not found"):
        sb.submit(tmp_path / "s.sbatch")


def test_parse_scontrol():
    line = ("JobId=7 JobName=prs job UserId=root(0) JobState=RUNNING Reason=None "
            "Command=/tmp/a b/s.sbatch StartTime=2026-11-23T23:40:01 TRES=cpu=8,node=1")
    d = sb.parse_scontrol(line)
    assert d["JobId"] == "7" and d["JobName"] == "prs job" and d["JobState"] == "RUNNING"
    assert d["Command"] == "/tmp/a b/s.sbatch" and d["TRES"] == "cpu=8,node=1"


# ---------------------------------------------------------------- following a job

def write_json(path, doc):
    Path(path).write_text(json.dumps(doc))


@pytest.mark.parametrize("state,code", [("succeeded", 0), ("interrupted", 75), ("failed", 1),
                                        ("running", 1)])
def test_result_code(tmp_path, state, code):
    write_json(tmp_path / "job_result.json", {"version": 1, "state": state, "reason": "r"})
    got, why = sb.result_code(tmp_path)
    assert got == code and state in why
    assert sb.result_code(tmp_path, since=time.time() + 60)[0] == 1  # stale file


def test_result_code_without_result_names_the_slurm_log(tmp_path):
    code, why = sb.result_code(tmp_path)
    assert code == 1 and f"{tmp_path}/slurm-*.out" in why


def test_progress_line():
    st = {"state": "running", "items": {"total": 100, "done": 50, "succeeded": 49, "failed": 1},
          "mini_batches": {"done": 5, "in_flight": 8}, "rate_items_per_s": 9.8,
          "eta_seconds": 5.1}
    line = sb.progress_line("12", st)
    for part in ("job 12 running", "50/100", "49 ok", "1 failed", "5 done", "8 in flight",
                 "9.8 items/s", f"eta {fmt_duration(5.1)}"):
        assert part in line
    assert "0/?" in sb.progress_line("12", {"items": {"total": None}})


FAKE_SCONTROL = """\
n=$(cat "$FAKE_DIR/n" 2>/dev/null || echo 0); echo $((n + 1)) > "$FAKE_DIR/n"
states=(PENDING RUNNING RUNNING PENDING RUNNING COMPLETED)
s=${states[$n]:-COMPLETED}
if [[ $n == 2 ]]; then cp "$FAKE_DIR/status2.json" "$FAKE_DIR/out/status.json"; fi
if [[ $s == COMPLETED ]]; then cp "$FAKE_DIR/result.json" "$FAKE_DIR/out/job_result.json"; fi
echo "JobId=$3 JobName=x JobState=$s Reason=None StartTime=2000-01-01T00:00:00 EndTime=Unknown"
"""


def test_wait_follows_requeue_to_the_end(tmp_path, monkeypatch):
    bindir = fake_bin(tmp_path, "scontrol", FAKE_SCONTROL)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    (tmp_path / "out").mkdir()
    now = time.time()
    write_json(tmp_path / "out" / "status.json", {"state": "running", "updated": now,
                                                  "items": {"done": 3, "total": 10}})
    write_json(tmp_path / "status2.json", {"state": "running", "updated": now,
                                           "items": {"done": 7, "total": 10}})
    write_json(tmp_path / "result.json", {"version": 1, "state": "succeeded"})
    lines = []
    assert sb.wait("9", tmp_path / "out", poll=0.01, out=lines.append) == 0
    states = [ln for ln in lines if ln.startswith("job 9 ") and ":" not in ln]
    assert states == ["job 9 PENDING", "job 9 RUNNING", "job 9 PENDING", "job 9 RUNNING",
                      "job 9 COMPLETED"]
    progress = [ln for ln in lines if "items " in ln]
    assert [p.split("items ")[1].split()[0] for p in progress] == ["3/10", "7/10"]
    assert lines[-1] == "job 9 ended: prs-mpi run succeeded; exit code 0"


def test_wait_when_slurm_forgot_the_job(tmp_path, monkeypatch):
    bindir = fake_bin(tmp_path, "scontrol",
                      'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1\n')
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    write_json(tmp_path / "job_result.json", {"version": 1, "state": "interrupted"})
    lines = []
    assert sb.wait("9", tmp_path, poll=0.01, out=lines.append) == 75
    assert lines[0] == "job 9 GONE"


# ---------------------------------------------------------------- the hand-written templates

TEMPLATES = sorted((Path(__file__).resolve().parents[1] / "slurm").glob("*.sbatch"))


def test_all_three_templates_exist():
    assert [p.name for p in TEMPLATES] == ["cpu.sbatch", "gpu.sbatch", "multinode.sbatch"]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_shape(path):
    text = path.read_text()
    subprocess.run(["bash", "-n", str(path)], check=True)
    lines = text.splitlines()
    body = [i for i, ln in enumerate(lines) if ln and not ln.startswith("#")]
    assert all(not ln.startswith("#SBATCH") for ln in lines[body[0]:]), "#SBATCH block first"
    heads = " ".join(sbatch_lines(text))
    for want in ("--signal=B:USR1@", "--requeue", "--open-mode=append", "--ntasks-per-node="):
        assert want in heads
    for want in ("srun --mpi=pmi2", "srun --mpi=pmix", 'mpiexec -n "$SLURM_NTASKS"',
                 "SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK", "trap forward_usr1 USR1",
                 'scontrol requeue "$SLURM_JOB_ID"', "RESUME=(--resume)"):
        assert want in text, want


def test_templates_share_the_rendered_scripts_signal_logic(tmp_path):
    rendered = render_sbatch(tmp_path / "j.toml", tmp_path)
    for path in TEMPLATES:
        text = path.read_text()
        for line in ("while :; do GOT=0; wait \"$STEP\"; RC=$?; (( GOT && RC > 128 )) || break; done",
                     "if (( ${SLURM_RESTART_COUNT:-0} > 0 )); then RESUME=(--resume); fi"):
            assert line in text and line in rendered, (path.name, line)
