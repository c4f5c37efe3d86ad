"""Property: no override string, however wrong, produces a traceback — only a clean
message (our UserError, or Hydra's compact composition errors) or a valid setup."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import HydraException
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import TINY, cli, compose_cfg
from wgangp.config.compose import config_dir, config_groups, resume_run_dir
from wgangp.config.overrides import check_value_overrides
from wgangp.config.precheck import check_group_overrides
from wgangp.config.schema import schema_keys
from wgangp.config.schema_data import DATA_SCHEMAS, data_keys
from wgangp.config.validate import validate
from wgangp.data import build_data
from wgangp.errors import UserError
from wgangp.io.checkpoint import load_checkpoint, resolve_checkpoint_path
from wgangp.models import build_critic, build_generator

GROUPS = {
    "dataset": [
        "gaussians8",
        "gaussians25",
        "swissroll",
        "points",
        "mnist",
        "image_folder",
        "cifar10",
        "lsun",
        "celeba",
        "fashion_mnist",
        "billion_word",
        "mnist_pkl",
    ],
    "critic": ["mlp", "language"],
    "generator": ["mlp", "language"],
    "optim": ["paper"],
    "gp": ["paper"],
    "trainer": ["default"],
    "experiment": ["toy_paper"],
}
JUNK_KEYS = [
    "trainer.stepz",
    "foo",
    "gp",
    "trainer",
    "gp.lambda.x",
    "hydra.run",
    "",
    "a.b.c",
    "dataset.path.x",
    "critic.",
    ".critic",
]
SCALARS = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(
        [
            "0",
            "-1",
            "1e400",
            "-1e-9",
            "nan",
            "inf",
            "-inf",
            "0.5",
            "1.0",
            "null",
            "true",
            "false",
            "abc",
            "''",
            "' '",
            "[]",
            "[0.5]",
            "[0.5,1.0]",
            "[a,b]",
            "{a:1}",
            "${nope}",
            "${gp.lambda}",
            "${oops:1}",
            "???",
            "cuda:9",
            "cpu",
            "cuda",
            "auto",
            "fp16",
            "bf16",
            "skip",
            "stop",
            "layernorm",
            "batchnorm",
            "~nouser/x",
            "/no/such",
            "random",
            "resize",
            "relu",
            "∞",
            "a=b",
            "\\",
            "[1,2,3]",
            "[[1,2],[3,4]]",
            "0x10",
            "1_000",
        ]
    ),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=6,
    ),
)
#: every kind's data set keys too (the base schema's dataset node holds name only)
DATASET_KEYS = sorted({f"dataset.{k}" for kind in DATA_SCHEMAS.values() for k in data_keys(kind)})
KEYS = st.sampled_from(schema_keys() + DATASET_KEYS + JUNK_KEYS)


@st.composite
def override(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["set", "set", "set", "group", "add", "del"]))
    if kind == "group":
        g = draw(st.sampled_from(sorted(GROUPS)))
        opt = draw(st.one_of(st.sampled_from(GROUPS[g]), SCALARS))
        return f"{g}={opt}"
    key = draw(KEYS)
    if kind == "del":
        return f"~{key}"
    return f"{'+' if kind == 'add' else ''}{key}={draw(SCALARS)}"


def setup_like_the_cli(overrides: list[str], root: str) -> None:
    """What the CLI does before training, in-process: compose, resolve the run dir,
    validate, open the checkpoint/data, build the networks."""
    groups = config_groups(config_dir())
    if check_group_overrides(overrides, config_dir()) or check_value_overrides(overrides, groups):
        return  # refused by wgangp-train before Hydra composes
    try:
        cfg = compose_cfg(*overrides)
    except HydraException:  # compact composition errors: Hydra prints one clean message
        return
    try:
        resume_run_dir(cfg.resume, "outputs/x")
        validate(cfg)
        # only now: before validate an override such as dataset.download=${nope} would
        # fail here, in the test, instead of in validate's clean message
        if cfg.dataset.get("download") is True:
            cfg.dataset.download = False  # no network here
        if cfg.dataset.get("root") == "data":
            cfg.dataset.root = root
        if cfg.resume not in (None, "", "auto"):
            load_checkpoint(resolve_checkpoint_path(cfg.resume))
        data = build_data(
            cfg.dataset, cfg.trainer.batch_size, torch.device("cpu"), cfg.trainer.seed
        )
        build_critic(cfg.critic, data.sample_shape)
        build_generator(cfg.generator, data.sample_shape)
    except UserError:
        return


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(override(), min_size=1, max_size=4))
@example(["resume=0", "~resume"])  # found by this test: a traceback from hydra.run.dir
@example(["dataset.download=${gp.lambda}"])  # found by this test: in its own set-up
@example(["dataset.download=${nope}"])
@example(["resume=${nope}"])  # found by this test: a traceback from hydra.run.dir
@example(["+resume=${nope}"])
def test_random_overrides_give_a_clean_message_or_a_valid_setup(tmp_path_factory, overrides):
    root = str(tmp_path_factory.getbasetemp() / "empty-data-root")
    setup_like_the_cli([*TINY, *overrides], root)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["resume=0", "~resume"],
            "cannot delete 'resume' ('~resume'): every wgangp setting is required; set it "
            "to another value instead (resume=VALUE; each key is described in "
            "wgangp/config/schema.py)",
        ),
        (
            ["~trainer.seed=0"],
            "cannot delete 'trainer.seed' ('~trainer.seed=0'): every wgangp setting is "
            "required; set it to another value instead (trainer.seed=VALUE; each key is "
            "described in wgangp/config/schema.py)",
        ),
        (
            ["~critic"],
            "cannot delete 'critic' ('~critic'): every wgangp setting is required; "
            "set it to another value instead (critic=VALUE; each key is described in "
            "wgangp/config/schema.py)",
        ),
        # optional groups, Hydra's keys and unknown keys: Hydra answers them cleanly
        (["~hparams_search"], None),
        (["experiment=toy_quality", "~experiment"], None),
        (["~hydra/launcher"], None),
        (["~foo"], None),
    ],
)
def test_deleting_a_schema_key_is_refused_before_hydra(args, message):
    assert check_group_overrides(args, config_dir()) == message


# each case is a fresh CLI process (~6 s): three in the fast suite, the rest in test-slow
@pytest.mark.parametrize(
    "args",
    [
        ["gp.lambda=${nope}"],
        pytest.param(["resume=${nope}"], marks=pytest.mark.slow),
        pytest.param(["trainer.steps=${gp.lambda}"], marks=pytest.mark.slow),
        ["dataset=points", "dataset.path=~nouser/p.npy"],
        pytest.param(["resume=~nouser/run"], marks=pytest.mark.slow),
        pytest.param(["critic.dim=-3"], marks=pytest.mark.slow),
        pytest.param(["foo=bar"], marks=pytest.mark.slow),
        pytest.param(["+trainer.stepz=1"], marks=pytest.mark.slow),
        ["dataset.modes=[[1,2],[3]]", "dataset=points", "dataset.path=/no/x.npy"],
    ],
)
def test_a_few_bad_override_sets_through_the_cli_have_no_traceback(tmp_path, args):
    proc = cli(*TINY, "trainer.steps=1", *args, cwd=tmp_path, timeout=120)
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.stderr.strip(), "no message"
