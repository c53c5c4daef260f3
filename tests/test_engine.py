"""Trainer: exact resume after a kill, checkpoints, logs, lambdas, validation split, DDP gradients."""

import csv
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from keyreid.config import load_config
from keyreid.utils.checkpoint import load_checkpoint
from keyreid.engine.data import split_validation
from keyreid.engine.schedules import lr_factor
from keyreid.engine.trainer import Trainer
from keyreid.config import OptimConfig
from tests.conftest import tiny_overrides


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Killed(Exception):
    pass


def test_resume_after_kill_mid_epoch_is_exact(tiny_synth, tmp_path, monkeypatch):
    over = tiny_overrides(tiny_synth, tmp_path / "a", head="kae", **{"regularizer.adaptive_l2": "true"})
    ref = Trainer(load_config(None, over), resume=False, show_progress=False)
    ref.fit()
    expected = _params(ref.model)
    steps_per_epoch = ref.state.global_step // 2

    over_b = tiny_overrides(tiny_synth, tmp_path / "b", head="kae", **{"regularizer.adaptive_l2": "true"})
    victim = Trainer(load_config(None, over_b), resume=False, show_progress=False, checkpoint_every_steps=1)
    original = Trainer.train_step
    calls = {"n": 0}

    def dying_step(self, batch, epoch):
        if calls["n"] == steps_per_epoch + 1:  # killed during the second epoch
            raise Killed()
        calls["n"] += 1
        return original(self, batch, epoch)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(Killed):
        victim.fit()
    monkeypatch.setattr(Trainer, "train_step", original)

    resumed = Trainer(load_config(None, over_b), resume=True, show_progress=False)
    assert resumed.state.epoch == 1 and resumed.state.step_in_epoch == 1
    resumed.fit()
    got = _params(resumed.model)
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    # the logs hold each epoch once, even though the killed run was interrupted, and the resumed
    # epoch's row is the mean over all its steps (partial sums travel in the checkpoint), so it
    # equals the uninterrupted run's row
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    ref_rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    for got_row, ref_row in zip(rows, ref_rows):
        for key in ("images", "loss", "id", "metric", "heatmap", "l2", "acc", "lambda_mean"):
            assert float(got_row[key]) == pytest.approx(float(ref_row[key]), rel=1e-9), key


def test_crash_at_validation_loses_no_training(tiny_synth, tmp_path, monkeypatch):
    extra = {"data.val_identities": 0.3, "eval.every": 1}
    ref = Trainer(load_config(None, tiny_overrides(tiny_synth, tmp_path / "a", **extra)), resume=False,
                  show_progress=False)
    ref.fit()
    cfg = load_config(None, tiny_overrides(tiny_synth, tmp_path / "b", **extra))
    victim = Trainer(cfg, resume=False, show_progress=False)
    steps = {}

    def crashing_validate(self):
        steps["at_crash"] = self.state.global_step
        raise Killed()

    monkeypatch.setattr(Trainer, "validate", crashing_validate)
    with pytest.raises(Killed):
        victim.fit()
    monkeypatch.undo()
    # the epoch was checkpointed before validating, its row waits in the checkpoint
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ck["state"]["epoch"] == 1 and ck["state"]["global_step"] == steps["at_crash"]
    assert ck["state"]["pending"]["row"]["epoch"] == 0
    resumed = Trainer(cfg, resume=True, show_progress=False)
    resumed.fit()  # validates epoch 1 first, then trains epoch 2
    for k, v in _params(ref.model).items():
        assert torch.equal(v, _params(resumed.model)[k]), k
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    ref_rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for got_row, ref_row in zip(rows, ref_rows):
        for key in ("loss", "val_mAP", "val_R1"):
            assert float(got_row[key]) == pytest.approx(float(ref_row[key]), rel=1e-9), key


def test_checkpoints_logs_and_lambdas(tiny_synth, tmp_path):
    over = tiny_overrides(tiny_synth, tmp_path, head="bnneck",
                          **{"regularizer.adaptive_l2": "true", "data.val_identities": 0.3, "eval.every": 1})
    tr = Trainer(load_config(None, over), resume=False, show_progress=False)
    result = tr.fit()
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv", "lambdas.csv"):
        assert (tmp_path / name).is_file(), name
    assert not list(tmp_path.glob("*.tmp"))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 2 and 0 <= float(rows[-1]["val_mAP"]) <= 1
    assert result["best_val_score"] == max(float(r["val_mAP"]) for r in rows)
    lam = list(csv.DictReader(open(tmp_path / "lambdas.csv")))
    names = {r["parameter"] for r in lam}
    assert any("conv1" in n for n in names) and any("bn" in n for n in names)
    # theta only appears in the penalty, so every lambda can only go down from A/2
    assert all(0 <= float(r["lambda"]) <= 0.0025 + 1e-9 for r in lam)
    assert float(rows[0]["lambda_max"]) == pytest.approx(0.0025, abs=1e-5)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["state"]["epoch"] == 2 and ck["skeleton"] == "coco17"
    # no weight decay of its own when adaptive L2 is on
    assert all(g["weight_decay"] == 0 for g in tr.optimizer.param_groups)


def test_validation_split_uses_only_training_identities(tiny_synth):
    from keyreid.data.datasets import build_dataset

    ds = build_dataset("market1501", tiny_synth)
    kept, q, g = split_validation(ds.train, 0.3, seed=0)
    val_ids = {s.pid for s in q}
    assert val_ids == {s.pid for s in g} and len(q) == len(val_ids) == 3
    assert not val_ids & {s.pid for s in kept}
    assert val_ids <= {s.pid for s in ds.train}
    assert len(kept) + len(q) + len(g) == len(ds.train)


def test_lr_schedule_warmup_steps_and_cosine():
    cfg = OptimConfig(lr=1.0, warmup_epochs=10, warmup_factor=0.01, milestones=[40, 70], gamma=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(5, cfg) == pytest.approx(0.505)
    assert lr_factor(10, cfg) == 1.0 and lr_factor(39.9, cfg) == 1.0
    assert lr_factor(40, cfg) == pytest.approx(0.1) and lr_factor(70, cfg) == pytest.approx(0.01)
    cfg.schedule, cfg.epochs = "cosine", 110
    assert lr_factor(60, cfg) == pytest.approx(0.5) and lr_factor(110, cfg) == pytest.approx(0.0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, overrides, batch, out):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tr = Trainer(load_config(None, overrides), resume=False, show_progress=False)
    half = {k: v[rank::world] for k, v in batch.items()}
    tr.optimizer.param_groups[0]["lr"] = 0.0
    tr.train_step(half, epoch=0)
    grads = {n: p.grad.detach().clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    torch.save(grads, out / f"grads{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_gradients_match_single_process(tiny_synth, tmp_path):
    over = tiny_overrides(tiny_synth, tmp_path / "ddp", head="kae")
    single = Trainer(load_config(None, over), resume=False, show_progress=False)
    loader = torch.utils.data.DataLoader(single.train_set, batch_sampler=single.sampler)
    batch = next(iter(loader))
    batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    # Single process, same batch: DDP averages the gradients of the two shards (rank r takes
    # items r::2), each computed with its own BN statistics and triplet mining.
    state = _params(single.model)
    expected = None
    for r in range(2):
        single.model.load_state_dict(state)
        single.train_step({k: v[r::2] for k, v in batch.items()}, epoch=0)
        g = {n: p.grad.detach().clone() for n, p in single.model.named_parameters() if p.grad is not None}
        expected = g if expected is None else {n: (expected[n] + g[n]) / 2 for n in g}
    mp.spawn(_ddp_worker, args=(2, _free_port(), over, batch, tmp_path), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"grads{rank}.pt")
        assert set(got) == set(expected)
        for n in expected:
            torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-5)  # all-reduce sums in another order


def test_csv_log_widens_for_late_columns_and_truncates(tmp_path):
    from keyreid.engine.logs import CSVLog

    log = CSVLog(tmp_path / "m.csv")
    log.write({"epoch": 0, "loss": 1.5})
    log.write({"epoch": 1, "loss": 1.0, "val_mAP": 0.25})
    log = CSVLog(tmp_path / "m.csv")  # reopened, as on resume
    log.write({"epoch": 2, "loss": 0.5, "val_mAP": 0.5})
    rows = log.read()
    assert [r["val_mAP"] for r in rows] == ["", "0.25", "0.5"]
    log.truncate_after("epoch", 1)
    assert [r["epoch"] for r in log.read()] == ["0", "1"]


def test_retrieval_protocol_scores_each_image_against_all_others(tiny_synth, tmp_path):
    from dataclasses import replace

    from keyreid.inference import extract_features
    from keyreid.engine.evaluate import evaluate_model
    from keyreid.evaluation.reid import EvaluationError
    from keyreid.evaluation.retrieval import evaluate as retrieval_evaluate

    tr = Trainer(load_config(None, tiny_overrides(tiny_synth, tmp_path)), resume=False, show_progress=False)
    ds = tr.data.dataset
    # CUB / Cars196 style: one camera, query = gallery = the test images
    test = [replace(s, camid=0) for s in ds.query + [g for g in ds.gallery if g.pid > 0]]
    m = evaluate_model(tr.model, test, test, tr.test_transform, tr.cfg, tr.device, protocol="retrieval")
    feats = extract_features(tr.model, test, tr.test_transform)
    ref = retrieval_evaluate(feats, np.array([s.pid for s in test]), distance="cosine")
    assert m["R1"] == pytest.approx(ref.recall_at_k[1]) and m["MAP@R"] == pytest.approx(ref.map_at_r)
    assert m["score"] == m["MAP@R"] and 0 < m["R1"] <= 1
    with pytest.raises(EvaluationError):  # the re-ID protocol drops every same-camera positive
        evaluate_model(tr.model, test, test, tr.test_transform, tr.cfg, tr.device, protocol="reid")


def test_eval_rerank_setting_reranks_the_test_distances(tiny_synth, tmp_path):
    from keyreid.inference import extract_features
    from keyreid.engine.evaluate import test_distances
    from keyreid.evaluation.rerank import re_ranking

    over = tiny_overrides(tiny_synth, tmp_path, **{"eval.rerank": "true", "eval.rerank_k1": "5",
                                                   "eval.rerank_k2": "2", "eval.rerank_lambda": "0.4"})
    tr = Trainer(load_config(None, over), resume=False, show_progress=False)
    query, gallery = tr.data.dataset.query[:12], tr.data.dataset.gallery[:30]
    got = test_distances(tr.model, query, gallery, tr.test_transform, tr.cfg, tr.device)
    qf, gf = (extract_features(tr.model, s, tr.test_transform) for s in (query, gallery))
    np.testing.assert_allclose(got, re_ranking(qf, gf, k1=5, k2=2, lambda_value=0.4), atol=1e-5)
    assert np.all((got >= 0) & (got <= 1 + 1e-6))


def test_freeze_pretrained_epochs_keeps_backbone_and_stage_copies_fixed(tiny_synth, tmp_path):
    from torch.utils.data import DataLoader

    over = tiny_overrides(tiny_synth, tmp_path, head="stripes", **{"optim.freeze_pretrained_epochs": "1"})
    torch.manual_seed(0)
    tr = Trainer(load_config(None, over), resume=False, show_progress=False)
    batch = next(iter(DataLoader(tr.train_set, batch_sampler=tr.sampler)))
    pretrained = {id(t) for m in tr.model.pretrained_modules() for t in (*m.parameters(), *m.buffers())}
    assert len(tr.model.pretrained_modules()) == 3  # backbone, global and stripe copies of layer4

    def changed_after_step(epoch):
        before = {n: t.detach().clone() for n, t in tr.model.state_dict(keep_vars=True).items()}
        tr.train_step(batch, epoch=epoch)
        after = tr.model.state_dict(keep_vars=True)
        return {n for n in before if not torch.equal(before[n], after[n].detach())}, after

    changed, tensors = changed_after_step(epoch=0)
    frozen_names = {n for n, t in tensors.items() if id(t) in pretrained}
    assert frozen_names and not changed & frozen_names  # weights and BN running statistics alike
    assert {n for n in changed if n.startswith("head.reducers") or n.startswith("head.necks")}
    changed, _ = changed_after_step(epoch=1)
    assert "backbone.conv1.weight" in changed and "head.global_stage.0.0.conv1.weight" in changed
    assert "backbone.bn1.running_mean" in changed
