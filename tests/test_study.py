"""``sknet study``: the grid, skipping finished runs, resuming, recipe checks and the tables."""

import json
import math
import statistics

import pytest

from sknet.analysis.study import (
    VARIANTS,
    aggregate,
    collect,
    compare,
    load_recipe,
    plan,
    run_dir,
    run_study,
    status,
    write_tables,
)
from sknet.complexity import complexity
from sknet.models import create_model


def test_grid_variants_build_and_controls_match_the_sk_cost():
    sk = complexity(create_model("sknet_mini"), (1, 28, 28))
    for name, v in VARIANTS.items():
        c = complexity(create_model(v.model, **v.overrides), (1, 28, 28))
        if name in ("deeper", "wider"):  # the paper's controls: at the SK model's cost
            assert abs(c.macs / sk.macs - 1) < 0.05, name
    m = create_model(VARIANTS["k3k5k7_sk"].model, **VARIANTS["k3k5k7_sk"].overrides)
    assert [tuple(b) for b in m.layer1[0].conv2.branches] == [(3, 1, 8), (3, 2, 8), (3, 3, 8)]
    assert create_model(VARIANTS["k3k5_sum"].model, **VARIANTS["k3k5_sum"].overrides).layer1[0].conv2.attn is None


def test_plan_is_seed_major_and_rejects_unknown_variants(tmp_path):
    recipe = load_recipe(epochs=1)
    specs = plan(tmp_path, recipe, ["a", "b"], ["k3", "se"], [0, 1])
    assert [s.key for s in specs][:4] == ["a/k3/seed0", "a/se/seed0", "b/k3/seed0", "b/se/seed0"]
    assert specs[-1].key == "b/se/seed1"
    assert specs[0].config()["model"] == "resnext_mini" and specs[0].config()["epochs"] == 1
    with pytest.raises(ValueError, match="unknown variant"):
        plan(tmp_path, recipe, ["a"], ["k9"], [0])
    with pytest.raises(ValueError, match="must not set"):
        load_recipe(seed=3)


def _tiny(tmp_path, **kw):
    recipe = load_recipe(epochs=1, batch_size=32, train_limit=64, val_limit=32, **kw)
    return plan(tmp_path, recipe, ["fake"], ["k3", "k3k5_sk"], [0, 1], device="cpu")


@pytest.mark.slow
def test_study_skips_finished_runs_resumes_partial_ones_and_checks_the_recipe(tmp_path):
    specs = _tiny(tmp_path)
    logs = []
    s1 = run_study(specs, parallel=1, log=logs.append)
    assert s1["finished"] == 4 and s1["skipped"] == 0 and not s1["failed"]
    first = {r["variant"] + str(r["seed"]): r for r in collect(tmp_path)}
    assert len(first) == 4 and all(status(s) == "done" for s in specs)
    # a second call trains nothing
    s2 = run_study(specs, parallel=1, log=logs.append)
    assert s2["finished"] == 0 and s2["skipped"] == 4
    assert {r["variant"] + str(r["seed"]): r for r in collect(tmp_path)} == first
    # an interrupted run (checkpoint, no result.json) is resumed, not restarted
    (run_dir(tmp_path, "fake", "k3", 1) / "result.json").unlink()
    assert status(specs[2]) == "partial"
    s3 = run_study(specs, parallel=1, log=logs.append)
    assert s3["finished"] == 1 and s3["skipped"] == 3
    again = json.loads((run_dir(tmp_path, "fake", "k3", 1) / "result.json").read_text())
    assert again["resumed"] and again["test_top1_err"] == first["k31"]["test_top1_err"]
    # another recipe in the same folder is refused before anything runs
    with pytest.raises(ValueError, match="another recipe"):
        status(_tiny(tmp_path, lr=0.05)[0])
    text = write_tables(tmp_path)
    assert "| K3 (M=1) |" in text and "| K3+K5 SK |" in text
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "runs.csv").is_file()


def test_time_limit_stops_starting_runs(tmp_path, monkeypatch):
    import sknet.analysis.study as study

    started = []

    def fake_run(spec):
        started.append(spec.key)
        return dict(test_top1_err=1.0)

    clock = iter(range(0, 10_000, 40))  # every call to monotonic advances 40 s
    monkeypatch.setattr(study, "run_one", fake_run)
    monkeypatch.setattr(study.time, "monotonic", lambda: next(clock))
    specs = plan(tmp_path, load_recipe(epochs=1), ["fake"], list(VARIANTS), [0, 1, 2])
    summary = run_study(specs, parallel=1, time_limit=200, log=lambda *a: None)
    assert 0 < len(started) < len(specs)
    assert summary["not_started"] == len(specs) - len(started)
    assert started == [s.key for s in specs[: len(started)]]  # in plan order


def _result(dataset, variant, seed, err):
    v = VARIANTS[variant]
    return dict(dataset=dataset, variant=variant, label=v.label, model=v.model, overrides=v.overrides, seed=seed,
                test_top1_err=err, train_time_s=10.0, params=1000, macs=2000, epochs=1)  # fmt: skip


def test_tables_and_claims_from_result_files(tmp_path):
    errs = {
        "k3k5_sk": [10.0, 10.2, 9.9],
        "k3": [12.0, 12.3, 11.8],  # clearly worse: the paper's direction
        "k3k5_sum": [10.1, 9.9, 10.05],  # within seed noise
        "se": [9.0, 9.1, 8.95],  # clearly better than SK: reversed
    }
    for variant, es in errs.items():
        for seed, e in enumerate(es):
            p = run_dir(tmp_path, "fashion-mnist", variant, seed) / "result.json"
            p.parent.mkdir(parents=True)
            p.write_text(json.dumps(_result("fashion-mnist", variant, seed, e)))
    rows = aggregate(collect(tmp_path))
    sk = next(r for r in rows if r["variant"] == "k3k5_sk")
    assert sk["seeds"] == 3
    assert sk["err_mean"] == pytest.approx(statistics.fmean(errs["k3k5_sk"]))
    assert sk["err_std"] == pytest.approx(statistics.stdev(errs["k3k5_sk"]))
    claims = {c["worse"]: c for c in compare(rows)}
    assert set(claims) == {"k3", "k3k5_sum", "se"}
    k3 = claims["k3"]
    se = math.sqrt(statistics.variance(errs["k3"]) / 3 + statistics.variance(errs["k3k5_sk"]) / 3)
    assert k3["diff"] == pytest.approx(statistics.fmean(errs["k3"]) - statistics.fmean(errs["k3k5_sk"]))
    assert k3["t"] == pytest.approx(k3["diff"] / se)
    assert k3["verdict"] == "replicated"
    assert claims["k3k5_sum"]["verdict"] == "not distinguishable from seed noise"
    assert claims["se"]["verdict"].startswith("reversed")
    text = write_tables(tmp_path)
    assert "SK beats SE" in text and "reversed" in text
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 4


def test_single_seed_gives_no_test(tmp_path):
    rows = aggregate([_result("x", "k3k5_sk", 0, 10.0), _result("x", "k3", 0, 12.0)])
    (c,) = compare(rows)
    assert c["verdict"].startswith("one seed") and c["diff"] == pytest.approx(2.0)


def test_cpu_recipe_differs_from_the_gpu_recipe_only_in_budget():
    """The study_cpu recipe is the GPU recipe (study) with a smaller budget (docs/replication.md):
    fewer images and epochs, a smaller batch and the learning rate scaled with it."""
    gpu = load_recipe()
    cpu = load_recipe("study_cpu")
    differ = {k for k in set(gpu) | set(cpu) if gpu.get(k) != cpu.get(k)}
    assert differ == {"epochs", "train_limit", "batch_size"}
    assert (cpu["epochs"], cpu["train_limit"], cpu["batch_size"]) == (2, 12000, 64)
    assert cpu["lr"] * cpu["batch_size"] / cpu["lr_base_batch"] == pytest.approx(0.05)
