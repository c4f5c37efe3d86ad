"""The recipe a run starts from (configs/recipe/): ``toy`` for the toy data sets, the
paper's constants for everything else, and what resumes and experiments make of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import cli, cli_as_typed
from wgangp.config.choices import experiment_dataset_keys
from wgangp.config.compose import compose_config, config_dir
from wgangp.config.precheck import check_group_overrides
from wgangp.config.resume import with_recipe
from wgangp.io.checkpoint import load_checkpoint

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
TOY_SETS = ("gaussians8", "gaussians25", "swissroll")


def plain(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_config(list(overrides)), resolve=False)


def constants(cfg: dict) -> tuple:
    """The keys a recipe sets."""
    c, g, o, t = cfg["critic"], cfg["generator"], cfg["optim"], cfg["trainer"]
    return (
        (c["dim"], c["depth"], c["init"], g["dim"], g["depth"], g["z_dim"], g["init"]),
        (o["critic"]["lr"], o["critic"]["betas"], o["generator"]["lr"], o["lr_decay"]),
        cfg["gp"]["lambda"],
        (t["batch_size"], t["n_critic"], t["steps"], t["sample_every"], t["ckpt_every"]),
        (t["ema"]["decay"], t["ema"]["start"], cfg["eval"]["every"]),
    )


TOY = (
    (128, 3, "pytorch", 256, 4, 2, "pytorch"),
    (2e-3, [0.0, 0.9], 2e-3, "linear"),
    0.1,
    (512, 3, 1500, 500, 500),
    (0.995, 750, 500),
)
PAPER = (
    (512, 3, "tflib", 512, 3, 2, "tflib"),
    (1e-4, [0.0, 0.9], 1e-4, "none"),
    10.0,
    (256, 5, 300, 100, 100),
    (None, 0, 0),
)


#: recipe=toy_grid, gaussians25's: toy for twice as many steps
TOY_GRID = (*TOY[:3], (512, 3, 3000, 500, 500), (0.995, 1500, 500))


@pytest.mark.parametrize("dataset", TOY_SETS)
def test_toy_data_sets_start_from_the_toy_recipe(dataset):
    want = TOY_GRID if dataset == "gaussians25" else TOY
    assert constants(plain(f"dataset={dataset}")) == want
    assert constants(plain(f"dataset={dataset}", "recipe=toy")) == TOY
    assert constants(plain(f"dataset={dataset}", "recipe=paper")) == PAPER
    # single keys still win over the recipe
    assert plain(f"dataset={dataset}", "gp.lambda=10")["gp"]["lambda"] == 10.0


def test_the_bare_default_is_gaussians8_on_the_toy_recipe():
    cfg = plain()
    assert cfg["dataset"]["name"] == "gaussians8" and constants(cfg) == TOY
    assert cfg["eval"]["metrics"] is None  # the data set's: modes where it has them


def test_image_and_user_data_keep_the_paper_constants():
    for dataset in ("cifar10", "celeba", "mnist", "points"):
        cfg = plain(f"dataset={dataset}")
        assert cfg["gp"]["lambda"] == 10.0 and cfg["trainer"]["n_critic"] == 5, dataset
        assert cfg["optim"]["critic"]["lr"] == 1e-4 and cfg["trainer"]["ema"]["decay"] is None


#: the experiments that run on points data (the others set image or text keys)
POINTS_EXPERIMENTS = [e for e in EXPERIMENTS if not experiment_dataset_keys(config_dir(), e)]


@pytest.mark.parametrize("experiment", POINTS_EXPERIMENTS)
def test_an_experiment_is_the_same_whatever_the_data_sets_recipe(experiment):
    """An experiment names its recipe, so a toy data set's default leaks nothing into
    it: composed on gaussians8 (recipe toy) it equals itself composed on points (no
    recipe of its own) but for the data set."""
    a = plain(f"experiment={experiment}", "dataset=gaussians8")
    b = plain(f"experiment={experiment}", "dataset=points")
    a.pop("dataset"), b.pop("dataset")
    assert a == b


def test_toy_paper_is_the_official_toy_script_on_a_toy_set():
    cfg = plain("experiment=toy_paper", "dataset=gaussians25")
    assert cfg["gp"]["lambda"] == 0.1 and cfg["optim"]["critic"]["betas"] == [0.5, 0.9]
    assert (cfg["critic"]["dim"], cfg["trainer"]["batch_size"], cfg["trainer"]["n_critic"]) == (
        512,
        256,
        5,
    )
    # nothing of the toy recipe's: no EMA, no decay, no evaluation
    assert cfg["trainer"]["ema"]["decay"] is None and cfg["optim"]["lr_decay"] == "none"
    assert cfg["eval"]["every"] == 0


def test_toy_quality_is_the_toy_recipe_four_times_as_long():
    """The quality benchmark's settings, unchanged by moving them into recipe=toy."""
    cfg = plain("experiment=toy_quality", "dataset=gaussians25")
    want = (TOY[0], TOY[1], 0.1, (512, 3, 6000, 2000, 2000), (0.995, 3000, 2000))
    assert constants(cfg) == want
    assert cfg["eval"]["metrics"] == ["modes_captured", "high_quality", "reverse_kl", "wasserstein"]


def test_recipe_errors_name_the_fix():
    conf = config_dir()
    assert check_group_overrides(["experiment=toy_quality", "recipe=paper"], conf) == (
        "'recipe=paper' with 'experiment=toy_quality': an experiment brings its own recipe "
        "and recipe= would replace it; drop one of the two (set single keys instead, e.g. "
        "gp.lambda=10)"
    )
    assert check_group_overrides(["~recipe"], conf) == (
        "cannot delete recipe ('~recipe'): every run starts from one; recipe=paper runs the "
        "paper's constants, recipe=toy (toy_grid) the toy data sets' tuned one "
        "(configs/recipe/)"
    )
    assert check_group_overrides(["recipe=null"], conf) == (
        "invalid option for recipe: 'null' (allowed: paper | toy | toy_grid)"
    )
    assert check_group_overrides(["-m", "recipe=paper,toy", "dataset=swissroll"], conf) is None
    assert check_group_overrides(["recipe=toy", "dataset=cifar10"], conf) == (
        "recipe=toy with dataset=cifar10: the toy recipes are for 2-D point sets (gaussians8, "
        "gaussians25, swissroll, points: MLPs, a 2-d latent); cifar10 runs on recipe=paper "
        "(the default for it) or an experiment"
    )
    sweep = ["-m", "recipe=paper,toy_grid", "dataset=points,celeba"]
    assert check_group_overrides(sweep, conf).startswith("recipe=toy_grid with dataset=celeba: ")
    assert check_group_overrides(["recipe=toy", "dataset=points"], conf) is None


def test_with_recipe_records_the_choice_once():
    assert with_recipe(["gp.lambda=1"], "toy") == ["recipe=toy", "gp.lambda=1"]
    assert with_recipe(["experiment=toy_paper"], "paper") == ["experiment=toy_paper"]
    assert with_recipe(["recipe=paper"], "paper") == ["recipe=paper"]
    # a checkpoint's list without one predates recipes: the paper's constants then
    assert with_recipe(["gp.lambda=1"], None) == ["recipe=paper", "gp.lambda=1"]


QUICK = ["trainer.device=cpu", "trainer.progress=false", "trainer.sample_every=0"]


def test_a_run_records_its_recipe_and_resumes_on_it(tmp_path):
    """The recipe goes into the checkpoint's overrides, so a resume recomposes the same
    constants; a checkpoint from before recipes (no recipe in its list) resumes on the
    paper's constants it was trained with, not the toy default of today."""
    toy, old = tmp_path / "toy", tmp_path / "old"
    cli_as_typed(*QUICK, "trainer.steps=2", f"hydra.run.dir={toy}", cwd=tmp_path, check=True)
    ck = load_checkpoint(toy / "checkpoints" / "last.pt")
    assert ck["overrides"][0] == "recipe=toy" and ck["config"]["gp"]["lambda"] == 0.1
    proc = cli_as_typed(f"resume={toy}", "trainer.steps=3", *QUICK, cwd=tmp_path, check=True)
    ck = load_checkpoint(toy / "checkpoints" / "last.pt")
    assert ck["step"] == 3 and ck["config"]["critic"]["dim"] == 128
    assert "config changes accepted: trainer.steps 2→3\n" in proc.stdout  # and no other

    common = [*QUICK, "critic.dim=32", "generator.dim=32", "trainer.batch_size=16"]
    cli(*common, "trainer.steps=2", f"hydra.run.dir={old}", cwd=tmp_path, check=True)
    last = old / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=False)
    assert ck["overrides"][-1] == "recipe=paper" and ck["config"]["gp"]["lambda"] == 10.0
    ck["overrides"] = [o for o in ck["overrides"] if o != "recipe=paper"]  # as before recipes
    torch.save(ck, last)
    proc = cli_as_typed(f"resume={old}", "trainer.steps=3", *QUICK, cwd=tmp_path, check=True)
    ck = load_checkpoint(last)
    assert ck["step"] == 3 and ck["config"]["gp"]["lambda"] == 10.0
    assert "config changes accepted: trainer.steps 2→3\n" in proc.stdout  # and no other


def test_the_default_command_fits_the_eight_gaussians(tmp_path):
    """`wgangp-train` exactly as the README's first screen types it: 8 of 8 modes and
    most samples within 3σ of one at its 1500 steps (~30 s on 2 cores)."""
    proc = cli_as_typed("trainer.progress=false", cwd=tmp_path, check=True, timeout=600)
    assert "recipe: toy (dataset=gaussians8 picks it" in proc.stdout
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["step"] == 1500 and last["modes_captured"] == 8, rows
    assert last["high_quality"] >= 0.9, rows
    assert (run / "checkpoints" / "last.pt").is_file() and list((run / "samples").glob("*.png"))


def test_the_readme_names_the_recipe():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "wgangp-train recipe=paper" in readme


def test_extending_a_decayed_run_says_what_the_learning_rate_does(tmp_path):
    """recipe=toy decays the learning rate to 0 at trainer.steps; resuming with more
    steps stretches the schedule, and the log says so with the numbers."""
    run = tmp_path / "run"
    cli_as_typed(*QUICK, "trainer.steps=4", f"hydra.run.dir={run}", cwd=tmp_path, check=True)
    proc = cli_as_typed(f"resume={run}", "trainer.steps=8", *QUICK, cwd=tmp_path, check=True)
    # lr 2e-3: at step 4, 0 of a 4-step schedule, half of an 8-step one
    assert (
        "optim.lr_decay=linear over trainer.steps=8 (was 4): the generator's learning rate "
        "at step 4 goes from 0 to 0.001 and falls linearly to 0 at step 8"
    ) in proc.stdout
