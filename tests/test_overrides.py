"""KEY=VALUE overrides checked before Hydra composes (wgangp/config/overrides.py): an unknown
key or a value of the wrong type is one line naming the key, the value, what it takes
and a fix; everything else is left to the later checks and to Hydra."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import TINY, cli
from tests.test_fuzz_config import override
from wgangp.config.compose import config_dir, config_groups
from wgangp.config.overrides import check_value_overrides

GROUPS = config_groups(config_dir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["resume=${nope}"],
            "invalid value for resume: '${nope}' (allowed: a checkpoint file, a run "
            "directory or auto); write the path itself, not an interpolation",
        ),
        (
            ["gp.lambda=abc"],
            "invalid value for gp.lambda: 'abc' (allowed: a number); e.g. gp.lambda=10.0",
        ),
        (
            ["trainer.steps=1.5"],
            "invalid value for trainer.steps: 1.5 (allowed: an integer); e.g. trainer.steps=2000",
        ),
        (
            ["speed.fuse_real_fake=maybe"],
            "invalid value for speed.fuse_real_fake: 'maybe' (allowed: true or false); "
            "e.g. speed.fuse_real_fake=true",
        ),
        (
            ["trainer.ema.decay=abc"],
            "invalid value for trainer.ema.decay: 'abc' (allowed: a number or null); "
            "set trainer.ema.decay to a number or null",
        ),
        (
            ["eval.metrics=fid"],
            "invalid value for eval.metrics: 'fid' (allowed: a list, e.g. [a, b] or null); "
            "a list takes brackets: eval.metrics=[fid]",
        ),
        (
            ["optim.critic.betas=[a,0.9]"],
            "invalid value for optim.critic.betas: ['a', 0.9] (allowed: a list, e.g. [a, b]); "
            "e.g. optim.critic.betas=[0.0,0.9]",
        ),
        (
            ["trainer.stepz=3"],
            "invalid value for trainer.stepz: '3' (allowed: a key of the schema (see "
            "wgangp/config/schema.py)); did you mean trainer.steps?",
        ),
        (
            ["foo=3"],
            "invalid value for foo: '3' (allowed: a key of the schema "
            "(see wgangp/config/schema.py)); remove it",
        ),
        # a sweep: the element that does not fit
        (
            ["-m", "gp.lambda=1,abc"],
            "invalid value for gp.lambda: 'abc' (allowed: a number); e.g. gp.lambda=10.0",
        ),
        # the first bad one of several, in order
        (
            ["trainer.steps=5", "critic.dim=wide", "gp.lambda=abc"],
            "invalid value for critic.dim: 'wide' (allowed: an integer); e.g. critic.dim=512",
        ),
    ],
)
def test_unknown_keys_and_wrong_types_in_one_line(args, message):
    assert check_value_overrides(args, GROUPS) == message


@pytest.mark.parametrize(
    "args",
    [
        ["gp.lambda=1", "trainer.steps=10", "trainer.ema.decay=null", "optim.critic.betas=[0,0.9]"],
        ["trainer.steps=${gp.lambda}"],  # interpolations: resolved and checked later
        ["dataset.modes=[[1,2],[3,4]]", "dataset.modes.x=1"],  # a free-form node
        ["hydra.run.dir=out", "hydra.job.chdir=true"],  # Hydra's keys
        ["+trainer.stepz=1", "~experiment", "++gp.lambda=2"],  # adds and deletes
        ["dataset=nope", "critic=mlp", "hydra/launcher=basic"],  # groups: checked elsewhere
        ["-m", "gp.lambda=1,10", "trainer.seed=range(3)", "gp.target=interval(0,1)"],
        ["gp.lambda=[", "=3", "gp.lambda"],  # malformed: Hydra's own message
        [
            "eval.metrics=[js1,js4]",
            "eval.metrics=null",
            "dataset=mnist",
            "dataset.pixel_range=[0,1]",
        ],
    ],
)
def test_what_it_leaves_to_the_later_checks(args):
    assert check_value_overrides(args, GROUPS) is None


def test_the_cli_says_it_before_hydra(tmp_path):
    proc = cli(*TINY, "trainer.steps=1", "critic.dim=xx", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "wgangp: error: invalid value for critic.dim: 'xx' (allowed: an integer); "
        "e.g. critic.dim=512"
    )
    assert not list(tmp_path.rglob("*.pt")) and not (tmp_path / "outputs").exists()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(override(), st.text(max_size=20), st.just("-m")), max_size=5))
@example(["dataset.category=0", "experiment=0"])  # found by this test: an IndexError
def test_any_argument_list_gives_a_message_or_none_never_an_exception(args):
    result = check_value_overrides(args, GROUPS)
    assert result is None or result.startswith("invalid value for ")
