"""Config composition, defaults, and the errors a user sees for bad values."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from tests.conftest import TINY, cli, compose_cfg
from wgangp.config.validate import validate
from wgangp.errors import ConfigError


def test_defaults_reproduce_the_paper():
    cfg = compose_cfg()
    assert cfg.gp["lambda"] == 10.0 and cfg.gp.target == 1.0 and cfg.gp.one_sided is False
    assert cfg.trainer.n_critic == 5
    for who in ("critic", "generator"):
        assert cfg.optim[who].lr == 1e-4
        assert list(cfg.optim[who].betas) == [0.0, 0.9]
    assert cfg.dataset.name == "gaussians8"


@pytest.mark.parametrize("data", ["gaussians8", "gaussians25", "swissroll"])
def test_toy_paper_experiment_combines_with_any_points_dataset(data):
    cfg = compose_cfg("experiment=toy_paper", f"dataset={data}")
    assert cfg.dataset.name == data
    assert cfg.gp["lambda"] == 0.1
    assert list(cfg.optim.critic.betas) == [0.5, 0.9] == list(cfg.optim.generator.betas)
    assert (cfg.critic.dim, cfg.critic.depth, cfg.critic.activation) == (512, 3, "relu")
    assert (cfg.generator.dim, cfg.generator.depth) == (512, 3)
    assert cfg.trainer.batch_size == 256 and cfg.trainer.n_critic == 5
    assert cfg.trainer.steps == 100_000  # ITERS
    assert cfg.critic.init == "tflib" == cfg.generator.init


def test_toy_paper_with_a_points_file():
    cfg = compose_cfg("experiment=toy_paper", "dataset=points", "dataset.path=/x/p.npy")
    assert cfg.dataset.name == "points" and cfg.dataset.path == "/x/p.npy"


def test_schema_rejects_wrong_types_and_unknown_keys():
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg("gp.lambda=abc")
    assert isinstance(e.value.__cause__, ValidationError)
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(compose_cfg(), {"trainer": {"stepz": 3}})


BAD = [  # noqa: E501 (one row per case reads best)
    (
        "gp.lambda=-1",
        "invalid value for gp.lambda: -1.0 (allowed: a number ≥ 0); the paper uses 10",
    ),
    ("trainer.n_critic=0", "invalid value for trainer.n_critic: 0 (allowed: an integer ≥ 1)"),
    ("trainer.batch_size=0", "invalid value for trainer.batch_size: 0 (allowed: an integer ≥ 1)"),
    (
        "optim.critic.lr=0",
        "invalid value for optim.critic.lr: 0.0 (allowed: a number > 0); e.g. 1e-4 (the paper's)",
    ),
    (
        "optim.generator.lr=-0.1",
        "invalid value for optim.generator.lr: -0.1 (allowed: a number > 0); e.g. 1e-4 (the paper's)",  # noqa: E501
    ),
    (
        "optim.critic.betas=[0.5,1.0]",
        "invalid value for optim.critic.betas[1]: 1.0 (allowed: 0 ≤ β < 1)",
    ),
    (
        "optim.generator.betas=[-0.1,0.9]",
        "invalid value for optim.generator.betas[0]: -0.1 (allowed: 0 ≤ β < 1)",
    ),
    (
        "optim.critic.betas=[0.5]",
        "invalid value for optim.critic.betas: [0.5] (allowed: two numbers [β1, β2]); e.g. [0.0, 0.9] (the paper's)",  # noqa: E501
    ),
    (
        "trainer.device=tpu",
        "invalid value for trainer.device: 'tpu' (allowed: auto | cpu | cuda | cuda:N)",
    ),
    (
        "trainer.precision=fp8",
        "invalid value for trainer.precision: 'fp8' (allowed: fp32 | bf16 | fp16)",
    ),
    (
        "trainer.ema.decay=1.5",
        "invalid value for trainer.ema.decay: 1.5 (allowed: null (off) or 0 < decay < 1); e.g. 0.999",  # noqa: E501
    ),
    ("gp.target=-1", "invalid value for gp.target: -1.0 (allowed: a number ≥ 0); the paper uses 1"),
    ("trainer.ema.start=-5", "invalid value for trainer.ema.start: -5 (allowed: an integer ≥ 0)"),
    (
        "eval.bn=train",
        "invalid value for eval.bn: 'train' (allowed: running | batch); running: batch norm "
        "with the training's running statistics; batch: with each sampling batch's "
        "statistics (the official code's)",
    ),
    (
        "trainer.gen_batch_size=0",
        "invalid value for trainer.gen_batch_size: 0 (allowed: an integer ≥ 1)",
    ),
]


@pytest.mark.parametrize("override,message", BAD)
def test_semantic_errors_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(override))
    assert str(e.value) == message


def test_batchnorm_in_the_critic_is_refused_with_the_reason():
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg("critic.norm=batchnorm"))
    msg = str(e.value)
    assert msg.startswith("invalid value for critic.norm: 'batchnorm' (allowed: none | layernorm")
    assert "per-sample penalty" in msg and "use layernorm" in msg


def test_cuda_asked_for_but_absent(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg("trainer.device=cuda"))
    assert str(e.value) == (
        "invalid value for trainer.device: 'cuda' (allowed: auto | cpu | cuda | cuda:N); "
        "CUDA is not available on this machine; use trainer.device=cpu (or auto)"
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["gp.lambda=-1"],
            "wgangp: error: invalid value for gp.lambda: -1.0 (allowed: a number ≥ 0)",
        ),
        (["critic.norm=batchnorm"], "invalid value for critic.norm: 'batchnorm'"),
        (["gp.lambda=abc"], "gp.lambda"),
        (["trainer.stepz=3"], "stepz"),
        (["dataset=nope"], "gaussians25"),
        (["dataset=points"], "invalid value for dataset.path: None"),
        (
            ["dataset=points", "dataset.path=/no/such.npy"],
            "dataset.path='/no/such.npy': no such file",
        ),
        (["resume=/no/such/run"], "checkpoint /no/such/run: no such file or directory"),
    ],
)
def test_cli_user_mistakes_exit_nonzero_without_traceback(tmp_path, args, needle):
    proc = cli(*TINY, *args, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert needle in proc.stderr, proc.stderr
    # nothing was trained: no checkpoint anywhere
    assert not list(tmp_path.rglob("*.pt"))
