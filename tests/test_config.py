"""Job file validation, defaults and overrides (no MPI)."""
from __future__ import annotations

import pytest

from prs_mpi.config import apply_overrides, load_config, parse_override, parse_size
from prs_mpi.errors import ConfigError

from jobkit import ECHO


def test_defaults_follow_parallel_run_config(jobdir):
    jobdir.script(ECHO)
    cfg = load_config(jobdir.job())
    assert cfg.mini_batch_size == 10
    assert cfg.run_invocation_timeout == 60 and cfg.run_max_try == 3
    assert cfg.output_action == "append_row" and cfg.append_row_file_name == "parallel_run_step.txt"
    assert cfg.error_threshold == -1 and cfg.allowed_failed_count == -1 and cfg.allowed_failed_percent == 100
    assert cfg.allow_reuse is True and cfg.isolation == "process"
    assert cfg.output_dir == str(jobdir.root / "out")
    assert cfg.input.paths == (str(jobdir.root / "data" / "*.txt"),)


def test_tabular_mini_batch_size_is_a_byte_size(jobdir):
    jobdir.script(ECHO)
    assert load_config(jobdir.job(input={"kind": "tabular"})).mini_batch_size == 1024 ** 2
    assert load_config(jobdir.job(mini_batch_size="10KB", input={"kind": "tabular"})).mini_batch_size == 10240
    with pytest.raises(ConfigError, match="mini_batch_size.*byte size"):
        load_config(jobdir.job(mini_batch_size="ten", input={"kind": "tabular"}))


@pytest.mark.parametrize("text,expected", [(1024, 1024), ("1KB", 1024), ("1MB", 1024 ** 2), ("1 GB", 1024 ** 3),
                                           ("2.5MB", int(2.5 * 1024 ** 2)), ("512", 512), ("1MiB", 1024 ** 2)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", [0, -1, "abc", "1XB", True])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_typo_gets_did_you_mean(jobdir):
    jobdir.script(ECHO)
    with pytest.raises(ConfigError) as e:
        load_config(jobdir.job(mini_bacth_size=3))
    msg = str(e.value)
    assert "job.toml" in msg and "unknown key 'mini_bacth_size'" in msg and "did you mean 'mini_batch_size'" in msg
    assert "\n" not in msg


def test_misplaced_key_names_its_table(jobdir):
    jobdir.script(ECHO)
    with pytest.raises(ConfigError, match=r"'kind'.*belongs in the \[input\] table"):
        load_config(jobdir.job(kind="file"))


def test_wrong_type_names_key_expected_and_found(jobdir):
    jobdir.script(ECHO)
    with pytest.raises(ConfigError, match=r"key 'run_max_try': expected an integer >= 1, found 0"):
        load_config(jobdir.job(run_max_try=0))
    with pytest.raises(ConfigError, match=r"key 'output_action': expected one of append_row, summary_only, "
                                          r"found 'append'"):
        load_config(jobdir.job(output_action="append"))
    with pytest.raises(ConfigError, match=r"key 'mini_batch_size': expected a positive file count"):
        load_config(jobdir.job(mini_batch_size="1MB"))


def test_missing_entry_script_and_run(jobdir):
    with pytest.raises(ConfigError, match="entry_script': no such file"):
        load_config(jobdir.job())
    jobdir.script("def init():\n    pass\n")
    with pytest.raises(ConfigError, match="defines no run"):
        load_config(jobdir.job())
    jobdir.script("def run(:\n")
    with pytest.raises(ConfigError, match="syntax error"):
        load_config(jobdir.job())


def test_invalid_toml_and_missing_file(jobdir):
    p = jobdir.root / "bad.toml"
    p.write_text("entry_script = 'a.py\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such job file"):
        load_config(jobdir.root / "nope.toml")


def test_missing_input_table(jobdir):
    jobdir.script(ECHO)
    p = jobdir.root / "j.toml"
    p.write_text('entry_script = "score.py"\n')
    with pytest.raises(ConfigError, match=r"missing \[input\] table"):
        load_config(p)


def test_overrides_are_typed_and_dotted(jobdir):
    jobdir.script(ECHO)
    cfg = load_config(jobdir.job(), sets=["mini_batch_size=1", "logging_level=debug", "input.kind=file",
                                          "environment_variables.OMP_NUM_THREADS=1", "arguments=['--x', '2']"],
                      inputs=["data/f1.txt"])
    assert cfg.mini_batch_size == 1
    assert cfg.logging_level == "DEBUG"
    assert cfg.environment_variables == {"OMP_NUM_THREADS": "1"}
    assert cfg.arguments == ("--x", "2")
    assert cfg.input.paths == (str(jobdir.root / "data" / "f1.txt"),)


def test_override_errors(jobdir):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("mini_batch_size")
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("x=hello") == (["x"], "hello")
    with pytest.raises(ConfigError, match="is not a table"):
        apply_overrides({"mini_batch_size": 3}, ["mini_batch_size.x=1"], [])


def test_override_typo_is_caught(jobdir):
    jobdir.script(ECHO)
    with pytest.raises(ConfigError, match="did you mean 'run_max_try'"):
        load_config(jobdir.job(), sets=["run_max_tries=2"])


def test_partition_keys_need_tabular(jobdir):
    jobdir.script(ECHO)
    with pytest.raises(ConfigError, match="partition_keys' needs tabular"):
        load_config(jobdir.job(partition_keys=["A"]))


def test_urls_are_kept_and_listing_files_resolved(jobdir):
    jobdir.script(ECHO)
    cfg = load_config(jobdir.job(input_paths=["s3://bucket/x/*.png", "@list.txt"]))
    assert cfg.input.paths == ("s3://bucket/x/*.png", "@" + str(jobdir.root / "list.txt"))


def test_missing_model_or_side_input_path(jobdir):
    jobdir.script(ECHO)
    with pytest.raises(ConfigError, match=r"key 'models.mnist': no such file or directory .*models/mnist"):
        load_config(jobdir.job(models={"mnist": "models/mnist"}))
    (jobdir.root / "labels.json").write_text("{}")
    cfg = load_config(jobdir.job(side_inputs={"labels": "labels.json"}, models={"m": "https://host/m.bin"}))
    assert cfg.side_inputs == {"labels": str(jobdir.root / "labels.json")}
    assert cfg.models == {"m": "https://host/m.bin"}


def test_speculation_needs_append_row_and_a_child_process(jobdir):
    jobdir.script(ECHO)
    assert load_config(jobdir.job(dispatch={"speculative": True})).speculative is True
    for bad in ({"output_action": "summary_only"}, {"isolation": "none"}):
        with pytest.raises(ConfigError, match=r"'dispatch.speculative' needs .*set speculative = false") as e:
            load_config(jobdir.job(dispatch={"speculative": True}, **bad))
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'dispatch.speculative': expected true or false"):
        load_config(jobdir.job(dispatch={"speculative": "yes"}))
