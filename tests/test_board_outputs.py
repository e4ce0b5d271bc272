"""The leaderboard's files: Markdown, CSV, self-contained HTML, LaTeX and the plots, from the CLI and the callback."""

import re
from types import SimpleNamespace

import matplotlib.image
import numpy as np

from harness.record.results import write_json_atomic
from harness.report import cli as board_cli
from harness.report.callbacks import Leaderboard
from tests.test_board import record


def sweep_records():
    """2 mixers x 2 widths x 2 seeds on one task, each run with a 3-point eval history."""
    recs = []
    for mixer, base in (("attention", 0.6), ("hyena", 0.3)):
        for d_model in (32, 64):
            for seed in (0, 1):
                acc = base + d_model / 200 + seed / 50
                history = [{"step": s, "train/loss": 1 / s, "val/accuracy": acc * s / 300} for s in (100, 200, 300)]
                recs.append(
                    record(
                        mixer,
                        "mqar",
                        seed,
                        acc,
                        d_model=d_model,
                        history=history,
                        cost={
                            "params": 40 * d_model,
                            "params_non_embedding": 30 * d_model,
                            "flops_per_token": 180 * d_model,
                            "tokens_seen": 1000,
                        },
                    )
                )
    return recs


def write_all(root, recs):
    for i, r in enumerate(recs):
        write_json_atomic(root / str(i) / "result.json", r)


def assert_png(path):
    image = matplotlib.image.imread(path)
    assert path.stat().st_size > 1000 and image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image[..., :3]) > 0  # not a blank canvas


def test_every_format_and_plot_from_the_cli(tmp_path, capsys):
    write_all(tmp_path / "runs", sweep_records())
    out, plots = tmp_path / "out", tmp_path / "plots"
    board_cli.main(
        [
            str(tmp_path / "runs"),
            "--group-by",
            "model.d_model",
            "--matched",
            "params",
            "--out",
            str(out),
            "--format",
            "md,csv,html,tex",
            "--plots",
            str(plots),
            "--plot-x",
            "model.d_model",
        ]
    )
    printed = capsys.readouterr().out
    assert "| attention" in printed and "mqar d_model=32" in printed and "matched params" in printed
    for name in ("heatmap.png", "curves.png", "accuracy_vs_model.d_model.png"):
        assert_png(plots / name)
    md = (out / "leaderboard.md").read_text()
    assert md.startswith("- records: read 8 record files; used 8\n- test/accuracy: mean ± std")
    assert "](../plots/heatmap.png)" in md
    html = (out / "leaderboard.html").read_text()
    assert html.startswith("<!doctype html>") and html.count("<table") == 2  # the board and the matched view
    assert not re.search(r"https?://|//cdn|<link|<script|src=\"(?!data:)", html)  # nothing fetched from anywhere
    assert html.count('src="data:image/png;base64,') == 3
    assert "0.770 ± 0.014" in html  # attention at d_model=32: seeds 0.76 and 0.78
    tex = (out / "leaderboard.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 2 and r"\toprule" in tex and r"$\pm$" in tex and "±" not in tex
    assert r"$\geq$ 0.9" in tex and "≥" not in tex  # the solved count, in LaTeX
    assert r"mqar d\_model=32" in tex  # escaped for LaTeX
    csv = (out / "leaderboard.csv").read_text().splitlines()
    assert len(csv) == 1 + 4 and csv[0].startswith("variant,column,")


def test_callback_writes_the_board_and_plots_into_the_sweep_folder(tmp_path, capsys):
    write_all(tmp_path, sweep_records())
    Leaderboard().on_multirun_end(SimpleNamespace(hydra=SimpleNamespace(sweep=SimpleNamespace(dir=str(tmp_path)))))
    assert {p.name for p in tmp_path.glob("leaderboard.*")} == {"leaderboard.md", "leaderboard.csv", "leaderboard.html"}
    assert_png(tmp_path / "plots" / "heatmap.png")
    assert "| attention d_model=64" in capsys.readouterr().out


def test_callback_never_fails_the_sweep(tmp_path, caplog):
    Leaderboard().on_multirun_end(SimpleNamespace(hydra=SimpleNamespace(sweep=SimpleNamespace(dir=str(tmp_path)))))
    assert "no leaderboard" in caplog.text
