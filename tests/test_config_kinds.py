"""One schema per kind of data set (wgangp/config/schema_data.py): the composed
``dataset`` node holds its kind's keys only, a key of another kind is refused with one
line before Hydra composes, checkpoints written with every kind's keys still resume,
and ``--help`` is wgangp's."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import TINY, cli, cli_as_typed, compose_cfg
from wgangp.config.compose import config_dir, config_groups, dataset_schema
from wgangp.config.legacy import upgrade
from wgangp.config.overrides import check_value_overrides
from wgangp.config.precheck import check_group_overrides
from wgangp.config.resume import resume_config
from wgangp.config.schema_data import (
    DecodedImageDataConfig,
    ImageDataConfig,
    LsunDataConfig,
    PointsDataConfig,
    StackedMnistDataConfig,
    TextDataConfig,
    data_keys,
)
from wgangp.io.checkpoint import atomic_save, load_checkpoint

GROUPS = config_groups(config_dir())

#: the data set node every checkpoint held while one schema served every kind
ALL_KINDS_DATASET = {
    "path": None,
    "modes": None,
    "mode_std": None,
    "root": "data",
    "image_size": 32,
    "channels": 3,
    "download": False,
    "num_workers": 2,
    "crop": "center",
    "category": "bedroom",
    "split": "train",
    "subset": None,
    "on_device": False,
    "dequantize": False,
    "pixel_range": [-1.0, 1.0],
    "scale": None,
    "noise": None,
    "fixed_points": None,
    "seq_len": 32,
    "max_examples": 10_000_000,
    "max_vocab": 2048,
    "unit": "byte",
}


@pytest.mark.parametrize(
    ("dataset", "kind"),
    [
        ("gaussians8", PointsDataConfig),
        ("gaussians25", PointsDataConfig),
        ("swissroll", PointsDataConfig),
        ("points", PointsDataConfig),
        ("mnist", DecodedImageDataConfig),
        ("fashion_mnist", DecodedImageDataConfig),
        ("cifar10", DecodedImageDataConfig),
        ("celeba", DecodedImageDataConfig),
        ("image_folder", DecodedImageDataConfig),
        ("lsun", LsunDataConfig),
        ("mnist_pkl", ImageDataConfig),
        ("stacked_mnist", StackedMnistDataConfig),
        ("billion_word", TextDataConfig),
    ],
)
def test_each_data_set_composes_its_kinds_keys(dataset, kind):
    cfg = compose_cfg(f"dataset={dataset}")
    assert OmegaConf.get_type(cfg, "dataset") is kind
    assert dataset_schema(dataset) is kind
    assert list(cfg.dataset) == data_keys(kind)
    assert cfg.dataset.name == dataset


@pytest.mark.parametrize(
    ("dataset", "absent", "present"),
    [
        ("gaussians8", ("seq_len", "crop", "dequantize", "root"), ("fixed_points", "noise")),
        ("cifar10", ("seq_len", "modes", "category"), ("crop", "image_size", "subset")),
        ("billion_word", ("crop", "modes", "image_size"), ("seq_len", "unit", "root")),
    ],
)
def test_cfg_job_shows_only_the_keys_of_the_data_sets_kind(tmp_path, dataset, absent, present):
    proc = cli_as_typed(f"dataset={dataset}", "--cfg", "job", cwd=tmp_path, check=True)
    shown = OmegaConf.create(proc.stdout).dataset
    assert shown.name == dataset
    assert not set(absent) & set(shown), proc.stdout
    assert set(present) <= set(shown), proc.stdout


POINTS_KEYS = (
    "name, path, modes, mode_std, scale, noise, standardize, standardize_mean, "
    "standardize_scale, fixed_points"
)


def test_a_key_of_another_kind_is_refused_in_one_line(tmp_path):
    message = (
        "invalid value for dataset.seq_len: '8' (allowed: a key of gaussians8 (points "
        f"data: {POINTS_KEYS})); seq_len is a key of dataset=billion_word: choose that "
        "data set, or drop dataset.seq_len=8"
    )
    assert check_value_overrides(["dataset.seq_len=8"], GROUPS) == message
    proc = cli("dataset.seq_len=8", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"wgangp: error: {message}"]
    assert not (tmp_path / "outputs").exists()


def test_a_sweep_checks_the_key_against_every_data_set_it_runs():
    assert (
        check_value_overrides(["-m", "dataset=cifar10,lsun", "dataset.crop=random"], GROUPS) is None
    )
    assert check_value_overrides(
        ["-m", "dataset=lsun,cifar10", "dataset.category=bridge"], GROUPS
    ) == (
        "invalid value for dataset.category: 'bridge' (allowed: a key of cifar10 (image data: "
        "name, root, download, image_size, channels, split, subset, dequantize, pixel_range, "
        "num_workers, crop, hflip, on_device)); category is a key of dataset=lsun: choose "
        "that data set, or drop dataset.category=bridge"
    )


def test_unknown_and_mistyped_dataset_keys_name_the_kind():
    assert check_value_overrides(["dataset.noize=1"], GROUPS) == (
        f"invalid value for dataset.noize: '1' (allowed: a key of gaussians8 (points data: "
        f"{POINTS_KEYS})); did you mean dataset.noise?"
    )
    assert check_value_overrides(["dataset=billion_word", "dataset.seq_len=abc"], GROUPS) == (
        "invalid value for dataset.seq_len: 'abc' (allowed: an integer); e.g. dataset.seq_len=32"
    )
    # an experiment's data set decides the kind
    assert check_value_overrides(["experiment=language_paper", "dataset.unit=char"], GROUPS) is None


def test_an_experiment_without_a_data_set_of_its_kind_is_refused():
    assert check_group_overrides(["experiment=dcgan64_paper"], config_dir()) == (
        "experiment=dcgan64_paper sets dataset.image_size, which dataset=gaussians8 does "
        f"not have (the keys of gaussians8 (points data: {POINTS_KEYS})); add a data set "
        "that has it: dataset=celeba | cifar10 | fashion_mnist | image_folder | lsun | "
        "mnist | mnist_pkl | stacked_mnist"
    )
    assert check_group_overrides(["experiment=dcgan64_paper", "dataset=lsun"], config_dir()) is None


def test_the_kinds_schemas_are_no_data_sets():
    assert check_group_overrides(["dataset=points_schema"], config_dir()) == (
        "invalid option for dataset: 'points_schema' (allowed: billion_word | celeba | "
        "cifar10 | fashion_mnist | gaussians25 | gaussians8 | image_folder | lsun | mnist | "
        "mnist_pkl | points | stacked_mnist | swissroll)"
    )


def test_upgrade_keeps_the_keys_of_the_data_sets_kind():
    old = {"dataset": {"name": "billion_word", **ALL_KINDS_DATASET}, "gp": {"lambda": 10}}
    new = upgrade(old)
    assert new["dataset"] == {
        "name": "billion_word",
        "root": "data",
        "download": False,
        "seq_len": 32,
        "max_examples": 10_000_000,
        "max_vocab": 2048,
        "unit": "byte",
    }
    assert new["gp"] == {"lambda": 10} and len(old["dataset"]) == 23  # input untouched
    assert upgrade({"dataset": {"name": "mine", "x": 1}}) == {"dataset": {"name": "mine", "x": 1}}


def test_a_config_with_every_kinds_keys_resumes(tmp_path):
    """A checkpoint written while one schema held every kind's keys: they are dropped, and
    nothing counts as a change but what the command line changes."""
    run = [*TINY, "trainer.steps=2"]
    written = OmegaConf.to_container(compose_cfg(*run), resolve=True)
    written["dataset"] = {"name": "gaussians8", **ALL_KINDS_DATASET}
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg, _, changes = resume_config(
            {"config": written, "overrides": run}, tmp_path / "last.pt", ["trainer.steps=3"]
        )
    assert changes == {"trainer.steps": (2, 3)}
    assert list(cfg.dataset) == data_keys(PointsDataConfig)


def test_an_old_style_checkpoint_resumes_from_the_command_line(tmp_path):
    cli(*TINY, "trainer.steps=2", cwd=tmp_path, check=True)
    (last,) = tmp_path.glob("outputs/*/*/checkpoints/last.pt")
    ckpt = load_checkpoint(last)
    ckpt["config"]["dataset"] = {"name": "gaussians8", **ALL_KINDS_DATASET}
    atomic_save(ckpt, last)
    proc = cli(f"resume={last.parent.parent}", "trainer.steps=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    resumed = load_checkpoint(last)
    assert resumed["step"] == 3
    assert list(resumed["config"]["dataset"]) == data_keys(PointsDataConfig)
    assert (
        "config changes accepted: trainer.steps 2→3" in (last.parents[1] / "train.log").read_text()
    )


def test_help_is_wgangps(tmp_path):
    proc = cli_as_typed("--help", cwd=tmp_path, check=True)
    out = proc.stdout
    assert out.startswith(
        "wgangp-train: train a Wasserstein GAN with gradient penalty (Gulrajani et al. 2017)"
    )
    assert "powered by Hydra" not in out
    examples = [line.split("#")[0].strip() for line in out.splitlines() if "  wgangp-train" in line]
    assert examples == [
        "wgangp-train",
        "wgangp-train dataset=cifar10 dataset.download=true",
        "wgangp-train -m gp.lambda=0.1,1,10 trainer.seed=0,1",
    ]
    groups = dict(
        line.split(": ", 1)
        for line in out.split("== Configuration groups ==")[1].split("==")[0].splitlines()
        if ": " in line and not line.startswith("Choose")
    )
    assert groups["dataset"].split(", ") == [
        "billion_word", "celeba", "cifar10", "fashion_mnist", "gaussians25", "gaussians8",
        "image_folder", "lsun", "mnist", "mnist_pkl", "points", "stacked_mnist", "swissroll",
    ]  # fmt: skip
    assert groups["recipe"] == "paper, toy, toy_grid" and "hydra" not in groups
    # the composed config follows, the chosen data set's keys only
    assert "  name: gaussians8\n  path: null\n" in out and "seq_len" not in out


def test_every_schema_key_has_a_comment_above_it():
    """The configuration docs are generated from the comment above each field."""
    import inspect

    import wgangp.config.schema_data as module

    for kind in {
        PointsDataConfig,
        ImageDataConfig,
        DecodedImageDataConfig,
        LsunDataConfig,
        StackedMnistDataConfig,
        TextDataConfig,
    }:
        lines = inspect.getsource(kind).splitlines()  # a key may recur in another kind
        own = set(data_keys(kind)) - {
            f
            for base in kind.__mro__[1:]
            if hasattr(base, "__dataclass_fields__")
            for f in data_keys(base)
        }
        for key in own:
            (i,) = [n for n, line in enumerate(lines) if line.startswith(f"    {key}: ")]
            assert lines[i - 1].strip().startswith("#"), key
    assert Path(module.__file__).name.startswith("schema")
