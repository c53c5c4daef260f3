"""The demo pipeline end to end at toy size: three runs, one table, a report with its figures."""

import json
import re

from keyreid.demo import DEMO_RUNS, run_demo


def test_demo_runs_reports_and_resumes(tiny_synth, tmp_path):
    over = ("model.backbone=resnet18", "model.pretrained=null", "data.height=64", "data.width=32",
            "data.p=4", "data.k=2", "data.workers=0", "optim.epochs=1", "optim.warmup_epochs=0",
            "data.val_identities=0.3", "eval.every=1", "device=cpu")
    results = run_demo(tmp_path, tiny_synth, seed=3, overrides=over)
    assert [r.name for r in results] == list(DEMO_RUNS)
    for r in results:
        assert 0 <= r.metrics["mAP"] <= 1 and r.metrics["valid_queries"] > 0
    out = tmp_path / "seed3"
    summary = json.loads((out / "results.json").read_text())
    assert set(summary) == set(DEMO_RUNS)
    report = (out / "report.md").read_text()
    for name in DEMO_RUNS:
        assert f"| {name} |" in report
    assert "kae minus bnneck" in report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert any("lambdas" in l for l in links) and any("heatmaps" in l for l in links)
    assert any("ranked" in l for l in links) and any("training_curves" in l for l in links)
    for link in links:
        assert (out / link).is_file() and (out / link).stat().st_size > 1000
    # a second call finds finished runs and trains nothing again
    again = run_demo(tmp_path, tiny_synth, seed=3, overrides=over, report=False)
    assert [r.metrics["mAP"] for r in again] == [r.metrics["mAP"] for r in results]
